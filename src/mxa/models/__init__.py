"""Models. Importing this package registers ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` in timm."""

from .efficientvit_ml import (
    _ARCH,
    BatchSafeNormLinear,
    FreshBiasAttention,
    MultiLabelEfficientViT,
    MXAWindowAttention,
    checkpoint_filter_fn,
    efficientvit_ml_m0,
    efficientvit_ml_m1,
    efficientvit_ml_m2,
    efficientvit_ml_m3,
    efficientvit_ml_m4,
    efficientvit_ml_m5,
)
from .loading import ModelSpec, load_exported, load_model, load_model_from_checkpoint

#: Every model this package registers in timm, from the architecture table (never typed by hand).
MODEL_NAMES = tuple(f"efficientvit_ml_{size}" for size in _ARCH)

__all__ = [
    "MODEL_NAMES",
    "BatchSafeNormLinear",
    "FreshBiasAttention",
    "MXAWindowAttention",
    "ModelSpec",
    "MultiLabelEfficientViT",
    "checkpoint_filter_fn",
    "efficientvit_ml_m0",
    "efficientvit_ml_m1",
    "efficientvit_ml_m2",
    "efficientvit_ml_m3",
    "efficientvit_ml_m4",
    "efficientvit_ml_m5",
    "load_exported",
    "load_model",
    "load_model_from_checkpoint",
]
