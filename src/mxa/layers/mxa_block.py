"""The Medical X-ray Attention block: CBAM applied to a dynamically chosen region of interest."""

from __future__ import annotations

import torch
from torch import nn

from .cbam import CBAM
from .roi import DynamicROIPool

__all__ = ["MXABlock"]


class MXABlock(nn.Module):
    """``scale * CBAM(DynamicROIPool(x))``, meant to run in parallel with an attention layer.

    In a network it is added beside the attention: ``x + attn(x) + mxa(x)``. The learnable per-channel
    ``scale`` starts at ``init_scale`` (0 by default), so adding the block leaves a network's function
    unchanged at initialisation (the scale gets gradient from the first step; the rest follows once it
    is non-zero).

    Args:
        dim: channels C.
        reduction: CBAM channel-MLP reduction ratio.
        spatial_kernel: CBAM spatial conv kernel size.
        min_size: smallest ROI side, as a fraction of the map side.
        init_size: ROI side at initialisation.
        init_scale: initial value of the output scale.

    Attributes:
        roi: the :class:`DynamicROIPool`; ``roi.predict_boxes(x)`` or a forward hook on it gives the boxes.

    Under ``torch.no_grad``/``inference_mode`` the crop is gated in place (:meth:`CBAM.forward_`), with
    the same result bit for bit. ``torch.fx.symbolic_trace`` keeps the path of the grad mode it traced
    under (an in-place graph fails in backward), so trace with grad enabled for training. A non-finite box (the head's weights or ``x`` are NaN/inf) makes the
    output NaN for that image (see :class:`DynamicROIPool`), never an error.

    Shapes: (B, C, H, W) -> (B, C, H, W), in x's dtype.
    """

    def __init__(
        self,
        dim: int,
        reduction: int = 16,
        spatial_kernel: int = 7,
        min_size: float = 0.25,
        init_size: float = 0.95,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.roi = DynamicROIPool(dim, min_size=min_size, init_size=init_size)
        self.cbam = CBAM(dim, reduction=reduction, spatial_kernel=spatial_kernel)
        self.scale = nn.Parameter(torch.full((dim,), float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.roi(x)  # the box head checks x once
        scale = self.scale.view(1, -1, 1, 1)
        if torch.is_grad_enabled():
            out = self.cbam(pooled) * scale
        else:
            # no_grad/inference_mode: the crop is a fresh tensor of ours, so gate it in place (no new
            # feature maps). Decided on the grad mode alone, never on a tensor's requires_grad, so FX
            # tracing sees no tensor-dependent branch; a graph bakes in the mode it was traced under.
            out = self.cbam.forward_(pooled).mul_(scale.to(pooled.dtype))
        return out.to(x.dtype)
