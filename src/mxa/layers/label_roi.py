"""ROIs from label score maps: the crop follows the findings (docs/mxa-block.md, docs/localization.md).

The ROI classifier (:class:`~mxa.layers.ROIClassifier`, per-label boxes) scores every position of the map
for K labels and is trained by the ROI objective from image labels alone. :class:`LabelROIPool` keeps the
R labels whose maps peak highest and reads each one's box off its map with :func:`peak_boxes`: the bounding
box of where the map lies above a fraction of its height over the map's mean, found on a bilinear
upsampling so that box edges fall between cells. The box is as large as the map's peak, not as the spread of
the whole map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mxa.layers._checks import check_nchw
from mxa.layers.roi import compiled_cpu_inference, outside_autocast
from mxa.layers.roi_classifier import ROIClassifier

__all__ = ["PEAK_FRACTION", "PRIOR", "LabelROIPool", "box_coverage", "peak_boxes"]

#: Initial probability of every position of a label map (the bias of the ROI classifier of a label-ROI pool).
PRIOR = 0.01
#: Where a label-ROI box's edges lie: at this fraction of the way from the map's mean up to its peak.
#: Chosen on a development run, not on the study's data (docs/localization.md): a map is the finding
#: blurred by the features' reach, so half maximum oversizes findings smaller than that reach.
PEAK_FRACTION = 0.7


def peak_boxes(maps: torch.Tensor, refine: int = 4, fraction: float = 0.5) -> torch.Tensor:
    """Box of each map's peak region: the bounding box of where it exceeds ``mean + fraction (max - mean)``.

    The region is found on a ``refine``-times bilinear upsampling of each map (``align_corners=False``), so an
    edge lands to ``1 / (refine * W)`` of the map, between the cells where the map crosses the threshold. The
    peak is always inside, so every box is non-empty; ``fraction`` 0.5 is the half maximum.

    Args:
        maps: (B, N, H, W) score maps (any real values).
        refine: upsampling factor of the map before thresholding (>= 1).
        fraction: of the way from each map's mean to its maximum, in [0, 1).

    Returns:
        (B, N, 4) normalized xyxy boxes, not differentiable (a read-out of the maps).

    Examples:
        >>> import torch
        >>> from mxa.layers import peak_boxes
        >>> m = torch.zeros(1, 1, 8, 8)
        >>> m[0, 0, 2:4, 4:8] = 1.0  # a flat 2 x 4 plateau: rows 2-3, columns 4-7
        >>> peak_boxes(m, refine=1)
        tensor([[[0.5000, 0.2500, 1.0000, 0.5000]]])
    """
    maps = maps.detach()
    fine = maps if refine == 1 else F.interpolate(maps, scale_factor=refine, mode="bilinear")
    flat = fine.flatten(2)
    mean, peak = flat.mean(2), flat.amax(2)
    threshold = _threshold(mean, peak, fraction)  # (B, N)
    above = fine >= threshold[..., None, None]  # (B, N, rH, rW)
    # rows, then columns, that hold part of the region; both axes stacked: (B, N, 2, side) when square
    spans = [above.any(3), above.any(2)]
    lo = torch.stack([s.to(maps.dtype).argmax(-1) for s in spans], -1)  # first row / column: (B, N, 2)
    hi = torch.stack([s.flip(-1).to(maps.dtype).argmax(-1) for s in spans], -1)  # from the far end
    size = torch.tensor([above.shape[-2], above.shape[-1]], device=maps.device)
    y1x1 = lo.long().to(maps.dtype) / size
    y2x2 = (size - hi.long()).to(maps.dtype) / size
    return torch.stack([y1x1[..., 1], y1x1[..., 0], y2x2[..., 1], y2x2[..., 0]], -1)


def _threshold(mean: torch.Tensor, peak: torch.Tensor, fraction: float) -> torch.Tensor:
    """``mean + fraction (peak - mean)``, lowered by a millionth of the peak's size: bilinear upsampling
    moves a flat map's values by rounding (``w0 v + w1 v`` is not always ``v``), and those cells must not
    decide the box. For maps that are not flat the margin changes nothing that float rounding would not."""
    # lerp's ``peak - (1 - fraction)(peak - mean)`` cannot pass the peak unless the mean does, by rounding
    # of its sum (a relative 1e-7 or so), which the margin covers
    if torch.onnx.is_in_onnx_export():
        # lerp's form written out, to an ulp (lerp may fuse its multiply-add): lerp's ONNX export computes
        # both of its branches and picks one with a Where
        w = torch.tensor(fraction, dtype=peak.dtype)  # the weight lerp sees, rounded to the dtype
        diff = peak - mean
        t = mean + diff * w.item() if w < 0.5 else peak - diff * (1 - w).item()
    else:
        t = torch.lerp(mean, peak, fraction)
    return torch.sub(t, peak.abs(), alpha=1e-6)


def box_coverage(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The share of each cell of an (H, W) map that lies inside each box (exact, separable).

    Args:
        boxes: (..., 4) normalized xyxy boxes.
        size: (H, W) of the map.

    Returns:
        (..., H, W) in [0, 1]: 1 for cells inside, the covered fraction for cells the edges cut, 0 outside.

    Examples:
        >>> import torch
        >>> from mxa.layers import box_coverage
        >>> box_coverage(torch.tensor([0.125, 0.0, 0.625, 0.5]), (2, 4))
        tensor([[0.5000, 1.0000, 0.5000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """
    h, w = size[0], size[1]
    edges_x = torch.arange(w + 1, device=boxes.device, dtype=boxes.dtype) / w
    edges_y = torch.arange(h + 1, device=boxes.device, dtype=boxes.dtype) / h
    cx = (torch.minimum(edges_x[1:], boxes[..., 2:3]) - torch.maximum(edges_x[:-1], boxes[..., 0:1])) * w
    cy = (torch.minimum(edges_y[1:], boxes[..., 3:4]) - torch.maximum(edges_y[:-1], boxes[..., 1:2])) * h
    return cy.clamp(0, 1)[..., :, None] * cx.clamp(0, 1)[..., None, :]


