"""Evaluation: predictions over a dataset, metrics, and how well each MXA block localizes findings."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.labels import CHEXPERT_LABELS
from ..utils.runtime import autocast
from .localization import roi_localization, summarize_localization
from .metrics import compute_metrics

__all__ = ["evaluate_model", "predict", "roi_localization", "summarize_localization"]


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
    """Run ``model`` over an :class:`~mxa.engine.data.IndexedDataset`.

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

        it = tqdm(loader, desc="eval", unit="batch", leave=False)
    out: dict[str, list] = {"index": [], "probs": [], "targets": [], "mask": [], "true_boxes": []}
    rois: dict[str, list[torch.Tensor]] = {}
    use_rois = (
        with_rois and hasattr(model, "forward_with_rois") and bool(getattr(model, "mxa_blocks", dict)())
    )
    points: dict[str, list[torch.Tensor]] = {}
    for batch in it:
        index, images, targets, mask = batch[:4]
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            if use_rois:
                with _saliency_points(model) as pts:
                    logits, boxes = model.forward_with_rois(images)
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
    result = {k: torch.cat(v) for k, v in out.items() if v}
    if rois:
        result["rois"] = {k: torch.cat(v) for k, v in rois.items()}
    if points:
        result["points"] = {k: torch.cat(v) for k, v in points.items()}
    return result


@contextlib.contextmanager
def _saliency_points(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Collect, per MXA block, the (B, 2) (x, y) arg-max of its box head's saliency map (pixel centres)."""
    found: dict[str, torch.Tensor] = {}

    def keep(name: str, _m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
        b, _, h, w = out.shape
        idx = out.reshape(b, -1).argmax(1)
        found[name] = torch.stack([(idx % w + 0.5) / w, (idx // w + 0.5) / h], 1).float()

    handles = [
        blk.roi.saliency.register_forward_hook(functools.partial(keep, name))
        for name, blk in model.mxa_blocks().items()
        if hasattr(getattr(blk, "roi", None), "saliency")
    ]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Predict and compute all metrics; also the ROI localization when the dataset has true boxes.

    Returns (metrics, predictions).
    """
    preds = predict(model, dataset, batch_size, device, amp, num_workers, progress=progress)
    metrics = compute_metrics(
        preds["probs"], preds["targets"], preds["mask"], labels, n_bootstrap=n_bootstrap
    )
    if "rois" in preds and "true_boxes" in preds:
        metrics["roi_localization"] = roi_localization(
            preds["rois"], preds["true_boxes"], points=preds.get("points"), labels=labels
        )
    return metrics, preds
