"""MXA on any backbone: graft :class:`MXABlock` s into timm, torchvision and torchxrayvision models.

:func:`add_mxa` walks a model, finds the blocks it knows (a registry of block type -> insertion rule) and
puts an MXA block in parallel with each selected block's residual branch or attention, in place:

======================  =====================================================  ==================
family                  where the MXA block goes (``stream`` = what it reads)  default ``where``
======================  =====================================================  ==================
resnet (timm, tv, xrv)  ``act(branch(x) + s + mxa(s))``, ``s`` the shortcut    last block / stage
densenet (timm, xrv)    ``cat(x + mxa(x), new features)`` per dense block      every dense block
convnext                ``x + branch(x) + mxa(x)``                             last block / stage
efficientnet/mobilenet  ``x + branch(x) + mxa(x)`` (blocks with a skip only)   last block / stage
vit / deit              ``attn(n) + mxa(n)`` on the patch-token grid of n      every block
swin                    ``attn(n) + mxa(n)`` on the whole (B, H, W, C) map     every block
efficientvit_mit (B)    ``x + context(x) + mxa(x)`` (the LiteMLA module)       every block
efficientvit_msra       ``x + attn(x) + mxa(x)`` (the local window attention)  every block
======================  =====================================================  ==================

``n`` is the attention's own (normalised) input. DenseNet has no residual sum: its concatenation passes the
block input through unchanged, so that identity part is where ``mxa(x)`` joins (the dense layers of the
block do not see it, the next transition does), rather than after the transition, which would put MXA in
series, not in parallel.

Every rule keeps the original module names (a block's class is swapped for a subclass of it, or its
shortcut for a module that holds the same children) and adds only ``.mxa.`` keys; with MXA's zero-init
``scale`` the grafted model computes exactly what the original does until the first update.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mxa.layers.mxa_block import MXABlock
from mxa.models.hooks import forward_with_rois, has_rois, mxa_blocks

__all__ = [
    "BlockRule",
    "add_mxa",
    "forward_with_rois",
    "known_blocks",
    "mxa_blocks",
    "register_block",
]

log = logging.getLogger(__name__)

Where = int | str | Sequence[int | str] | None


@dataclass(frozen=True)
class BlockRule:
    """How to graft MXA into one block type.

    Attributes:
        block_type: the block class (subclasses match too, the nearest registered base wins).
        family: the family name shown in errors and docs (``resnet``, ``vit``...).
        graft: ``graft(block, mxa_cfg, model) -> MXABlock`` installs the block in place and returns it.
        stage_pattern: regex whose first group is the stage number in the block's qualified name
            (``layer(\\d+)``); blocks of one stage share it.
        stage_base: the number of the first stage in those names (1 for ``layer1``): ``where=0`` is it.
        default: ``"all"`` (every block) or ``"last"`` (the last block of each stage) when ``where=None``.
        applies: ``applies(block, model) -> bool``; False for blocks where MXA cannot work (no residual
            path, or an output nothing reads).
        mxa_defaults: :class:`MXABlock` arguments of this family that the caller's ``mxa_cfg`` overrides.
    """

    block_type: type
    family: str
    graft: Callable[[nn.Module, dict[str, Any], nn.Module], MXABlock]
    stage_pattern: str = r"(\d+)"
    stage_base: int = 0
    default: str = "all"
    applies: Callable[[nn.Module, nn.Module], bool] = lambda block, model: True
    mxa_defaults: tuple[tuple[str, Any], ...] = ()


_RULES: dict[type, BlockRule] = {}
_BUILTINS_FOR: set[str] = set()


def register_block(
    block_type: type,
    graft: Callable[[nn.Module, dict[str, Any], nn.Module], MXABlock] | str,
    *,
    family: str,
    stage_pattern: str = r"(\d+)",
    stage_base: int = 0,
    default: str = "all",
    applies: Callable[[nn.Module, nn.Module], bool] | None = None,
    mxa_defaults: dict[str, Any] | None = None,
) -> None:
    """Teach :func:`add_mxa` a block type.

    Args:
        block_type: your block class.
        graft: ``"residual"`` for a block whose output is ``x + branch(x)`` with an input and output of the
            same (B, C, H, W) shape: MXA is added as ``block(x) + mxa(x)``, ``C`` being the in-channels
            of the block's first ``Conv2d``. Or your own ``graft(block, mxa_cfg, model) -> MXABlock`` that
            installs the block as ``<module>.mxa`` and makes the block use it (see this module's rules).
        family: a name for messages.
        stage_pattern: regex with one group capturing the stage number in a block's qualified name.
        stage_base: the number of the first stage in those names.
        default: ``"all"`` or ``"last"``: the blocks ``where=None`` selects.
        applies: ``applies(block, model) -> bool``, excluding blocks that cannot take MXA.
        mxa_defaults: this family's :class:`MXABlock` arguments (the caller's ``mxa_cfg`` wins).
    """
    if default not in ("all", "last"):
        raise ValueError(f"default must be 'all' or 'last', got {default!r}")
    if isinstance(graft, str):
        if graft != "residual":
            raise ValueError(f"graft must be 'residual' or a function, got {graft!r}")
        graft = _graft_residual
    re.compile(stage_pattern)
    _RULES[block_type] = BlockRule(
        block_type,
        family,
        graft,
        stage_pattern,
        stage_base,
        default,
        applies or (lambda block, model: True),
        tuple(sorted((mxa_defaults or {}).items())),
    )


# --- class swapping -------------------------------------------------------------------------------------
_SWAPPED: dict[tuple[type, type], type] = {}


def _swap_class(module: nn.Module, mixin: type) -> None:
    """Make ``module`` an instance of ``mixin + its class`` (same parameters and buffers, new forward)."""
    cls = type(module)
    key = (mixin, cls)
    if key not in _SWAPPED:
        name = f"{mixin.__name__.lstrip('_')}{cls.__name__}"
        new = type(name, (mixin, cls), {"__module__": __name__})
        new.__qualname__ = name
        globals()[name] = new  # so pickle finds the class (in a process that grafted the same type)
        _SWAPPED[key] = new
    module.__class__ = _SWAPPED[key]


class _Grafted:
    """Marks a module that holds a grafted ``mxa``."""

    mxa: MXABlock


class _ResidualMXA(_Grafted):
    """``block(x) + mxa(x)`` for a block ``x + branch(x)`` of unchanged shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.mxa(x)  # type: ignore[misc]


