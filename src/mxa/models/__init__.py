"""Models. Importing this package registers ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` and the grafted
``densenet121_mxa``, ``resnet50_mxa``, ``convnext_tiny_mxa``, ``deit_small_patch16_224_mxa`` in timm."""

from .decision import DecisionRule, get_decision_rule
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
from .graft import BlockRule, add_mxa, forward_with_rois, known_blocks, mxa_blocks, register_block
from .grafted import GRAFTED_MODEL_NAMES, GRAFTED_PARENTS
from .loading import ModelSpec, load_exported, load_model, load_model_from_checkpoint

#: Every model this package registers in timm, from the architecture table (never typed by hand).
MODEL_NAMES = tuple(f"efficientvit_ml_{size}" for size in _ARCH)

__all__ = [
    "GRAFTED_MODEL_NAMES",
    "GRAFTED_PARENTS",
    "MODEL_NAMES",
    "BatchSafeNormLinear",
    "BlockRule",
    "DecisionRule",
    "FreshBiasAttention",
    "MXAWindowAttention",
    "ModelSpec",
    "MultiLabelEfficientViT",
    "add_mxa",
    "checkpoint_filter_fn",
    "efficientvit_ml_m0",
    "efficientvit_ml_m1",
    "efficientvit_ml_m2",
    "efficientvit_ml_m3",
    "efficientvit_ml_m4",
    "efficientvit_ml_m5",
    "forward_with_rois",
    "get_decision_rule",
    "known_blocks",
    "load_exported",
    "load_model",
    "load_model_from_checkpoint",
    "mxa_blocks",
    "register_block",
]
