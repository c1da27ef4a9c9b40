"""Evaluation: predictions over a dataset, metrics, and how well each MXA block localizes findings."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mxa._optional import MissingExtraError
from mxa.data.labels import CHEXPERT_LABELS
from mxa.decision.rule import get_decision_rule
from mxa.metrics.classification import ClassificationMetrics, compute_metrics
from mxa.metrics.detection import DetectionMetrics, best_ap_block, detection_metrics
from mxa.metrics.localization import BlockLocalization, roi_localization, summarize_localization
from mxa.models.hooks import (
    capture_label_boxes,
    capture_roi_labels,
    capture_saliency_points,
    forward_with_rois,
    has_rois,
)
from mxa.utils.runtime import autocast

log = logging.getLogger(__name__)

__all__ = ["choose_loc_block", "evaluate_model", "predict", "roi_localization", "summarize_localization"]


class EvaluationMetrics(ClassificationMetrics, total=False):
    """:func:`evaluate_model`'s metrics: the classification metrics, the ROI localization per MXA block
    when the set has boxes, and what ``mxa eval`` adds (the JSON keys of ``--json``)."""

    roi_localization: dict[str, BlockLocalization]
    detection: DetectionMetrics
    per_dataset: dict[str, EvaluationMetrics]
    checkpoint: str
    data: str
    model: str | None


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp: str = "none",
    num_workers: int = 0,
    with_rois: bool = True,
    progress: bool = False,
    sampler: Any = None,
) -> dict[str, Any]:
    """Run ``model`` over an :class:`~mxa.data.combine.IndexedDataset`.

    Returns a dict of CPU tensors: ``index`` (N,), ``probs`` (N, C), ``logits`` (N, C), ``targets``,
    ``mask``, and when available ``true_boxes`` (N, 14, 4), ``rois`` {block: (N, 4) or, label-ROI blocks,
    (N, R, 4)} (the cropped boxes), ``roi_labels`` {block: (N, R)} (the label of each such box), ``points``
    {block: (N, 2)}, the (x, y) arg-max of each block's saliency map, and ``label_rois`` {block: (N, K, 4)}
    for blocks with per-label boxes (label-ROI blocks, ``class_boxes``).
    """
    device = torch.device(device)
    model.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, sampler=sampler
    )
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="eval", unit="batch", leave=False, disable=None)  # no bar off a terminal
    out: dict[str, list] = {"index": [], "probs": [], "targets": [], "mask": [], "true_boxes": []}
    rois: dict[str, list[torch.Tensor]] = {}
    use_rois = with_rois and has_rois(model)
    points: dict[str, list[torch.Tensor]] = {}
    label_rois: dict[str, list[torch.Tensor]] = {}
    roi_labels: dict[str, list[torch.Tensor]] = {}
    for batch in it:
        index, images, targets, mask = batch[:4]
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            if use_rois:
                with (
                    capture_saliency_points(model) as pts,
                    capture_label_boxes(model) as per_label,
                    capture_roi_labels(model) as which,
                ):
                    logits, boxes = forward_with_rois(model, images)
                for k, (lab, _) in which.items():
                    roi_labels.setdefault(k, []).append(lab.cpu())
                for k, v in boxes.items():
                    rois.setdefault(k, []).append(v.float().cpu())
                for k, v in per_label.items():
                    label_rois.setdefault(k, []).append(v.float().cpu())
                for k, v in pts.items():
                    points.setdefault(k, []).append(v.cpu())
            else:
                logits = model(images)
        out["index"].append(index)
        out["probs"].append(torch.sigmoid(logits.float()).cpu())
        out.setdefault("logits", []).append(logits.float().cpu())  # calibration is fitted on logits
        out["targets"].append(targets)
        out["mask"].append(mask)
        if len(batch) > 4:
            out["true_boxes"].append(batch[4])
    result: dict[str, Any] = {k: torch.cat(v) for k, v in out.items() if v}
    if rois:
        result["rois"] = {k: torch.cat(v) for k, v in rois.items()}
    if points:
        result["points"] = {k: torch.cat(v) for k, v in points.items()}
    if label_rois:
        result["label_rois"] = {k: torch.cat(v) for k, v in label_rois.items()}
    if roi_labels:
        result["roi_labels"] = {k: torch.cat(v) for k, v in roi_labels.items()}
    return result


def evaluate_model(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp: str = "none",
    n_bootstrap: int = 200,
    num_workers: int = 0,
    progress: bool = False,
    labels: tuple[str, ...] = CHEXPERT_LABELS,
    loc_block: str | None = None,
    loc_chosen_on: str | None = None,
) -> tuple[EvaluationMetrics, dict[str, Any]]:
    """Predict and compute all metrics; also the ROI localization and the detection metrics (AP, RoDeO;
    :mod:`mxa.metrics.detection`) when the dataset has true boxes.

    ``loc_block`` is the box set ``detection`` reports at the top level: chosen on a validation split
    (:func:`choose_loc_block`, with ``loc_chosen_on`` naming it) or given (``mxa eval --loc-block``); without
    it the best on this data (optimistic, and said so in ``detection.block_chosen_by``).

    Returns (metrics, predictions).
    """
    preds = predict(model, dataset, batch_size, device, amp, num_workers, progress=progress)
    metrics = EvaluationMetrics(
        **compute_metrics(preds["probs"], preds["targets"], preds["mask"], labels, n_bootstrap=n_bootstrap)
    )
    if "rois" in preds and "true_boxes" in preds:
        metrics["roi_localization"] = roi_localization(
            _with_label_boxes(preds), preds["true_boxes"], points=preds.get("points"), labels=labels
        )
        # RoDeO calls a finding where the model's decision rule does (0.5 where it has no threshold)
        rule = get_decision_rule(model)
        probs, thresholds = preds["probs"], None
        if rule is not None and tuple(rule.labels) == tuple(labels):
            probs = rule.probabilities(preds["logits"])
            thresholds = rule.threshold_tensor().nan_to_num(nan=0.5)
        # every box set: what each block crops, and (<block>/labels) every label's box where it has them
        boxes = _with_label_boxes(preds)
        chosen_by = "validation" if loc_chosen_on else "given"
        try:
            det = detection_metrics(
                boxes,
                probs,
                preds["true_boxes"],
                preds["targets"],
                thresholds,
                loc_block,
                chosen_by,
                loc_chosen_on,
            )
        except MissingExtraError as e:
            log.warning("%s; the detection metrics (AP, RoDeO) are left out", e)
            det = {}
        if det:
            metrics["detection"] = det
    return metrics, preds


#: suffix of a block's per-label boxes in ``roi_localization``
LABEL_BOXES = "/labels"


def choose_loc_block(
    model: torch.nn.Module, dataset: Dataset, batch_size: int = 64, device: str | torch.device = "cpu"
) -> str | None:
    """The box set (a block, or ``<block>/labels``) with the best AP at IoU 0.3 on ``dataset``, a validation
    split; None when the model has no MXA blocks or the split no true boxes."""
    if not has_rois(model):
        return None
    preds = predict(model, dataset, batch_size, device)
    if "true_boxes" not in preds or not bool((~torch.isnan(preds["true_boxes"][..., 0])).any()):
        return None
    try:
        det = detection_metrics(
            _with_label_boxes(preds), preds["probs"], preds["true_boxes"], preds["targets"]
        )
    except MissingExtraError:
        return None
    return best_ap_block(det["per_block"]) if det else None


def _with_label_boxes(preds: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The boxes each block crops and, as ``<block>/labels``, every label's box (N, K, 4), in block order.

    A label-ROI block's R crops become (N, K, 4) per-label boxes with NaN rows for the labels it did not
    crop: a finding whose label was not cropped counts as missed.
    """
    out: dict[str, torch.Tensor] = {}
    k = preds["probs"].shape[1]
    for name, boxes in preds["rois"].items():
        if name in preds.get("roi_labels", {}):
            boxes = crops_per_label(boxes, preds["roi_labels"][name], k)
        out[name] = boxes
        if name in preds.get("label_rois", {}):
            out[name + LABEL_BOXES] = preds["label_rois"][name]
    return out


