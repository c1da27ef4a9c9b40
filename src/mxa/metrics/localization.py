"""Does an MXA box find the finding? Localization metrics that big boxes cannot fool.

For every MXA block, over the images with at least one true box:

* ``hit_rate``: the predicted box contains the centre of a true box; ``random_hit_rate``: the same for
  boxes of the same width and height placed uniformly at random (area-matched chance). A box covering
  the whole map hits every time, and so does chance: only the difference says something.
* ``mean_iou``: IoU with the best-matching true box; ``random_iou``: the same for area-matched random boxes.
* ``mean_box_area``: the box's fraction of the map.
* ``pointing_game``: the arg-max of the block's saliency map (what its soft-argmax centre follows) falls
  inside a true box; ``pointing_chance``: the fraction of the map the true boxes cover (a uniformly random
  point's hit rate).
* ``loc_acc`` / ``iobb_acc``: the field's localization accuracy (Wang et al., ChestX-ray8): the share of
  (image, finding) true boxes whose IoU, or IoBB (intersection over the *predicted* box's area), with the
  predicted box reaches each threshold in :data:`LOC_THRESHOLDS`, as ``{"0.1": ..., "0.3": ..., "0.5": ...}``.
  A whole-map box has IoBB = IoU = the true box's area: big boxes score low on both.
* ``median_area_ratio``: the median over (image, finding) pairs of the predicted box's area over the true
  box's (1 for a box as large as the finding).
* ``box_rate``: the share of (image, finding) pairs that have a predicted box at all: per-label boxes may
  leave a label without one (NaN rows: the label was not cropped), which counts as a miss everywhere.
* ``per_label``: the same per finding, over the images where that finding has a box.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch

from mxa.data.labels import CHEXPERT_LABELS

log = logging.getLogger(__name__)

__all__ = ["LOC_THRESHOLDS", "BlockLocalization", "overlaps", "roi_localization", "summarize_localization"]

#: IoU / IoBB thresholds of ``loc_acc`` and ``iobb_acc``.
LOC_THRESHOLDS = (0.1, 0.3, 0.5)


def _contains(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(M, K) bool: does box m (M, 4), or box (m, k) of (M, K, 4), contain point (M, K, 2)?"""
    b = boxes if boxes.ndim == 3 else boxes[:, None, :]
    inside = (points[..., 0] >= b[..., 0]) & (points[..., 0] <= b[..., 2])
    return inside & (points[..., 1] >= b[..., 1]) & (points[..., 1] <= b[..., 3])


