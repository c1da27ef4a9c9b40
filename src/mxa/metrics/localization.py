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
* ``per_label``: the same per finding, over the images where that finding has a box.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch

from mxa.data.labels import CHEXPERT_LABELS

log = logging.getLogger(__name__)

__all__ = ["BlockLocalization", "roi_localization", "summarize_localization"]


def _contains(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(M, K) bool: does box m (M, 4) contain point (M, K, 2)?"""
    inside = (points[..., 0] >= boxes[:, None, 0]) & (points[..., 0] <= boxes[:, None, 2])
    return inside & (points[..., 1] >= boxes[:, None, 1]) & (points[..., 1] <= boxes[:, None, 3])


def _pairwise_iou(boxes: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(M, K) IoU of box m (M, 4) with each true box (M, K, 4); NaN rows of ``true`` give 0.

    Vectorized over images; ``tests/test_localization.py`` checks it against torchvision's ``box_iou``.
    """
    safe = torch.nan_to_num(true, nan=0.0)
    b = boxes[:, None, :]
    iw = (torch.minimum(b[..., 2], safe[..., 2]) - torch.maximum(b[..., 0], safe[..., 0])).clamp(min=0)
    ih = (torch.minimum(b[..., 3], safe[..., 3]) - torch.maximum(b[..., 1], safe[..., 1])).clamp(min=0)
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    area_t = (safe[..., 2] - safe[..., 0]) * (safe[..., 3] - safe[..., 1])
    iou = inter / (area_b + area_t - inter).clamp(min=1e-12)
    return iou.masked_fill(torch.isnan(true[..., 0]), 0.0)


def _random_boxes(boxes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    w, h = (boxes[:, 2] - boxes[:, 0]).clamp(0, 1), (boxes[:, 3] - boxes[:, 1]).clamp(0, 1)
    x1 = torch.rand(boxes.shape[0], generator=g) * (1 - w)
    y1 = torch.rand(boxes.shape[0], generator=g) * (1 - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], 1)


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
    iou = _pairwise_iou(boxes, true).amax(1)
    r_hit, r_iou = torch.zeros_like(hit), torch.zeros_like(iou)
    for _ in range(n_random):
        rb = _random_boxes(boxes, g)
        r_hit += (_contains(rb, centres) & present).any(1).float() / n_random
        r_iou += _pairwise_iou(rb, true).amax(1) / n_random
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
        rois: {block: (N, 4)} predicted normalized xyxy boxes.
        true_boxes: (N, K, 4) true boxes of the K labels, NaN rows where a finding has no box.
        n_random: random placements per image for the area-matched chance.
        points: {block: (N, 2)} the (x, y) arg-max of each block's saliency map, for the pointing game.
        labels: the K label names.
        per_label: also compute ``per_label`` (skip it where only the block summaries are kept).

    Returns:
        {block: {hit_rate, random_hit_rate, mean_iou, random_iou, mean_box_area, n_images,
        [pointing_game, pointing_chance,] per_label: {label: {n_images, hit_rate, random_hit_rate,
        mean_iou, random_iou[, pointing_game, pointing_chance]}}}} (``per_label`` only when asked);
        blocks with no such image are left out, and so are images whose predicted box is not finite (a
        diverged model's NaN boxes are no boxes; ``n_nonfinite_boxes`` counts them).
    """
    present_all = ~torch.isnan(true_boxes[..., 0])
    out: dict[str, BlockLocalization] = {}
    for name, boxes_all in rois.items():
        g = torch.Generator().manual_seed(seed)
        finite = torch.isfinite(boxes_all.float()).all(1)
        has_any = present_all.any(1) & finite
        n_bad = int((present_all.any(1) & ~finite).sum())
        if n_bad:
            log.warning(
                "block %s: %d image(s) with non-finite boxes are left out of its localization", name, n_bad
            )
        b, t, p = boxes_all[has_any].float(), true_boxes[has_any].float(), present_all[has_any]
        if b.shape[0] == 0:
            continue
        s = _scores(b, t, p, n_random, g)
        rec: BlockLocalization = {
            "hit_rate": float(s["hit"].mean()),
            "random_hit_rate": float(s["random_hit"].mean()),
            "mean_iou": float(s["iou"].mean()),
            "random_iou": float(s["random_iou"].mean()),
            "mean_box_area": float(
                ((b[:, 2] - b[:, 0]).clamp(0, 1) * (b[:, 3] - b[:, 1]).clamp(0, 1)).mean()
            ),
            "n_images": int(b.shape[0]),
        }
        pts = points[name][has_any].float() if points and name in points else None
        if pts is not None:
            rec["pointing_game"] = float((_point_in(t, p, pts)).float().mean())
            rec["pointing_chance"] = float(_coverage(t, p).mean())
        if per_label:
            rec["per_label"] = _per_label(b, t, p, pts, labels, n_random, seed)
        out[name] = rec
    return out


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
) -> dict[str, dict[str, float]]:
    out = {}
    for j, name in enumerate(labels):
        sel = present[:, j]
        if not bool(sel.any()):
            continue
        only = torch.zeros_like(present[sel])
        only[:, j] = True  # this finding's box only
        g = torch.Generator().manual_seed(seed + 1 + j)
        s = _scores(boxes[sel], true[sel], only, max(8, n_random // 4), g)
        rec = {
            "n_images": int(sel.sum()),
            "hit_rate": float(s["hit"].mean()),
            "random_hit_rate": float(s["random_hit"].mean()),
            "mean_iou": float(s["iou"].mean()),
            "random_iou": float(s["random_iou"].mean()),
        }
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