#: Constants of the fast path per (H, W, refine, device, dtype), made once (see :func:`_grid`).
_GRID: dict[tuple[int, int, int, str, torch.dtype], tuple[torch.Tensor, ...]] = {}


def _grid(h: int, w: int, refine: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The fast path's constants, in coarse-cell units (fine cell / ``refine``), with ``sx, sy`` the fine
    grid's sides and ``n = max(H, W)``:

    - ``ends`` (3, 2, sx + sy): weights of the fine rows and columns (x then y, concatenated) whose maximum
      over the cells of a region gives ``[(sx - x1), (sy - y1)]`` (kind 0), ``[x2, y2]`` (kind 1) and zero
      (kind 2);
    - ``scale``, ``shift`` (4,): turn kinds 0 and 1 into normalized xyxy boxes;
    - ``cells`` (3, 2, n): the kinds for every coarse cell: ``side - first fine cell``, ``one past its last``
      and ``-side``, so that the minimum with a region's ends, summed over kinds, is the cell's overlap
      with the region (negative outside it).
    """
    if torch.compiler.is_compiling():
        # built in the graph (a few small kernels): a cache written while tracing would be a guard on its
        # contents, and the first call after it a recompilation
        return _make_grid(h, w, refine, device, dtype)
    key = (h, w, refine, str(device), dtype)
    if key not in _GRID:
        _GRID[key] = _make_grid(h, w, refine, device, dtype)
    return _GRID[key]


def _make_grid(
    h: int, w: int, refine: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """:func:`_grid`'s constants, made anew (in float64, on a CUDA device directly: a compiled graph with CPU
    kernels in it is not captured as a CUDA graph)."""
    sx, sy, n = w * refine, h * refine, max(h, w)
    on, f64 = (device if device.type == "cuda" else torch.device("cpu")), torch.float64

    def line(size: int) -> torch.Tensor:
        return torch.arange(size, device=on, dtype=f64)

    ends = torch.zeros(3, 2, sx + sy, device=on, dtype=f64)
    ends[0, 0, :sx] = sx - line(sx)
    ends[0, 1, sx:] = sy - line(sy)
    ends[1, 0, :sx] = line(sx) + 1
    ends[1, 1, sx:] = line(sy) + 1
    first = line(n) * refine
    side = torch.tensor([[float(sx)], [float(sy)]], device=on, dtype=f64).expand(2, n)
    cells = torch.stack([side - first, torch.stack([first, first]) + refine, -side])
    scale = torch.tensor([-1 / sx, -1 / sy, 1 / sx, 1 / sy], device=on, dtype=f64) * refine
    shift = torch.tensor([1.0, 1.0, 0.0, 0.0], device=on, dtype=f64)
    return tuple(t.to(device=device, dtype=dtype) for t in (ends / refine, scale, shift, cells / refine))


# An FX leaf: the fast path branches on shapes and dtypes; torch.fx records one call.
@torch.fx.wrap
def _label_rois(
    maps: torch.Tensor, never: torch.Tensor, rois: int, refine: int, fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ROIs of :class:`LabelROIPool` from its (B, K, H, W) label maps, in few operators: the R labels
    that peak highest, their :func:`peak_boxes` and :func:`box_coverage` (the oracles of this function: the
    same regions, boxes and coverage to float rounding, tested)."""
    maps = maps.detach() if maps.requires_grad else maps  # the choice and boxes carry no gradient
    # no batch size read off a shape: an exported graph keeps no shape arithmetic for a symbolic batch
    h, w = maps.shape[-2:]
    top, labels = (maps.amax((2, 3)) + never).topk(rois, dim=1)  # (B, R)
    chosen = maps.gather(1, labels[:, :, None, None].expand(-1, -1, h, w))
    # compiled, the R maps are upsampled as R one-channel images, the same values: inductor's kernel then
    # runs along a map's width instead of along R (on the CPU 5x faster, benchmarks/NOTES.md); eager and
    # ONNX gain nothing from the two reshapes
    planes = compiled_cpu_inference(maps)
    fine = chosen.view(-1, 1, h, w) if planes else chosen
    if refine > 1:
        fine = F.interpolate(fine, scale_factor=refine, mode="bilinear")
    if planes:
        fine = fine.view(-1, rois, h * refine, w * refine)
    # a fine column (row) holds part of the region when its maximum reaches the threshold
    lines = torch.cat([fine.amax(2), fine.amax(3)], -1)  # (B, R, sx + sy): columns, then rows
    threshold = _threshold(fine.mean((2, 3)), lines.amax(2), fraction)
    spans = lines >= threshold.unsqueeze(-1)
    ends, scale, shift, cells = _grid(h, w, refine, maps.device, maps.dtype)
    # the first and one-past-last fine column and row of each region (coarse units), and a zero:
    # (B, R, 3 kinds, 2 axes)
    edges = torch.where(spans[:, :, None, None], ends, 0.0).amax(-1)
    boxes = torch.addcmul(shift, edges.flatten(2)[..., :4], scale)
    # the share of every coarse cell inside the region, per axis, then their product
    inside = torch.minimum(cells, edges.unsqueeze(-1)).sum(2).clamp(min=0)  # (B, R, 2, n)
    rows, cols = inside[:, :, 1], inside[:, :, 0]  # (B, R, n), n = max(H, W)
    if h != w:  # the shorter axis has fewer cells
        rows, cols = rows[..., :h], cols[..., :w]
    coverage = rows.unsqueeze(3) * cols.unsqueeze(2)  # (B, R, H, W)
    return coverage, boxes, labels, torch.sigmoid(top)


