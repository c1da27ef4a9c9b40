"""CBAM: channel attention then spatial attention (Woo et al. 2018; the MXA paper's Appendix D)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.cbam import ChannelAttn
from torch import nn

from mxa.layers._checks import check_nchw
from mxa.layers.roi import compiled_cpu_inference
from mxa.layers.roi_classifier import _as_dtype

torch.fx.wrap("_as_dtype")  # a traced block compares no Proxy's dtype

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
        if self.fc2.bias is None:  # fc2 is linear: fc2(a) + fc2(b) = fc2(a + b), one pass
            out: torch.Tensor = F.linear(hidden.sum(0), self.fc2.weight.flatten(1))
            return out
        both = F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias)
        return both[0] + both[1]

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
        return torch.sigmoid(self.logits(desc))

    def logits(self, desc: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W) -> (N, 1, H, W): the convolution of the [max, mean] descriptor.

        Compiled for CPU inference (:func:`~mxa.layers.roi.compiled_cpu_inference`) it is the sum of the
        kernel times the zero-padded map's k x k windows, the same linear map (a stride-1, 'same', bias-free
        convolution, as built here): inductor fuses it with the descriptor's pooling instead of calling
        oneDNN for a 2 -> 1 channel convolution (benchmarks/NOTES.md).
        """
        if not compiled_cpu_inference(desc):
            out: torch.Tensor = self.conv(desc)
            return out
        k = self.conv.weight.shape[-1]
        windows = F.pad(desc, (k // 2,) * 4).unfold(2, k, 1).unfold(3, k, 1)  # (N, 2, H, W, k, k), a view
        return (windows * self.conv.weight[0, :, None, None]).sum((1, 4, 5)).unsqueeze(1)

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

    def forward_rois(
        self,
        x: torch.Tensor,
        coverage: torch.Tensor,
        weights: torch.Tensor,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted sum of CBAM of R regions of each image, each at the map's own resolution.

        Region r's CBAM is the same as cropping it (cell-aligned) without resampling, gating the crop and
        putting it back, zero outside: channel attention pools inside the region only (its mean weighted by
        ``coverage``, its maximum over the cells it touches), and the spatial convolution sees zeros outside
        (the crop's zero padding). The sum is computed without R refined maps: region r's output
        is ``x * g_r[c] * (coverage_r * s_r)[h, w]`` (channel gate g, spatial gate s), so the R regions add
        up as one (C, R) x (R, HW) product (docs/mxa-block.md; the per-region oracle is in the tests).

        Args:
            x: (B, C, H, W) feature map.
            coverage: (B, R, H, W) in [0, 1], the share of each cell inside each region (non-empty regions);
                a given, not learned: its gradient is not that of the regions' CBAM where it is 0.
            weights: (B, R) each region's weight.
            scale: (C,) a per-channel factor of the result, or None.

        Returns:
            (B, C, H, W): ``sum_r weights[:, r] * CBAM_r(x) * scale``.
        """
        xf, m = x.flatten(2), coverage.flatten(2)  # (B, C, P), (B, R, P)
        mean = torch.matmul(m, xf.transpose(1, 2)) / m.sum(2, keepdim=True)  # (B, R, C); no empty region
        xr, mr = xf.unsqueeze(1), m.unsqueeze(2)  # (B, 1, C, P), (B, R, 1, P)
        outside = _as_dtype(torch.where(mr > 0, 0.0, float("-inf")), xf)  # 0 inside, -inf outside
        peak = (xr + outside).amax(3)  # (B, R, C): over the cells each region touches
        gate = self.channel.gate(self.channel.gate_logits_of(mean, peak))  # (B, R, C)
        gated = xr * gate.unsqueeze(3)  # (B, R, C, P): x times each region's channel gate
        # the spatial descriptor of the gated crop, zero outside: coverage >= 0 commutes with max and mean
        desc = torch.cat([gated.amax(2, keepdim=True), gated.mean(2, keepdim=True)], 2) * mr  # (B, R, 2, P)
        spatial = torch.sigmoid(
            self.spatial.logits(desc.view(-1, 2, x.shape[2], x.shape[3]))
        )  # (B * R, 1, H, W)
        where = spatial.view_as(m) * m * weights.unsqueeze(2)  # (B, R, P)
        channel = gate if scale is None else gate * scale
        out: torch.Tensor = torch.matmul(channel.transpose(1, 2), where).view_as(x) * x
        return out

    def _gated(self, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        # The one implementation of the gating, so forward and forward_ cannot drift apart.
        channel = self.channel.gate(self.channel.gate_logits(x))[:, :, None, None]
        x = x.mul_(channel) if inplace else x * channel
        spatial = self.spatial.gate(x)
        return x.mul_(spatial) if inplace else x * spatial
