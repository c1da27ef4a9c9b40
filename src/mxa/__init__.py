"""mxa-attention: the Medical X-ray Attention (MXA) block, multi-label EfficientViT and soft KD.

``import mxa`` registers the ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` models in timm, and the
grafted ``densenet121_mxa``, ``resnet50_mxa``, ``convnext_tiny_mxa``, ``deit_small_patch16_224_mxa``;
``mxa.add_mxa(model)`` grafts MXA into a timm, torchvision or torchxrayvision model of your own.
"""

from __future__ import annotations

__version__ = "0.3.0"

from mxa import models  # registers the efficientvit_ml_* models in timm
from mxa.files.export import export_onnx, export_safetensors
from mxa.files.hub import export_hub, push_to_hub
from mxa.files.load import load_exported, load_model
from mxa.layers import CBAM, DynamicROIPool, LabelROIPool, MXABlock, roi_crop
from mxa.losses import DistillationLoss, SoftKDLoss
from mxa.models import (
    MultiLabelEfficientViT,
    add_mxa,
    forward_rois,
    forward_with_rois,
    mxa_blocks,
    register_block,
)

__all__ = [
    "CBAM",
    "DistillationLoss",
    "DynamicROIPool",
    "LabelROIPool",
    "MXABlock",
    "MultiLabelEfficientViT",
    "SoftKDLoss",
    "__version__",
    "add_mxa",
    "export_hub",
    "export_onnx",
    "export_safetensors",
    "forward_rois",
    "forward_with_rois",
    "load_exported",
    "load_model",
    "models",
    "mxa_blocks",
    "push_to_hub",
    "register_block",
    "roi_crop",
]
