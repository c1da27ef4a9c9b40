"""Models. Importing this package registers ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` and the grafted
``densenet121_mxa``, ``resnet50_mxa``, ``convnext_tiny_mxa``, ``deit_small_patch16_224_mxa`` in timm."""

from mxa._compat import lazy_names
from mxa.models.efficientvit_ml import (
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
from mxa.models.graft import BlockRule, add_mxa, known_blocks, register_block
from mxa.models.grafted import GRAFTED_MODEL_NAMES, GRAFTED_PARENTS
from mxa.models.hooks import ModelROIs, forward_rois, forward_with_rois, has_rois, mxa_blocks

#: Every model this package registers in timm, from the architecture table (never typed by hand).
MODEL_NAMES = tuple(f"efficientvit_ml_{size}" for size in _ARCH)


def check_model_name(name: str, what: str = "--model") -> str:
    """``name`` if timm knows it (after ``import mxa``), else a ``ValueError`` that lists ours."""
    import timm

    if isinstance(name, str) and timm.is_model(name):
        return name
    raise ValueError(
        f"unknown {what} {name!r}; ours are {', '.join(MODEL_NAMES)} and the grafted "
        f"{', '.join(GRAFTED_MODEL_NAMES)} (any timm model name works too, with mxa.add_mxa for MXA)"
    )


# 0.2 exported these from here; they live in mxa.decision and mxa.files (a layer above the models) now
__getattr__ = lazy_names(
    __name__,
    {
        "DecisionRule": "mxa.decision.rule",
        "get_decision_rule": "mxa.decision.rule",
        "ModelSpec": "mxa.files.spec",
        "load_exported": "mxa.files.load",
        "load_model": "mxa.files.load",
        "load_model_from_checkpoint": "mxa.files.load",
    },
)

__all__ = [
    "GRAFTED_MODEL_NAMES",
    "GRAFTED_PARENTS",
    "MODEL_NAMES",
    "BatchSafeNormLinear",
    "BlockRule",
    "DecisionRule",
    "FreshBiasAttention",
    "MXAWindowAttention",
    "ModelROIs",
    "ModelSpec",
    "MultiLabelEfficientViT",
    "add_mxa",
    "check_model_name",
    "checkpoint_filter_fn",
    "efficientvit_ml_m0",
    "efficientvit_ml_m1",
    "efficientvit_ml_m2",
    "efficientvit_ml_m3",
    "efficientvit_ml_m4",
    "efficientvit_ml_m5",
    "forward_rois",
    "forward_with_rois",
    "get_decision_rule",
    "has_rois",
    "known_blocks",
    "load_exported",
    "load_model",
    "load_model_from_checkpoint",
    "mxa_blocks",
    "register_block",
]