class _ChannelsLastAttnMXA(_Grafted):
    """Swin: the attention of the whole (B, H, W, C) map (its windows re-assembled) plus MXA on that map."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        out = super()._attn(x)  # type: ignore[misc]
        return out + self.mxa(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class _TokenAttnMXA(_Grafted):
    """ViT: ``attn(x) + mxa(x)`` on the patch tokens laid out as their (H, W) grid; prefix tokens get 0."""

    mxa_prefix: int
    mxa_grid: tuple[int, int]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = super().forward(x, *args, **kwargs)  # type: ignore[misc]
        return out + _tokens_mxa(self.mxa, x, self.mxa_prefix, self.mxa_grid)


def _tokens_mxa(mxa: MXABlock, x: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> (B, N, C): MXA of the patch-token grid, zeros for the ``prefix`` tokens."""
    b, n, c = x.shape
    h, w = _token_grid(n - prefix, grid)
    patches = x[:, prefix:].transpose(1, 2).reshape(b, c, h, w)
    y = mxa(patches).flatten(2).transpose(1, 2)
    return F.pad(y, (0, 0, prefix, 0))


def _token_grid(n: int, grid: tuple[int, int]) -> tuple[int, int]:
    if grid[0] * grid[1] == n:
        return grid
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(
            f"{n} patch tokens do not form the {grid[0]}x{grid[1]} grid MXA was grafted for, nor a square; "
            "graft MXA after set_input_size() or use square images"
        )
    return side, side


