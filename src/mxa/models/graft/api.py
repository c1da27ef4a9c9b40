"""``add_mxa``: graft MXA into a model of your own; ``known_blocks`` lists what it knows."""

from __future__ import annotations

import logging
from types import MethodType
from typing import Any

from torch import nn

from mxa.models.graft.registry import RULES, Where
from mxa.models.graft.rules import register_builtins
from mxa.models.graft.select import describe, find_sites, select
from mxa.models.hooks import forward_with_rois, mxa_blocks

__all__ = ["add_mxa", "known_blocks"]

log = logging.getLogger("mxa.models.graft")


def known_blocks() -> dict[str, list[str]]:
    """``{family: [block types]}`` that :func:`add_mxa` knows (those of the imported libraries).

    Examples:
        >>> import mxa
        >>> from mxa.models import known_blocks
        >>> "resnet" in known_blocks() and "vit" in known_blocks()
        True
    """
    register_builtins()
    out: dict[str, list[str]] = {}
    for t, rule in RULES.items():
        out.setdefault(rule.family, []).append(f"{t.__module__}.{t.__qualname__}")
    return out


def add_mxa(model: nn.Module, where: Where = None, **mxa_cfg: Any) -> nn.Module:
    """Graft an :class:`MXABlock` in parallel with the residual branch or attention of ``model``'s blocks.

    In place: the model is returned for chaining. Original parameter names are unchanged; MXA adds
    ``.mxa.`` keys (a checkpoint of the original loads with ``strict=False``, missing only those). With the
    default zero-init ``scale`` the grafted model computes exactly what the original does.

    Args:
        model: a timm ResNet / DenseNet / ConvNeXt / EfficientNet / MobileNetV3 / ViT / DeiT / Swin /
            EfficientViT (B or M series, ours included), a torchvision ResNet / DenseNet, a
            torchxrayvision ``DenseNet`` or ``ResNet``, or anything holding blocks registered with
            :func:`register_block`.
        where: which blocks: ``None`` the family's default (see the module table), ``"all"``, ``"last"``
            (the last block of each stage), a stage index (an int; its default blocks: all of them, or the
            last for ResNet/ConvNeXt/EfficientNet), an ``fnmatch`` pattern on block names
            (``"layer4.*"``, ``"blocks.1?"``), or a list of those.
        **mxa_cfg: :class:`MXABlock` arguments (``reduction``, ``min_size``, ``init_scale``...).

    Returns:
        ``model``, with ``model.mxa_blocks()`` and ``model.forward_with_rois(x)`` (see
        :func:`forward_with_rois`), and ``mxa_stages`` / ``mxa_cfg`` describing the graft.

    Raises:
        ValueError: no known block in ``model`` (the message lists the known types and how to register
            yours), ``where`` selects nothing, or the model already has MXA.

    Examples:
        >>> import timm, torch, mxa
        >>> model = mxa.add_mxa(timm.create_model("resnet18", in_chans=1, num_classes=14))
        >>> list(mxa.mxa_blocks(model))
        ['layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']
        >>> logits, rois = mxa.forward_with_rois(model.eval(), torch.randn(1, 1, 64, 64))
        >>> rois["layer4.1"].shape
        torch.Size([1, 4])
    """
    register_builtins()
    sites = find_sites(model)
    if not sites:
        known = "; ".join(
            f"{fam}: {', '.join(t.rsplit('.', 1)[-1] for t in ts)}" for fam, ts in known_blocks().items()
        )
        raise ValueError(
            f"add_mxa knows no block of {type(model).__name__}. It knows {known}. Point it at your block "
            "type with mxa.register_block(MyBlock, 'residual', family='mine') for a block x + f(x) of "
            "unchanged shape, or with your own graft function (docs: 'MXA in your own model')"
        )
    chosen = select(sites, where)
    if not chosen:
        raise ValueError(f"where={where!r} selects no block that takes MXA; blocks: {describe(sites)}")
    for site in chosen:
        block = site.rule.graft(site.module, {**dict(site.rule.mxa_defaults), **mxa_cfg}, model)
        block.mxa_site = site.name  # the name mxa_blocks() reports (a plain attribute, not state)
    log.debug("grafted %d MXA blocks into %s", len(chosen), type(model).__name__)
    model.mxa_stages = tuple(sorted({s.stage for s in chosen}))
    model.mxa_cfg = dict(mxa_cfg)
    if "mxa_blocks" not in type(model).__dict__ and not _class_has(model, "mxa_blocks"):
        model.mxa_blocks = MethodType(mxa_blocks, model)
    if not _class_has(model, "forward_with_rois"):
        model.forward_with_rois = MethodType(forward_with_rois, model)
    return model


def _class_has(model: nn.Module, name: str) -> bool:
    return any(name in t.__dict__ for t in type(model).__mro__)