class LabelROIPool(nn.Module):
    """R regions of interest per image from label score maps: where the top-R labels' maps peak.

    :attr:`classifier` (an :class:`~mxa.layers.ROIClassifier` with per-label boxes) gives every position K
    label logits. The R labels with the highest peak logit are chosen, and each one's ROI is the
    :func:`peak_boxes` box of its map. In training (and while ``emit_label_boxes`` is set) the classifier
    also pools every map under its label's box, the input of the ROI objective (``mxa train --roi-mil``,
    read with a forward hook). The choice of ROIs and their boxes carry no gradient.

    Args:
        dim: channels C.
        num_classes: labels K.
        rois: R, the ROIs per image (1 <= R <= K - len(skip)).
        skip: labels never cropped (e.g. No Finding, which has no place); their maps are still trained.
        refine: upsampling of the label maps before thresholding (box edges to 1 / (refine * W)).
        fraction: where box edges lie, from each map's mean (0) to its peak (1) (:data:`PEAK_FRACTION`).
        min_size: smallest side of the classifier's own per-label boxes (the ROI objective's).

    Shapes:
        (B, C, H, W) -> (coverage (B, R, H, W) in [0, 1], boxes (B, R, 4) normalized xyxy,
        labels (B, R) int64, weights (B, R) = sigmoid of each label's peak logit)

    Examples:
        >>> import torch
        >>> from mxa.layers import LabelROIPool
        >>> pool = LabelROIPool(16, num_classes=5, rois=2)
        >>> coverage, boxes, labels, weights = pool(torch.randn(2, 16, 7, 7))
        >>> coverage.shape, boxes.shape, labels.shape, weights.shape
        (torch.Size([2, 2, 7, 7]), torch.Size([2, 2, 4]), torch.Size([2, 2]), torch.Size([2, 2]))
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        rois: int = 2,
        skip: tuple[int, ...] = (),
        refine: int = 4,
        fraction: float = PEAK_FRACTION,
        min_size: float = 0.05,
    ) -> None:
        super().__init__()
        skip = tuple(sorted({int(i) for i in skip}))
        if any(not 0 <= i < num_classes for i in skip):
            raise ValueError(f"skip holds labels outside 0..{num_classes - 1}: {skip}")
        if not 1 <= rois <= num_classes - len(skip):
            raise ValueError(
                f"rois must be between 1 and the {num_classes - len(skip)} labels that may be cropped, "
                f"got {rois}"
            )
        if refine < 1 or not 0 <= fraction < 1:
            raise ValueError(f"refine must be >= 1 and fraction in [0, 1), got {refine} and {fraction}")
        self.fraction = float(fraction)
        self.dim, self.num_classes, self.rois, self.refine, self.skip = dim, num_classes, rois, refine, skip
        self.classifier = ROIClassifier(dim, num_classes, class_boxes=True, min_size=min_size)
        # Every map starts at a low prior probability everywhere: a label the training data never labels
        # keeps it, so its untrained map cannot outrank the trained ones when ROIs are chosen.
        nn.init.constant_(self.classifier.fc.bias, math.log(PRIOR / (1 - PRIOR)))
        never = torch.zeros(
            num_classes
        )  # added to the peaks before the choice: -inf for labels never cropped
        never[list(skip)] = -math.inf
        self.never: torch.Tensor
        self.register_buffer("never", never, persistent=False)
        self.emit_label_boxes = False  # set by capture_label_boxes: the classifier's boxes in eval too
        self.maps = nn.Identity()  # a tap: in training the (B, K, H, W) label maps pass it (forward hooks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_nchw(x, self.dim)
        with outside_autocast(x):  # box maths in float32, as DynamicROIPool's
            z = self.classifier.label_maps(x)  # (B, K, H, W)
            if self.training or self.emit_label_boxes:
                self.classifier(x, None, z)  # the ROI objective's input, taken by a forward hook
                self.maps(z)
            return _label_rois(z, self.never, self.rois, self.refine, self.fraction)

    def extra_repr(self) -> str:
        skip = f", skip={self.skip}" if self.skip else ""
        return f"dim={self.dim}, num_classes={self.num_classes}, rois={self.rois}{skip}, refine={self.refine}"