def crops_per_label(boxes: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N, R, 4) cropped boxes and their (N, R) labels -> (N, K, 4), NaN for the labels not cropped.

    Examples:
        >>> import torch
        >>> from mxa.evaluate import crops_per_label
        >>> crops_per_label(torch.tensor([[[0.1, 0.1, 0.2, 0.2]]]), torch.tensor([[1]]), 2)[0]
        tensor([[   nan,    nan,    nan,    nan],
                [0.1000, 0.1000, 0.2000, 0.2000]])
    """
    out = torch.full((boxes.shape[0], k, 4), float("nan"), dtype=boxes.dtype)
    out.scatter_(1, labels[..., None].expand(-1, -1, 4).long(), boxes)
    return out


def metrics_by_source(preds: dict[str, Any], ds: Any, n_bootstrap: int = 0) -> dict[str, EvaluationMetrics]:
    """Metrics (and box localization where the set has boxes) of every set of a multi-set evaluation."""
    names = getattr(ds, "source_names", None)
    if not names or len(names) < 2:
        return {}
    src = torch.as_tensor(ds.source_of)[preds["index"]]
    out = {}
    for s, name in enumerate(names):
        sel = src == s
        if not sel.any():
            continue
        m = EvaluationMetrics(
            **compute_metrics(
                preds["probs"][sel], preds["targets"][sel], preds["mask"][sel], n_bootstrap=n_bootstrap
            )
        )
        if "rois" in preds and "true_boxes" in preds:
            rois = {k: v[sel] for k, v in _with_label_boxes(preds).items()}
            loc = roi_localization(rois, preds["true_boxes"][sel])
            if loc:
                m["roi_localization"] = loc
        out[name] = m
    return out
