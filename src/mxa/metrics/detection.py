"""The field's detection metrics for MXA boxes: AP at IoU 0.3/0.5 (torchmetrics) and RoDeO.

A model is scored as a detector: for every image and every finding it predicts one box (the MXA block's
box, the same for every finding; a per-label box where the model has one) with the finding's probability as
the score (AP) or, for RoDeO, for the findings it calls positive. This is how weakly supervised detectors
on ChestX-ray8 are compared (WSRPN, Müller et al. 2024). Only images with at least one true box and the
findings that have a box somewhere in the set are scored; a prediction for a finding the image has but
without a box is left out (it can be neither right nor wrong).

RoDeO (Meissen et al., "Robust Detection Outcome", MIDL 2023), written from the paper:

* per image, predictions are matched one-to-one to true boxes (Hungarian), at cost
  ``-GIoU - w_c * [same class]``, ``w_c`` the image-level classification MCC (clamped at 0);
* ``classification``: the MCC of the matched pairs' one-hot classes, clamped at 0;
* ``localization``: ``exp(-ln 2 * d^2)`` of the matched centres' distance in units of the true box's
  width and height (0.5 when the centre is off by one box size);
* ``shape``: the IoU of the matched boxes with their top-left corners aligned (size alone);
* each averaged over the matched pairs and then scaled by ``matched / (matched + overpredicted + missed)``;
* ``total``: the harmonic mean of the three.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, TypedDict

import torch

__all__ = ["DETECTION_IOUS", "DetectionMetrics", "RoDeOScores", "detection_ap", "detection_metrics", "rodeo"]

log = logging.getLogger(__name__)

#: IoU thresholds of ``detection.ap``.
DETECTION_IOUS = (0.3, 0.5)


class RoDeOScores(TypedDict):
    """RoDeO's three sub-scores and their harmonic mean, each in [0, 1] (1 is perfect)."""

    classification: float
    localization: float
    shape: float
    total: float
    n_matched: int
    n_overpredicted: int
    n_missed: int


class DetectionMetrics(TypedDict, total=False):
    """``detection`` in ``mxa eval --json``: the scores of the chosen block, and every block's."""

    block: str
    block_chosen_by: str
    block_chosen_on: str
    ap: dict[str, float]
    rodeo: RoDeOScores
    n_images: int
    per_block: dict[str, dict[str, Any]]


def _scored(
    true: torch.Tensor, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N,) bool, classes (K,) bool, unjudgeable (N, K) bool) of a (N, K, 4) box set."""
    present = ~torch.isnan(true[..., 0])
    images = present.any(1)
    classes = present[images].any(0)
    unjudgeable = (
        (targets > 0.5) & ~present if targets is not None else torch.zeros_like(present)
    )  # positive, no box
    return images, classes, unjudgeable


def _per_label_boxes(boxes: torch.Tensor, k: int) -> torch.Tensor:
    return boxes if boxes.ndim == 3 else boxes[:, None, :].expand(-1, k, -1)


def detection_ap(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    true: torch.Tensor,
    targets: torch.Tensor | None = None,
    iou_thresholds: Sequence[float] = DETECTION_IOUS,
) -> dict[str, float]:
    """COCO-style AP (torchmetrics' ``MeanAveragePrecision``, mean over findings) at each IoU threshold.

    Args:
        boxes: (N, 4) one box per image, or (N, K, 4) one per finding (a NaN row: no box, so no
            detection, for that finding); normalized xyxy.
        scores: (N, K) the findings' probabilities.
        true: (N, K, 4) true boxes, NaN rows where a finding has no box.
        targets: (N, K) image labels; a positive finding without a box is not scored.
        iou_thresholds: IoU thresholds.

    Returns:
        ``{"0.3": AP, "0.5": AP}`` (keys from ``iou_thresholds``); NaN where nothing can be scored.

    Examples:
        >>> import torch
        >>> from mxa.metrics.detection import detection_ap
        >>> true = torch.full((2, 2, 4), float("nan"))
        >>> true[0, 0] = torch.tensor([0.1, 0.1, 0.3, 0.3])
        >>> true[1, 1] = torch.tensor([0.5, 0.5, 0.9, 0.9])
        >>> boxes = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]])  # one box per image
        >>> detection_ap(boxes, torch.tensor([[0.9, 0.1], [0.2, 0.8]]), true)
        {'0.3': 1.0, '0.5': 1.0}
        >>> detection_ap(boxes.flip(0), torch.tensor([[0.9, 0.1], [0.2, 0.8]]), true)  # boxes swapped
        {'0.3': 0.0, '0.5': 0.0}
    """
    from mxa._optional import require

    require("torchmetrics", "detection AP")
    require("pycocotools", "detection AP")  # torchmetrics' COCO backend
    from torchmetrics.detection import MeanAveragePrecision

    images, classes, unjudgeable = _scored(true, targets)
    k = true.shape[1]
    per_label = _per_label_boxes(boxes.float(), k)
    preds, gts = [], []
    for i in torch.nonzero(images).flatten().tolist():
        keep = classes & ~unjudgeable[i] & torch.isfinite(per_label[i]).all(-1)  # NaN: label not boxed
        present = ~torch.isnan(true[i, :, 0])
        preds.append(
            {
                "boxes": per_label[i][keep],
                "scores": scores[i].float()[keep],
                "labels": torch.nonzero(keep).flatten(),
            }
        )
        gts.append({"boxes": true[i][present].float(), "labels": torch.nonzero(present).flatten()})
    out: dict[str, float] = {}
    for t in iou_thresholds:
        if not preds:
            out[f"{t:g}"] = math.nan
            continue
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[float(t)])
        metric.update(preds, gts)
        value = float(metric.compute()["map"])
        out[f"{t:g}"] = value if value >= 0 else math.nan  # -1: nothing to score
    return out


def _mcc(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Matthews correlation of two 0/1 tensors (torchmetrics), clamped at 0 as RoDeO does."""
    from torchmetrics.functional.classification import binary_matthews_corrcoef

    return max(0.0, float(binary_matthews_corrcoef(pred.flatten().long(), true.flatten().long())))