def _pairwise_iou(boxes: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(M, K) IoU of box m (M, 4) with each true box (M, K, 4); NaN rows of ``true`` give 0.

    ``tests/test_localization.py`` checks it against torchvision's ``box_iou``.
    """
    return overlaps(boxes, true)[0]


def overlaps(boxes: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and IoBB of predicted boxes with true boxes.

    Args:
        boxes: (M, 4) predicted normalized xyxy boxes, or (M, K, 4) one per finding.
        true: (M, K, 4) true boxes, NaN rows where a finding has no box.

    Returns:
        (iou, iobb), each (M, K): IoBB is the intersection over the predicted box's area (ChestX-ray8's
        T(IoBB)); 0 where there is no true box.

    Examples:
        >>> import torch
        >>> from mxa.metrics.localization import overlaps
        >>> iou, iobb = overlaps(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))
        >>> float(iou), float(iobb)  # the box lies inside the true box: IoBB 1, IoU its share of it
        (0.25, 1.0)
    """
    safe = torch.nan_to_num(true, nan=0.0)
    b = boxes if boxes.ndim == 3 else boxes[:, None, :].expand_as(safe)
    iw = (torch.minimum(b[..., 2], safe[..., 2]) - torch.maximum(b[..., 0], safe[..., 0])).clamp(min=0)
    ih = (torch.minimum(b[..., 3], safe[..., 3]) - torch.maximum(b[..., 1], safe[..., 1])).clamp(min=0)
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    area_t = (safe[..., 2] - safe[..., 0]) * (safe[..., 3] - safe[..., 1])
    absent = torch.isnan(true[..., 0])
    iou = (inter / (area_b + area_t - inter).clamp(min=1e-12)).masked_fill(absent, 0.0)
    iobb = (inter / area_b.clamp(min=1e-12)).masked_fill(absent, 0.0)
    return iou, iobb


def _accuracies(iou: torch.Tensor, iobb: torch.Tensor, present: torch.Tensor) -> dict[str, dict[str, float]]:
    """``loc_acc`` and ``iobb_acc`` over the present (image, finding) pairs of (M, K) overlaps."""
    n = present.sum().clamp(min=1)
    return {
        key: {f"{t:g}": float(((v >= t) & present).sum() / n) for t in LOC_THRESHOLDS}
        for key, v in (("loc_acc", iou), ("iobb_acc", iobb))
    }


def _random_boxes(boxes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Boxes of the same width and height as ``boxes`` (..., 4), placed uniformly at random in the map."""
    w, h = (boxes[..., 2] - boxes[..., 0]).clamp(0, 1), (boxes[..., 3] - boxes[..., 1]).clamp(0, 1)
    x1 = torch.rand(w.shape, generator=g) * (1 - w)
    y1 = torch.rand(h.shape, generator=g) * (1 - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], -1)


def _iou(boxes: torch.Tensor, true: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(M, K) IoU of each present true box with the image's box, or (per-label boxes) with its label's."""
    return overlaps(boxes, true)[0].masked_fill(~present, 0.0)


def _coverage(true: torch.Tensor, present: torch.Tensor, grid: int = 64) -> torch.Tensor:
    """(M,) fraction of the map inside the union of the present true boxes (on a grid x grid raster)."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    pts = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)  # (G*G, 2) as (x, y)
    safe = torch.nan_to_num(true, nan=-1.0)
    inside = (pts[None, None, :, 0] >= safe[..., 0:1]) & (pts[None, None, :, 0] <= safe[..., 2:3])
    inside &= (pts[None, None, :, 1] >= safe[..., 1:2]) & (pts[None, None, :, 1] <= safe[..., 3:4])
    return (inside & present[..., None]).any(1).float().mean(1)


def _scores(
    boxes: torch.Tensor, true: torch.Tensor, present: torch.Tensor, n_random: int, g: torch.Generator
) -> dict[str, torch.Tensor]:
    """Per-image (M,) hit, IoU and their area-matched chance."""
    centres = (true[..., :2] + true[..., 2:]) / 2
    hit = (_contains(boxes, centres) & present).any(1).float()
    iou = _iou(boxes, true, present).amax(1)
    r_hit, r_iou = torch.zeros_like(hit), torch.zeros_like(iou)
    for _ in range(n_random):
        rb = _random_boxes(boxes, g)
        r_hit += (_contains(rb, centres) & present).any(1).float() / n_random
        r_iou += _iou(rb, true, present).amax(1) / n_random
    return {"hit": hit, "random_hit": r_hit, "iou": iou, "random_iou": r_iou}


class BlockLocalization(TypedDict, total=False):
    """One MXA block's localization (:func:`roi_localization`), each number beside its chance."""

    hit_rate: float
    random_hit_rate: float
    mean_iou: float
    random_iou: float
    mean_box_area: float
    n_images: int
    pointing_game: float
    pointing_chance: float
    loc_acc: dict[str, float]
    iobb_acc: dict[str, float]
    median_area_ratio: float
    box_rate: float
    per_label: dict[str, dict[str, Any]]


def roi_localization(
    rois: dict[str, torch.Tensor],
    true_boxes: torch.Tensor,
    n_random: int = 64,
    seed: int = 0,
    points: dict[str, torch.Tensor] | None = None,
    labels: Sequence[str] = CHEXPERT_LABELS,
    per_label: bool = True,
) -> dict[str, BlockLocalization]:
    """Localization of every MXA block against the true boxes (see the module docstring).

    Args:
        rois: {block: (N, 4)} predicted normalized xyxy boxes, or (N, K, 4) one per label (each then scored
            against its own label's true box only; a NaN row is a label without a box: a miss).
        true_boxes: (N, K, 4) true boxes of the K labels, NaN rows where a finding has no box.
        n_random: random placements per image for the area-matched chance.
        points: {block: (N, 2)} the (x, y) arg-max of each block's saliency map, for the pointing game.
        labels: the K label names.
        per_label: also compute ``per_label`` (skip it where only the block summaries are kept).

    Returns:
        {block: {hit_rate, random_hit_rate, mean_iou, random_iou, mean_box_area, median_area_ratio, box_rate,
        n_images, [pointing_game, pointing_chance,] per_label: {label: {n_images, hit_rate, random_hit_rate,
        mean_iou, random_iou[, pointing_game, pointing_chance]}}}} (``per_label`` only when asked);
        blocks with no such image are left out, and so are images without any finite predicted box (a
        diverged model's NaN boxes are no boxes; a warning counts them).
    """
    present_all = ~torch.isnan(true_boxes[..., 0])
    out: dict[str, BlockLocalization] = {}
    for name, boxes_all in rois.items():
        g = torch.Generator().manual_seed(seed)
        has_box = torch.isfinite(boxes_all.float()).all(-1)  # (N,) or (N, K): per-label rows may be missing
        finite = has_box if has_box.ndim == 1 else has_box.any(1)
        has_any = present_all.any(1) & finite
        n_bad = int((present_all.any(1) & ~finite).sum())
        if n_bad:
            log.warning(
                "block %s: %d image(s) with non-finite boxes are left out of its localization", name, n_bad
            )
        b, t, p = boxes_all[has_any].float(), true_boxes[has_any].float(), present_all[has_any]
        if b.shape[0] == 0:
            continue
        boxed = has_box[has_any] if b.ndim == 3 else torch.ones_like(p)  # (M, K): a box for that pair
        b = _missing_as_empty(b)
        s = _scores(b, t, p, n_random, g)
        rec: BlockLocalization = {
            "hit_rate": float(s["hit"].mean()),
            "random_hit_rate": float(s["random_hit"].mean()),
            "mean_iou": float(s["iou"].mean()),
            "random_iou": float(s["random_iou"].mean()),
            "mean_box_area": _mean_area(b, p & boxed),
            "median_area_ratio": _median_area_ratio(b, t, p & boxed),
            "box_rate": float((p & boxed).sum() / p.sum().clamp(min=1)),
            "n_images": int(b.shape[0]),
        }
        rec.update(_accuracies(*overlaps(b, t), p))  # type: ignore[typeddict-item]
        pts = points[name][has_any].float() if points and name in points else None
        if pts is not None:
            rec["pointing_game"] = float((_point_in(t, p, pts)).float().mean())
            rec["pointing_chance"] = float(_coverage(t, p).mean())
        if per_label:
            rec["per_label"] = _per_label(b, t, p, pts, labels, n_random, seed)
        out[name] = rec
    return out


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(0, 1) * (boxes[..., 3] - boxes[..., 1]).clamp(0, 1)


def _missing_as_empty(boxes: torch.Tensor) -> torch.Tensor:
    """NaN rows (a label without a box) -> an empty box outside the map: no hit, IoU 0, area 0."""
    missing = ~torch.isfinite(boxes).all(-1, keepdim=True)
    return torch.where(missing, torch.full_like(boxes, -1.0), boxes)


def _mean_area(boxes: torch.Tensor, pairs: torch.Tensor) -> float:
    """Mean box area; for per-label boxes (M, K, 4), over the (image, label) ``pairs`` (a true and a
    predicted box)."""
    area = _area(boxes)
    if boxes.ndim == 2:
        return float(area.mean())
    return float(area[pairs].mean()) if bool(pairs.any()) else math.nan


def _median_area_ratio(boxes: torch.Tensor, true: torch.Tensor, pairs: torch.Tensor) -> float:
    """Median over the (image, finding) ``pairs`` of predicted box area / true box area."""
    pred = _area(boxes) if boxes.ndim == 3 else _area(boxes)[:, None].expand(pairs.shape)
    ratio = pred[pairs] / _area(torch.nan_to_num(true, nan=0.0))[pairs].clamp(min=1e-9)
    return float(ratio.median()) if ratio.numel() else math.nan


def _point_in(true: torch.Tensor, present: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """(M,) bool: point m (M, 2) lies in one of image m's present true boxes (M, K, 4)."""
    safe = torch.nan_to_num(true, nan=-1.0)
    inside = (pts[:, None, 0] >= safe[..., 0]) & (pts[:, None, 0] <= safe[..., 2])
    inside &= (pts[:, None, 1] >= safe[..., 1]) & (pts[:, None, 1] <= safe[..., 3])
    return (inside & present).any(1)


def _per_label(
    boxes: torch.Tensor,
    true: torch.Tensor,
    present: torch.Tensor,
    pts: torch.Tensor | None,
    labels: Sequence[str],
    n_random: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(labels):
        sel = present[:, j]
        if not bool(sel.any()):
            continue
        only = torch.zeros_like(present[sel])
        only[:, j] = True  # this finding's box only
        g = torch.Generator().manual_seed(seed + 1 + j)
        s = _scores(boxes[sel], true[sel], only, max(8, n_random // 4), g)
        rec: dict[str, Any] = {
            "n_images": int(sel.sum()),
            "hit_rate": float(s["hit"].mean()),
            "random_hit_rate": float(s["random_hit"].mean()),
            "mean_iou": float(s["iou"].mean()),
            "random_iou": float(s["random_iou"].mean()),
        }
        rec.update(_accuracies(*overlaps(boxes[sel], true[sel]), only))
        if pts is not None:
            rec["pointing_game"] = float(_point_in(true[sel], only, pts[sel]).float().mean())
            rec["pointing_chance"] = float(_coverage(true[sel], only).mean())
        out[name] = rec
    return out


def summarize_localization(loc: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The mean of each scalar localization metric over all blocks, and the best block's hit margin."""
    if not loc:
        return {}
    keys = [k for k, v in next(iter(loc.values())).items() if isinstance(v, float)]
    out: dict[str, Any] = {k: float(np.mean([v[k] for v in loc.values() if k in v])) for k in keys}
    margins = {name: v["hit_rate"] - v["random_hit_rate"] for name, v in loc.items()}
    best = max(margins, key=lambda k: margins[k])
    out.update(
        best_block=best, best_hit_margin=float(margins[best]), best_block_area=loc[best]["mean_box_area"]
    )
    return out