class _DenseBlockMXA(_Grafted):
    """timm DenseBlock (a ModuleDict of layers that read the list of features): identity part + mxa(x)."""

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for name, layer in self.items():  # type: ignore[attr-defined]
            if name != "mxa":
                features.append(layer(features))
        features[0] = init_features + self.mxa(init_features)
        return torch.cat(features, 1)


class _SeqDenseBlockMXA(_Grafted):
    """torchvision/torchxrayvision ``_DenseBlock`` (each layer concatenates its input): same rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name, layer in self.named_children():  # type: ignore[attr-defined]
            if name != "mxa":
                out = layer(out)
        c = x.shape[1]
        return torch.cat([out[:, :c] + self.mxa(x), out[:, c:]], 1)


class MXAShortcut(nn.Module):
    """A ResNet shortcut ``s = downsample(x)`` (or ``x``) that returns ``s + mxa(s)``.

    It holds the original downsample's children under their own names (``downsample.0.weight`` stays),
    so the block's ``out += shortcut`` becomes ``branch + s + mxa(s)``, before the block's last activation.

    Shapes: (B, C_in, H, W) -> (B, C_out, H', W')
    """

    def __init__(self, downsample: nn.Module | None, dim: int, mxa_cfg: dict[str, Any]) -> None:
        super().__init__()
        if downsample is not None:
            if not isinstance(downsample, nn.Sequential):
                raise ValueError(
                    f"cannot graft MXA beside a {type(downsample).__name__} shortcut (expected None or "
                    "nn.Sequential); select other blocks with `where` or register your block type"
                )
            for name, child in downsample.named_children():
                self.add_module(name, child)
        self.mxa = MXABlock(dim, **mxa_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, layer in self.named_children():
            if name != "mxa":
                x = layer(x)
        return x + self.mxa(x)


# --- graft functions ------------------------------------------------------------------------------------
def _new_mxa(module: nn.Module, dim: int, mxa_cfg: dict[str, Any]) -> MXABlock:
    ref = next(module.parameters(), None)
    block = MXABlock(dim, **mxa_cfg)
    if ref is not None:
        block.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    module.mxa = block
    return block


def _first_conv_in(block: nn.Module) -> int:
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot find the channels of {type(block).__name__}: it has no Conv2d")


def _graft_residual(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    mxa = _new_mxa(block, _first_conv_in(block), cfg)
    _swap_class(block, _ResidualMXA)
    return mxa


def _graft_resnet(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    # The stream the block adds to: the shortcut's output, with the block's output channels.
    norm = getattr(block, "bn3", None) or block.bn2  # the branch's last norm (Bottleneck, BasicBlock)
    dim = _bn_dim(norm)
    ref = next(block.parameters())
    shortcut = MXAShortcut(block.downsample, dim, cfg).to(device=ref.device, dtype=ref.dtype)
    block.downsample = shortcut
    return shortcut.mxa


def _bn_dim(norm: nn.Module) -> int:
    if isinstance(norm, nn.GroupNorm):
        return norm.num_channels
    if isinstance(norm, nn.LayerNorm):
        return int(norm.normalized_shape[0])
    return norm.num_features


def _graft_dense(block: nn.Module, cfg: dict[str, Any], model: nn.Module, mixin: type) -> MXABlock:
    first = next(iter(block.children()))
    dim = _first_conv_in(first)
    mxa = _new_mxa(block, dim, cfg)
    _swap_class(block, mixin)
    return mxa


def _graft_vit(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    attn = block.attn
    dim = (
        block.norm1.normalized_shape[0] if hasattr(block.norm1, "normalized_shape") else attn.qkv.in_features
    )
    # The ViT itself may sit inside a wrapper (timm's features_only FeatureGetterNet).
    vit = next((m for m in model.modules() if hasattr(getattr(m, "patch_embed", None), "grid_size")), None)
    if vit is None:
        raise ValueError("cannot find the patch grid: a ViT block needs model.patch_embed.grid_size")
    grid = vit.patch_embed.grid_size
    mxa = _new_mxa(attn, int(dim), cfg)
    attn.mxa_prefix = int(getattr(vit, "num_prefix_tokens", 0))
    attn.mxa_grid = (int(grid[0]), int(grid[1]))
    _swap_class(attn, _TokenAttnMXA)
    return mxa


def _graft_swin(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    mxa = _new_mxa(block, int(block.dim), cfg)
    _swap_class(block, _ChannelsLastAttnMXA)
    return mxa


def _graft_mit(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    ctx = block.context_module
    mxa = _new_mxa(ctx, _first_conv_in(ctx.main), cfg)
    _swap_class(ctx, _ResidualMXA)
    return mxa


def _graft_msra(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    from mxa.models.efficientvit_ml import FreshBiasAttention, MXAWindowAttention

    m = block.mixer.m
    if not isinstance(m, MXAWindowAttention):
        m.__class__ = MXAWindowAttention  # same module tree, forward adds ``mxa`` when set
        m.attn.__class__ = FreshBiasAttention  # no stale eval-mode bias cache (timm PR #2795)
    elif m.mxa is not None:
        raise ValueError("this EfficientViT block already has an MXA block")
    return _new_mxa(m, int(m.dim), cfg)


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


def _register_builtins() -> None:
    """Register the rules of the libraries that are imported (never imports torchxrayvision itself)."""
    if "timm" not in _BUILTINS_FOR:
        from timm.models import _efficientnet_blocks as eb
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
            register_block(t, _graft_resnet, **_RESNET)
        register_block(
            densenet.DenseBlock,
            partial(_graft_dense, mixin=_DenseBlockMXA),
            family="densenet",
            stage_pattern=r"denseblock(\d+)",
            stage_base=1,
        )
        register_block(
            convnext.ConvNeXtBlock,
            _graft_residual,
            family="convnext",
            stage_pattern=r"stages[._](\d+)",
            default="last",
            applies=lambda b, m: isinstance(b.shortcut, nn.Identity),
        )
        for t in (eb.InvertedResidual, eb.DepthwiseSeparableConv, eb.UniversalInvertedResidual):
            register_block(
                t,
                _graft_residual,
                family="efficientnet",
                stage_pattern=r"blocks[._](\d+)",
                default="last",
                applies=_has_skip,
            )
        register_block(
            vision_transformer.Block,
            _graft_vit,
            family="vit",
            stage_pattern=r"blocks[._](\d+)",
            applies=_vit_reaches_output,
        )
        register_block(
            swin_transformer.SwinTransformerBlock,
            _graft_swin,
            family="swin",
            stage_pattern=r"layers[._](\d+)",
        )
        register_block(
            efficientvit_mit.EfficientVitBlock,
            _graft_mit,
            family="efficientvit_mit",
            stage_pattern=r"stages[._](\d+)",
        )
        register_block(
            efficientvit_msra.EfficientVitBlock,
            _graft_msra,
            family="efficientvit_msra",
            stage_pattern=r"stages[._](\d+)",
        )
        _BUILTINS_FOR.add("timm")
    if "torchvision" not in _BUILTINS_FOR and importlib.util.find_spec("torchvision") is not None:
        from torchvision.models import densenet as tv_densenet
        from torchvision.models import resnet as tv_resnet

        for t in (tv_resnet.BasicBlock, tv_resnet.Bottleneck):
            register_block(t, _graft_resnet, **_RESNET)
        register_block(
            tv_densenet._DenseBlock,
            partial(_graft_dense, mixin=_DenseBlockMXA),
            family="densenet",
            stage_pattern=r"denseblock(\d+)",
            stage_base=1,
        )
        _BUILTINS_FOR.add("torchvision")
    if "torchxrayvision" not in _BUILTINS_FOR and "torchxrayvision.models" in sys.modules:
        xrv_models = sys.modules["torchxrayvision.models"]
        register_block(
            xrv_models._DenseBlock,
            partial(_graft_dense, mixin=_SeqDenseBlockMXA),
            family="densenet",
            stage_pattern=r"denseblock(\d+)",
            stage_base=1,
        )
        _BUILTINS_FOR.add("torchxrayvision")


def known_blocks() -> dict[str, list[str]]:
    """``{family: [block types]}`` that :func:`add_mxa` knows (those of the imported libraries)."""
    _register_builtins()
    out: dict[str, list[str]] = {}
    for t, rule in _RULES.items():
        out.setdefault(rule.family, []).append(f"{t.__module__}.{t.__qualname__}")
    return out


def _rule_for(module: nn.Module) -> BlockRule | None:
    for t in type(module).__mro__:  # the nearest registered base class wins
        if t in _RULES:
            return _RULES[t]
    return None


@dataclass
class _Site:
    name: str
    module: nn.Module
    rule: BlockRule
    stage: int
    ok: bool


def _find_sites(model: nn.Module) -> list[_Site]:
    sites: list[_Site] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue  # a block inside a known block (MIT's ResidualBlocks...) belongs to its rule
        rule = _rule_for(m)
        if rule is None:
            continue
        if isinstance(m, _Grafted) or has_rois(m):
            raise ValueError(f"{name or type(model).__name__} already has an MXA block: add_mxa grafts once")
        inside.append(name)
        match = re.search(rule.stage_pattern, name)
        stage = int(match.group(1)) - rule.stage_base if match else 0
        sites.append(_Site(name, m, rule, stage, bool(rule.applies(m, model))))
    return sites


def _select(sites: list[_Site], where: Where) -> list[_Site]:
    ok = [s for s in sites if s.ok]
    if where is None or where == "last" or (isinstance(where, str) and where == "all"):
        mode = where
        chosen = []
        for s in ok:
            rule_mode = mode or s.rule.default
            if rule_mode == "all" or s is _last_of_stage(ok, s.stage):
                chosen.append(s)
        return chosen
    items = [where] if isinstance(where, int | str) else list(where)
    chosen_ids: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(f"where items must be stage indices or name patterns, got {item!r}")
        if isinstance(item, int):
            in_stage = [s for s in ok if s.stage == item]
            if not in_stage:
                raise ValueError(
                    f"where={item}: no stage {item} with blocks that take MXA; stages: {_describe(ok)}"
                )
            for s in in_stage:
                if s.rule.default == "all" or s is _last_of_stage(ok, item):
                    chosen_ids.add(id(s))
        else:
            hits = [s for s in ok if fnmatchcase(s.name, item)]
            if not hits:
                raise ValueError(f"where={item!r} matches no block that takes MXA; blocks: {_describe(ok)}")
            chosen_ids.update(id(s) for s in hits)
    return [s for s in ok if id(s) in chosen_ids]


def _last_of_stage(sites: list[_Site], stage: int) -> _Site:
    return [s for s in sites if s.stage == stage][-1]


def _describe(sites: list[_Site]) -> str:
    by_stage: dict[int, list[str]] = {}
    for s in sites:
        by_stage.setdefault(s.stage, []).append(s.name)
    return "; ".join(f"{k}: {v[0]} .. {v[-1]} ({len(v)})" for k, v in sorted(by_stage.items()))


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
    """
    _register_builtins()
    sites = _find_sites(model)
    if not sites:
        known = "; ".join(
            f"{fam}: {', '.join(t.rsplit('.', 1)[-1] for t in ts)}" for fam, ts in known_blocks().items()
        )
        raise ValueError(
            f"add_mxa knows no block of {type(model).__name__}. It knows {known}. Point it at your block "
            "type with mxa.register_block(MyBlock, 'residual', family='mine') for a block x + f(x) of "
            "unchanged shape, or with your own graft function (docs: 'MXA in your own model')"
        )
    chosen = _select(sites, where)
    if not chosen:
        raise ValueError(f"where={where!r} selects no block that takes MXA; blocks: {_describe(sites)}")
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
