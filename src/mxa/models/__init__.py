"""Models. Importing this package registers ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` in timm."""

from .efficientvit_ml import (
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

MODEL_NAMES = tuple(f"efficientvit_ml_m{i}" for i in range(6))

__all__ = [
    "MODEL_NAMES",
    "BatchSafeNormLinear",
    "FreshBiasAttention",
    "MXAWindowAttention",
    "MultiLabelEfficientViT",
    "checkpoint_filter_fn",
    "efficientvit_ml_m0",
    "efficientvit_ml_m1",
    "efficientvit_ml_m2",
    "efficientvit_ml_m3",
    "efficientvit_ml_m4",
    "efficientvit_ml_m5",
]
