"""Multi-label metrics, reported honestly.

* ``macro_auc``: mean of the per-label AUCs over labels that have both classes; a label without
  positives (or negatives) is *undefined* (``None``), never 0.5 and never a NaN inside a mean.
* ``micro_auc``: one AUC over all (image, label) pairs pooled. The paper's code reported this number as
  "mean AUC"; we report both, under their own names.
* ``competition_auc``: mean AUC over the 5 CheXpert competition labels that are defined.
* F1 (micro, macro) and accuracy at threshold 0.5, over the labels not masked out.
* Bootstrap 95% confidence intervals (resampling images).

AUROC comes from torchmetrics (it also syncs across processes in ``torchmetrics.AUROC``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._optional import require
from ..data.labels import CHEXPERT_LABELS, COMPETITION_LABELS

__all__ = ["auroc", "bootstrap_ci", "compute_metrics"]

SCALAR_METRICS = ("macro_auc", "micro_auc", "competition_auc", "f1_micro", "f1_macro", "accuracy")


def auroc(scores: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Binary AUROC of 1-D scores, or None when only one class is present."""
    targets = targets.long()
    if targets.numel() == 0 or targets.min() == targets.max():
        return None
    tmf = require("torchmetrics.functional.classification", "AUROC")
    return float(tmf.binary_auroc(scores.float(), targets))


def _f1(tp: float, fp: float, fn: float) -> float | None:
    denom = 2 * tp + fp + fn
    return None if denom == 0 else 2 * tp / denom


def _point_metrics(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, labels: Sequence[str]
) -> dict[str, Any]:
    per_label: dict[str, float | None] = {}
    for j, name in enumerate(labels):
        m = mask[:, j]
        per_label[name] = auroc(probs[m, j], targets[m, j])
    defined = [v for v in per_label.values() if v is not None]
    comp = [per_label[n] for n in COMPETITION_LABELS if n in per_label and per_label[n] is not None]
    pred = probs >= 0.5
    t = targets >= 0.5
    tp = (pred & t & mask).sum(0).double()
    fp = (pred & ~t & mask).sum(0).double()
    fn = (~pred & t & mask).sum(0).double()
    f1_each = [_f1(float(a), float(b), float(c)) for a, b, c in zip(tp, fp, fn)]
    f1_def = [v for v in f1_each if v is not None]
    correct = ((pred == t) & mask).sum()
    return {
        "per_label_auc": per_label,
        "macro_auc": float(np.mean(defined)) if defined else None,
        "micro_auc": auroc(probs[mask], targets[mask]),
        "competition_auc": float(np.mean(comp)) if comp else None,
        "f1_micro": _f1(float(tp.sum()), float(fp.sum()), float(fn.sum())),
        "f1_macro": float(np.mean(f1_def)) if f1_def else None,
        "per_label_f1": dict(zip(labels, f1_each)),
        "accuracy": float(correct) / max(1, int(mask.sum())),
        "n_images": int(probs.shape[0]),
        "n_positive": {name: int((t[:, j] & mask[:, j]).sum()) for j, name in enumerate(labels)},
        "undefined_labels": [n for n, v in per_label.items() if v is None],
    }


def bootstrap_ci(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    labels: Sequence[str],
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap CIs of the scalar metrics and the per-label AUCs, resampling images."""
    g = torch.Generator().manual_seed(seed)
    n = probs.shape[0]
    samples: dict[str, list[float]] = {}
    for _ in range(n_bootstrap):
        idx = torch.randint(0, n, (n,), generator=g)
        m = _point_metrics(probs[idx], targets[idx], mask[idx], labels)
        for k in SCALAR_METRICS:
            if m[k] is not None:
                samples.setdefault(k, []).append(m[k])
        for name, v in m["per_label_auc"].items():
            if v is not None:
                samples.setdefault(f"auc/{name}", []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict[str, list[float] | None] = {}
    for k in [*SCALAR_METRICS, *(f"auc/{n}" for n in labels)]:
        v = samples.get(k)
        # a CI needs most resamples to define the metric; otherwise say it is undefined
        out[k] = (
            [float(np.percentile(v, lo)), float(np.percentile(v, hi))]
            if v and len(v) >= 0.9 * n_bootstrap
            else None
        )
    return out


def compute_metrics(
    probs: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    labels: Sequence[str] = CHEXPERT_LABELS,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of ``probs`` (N, C) against binary ``targets`` (N, C).

    Args:
        probs: predicted probabilities (apply a sigmoid to logits first).
        targets: 0/1 targets.
        mask: (N, C) bool, False where a label is ignored (uncertain under the ``ignore`` policy).
        labels: the C label names.
        n_bootstrap: number of bootstrap resamples for the 95% CIs (0: none).

    Returns:
        a JSON-ready dict with ``macro_auc``, ``micro_auc``, ``competition_auc``, ``per_label_auc``
        (label -> value or None), ``f1_micro``, ``f1_macro``, ``accuracy``, counts, and ``ci``.
    """
    probs = torch.as_tensor(probs, dtype=torch.float32)
    targets = torch.as_tensor(targets, dtype=torch.float32)
    if probs.shape != targets.shape or probs.ndim != 2:
        raise ValueError(
            f"probs {tuple(probs.shape)} and targets {tuple(targets.shape)} must be the same (N, C)"
        )
    if probs.shape[1] != len(labels):
        raise ValueError(f"{probs.shape[1]} columns for {len(labels)} labels")
    mask = (
        torch.ones_like(probs, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    )
    out = _point_metrics(probs, targets, mask, labels)
    out["ci"] = bootstrap_ci(probs, targets, mask, labels, n_bootstrap, seed) if n_bootstrap > 0 else {}
    return out
