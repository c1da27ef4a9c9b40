"""mxa-attention: the Medical X-ray Attention (MXA) block, multi-label EfficientViT and soft KD.

``import mxa`` registers the ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` models in timm.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import models  # registers the efficientvit_ml_* models in timm
from .distill.losses import DistillationLoss, SoftKDLoss
from .export import export_onnx, export_safetensors
from .layers import CBAM, DynamicROIPool, MXABlock, roi_crop
from .models import MultiLabelEfficientViT, load_exported, load_model

__all__ = [
    "CBAM",
    "DistillationLoss",
    "DynamicROIPool",
    "MXABlock",
    "MultiLabelEfficientViT",
    "SoftKDLoss",
    "__version__",
    "export_onnx",
    "export_safetensors",
    "load_exported",
    "load_model",
    "models",
    "roi_crop",
]
