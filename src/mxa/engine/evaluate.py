"""Evaluation: predictions over a dataset, metrics, and how well each MXA block localizes findings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.labels import CHEXPERT_LABELS
from ..utils.runtime import autocast
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

    Returns a dict of CPU tensors: ``index`` (N,), ``probs`` (N, C), ``targets``, ``mask``, and when
    available ``true_boxes`` (N, 14, 4) and ``rois`` {block: (N, 4)}.
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
    for batch in it:
        index, images, targets, mask = batch[:4]
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            if use_rois:
                logits, boxes = model.forward_with_rois(images)
                for k, v in boxes.items():
                    rois.setdefault(k, []).append(v.float().cpu())
            else:
                logits = model(images)
        out["index"].append(index)
        out["probs"].append(torch.sigmoid(logits.float()).cpu())
        out["targets"].append(targets)
        out["mask"].append(mask)
        if len(batch) > 4:
            out["true_boxes"].append(batch[4])
    result = {k: torch.cat(v) for k, v in out.items() if v}
    if rois:
        result["rois"] = {k: torch.cat(v) for k, v in rois.items()}
    return result


def _hits(boxes: torch.Tensor, centres: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(M,) bool: does box m (M, 4) contain the centre (M, K, 2) of a present (M, K) finding?"""
    inside = (centres[..., 0] >= boxes[:, None, 0]) & (centres[..., 0] <= boxes[:, None, 2])
    inside &= (centres[..., 1] >= boxes[:, None, 1]) & (centres[..., 1] <= boxes[:, None, 3])
    return (inside & present).any(1)


def roi_localization(
    rois: dict[str, torch.Tensor], true_boxes: torch.Tensor, n_random: int = 64, seed: int = 0
) -> dict[str, dict[str, float]]:
    """How often each block's box contains the centre of a planted finding, against chance.

    Over the images with at least one planted finding: ``hit_rate`` is the fraction whose predicted box
    contains the centre of any of them; ``random_hit_rate`` the same for boxes of the same width and
    height placed uniformly at random inside the image (``n_random`` placements per image).

    Args:
        rois: {block: (N, 4)} predicted normalized xyxy boxes.
        true_boxes: (N, 14, 4) planted boxes, NaN rows for absent findings.
    """
    centres = (true_boxes[..., :2] + true_boxes[..., 2:]) / 2  # (N, 14, 2)
    present = ~torch.isnan(true_boxes[..., 0])
    has_any = present.any(1)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, boxes in rois.items():
        b = boxes[has_any].float()
        c, p = centres[has_any], present[has_any]
        if b.shape[0] == 0:
            continue

        w, h = (b[:, 2] - b[:, 0]).clamp(0, 1), (b[:, 3] - b[:, 1]).clamp(0, 1)
        rand_hits = []
        for _ in range(n_random):
            x1 = torch.rand(b.shape[0], generator=g) * (1 - w)
            y1 = torch.rand(b.shape[0], generator=g) * (1 - h)
            rand_hits.append(_hits(torch.stack([x1, y1, x1 + w, y1 + h], 1), c, p).float().mean())
        out[name] = {
            "hit_rate": float(_hits(b, c, p).float().mean()),
            "random_hit_rate": float(torch.stack(rand_hits).mean()),
            "mean_box_area": float((w * h).mean()),
            "n_images": int(b.shape[0]),
        }
    return out


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
        metrics["roi_localization"] = roi_localization(preds["rois"], preds["true_boxes"])
    return metrics, preds


def summarize_localization(loc: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean hit rate and chance over all blocks."""
    if not loc:
        return {}
    return {
        "hit_rate": float(np.mean([v["hit_rate"] for v in loc.values()])),
        "random_hit_rate": float(np.mean([v["random_hit_rate"] for v in loc.values()])),
    }
