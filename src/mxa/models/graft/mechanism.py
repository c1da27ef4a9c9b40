"""How MXA joins a block: class swaps that add ``+ mxa(x)`` to a forward, a shortcut module, and the
graft function of each block family (installs ``<module>.mxa`` and returns it)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mxa.layers.mxa_block import MXABlock

__all__ = [
    "Grafted",
    "MXAShortcut",
    "graft_dense",
    "graft_mit",
    "graft_msra",
    "graft_residual",
    "graft_resnet",
    "graft_swin",
    "graft_vit",
]


_SWAPPED: dict[tuple[type, type], type] = {}


def _swap_class(module: nn.Module, mixin: type) -> None:
    """Make ``module`` an instance of ``mixin + its class`` (same parameters and buffers, new forward)."""
    cls = type(module)
    key = (mixin, cls)
    if key not in _SWAPPED:
        name = f"{mixin.__name__}{cls.__name__}"
        new = type(name, (mixin, cls), {"__module__": __name__})
        new.__qualname__ = name
        globals()[name] = new  # so pickle finds the class (in a process that grafted the same type)
        _SWAPPED[key] = new
    module.__class__ = _SWAPPED[key]


class Grafted:
    """Marks a module that holds a grafted ``mxa``."""

    mxa: MXABlock


class ResidualMXA(Grafted):
    """``block(x) + mxa(x)`` for a block ``x + branch(x)`` of unchanged shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.mxa(x)  # type: ignore[misc]


class ChannelsLastAttnMXA(Grafted):
    """Swin: the attention of the whole (B, H, W, C) map (its windows re-assembled) plus MXA on that map."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        out = super()._attn(x)  # type: ignore[misc]
        return out + self.mxa(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class TokenAttnMXA(Grafted):
    """ViT: ``attn(x) + mxa(x)`` on the patch tokens laid out as their (H, W) grid; prefix tokens get 0."""

    mxa_prefix: int
    mxa_grid: tuple[int, int]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = super().forward(x, *args, **kwargs)  # type: ignore[misc]
        return out + _tokens_mxa(self.mxa, x, self.mxa_prefix, self.mxa_grid)


def _tokens_mxa(mxa: MXABlock, x: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> (B, N, C): MXA of the patch-token grid, zeros for the ``prefix`` tokens."""
    y = mxa(_patch_grid(x, prefix, grid)).flatten(2).transpose(1, 2)
    return F.pad(y, (0, 0, prefix, 0))


# An FX leaf: the grid is read from the token count at run time (a traced shape cannot be branched on).
@torch.fx.wrap
def _patch_grid(x: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, h, w): the patch tokens after ``prefix`` laid out as their grid."""
    b, n, c = x.shape
    h, w = _token_grid(n - prefix, grid)
    return x[:, prefix:].transpose(1, 2).reshape(b, c, h, w)


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


class DenseBlockMXA(Grafted):
    """timm DenseBlock (a ModuleDict of layers that read the list of features): identity part + mxa(x)."""

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for name, layer in self.items():  # type: ignore[attr-defined]
            if name != "mxa":
                features.append(layer(features))
        features[0] = init_features + self.mxa(init_features)
        return torch.cat(features, 1)


class SeqDenseBlockMXA(Grafted):
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


# --- graft functions, one per block family ---------------------------------------------------------
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


def graft_residual(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    mxa = _new_mxa(block, _first_conv_in(block), cfg)
    _swap_class(block, ResidualMXA)
    return mxa


def graft_resnet(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
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


def graft_dense(block: nn.Module, cfg: dict[str, Any], model: nn.Module, mixin: type) -> MXABlock:
    first = next(iter(block.children()))
    dim = _first_conv_in(first)
    mxa = _new_mxa(block, dim, cfg)
    _swap_class(block, mixin)
    return mxa


def graft_vit(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
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
    _swap_class(attn, TokenAttnMXA)
    return mxa


def graft_swin(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    mxa = _new_mxa(block, int(block.dim), cfg)
    _swap_class(block, ChannelsLastAttnMXA)
    return mxa


def graft_mit(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    ctx = block.context_module
    mxa = _new_mxa(ctx, _first_conv_in(ctx.main), cfg)
    _swap_class(ctx, ResidualMXA)
    return mxa


def graft_msra(block: nn.Module, cfg: dict[str, Any], model: nn.Module) -> MXABlock:
    """An EfficientViT-MSRA block: its ``LocalWindowAttention`` becomes an :class:`MXAWindowAttention` built
    with the MXA block (``attn(x) + mxa(x)``) and the attention's own weights: the one way an MXA block gets
    into an EfficientViT, ours (``efficientvit_ml_*``) or timm's."""
    from mxa.models.efficientvit_ml import MXAWindowAttention

    m = block.mixer.m
    if isinstance(m, MXAWindowAttention) and m.mxa is not None:
        raise ValueError("this EfficientViT block already has an MXA block")
    new = MXAWindowAttention.from_timm(m, cfg)
    missing, unexpected = new.load_state_dict(m.state_dict(), strict=False)
    if unexpected or any(not k.startswith("mxa.") for k in missing):  # a timm whose attention changed
        raise ValueError(
            f"cannot carry the attention's weights over: missing {missing}, unexpected {unexpected}"
        )
    ref = next(m.parameters())
    block.mixer.m = new.to(device=ref.device, dtype=ref.dtype).train(m.training)
    return new.mxa  # type: ignore[return-value]
