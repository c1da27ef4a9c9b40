"""The Medical X-ray Attention block: CBAM applied to a dynamically chosen region of interest."""

from __future__ import annotations

import torch
from torch import nn

from mxa.layers.cbam import CBAM
from mxa.layers.label_roi import PEAK_FRACTION, LabelROIPool
from mxa.layers.roi import DynamicROIPool, _paste, resolve_crop_method
from mxa.layers.roi_classifier import ROIClassifier, _as_dtype

# torch.fx.wrap patches the module that calls it: the paste and the dtype match stay one leaf each when an
# MXABlock is traced
torch.fx.wrap("_paste")
torch.fx.wrap("_as_dtype")
torch.fx.wrap("resolve_crop_method")

__all__ = ["MXABlock"]


class MXABlock(nn.Module):
    """``scale * CBAM(ROI pool(x))``, added in parallel with an attention: ``x + attn(x) + mxa(x)``.

    The ROI pool is the paper's :class:`DynamicROIPool` (one box per image, ``rois=0``) or, with ``rois=R``,
    a :class:`LabelROIPool`: the boxes of the R labels whose score maps peak highest, each refined by CBAM
    where it lies and added weighted by its label's probability (docs/mxa-block.md). ``scale`` (per channel)
    starts at ``init_scale`` = 0, so adding the block leaves a network's function unchanged at
    initialisation.

    Args:
        dim: channels C.
        reduction: CBAM channel-MLP reduction ratio.
        spatial_kernel: CBAM spatial conv kernel size.
        min_size: smallest ROI side, as a fraction of the map side.
        init_size: ROI side at initialisation.
        init_scale: initial value of the output scale.
        mode: ``"zoom"`` (the paper's: the crop resized to the whole map) or ``"paste"`` (the gated crop put
            back where the box is, so the output stays aligned with ``x``; docs/localization.md).
        crop_size: the crop's side in ``"paste"`` mode (default the map's size).
        saliency_temperature: of the box head's soft-argmax.
        crop_method: ``auto``, ``grid_sample`` or ``separable`` (see :func:`mxa.roi_crop`).
        box_size: ``head`` (the paper's) or ``saliency`` (the spread of the saliency map; see
            :class:`DynamicROIPool`).
        roi_classes: > 0 adds ``roi_cls``, an :class:`ROIClassifier` of that many labels on the features
            inside and outside the box, run in training only (``mxa train --roi-mil``; its logits are read
            with a forward hook) and, for its label boxes, where ``emit_label_boxes`` is set
            (:func:`mxa.models.hooks.capture_label_boxes`).
        class_boxes: the ROI classifier gives every label its own box (``mxa train --mxa-class-boxes``).
        rois: 0 for the paper's single box; R > 0 for R ROIs per image from ``roi_classes`` label maps
            (``mxa train --mxa-rois``). The ROIs are refined in place at the map's resolution, so ``mode``,
            ``crop_size``, ``crop_method``, the box head's settings and ``class_boxes`` do not apply.
        roi_skip: labels a label-ROI block never crops (No Finding, which has no place).
        roi_fraction: where a label ROI's edges lie on its map, from the map's mean (0) to its peak (1)
            (``mxa train --mxa-roi-fraction``; :class:`LabelROIPool`'s ``fraction``).
        box_grad: the share of the gradient through the single box's head, and through the ROI classifier's
            per-label boxes, that reaches the features, in [0, 1] (``mxa train --mxa-box-grad``): at 0 no
            gradient through the boxes (of the task's loss, the ROI objective or the box losses) reaches the
            network before the block (a stop-gradient); the heads still learn from all of them.

    Attributes:
        roi: the :class:`DynamicROIPool` (``roi.predict_boxes(x)`` gives the boxes) or :class:`LabelROIPool`.
        roi_cls: the :class:`ROIClassifier` of a single-box block, or None.

    Shapes: (B, C, H, W) -> (B, C, H, W), in x's dtype.

    Examples:
        >>> import torch, mxa
        >>> block = mxa.MXABlock(64)
        >>> x = torch.randn(2, 64, 14, 14)
        >>> y = block(x)
        >>> y.shape, bool(y.abs().max() == 0)  # zero at initialisation
        (torch.Size([2, 64, 14, 14]), True)
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
        box_size: str = "head",
        roi_classes: int = 0,
        class_boxes: bool = False,
        rois: int = 0,
        roi_skip: tuple[int, ...] = (),
        roi_fraction: float = PEAK_FRACTION,
        box_grad: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in ("zoom", "paste"):
            raise ValueError(f"mode must be 'zoom' or 'paste', got {mode!r}")
        if crop_size is not None and (mode != "paste" or crop_size < 1):
            raise ValueError(
                "crop_size is a positive int, and only for mode='paste' (zoom crops to the map size)"
            )
        if roi_classes < 0:
            raise ValueError(f"roi_classes must be >= 0 (0 = none), got {roi_classes}")
        if class_boxes and not roi_classes:
            raise ValueError("class_boxes needs roi_classes > 0 (the labels to give boxes)")
        if rois and (not roi_classes or class_boxes or crop_size is not None):
            raise ValueError(
                f"rois={rois} takes its ROIs from roi_classes > 0 label maps (got {roi_classes}) and crops "
                "at the map's resolution: class_boxes and crop_size are for the single-box block (rois=0)"
            )
        if box_grad != 1.0 and rois:
            raise ValueError("box_grad is for the single box (rois=0): label ROIs carry no box gradient")
        if roi_fraction != PEAK_FRACTION and not rois:
            raise ValueError(f"roi_fraction ({roi_fraction}) places label-ROI box edges: it needs rois > 0")
        self.dim, self.mode, self.rois = dim, mode, int(rois)
        self.box_grad = float(box_grad)
        self.roi: DynamicROIPool | LabelROIPool
        self.roi_cls: ROIClassifier | None = None
        if rois:
            self.roi = LabelROIPool(dim, roi_classes, rois=rois, skip=tuple(roi_skip), fraction=roi_fraction)
        else:
            self.roi = DynamicROIPool(
                dim,
                min_size=min_size,
                init_size=init_size,
                output_size=crop_size,
                saliency_temperature=saliency_temperature,
                crop_method=crop_method,
                box_size=box_size,
                grad_scale=box_grad,
            )
            if roi_classes:
                self.roi_cls = ROIClassifier(
                    dim,
                    roi_classes,
                    class_boxes=class_boxes,
                    min_size=min_size,
                    box_grad=box_grad if class_boxes else 1.0,
                )
        self.emit_label_boxes = False  # set by capture_label_boxes: run the ROI classifier in eval too
        self.cbam = CBAM(dim, reduction=reduction, spatial_kernel=spatial_kernel)
        self.scale = nn.Parameter(torch.full((dim,), float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.roi, LabelROIPool):  # R ROIs, each refined where it lies, weighted by its label
            coverage, _, _, weights = self.roi(x)
            return self.cbam.forward_rois(x, *(_as_dtype(t, x) for t in (coverage, weights, self.scale)))
        pooled, boxes = self.roi(x)  # the paper's single box; the box head checks x once
        if self.roi_cls is not None and (self.training or self.emit_label_boxes):
            self.roi_cls(x, boxes)  # its output is the ROI objective's input, taken by a forward hook
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
        scale = self.scale.view(1, -1, 1, 1)
        out = gated * scale if torch.is_grad_enabled() else gated.mul_(scale.to(gated.dtype))
        result: torch.Tensor = out.to(x.dtype)
        return result

    def extra_repr(self) -> str:
        if self.rois:
            return f"rois={self.rois}"
        return f"mode={self.mode}" if self.mode != "zoom" else ""
