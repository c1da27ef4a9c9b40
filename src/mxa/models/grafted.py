"""timm models with MXA grafted in: ``densenet121_mxa``, ``resnet50_mxa``, ``convnext_tiny_mxa``, ...

Each is its timm parent built for chest X-rays (1 channel, the 14 CheXpert logits) with :func:`add_mxa`
applied. ``pretrained=True`` loads the parent's ImageNet weights through timm's own machinery (its hub id,
its checkpoint filter, the RGB -> gray first-conv adaptation; ``pretrained_cfg_overlay=dict(file=...)``
for a local file); the head and the MXA blocks start fresh. ``mxa=False`` gives the plain parent, which is
what ``mxa ablate`` and ``mxa bench`` compare against.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import (
    generate_default_cfgs,
    get_pretrained_cfg,
    load_pretrained,
    register_model,
    resolve_pretrained_cfg,
)
from torch import nn

from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.transforms import GRAY_MEAN, GRAY_STD
from mxa.models.graft import add_mxa

__all__ = ["GRAFTED_MODEL_NAMES", "GRAFTED_PARENTS", "create_grafted"]

#: registered name -> (the timm parent with the pretrained tag it loads, whether it takes ``img_size``)
GRAFTED_PARENTS: dict[str, tuple[str, bool]] = {
    "densenet121_mxa": ("densenet121.tv_in1k", False),
    "resnet50_mxa": ("resnet50.a1_in1k", False),
    "convnext_tiny_mxa": ("convnext_tiny.in12k_ft_in1k", False),
    "deit_small_patch16_224_mxa": ("deit_small_patch16_224.fb_in1k", True),
}
GRAFTED_MODEL_NAMES = tuple(GRAFTED_PARENTS)


def _cfg(parent: str) -> dict[str, Any]:
    p = get_pretrained_cfg(parent)
    return {
        # The parent's ImageNet weights: backbone only, the head and MXA start fresh.
        "hf_hub_id": p.hf_hub_id,
        "num_classes": len(CHEXPERT_LABELS),
        "label_names": CHEXPERT_LABELS,
        "input_size": (1, 224, 224),
        "fixed_input_size": bool(getattr(p, "fixed_input_size", False)),  # ViTs: the patch grid is fixed
        "mean": GRAY_MEAN,
        "std": GRAY_STD,
        "interpolation": p.interpolation,
        "crop_pct": 1.0,
        "pool_size": p.pool_size,
        "first_conv": p.first_conv,
        "classifier": p.classifier,
        "license": p.license,
        "description": f"ImageNet-1k backbone of timm's {parent}; multi-label head and MXA untrained.",
    }


default_cfgs = generate_default_cfgs(
    {f"{name}.{parent.split('.', 1)[1]}": _cfg(parent) for name, (parent, _) in GRAFTED_PARENTS.items()}
)


def create_grafted(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``variant`` (a key of :data:`GRAFTED_PARENTS`): its parent from timm, then :func:`add_mxa`.

    Keyword arguments: ``mxa`` (default True), ``mxa_stages`` (``where`` of :func:`add_mxa`: stage
    indices; default the family's choice), ``mxa_cfg`` (:class:`MXABlock` arguments), ``label_names``,
    ``img_size`` (used by ViTs, ignored by size-agnostic conv nets), and anything the parent takes
    (``in_chans`` default 1, ``num_classes`` default 14, ``features_only``, ``drop_path_rate``...).
    """
    parent, takes_size = GRAFTED_PARENTS[variant]
    use_mxa = bool(kwargs.pop("mxa", True))
    stages = kwargs.pop("mxa_stages", None)
    mxa_cfg = dict(kwargs.pop("mxa_cfg", None) or {})
    label_names = kwargs.pop("label_names", None)
    img_size = kwargs.pop("img_size", None)
    # our default cfg only tags the model (the parent's own cfg loads its ImageNet weights); a cfg from a
    # Hub folder or repo of this model (timm.create_model("local-dir:..."/"hf-hub:...")) holds our weights
    given = kwargs.pop("pretrained_cfg", None)
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given or {})
    own = given if pretrained and given.get("source") in ("local-dir", "hf-hub") else None
    if img_size is not None and takes_size:
        kwargs["img_size"] = img_size
    kwargs.setdefault("in_chans", 1)
    kwargs.setdefault("num_classes", len(CHEXPERT_LABELS))
    model = timm.create_model(parent, pretrained=pretrained and own is None, **kwargs)
    if use_mxa:
        add_mxa(model, where=[int(i) for i in stages] if stages else None, **mxa_cfg)
    else:
        model.mxa_stages = ()
        model.mxa_cfg = mxa_cfg
    if own is not None:
        # our whole state dict, first conv already of in_chans channels (no RGB adaptation), head included
        cfg = {**own, "first_conv": None, "classifier": None}
        load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes, in_chans=kwargs["in_chans"])
    cfg = resolve_pretrained_cfg(variant).to_dict()
    cfg["architecture"] = variant
    model.pretrained_cfg = model.default_cfg = cfg
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label_names for {num_classes} classes")
    if label_names is None and num_classes == len(CHEXPERT_LABELS):
        label_names = CHEXPERT_LABELS
    model.label_names = tuple(label_names) if label_names is not None else None
    return model


@register_model
def densenet121_mxa(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """DenseNet-121 with MXA beside every dense block (torchvision's ImageNet weights)."""
    return create_grafted("densenet121_mxa", pretrained, **kwargs)


@register_model
def resnet50_mxa(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-50 with MXA beside the residual branch of the last block of each stage."""
    return create_grafted("resnet50_mxa", pretrained, **kwargs)


@register_model
def convnext_tiny_mxa(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ConvNeXt-Tiny with MXA beside the last block of each stage."""
    return create_grafted("convnext_tiny_mxa", pretrained, **kwargs)


@register_model
def deit_small_patch16_224_mxa(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """DeiT-Small with MXA beside the attention of every block that reaches the class token."""
    return create_grafted("deit_small_patch16_224_mxa", pretrained, **kwargs)