def rodeo(
    pred_boxes: Sequence[torch.Tensor],
    pred_labels: Sequence[torch.Tensor],
    true_boxes: Sequence[torch.Tensor],
    true_labels: Sequence[torch.Tensor],
    num_classes: int,
) -> RoDeOScores:
    """RoDeO of a set of images (see the module docstring).

    Args:
        pred_boxes: per image an (M_i, 4) tensor of predicted normalized xyxy boxes.
        pred_labels: per image the (M_i,) class of each predicted box.
        true_boxes: per image an (T_i, 4) tensor of true boxes.
        true_labels: per image the (T_i,) class of each true box.
        num_classes: classes K.

    Returns:
        :class:`RoDeOScores`; all zeros when nothing is matched.

    Examples:
        >>> import torch
        >>> from mxa.metrics.detection import rodeo
        >>> box, cls = [torch.tensor([[0.1, 0.1, 0.3, 0.3]])], [torch.tensor([0])]
        >>> rodeo(box, cls, box, cls, num_classes=2)["total"]
        1.0
    """
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import generalized_box_iou

    if num_classes < 2:
        raise ValueError(f"RoDeO needs at least 2 classes (its MCC is undefined for one), got {num_classes}")
    n = len(pred_boxes)
    present_p = torch.zeros(n, num_classes)
    present_t = torch.zeros(n, num_classes)
    for i in range(n):
        present_p[i, pred_labels[i].long()] = 1
        present_t[i, true_labels[i].long()] = 1
    w_class = _mcc(present_p, present_t)
    mp, mt, mlp, mlt = [], [], [], []
    n_over = n_missed = 0
    for pb, pl, tb, tl in zip(pred_boxes, pred_labels, true_boxes, true_labels, strict=True):
        if len(pb) and len(tb):
            cost = (
                -generalized_box_iou(pb.double(), tb.double())
                - w_class * (pl[:, None] == tl[None, :]).double()
            )
            rows, cols = linear_sum_assignment(cost.numpy())
            rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
            mp.append(pb[rows_t].double())
            mt.append(tb[cols_t].double())
            mlp.append(pl[rows_t].long())
            mlt.append(tl[cols_t].long())
            n_over += len(pb) - len(rows)
            n_missed += len(tb) - len(cols)
        else:
            n_over += len(pb)
            n_missed += len(tb)
    if not mp:
        return RoDeOScores(
            classification=0.0,
            localization=0.0,
            shape=0.0,
            total=0.0,
            n_matched=0,
            n_overpredicted=n_over,
            n_missed=n_missed,
        )
    p, t = torch.cat(mp), torch.cat(mt)
    lp, lt = torch.cat(mlp), torch.cat(mlt)
    n_matched = p.shape[0]
    weight = n_matched / (n_matched + n_over + n_missed)
    tw, th = t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    dx = ((p[:, 0] + p[:, 2]) - (t[:, 0] + t[:, 2])) / 2 / tw
    dy = ((p[:, 1] + p[:, 3]) - (t[:, 1] + t[:, 3])) / 2 / th
    loc = float(torch.exp(-math.log(2) * (dx**2 + dy**2)).mean()) * weight
    inter = torch.minimum(pw, tw) * torch.minimum(ph, th)
    shape = float((inter / (pw * ph + tw * th - inter)).mean()) * weight
    onehot = torch.eye(num_classes)
    cls = _mcc(onehot[lp], onehot[lt]) * weight
    parts = (cls, loc, shape)
    total = 0.0 if min(parts) <= 0 else len(parts) / sum(1 / v for v in parts)
    return RoDeOScores(
        classification=cls,
        localization=loc,
        shape=shape,
        total=total,
        n_matched=n_matched,
        n_overpredicted=n_over,
        n_missed=n_missed,
    )


