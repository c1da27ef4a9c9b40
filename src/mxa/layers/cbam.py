"""CBAM: channel attention then spatial attention (Woo et al. 2018; the MXA paper's Appendix D)."""

from __future__ import annotations

import torch
from timm.layers.cbam import ChannelAttn
from torch import nn

from ._checks import check_nchw

__all__ = ["CBAM", "SpatialAttention"]


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv_k([max_c(x), mean_c(x)]))``.

    Written here rather than reusing timm's ``SpatialAttn``: that one puts a BatchNorm after the conv,
    which is not the paper's formula.

    Shapes: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"spatial kernel_size must be odd to keep the map size, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 1, H, W) spatial attention map in (0, 1)."""
        desc = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(desc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module, channel first, then spatial.

    Channel attention is ``sigmoid(MLP(GAP(x)) + MLP(GMP(x)))`` with one shared bias-free MLP
    (C -> C/reduction -> C, ReLU): timm's ``ChannelAttn`` computes exactly this and is reused.
    Spatial attention is :class:`SpatialAttention`.

    Args:
        dim: channels C.
        reduction: MLP reduction ratio (hidden width ``max(1, round(C / reduction))``).
        spatial_kernel: odd kernel size of the spatial attention conv.

    Shapes: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, dim: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.dim = dim
        self.channel = ChannelAttn(dim, rd_ratio=1.0 / reduction, mlp_bias=False)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim)
        return self.spatial(self.channel(x))
