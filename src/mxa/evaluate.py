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
from mxa.metrics.detection import DetectionMetrics, detection_metrics
from mxa.metrics.localization import BlockLocalization, roi_localization, summarize_localization
from mxa.models.hooks import capture_label_boxes, capture_saliency_points, forward_with_rois, has_rois
from mxa.utils.runtime import autocast

log = logging.getLogger(__name__)

__all__ = ["evaluate_model", "predict", "roi_localization", "summarize_localization"]


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
    ``mask``, and when available ``true_boxes`` (N, 14, 4), ``rois`` {block: (N, 4)}, ``points``
    {block: (N, 2)}, the (x, y) arg-max of each block's saliency map, and ``label_rois`` {block: (N, K, 4)}
    for blocks with per-label boxes (``class_boxes``).
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
    for batch in it:
        index, images, targets, mask = batch[:4]
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            if use_rois:
                with capture_saliency_points(model) as pts, capture_label_boxes(model) as per_label:
                    logits, boxes = forward_with_rois(model, images)
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
) -> tuple[EvaluationMetrics, dict[str, Any]]:
    """Predict and compute all metrics; also the ROI localization and the detection metrics (AP, RoDeO;
    :mod:`mxa.metrics.detection`) when the dataset has true boxes.

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
        # each finding's box: the block's per-label box where it has them, else the block's box
        boxes = {**preds["rois"], **preds.get("label_rois", {})}
        try:
            det = detection_metrics(boxes, probs, preds["true_boxes"], preds["targets"], thresholds)
        except MissingExtraError as e:
            log.warning("%s; the detection metrics (AP, RoDeO) are left out", e)
            det = {}
        if det:
            metrics["detection"] = det
    return metrics, preds


#: suffix of a block's per-label boxes in ``roi_localization``
LABEL_BOXES = "/labels"


def _with_label_boxes(preds: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The blocks' boxes and, as ``<block>/labels``, their per-label boxes (N, K, 4), in block order."""
    out: dict[str, torch.Tensor] = {}
    for name, boxes in preds["rois"].items():
        out[name] = boxes
        if name in preds.get("label_rois", {}):
            out[name + LABEL_BOXES] = preds["label_rois"][name]
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