def _rodeo_of(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    true: torch.Tensor,
    targets: torch.Tensor | None,
    thresholds: torch.Tensor,
) -> RoDeOScores:
    images, classes, unjudgeable = _scored(true, targets)
    k = true.shape[1]
    per_label = _per_label_boxes(boxes.float(), k)
    pb, pl, tb, tl = [], [], [], []
    for i in torch.nonzero(images).flatten().tolist():
        called = (probs[i] >= thresholds) & classes & ~unjudgeable[i] & torch.isfinite(per_label[i]).all(-1)
        present = ~torch.isnan(true[i, :, 0])
        pb.append(per_label[i][called])
        pl.append(torch.nonzero(called).flatten())
        tb.append(true[i][present].float())
        tl.append(torch.nonzero(present).flatten())
    return rodeo(pb, pl, tb, tl, num_classes=k)


def detection_metrics(
    rois: dict[str, torch.Tensor],
    probs: torch.Tensor,
    true_boxes: torch.Tensor,
    targets: torch.Tensor | None = None,
    thresholds: torch.Tensor | None = None,
    block: str | None = None,
    chosen_by: str = "given",
    chosen_on: str | None = None,
) -> DetectionMetrics:
    """AP and RoDeO of every MXA block's boxes as detections, and of one chosen block at the top level.

    Args:
        rois: {block: (N, 4) or (N, K, 4)} predicted boxes.
        probs: (N, K) the model's probabilities (the scores; RoDeO calls a finding at ``thresholds``).
        true_boxes: (N, K, 4) true boxes, NaN rows where a finding has no box.
        targets: (N, K) image labels (positive findings without a box are not scored).
        thresholds: (K,) decision thresholds for RoDeO (default 0.5).
        block: the box set reported at the top level (a block, or ``<block>/labels``); default the one with
            the best AP at IoU 0.3 on this data (a choice made on the evaluated set: optimistic).
        chosen_by: how ``block`` was chosen (``block_chosen_by``): ``"validation"`` (on another split,
            ``chosen_on`` names it) or ``"given"`` (``mxa eval --loc-block``).
        chosen_on: the images ``block`` was chosen on (``block_chosen_on``).

    Returns:
        :class:`DetectionMetrics`; empty when no image has a box.
    """
    if not rois or not bool((~torch.isnan(true_boxes[..., 0])).any()):
        return {}
    thr = torch.full((probs.shape[1],), 0.5) if thresholds is None else thresholds.float()
    per_block: dict[str, dict[str, Any]] = {}
    for name, boxes in rois.items():
        boxed = torch.isfinite(boxes.float()).all(-1)
        finite = boxed if boxed.ndim == 1 else boxed.any(1)  # per-label NaN rows are labels without a box
        if not bool(finite.all()):
            log.warning(
                "block %s: %d image(s) with non-finite boxes are left out of its detection metrics (its "
                "n_images says how many were scored)",
                name,
                int((~finite).sum()),
            )
        b, pr, t = boxes[finite], probs[finite], true_boxes[finite]
        tg = targets[finite] if targets is not None else None
        per_block[name] = {
            "ap": detection_ap(b, pr, t, tg),
            "rodeo": _rodeo_of(b, pr, t, tg, thr),
            "n_images": int((~torch.isnan(t[..., 0])).any(1).sum()),
        }
    if block is None:
        block, chosen_by = best_ap_block(per_block), "evaluated set"
        chosen_on = f"these images (best AP at IoU {DETECTION_IOUS[0]:g}): optimistic"
    elif block not in per_block:
        raise ValueError(f"no MXA box set {block!r}; the box sets are {', '.join(per_block)}")
    return DetectionMetrics(
        block=block,
        block_chosen_by=chosen_by,
        block_chosen_on=chosen_on or "-",
        ap=per_block[block]["ap"],
        rodeo=per_block[block]["rodeo"],
        n_images=int((~torch.isnan(true_boxes[..., 0])).any(1).sum()),
        per_block=per_block,
    )


def best_ap_block(per_block: dict[str, dict[str, Any]]) -> str:
    """The box set with the best AP at IoU 0.3 in ``detection_metrics(...)["per_block"]``."""
    key = f"{DETECTION_IOUS[0]:g}"
    return max(per_block, key=lambda n: _or_minus_inf(per_block[n]["ap"][key]))


def _or_minus_inf(v: float) -> float:
    return v if math.isfinite(v) else -math.inf
