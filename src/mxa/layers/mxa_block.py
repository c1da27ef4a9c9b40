"""The Medical X-ray Attention block: CBAM applied to a dynamically chosen region of interest."""

from __future__ import annotations

import torch
from torch import nn

from mxa.layers.cbam import CBAM
from mxa.layers.roi import DynamicROIPool, _paste, resolve_crop_method

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
        mode: ``"zoom"`` (the paper's; the crop is resized to the whole map, so the block's output at a
            position comes from the box's corresponding relative position) or ``"paste"`` (the gated crop is
            put back where the box is and the block adds nothing outside it, so its output is spatially
            aligned with ``x`` for any box; see docs/localization.md).
        crop_size: the crop's side in ``"paste"`` mode (default: the map's size); a smaller crop makes
            CBAM cheaper.
        saliency_temperature: of the box head's soft-argmax (:class:`DynamicROIPool`).
        crop_method: ``auto``, ``grid_sample`` or ``separable``: how the box is cropped (and pasted); see
            :func:`mxa.roi_crop`.

    Attributes:
        roi: the :class:`DynamicROIPool`; ``roi.predict_boxes(x)`` or a forward hook on it gives the boxes.

    Under ``no_grad``/``inference_mode`` the crop is gated in place, bit-identical; a non-finite box makes
    that image's output NaN, never an error.

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
        mode: str = "zoom",
        crop_size: int | None = None,
        saliency_temperature: float = 1.0,
        crop_method: str = "auto",
    ) -> None:
        super().__init__()
        if mode not in ("zoom", "paste"):
            raise ValueError(f"mode must be 'zoom' or 'paste', got {mode!r}")
        if crop_size is not None and (mode != "paste" or crop_size < 1):
            raise ValueError(
                "crop_size is a positive int, and only for mode='paste' (zoom crops to the map size)"
            )
        self.dim, self.mode = dim, mode
        self.roi = DynamicROIPool(
            dim,
            min_size=min_size,
            init_size=init_size,
            output_size=crop_size,
            saliency_temperature=saliency_temperature,
            crop_method=crop_method,
        )
        self.cbam = CBAM(dim, reduction=reduction, spatial_kernel=spatial_kernel)
        self.scale = nn.Parameter(torch.full((dim,), float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, boxes = self.roi(x)  # the box head checks x once
        scale = self.scale.view(1, -1, 1, 1)
        if torch.is_grad_enabled():
            gated = self.cbam(pooled)
        else:
            # no_grad/inference_mode: the crop is a fresh tensor of ours, so gate it in place (no new
            # feature maps). Decided on the grad mode alone, never on a tensor's requires_grad, so FX
            # tracing sees no tensor-dependent branch; a graph bakes in the mode it was traced under.
            gated = self.cbam.forward_(pooled)
        if self.mode == "paste":
            method = resolve_crop_method(self.roi.crop_method, x.device)
            gated = _paste(gated, boxes.nan_to_num(nan=0.5), (x.shape[-2], x.shape[-1]), method)
        out = gated * scale if torch.is_grad_enabled() else gated.mul_(scale.to(gated.dtype))
        result: torch.Tensor = out.to(x.dtype)
        return result

    def extra_repr(self) -> str:
        return f"mode={self.mode}" if self.mode != "zoom" else ""
