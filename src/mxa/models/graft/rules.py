"""The built-in rules, one function per library: timm, torchvision, torchxrayvision (registered when the
library is imported; torchxrayvision is never imported by us)."""

from __future__ import annotations

import importlib.util
import sys
from functools import partial
from typing import Any

from torch import nn

from mxa._timm import efficientnet_block_types
from mxa.models.graft.mechanism import (
    DenseBlockMXA,
    SeqDenseBlockMXA,
    graft_dense,
    graft_mit,
    graft_msra,
    graft_residual,
    graft_resnet,
    graft_swin,
    graft_vit,
)
from mxa.models.graft.registry import register_block

__all__ = ["register_builtins"]

_BUILTINS_FOR: set[str] = set()


def _has_skip(block: nn.Module, model: nn.Module) -> bool:
    return bool(getattr(block, "has_skip", False))


def _vit_reaches_output(block: nn.Module, model: nn.Module) -> bool:
    # MXA leaves the prefix tokens alone: in the last block of a class-token-pooled ViT it would change
    # only patch tokens that nothing reads afterwards (no gradient, dead parameters).
    vit = next((m for m in model.modules() if isinstance(getattr(m, "blocks", None), nn.Sequential)), model)
    blocks = vit.blocks
    is_last = isinstance(blocks, nn.Sequential) and len(blocks) > 0 and blocks[-1] is block
    return not (is_last and getattr(vit, "global_pool", "") == "token")


#: ResNet: the last block of each stage; CBAM's MLP at C/32 keeps the 2048-channel stage under +3% params.
_RESNET: dict[str, Any] = dict(
    family="resnet", stage_pattern=r"layer(\d+)", stage_base=1, default="last", mxa_defaults={"reduction": 32}
)


def _register_dense(block_type: type, mixin: type) -> None:
    # DenseNet (timm, torchvision, torchxrayvision): every dense block, stages named denseblock1..4
    register_block(
        block_type,
        partial(graft_dense, mixin=mixin),
        family="densenet",
        stage_pattern=r"denseblock(\d+)",
        stage_base=1,
    )


def register_builtins() -> None:
    """Register the rules of the libraries that are imported (never imports torchxrayvision itself)."""
    if "timm" not in _BUILTINS_FOR:
        from timm.models import (
            convnext,
            densenet,
            efficientvit_mit,
            efficientvit_msra,
            resnet,
            swin_transformer,
            vision_transformer,
        )

        for t in (resnet.BasicBlock, resnet.Bottleneck):
            register_block(t, graft_resnet, **_RESNET)
        _register_dense(densenet.DenseBlock, DenseBlockMXA)
        register_block(
            convnext.ConvNeXtBlock,
            graft_residual,
            family="convnext",
            stage_pattern=r"stages[._](\d+)",
            default="last",
            applies=lambda b, m: isinstance(b.shortcut, nn.Identity),
        )
        for t in efficientnet_block_types():
            register_block(
                t,
                graft_residual,
                family="efficientnet",
                stage_pattern=r"blocks[._](\d+)",
                default="last",
                applies=_has_skip,
            )
        register_block(
            vision_transformer.Block,
            graft_vit,
            family="vit",
            stage_pattern=r"blocks[._](\d+)",
            applies=_vit_reaches_output,
        )
        register_block(
            swin_transformer.SwinTransformerBlock,
            graft_swin,
            family="swin",
            stage_pattern=r"layers[._](\d+)",
        )
        register_block(
            efficientvit_mit.EfficientVitBlock,
            graft_mit,
            family="efficientvit_mit",
            stage_pattern=r"stages[._](\d+)",
        )
        register_block(
            efficientvit_msra.EfficientVitBlock,
            graft_msra,
            family="efficientvit_msra",
            stage_pattern=r"stages[._](\d+)",
        )
        _BUILTINS_FOR.add("timm")
    if "torchvision" not in _BUILTINS_FOR and importlib.util.find_spec("torchvision") is not None:
        from torchvision.models import densenet as tv_densenet
        from torchvision.models import resnet as tv_resnet

        for t in (tv_resnet.BasicBlock, tv_resnet.Bottleneck):
            register_block(t, graft_resnet, **_RESNET)
        _register_dense(tv_densenet._DenseBlock, DenseBlockMXA)
        _BUILTINS_FOR.add("torchvision")
    if "torchxrayvision" not in _BUILTINS_FOR and "torchxrayvision.models" in sys.modules:
        xrv_models = sys.modules["torchxrayvision.models"]
        _register_dense(xrv_models._DenseBlock, SeqDenseBlockMXA)
        _BUILTINS_FOR.add("torchxrayvision")
