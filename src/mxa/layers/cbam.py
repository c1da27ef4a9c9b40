"""CBAM: channel attention then spatial attention (Woo et al. 2018; the MXA paper's Appendix D)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.cbam import ChannelAttn
from torch import nn

from mxa.layers._checks import check_nchw

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]


class ChannelAttention(ChannelAttn):
    """timm's ``ChannelAttn`` (same parameters and result) with its two MLP passes run as one.

    Shapes: (B, C, H, W) -> (B, C, H, W)

    Examples:
        >>> import torch
        >>> from mxa.layers import ChannelAttention
        >>> ChannelAttention(16, rd_ratio=1 / 4)(torch.randn(2, 16, 5, 5)).shape
        torch.Size([2, 16, 5, 5])
    """

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C): ``MLP(GAP(x)) + MLP(GMP(x))``."""
        return self.gate_logits_of(x.mean(dim=(2, 3)), x.amax(dim=(2, 3)))

    def gate_logits_of(self, mean: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        """``MLP(mean) + MLP(peak)`` of pooled features (..., C), the two MLP passes as one."""
        both = torch.stack([mean, peak])  # (2, ..., C); no batch size read off a shape (for export)
        hidden = self.act(F.linear(both, self.fc1.weight.flatten(1), self.fc1.bias))
        out = F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias)
        return out[0] + out[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x * self.gate(self.gate_logits(x))[:, :, None, None]
        return out


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv_k([max_c(x), mean_c(x)]))`` (timm's ``SpatialAttn`` adds a BatchNorm).

    Shapes: (B, C, H, W) -> (B, C, H, W)

    Examples:
        >>> import torch
        >>> from mxa.layers import SpatialAttention
        >>> SpatialAttention(7).gate(torch.randn(2, 16, 5, 5)).shape
        torch.Size([2, 1, 5, 5])
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
    """Convolutional Block Attention Module: :class:`ChannelAttention`, then :class:`SpatialAttention`.

    Args:
        dim: channels C.
        reduction: channel-MLP reduction ratio (hidden width ``max(1, round(C / reduction))``).
        spatial_kernel: odd kernel size of the spatial conv.

    Shapes: (B, C, H, W) -> (B, C, H, W)

    Examples:
        >>> import torch, mxa
        >>> mxa.CBAM(32)(torch.randn(2, 32, 7, 7)).shape
        torch.Size([2, 32, 7, 7])
    """

    def __init__(self, dim: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.dim = dim
        self.channel = ChannelAttention(dim, rd_ratio=1.0 / reduction, mlp_bias=False)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_nchw(x, self.dim)
        return self._gated(x, inplace=False)

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in place: multiplies ``x`` by both gates and returns it (bit-identical values).

        For inference on a tensor the caller owns (a fresh crop); under autograd the backward pass fails.

        Shapes: (B, C, H, W) -> the same tensor.
        """
        check_nchw(x, self.dim)
        return self._gated(x, inplace=True)

    def forward_rois(self, x: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        """CBAM of R regions of each image at the map's own resolution, zero outside each region.

        The same as cropping each region (cell-aligned) without resampling, gating the crop and putting it
        back: channel attention pools inside the region only (its mean weighted by ``coverage``, its maximum
        over the cells it touches), and the spatial convolution sees zeros outside (the crop's zero padding).

        Args:
            x: (B, C, H, W) feature map.
            coverage: (B, R, H, W) in [0, 1], the share of each cell inside each region (non-empty regions).

        Returns:
            (B, R, C, H, W).
        """
        m = coverage.unsqueeze(2)  # (B, R, 1, H, W)
        xr = x.unsqueeze(1)
        crop = xr * m  # (B, R, C, H, W): the crops, zero outside
        mean = crop.sum((3, 4)) / m.sum((3, 4))  # (B, R, C); every region covers part of a cell
        peak = torch.where(m > 0, xr, float("-inf")).amax((3, 4))  # every ROI covers a cell
        gated = crop * self.channel.gate(self.channel.gate_logits_of(mean, peak))[..., None, None]
        flat = gated.flatten(0, 1)  # (B * R, C, H, W)
        out: torch.Tensor = (flat * self.spatial.gate(flat)).view_as(gated)
        return out

    def _gated(self, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        # The one implementation of the gating, so forward and forward_ cannot drift apart.
        channel = self.channel.gate(self.channel.gate_logits(x))[:, :, None, None]
        x = x.mul_(channel) if inplace else x * channel
        spatial = self.spatial.gate(x)
        return x.mul_(spatial) if inplace else x * spatial
