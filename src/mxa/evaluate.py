"""Evaluation: predictions over a dataset, metrics, and how well each MXA block localizes findings."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mxa.data.labels import CHEXPERT_LABELS
from mxa.metrics.classification import ClassificationMetrics, compute_metrics
from mxa.metrics.localization import BlockLocalization, roi_localization, summarize_localization
from mxa.models.hooks import capture_saliency_points, forward_with_rois, has_rois
from mxa.utils.runtime import autocast

__all__ = ["evaluate_model", "predict", "roi_localization", "summarize_localization"]


class EvaluationMetrics(ClassificationMetrics, total=False):
    """:func:`evaluate_model`'s metrics: the classification metrics, the ROI localization per MXA block
    when the set has boxes, and what ``mxa eval`` adds (the JSON keys of ``--json``)."""

    roi_localization: dict[str, BlockLocalization]
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
    ``mask``, and when available ``true_boxes`` (N, 14, 4), ``rois`` {block: (N, 4)} and ``points``
    {block: (N, 2)}, the (x, y) arg-max of each block's saliency map.
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
    for batch in it:
        index, images, targets, mask = batch[:4]
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            if use_rois:
                with capture_saliency_points(model) as pts:
                    logits, boxes = forward_with_rois(model, images)
                for k, v in boxes.items():
                    rois.setdefault(k, []).append(v.float().cpu())
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
    """Predict and compute all metrics; also the ROI localization when the dataset has true boxes.

    Returns (metrics, predictions).
    """
    preds = predict(model, dataset, batch_size, device, amp, num_workers, progress=progress)
    metrics = EvaluationMetrics(
        **compute_metrics(preds["probs"], preds["targets"], preds["mask"], labels, n_bootstrap=n_bootstrap)
    )
    if "rois" in preds and "true_boxes" in preds:
        metrics["roi_localization"] = roi_localization(
            preds["rois"], preds["true_boxes"], points=preds.get("points"), labels=labels
        )
    return metrics, preds


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
            loc = roi_localization({k: v[sel] for k, v in preds["rois"].items()}, preds["true_boxes"][sel])
            if loc:
                m["roi_localization"] = loc
        out[name] = m
    return out
