"""Multi-label metrics, reported honestly.

* ``macro_auc``: mean of the per-label AUCs over labels that have both classes; a label without
  positives (or negatives) is *undefined* (``None``), never 0.5 and never a NaN inside a mean.
* ``micro_auc``: one AUC over all (image, label) pairs pooled. The paper's code reported this number as
  "mean AUC"; we report both, under their own names.
* ``competition_auc``: mean AUC over the 5 CheXpert competition labels that are defined.
* F1 (micro, macro) and accuracy at threshold 0.5, over the labels not masked out.
* Bootstrap 95% confidence intervals (resampling images).
* Calibration: ``ece`` (expected calibration error, 15 equal-width bins of the predicted probability,
  torchmetrics' binary ECE per label) and ``brier`` (mean squared error of the probability), each the mean
  over the labels with scored entries, and ``per_label_ece`` / ``per_label_brier``.
* Non-finite scores (a model that outputs NaN/inf) are never turned into a number: ``auroc`` refuses
  them, and ``compute_metrics`` reports the affected metrics as undefined, with the reason in
  ``undefined_reasons`` and the count in ``n_nonfinite``.

AUROC comes from torchmetrics (it also syncs across processes in ``torchmetrics.AUROC``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch

from mxa._optional import require
from mxa.data.labels import CHEXPERT_LABELS, COMPETITION_LABELS

__all__ = [
    "ClassificationMetrics",
    "auroc",
    "bootstrap_ci",
    "brier_score",
    "calibration_metrics",
    "compute_metrics",
    "expected_calibration_error",
    "roc_points",
]


class ClassificationMetrics(TypedDict, total=False):
    """What :func:`compute_metrics` returns (the JSON keys of ``mxa eval --json`` and ``metrics.jsonl``)."""

    per_label_auc: dict[str, float | None]
    macro_auc: float | None
    micro_auc: float | None
    competition_auc: float | None
    f1_micro: float | None
    f1_macro: float | None
    per_label_f1: dict[str, float | None]
    accuracy: float | None
    n_images: int
    n_positive: dict[str, int]
    n_nonfinite: int
    undefined_labels: list[str]
    undefined_reasons: dict[str, str]
    ece: float | None
    brier: float | None
    per_label_ece: dict[str, float | None]
    per_label_brier: dict[str, float | None]
    ci: dict[str, list[float] | None]


SCALAR_METRICS = ("macro_auc", "micro_auc", "competition_auc", "f1_micro", "f1_macro", "accuracy")


def auroc(scores: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Binary AUROC of 1-D scores, or None when only one class is present.

    Raises:
        ValueError: some scores are NaN or infinite (torchmetrics would return a number for them).
    """
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ValueError(
            f"{bad} of {scores.numel()} scores are not finite: the model produced NaN/inf, so their AUROC "
            "is undefined; find where the model diverges (learning rate, AMP overflow, bad input)"
        )
    targets = targets.long()
    if targets.numel() == 0 or targets.min() == targets.max():
        return None
    tmf = require("torchmetrics.functional.classification", "AUROC")
    # torchmetrics integrates in float32 and can return 1.0000001 for a perfect ranking
    return min(1.0, max(0.0, float(tmf.binary_auroc(scores.float(), targets))))


def roc_points(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of 1-D scores at every distinct score (``sklearn.metrics.roc_curve`` without
    dropping points), highest threshold first: the one ROC curve behind thresholds and the ROC figure."""
    skm = require("sklearn.metrics", "ROC curves")
    fpr, tpr, thr = skm.roc_curve(targets, scores, drop_intermediate=False)
    return fpr, tpr, thr


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> float | None:
    """ECE of 1-D probabilities of the positive class: sum over equal-width bins of
    ``|mean(p) - mean(y)|`` weighted by the bin's share of entries. None when empty or not finite."""
    if probs.numel() == 0 or not bool(torch.isfinite(probs).all()):
        return None
    tmf = require("torchmetrics.functional.classification", "Calibration error")
    return float(tmf.binary_calibration_error(probs.float().clamp(0, 1), targets.long(), n_bins=n_bins))


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Mean of ``(p - y)^2`` over 1-D probabilities; None when empty or not finite."""
    if probs.numel() == 0 or not bool(torch.isfinite(probs).all()):
        return None
    return float(((probs.double() - targets.double()) ** 2).mean())


def calibration_metrics(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, labels: Sequence[str]
) -> dict[str, Any]:
    """``ece``, ``brier`` (means over the labels that have them) and ``per_label_ece``/``per_label_brier``."""
    ece = {
        n: expected_calibration_error(probs[mask[:, j], j], targets[mask[:, j], j])
        for j, n in enumerate(labels)
    }
    brier = {n: brier_score(probs[mask[:, j], j], targets[mask[:, j], j]) for j, n in enumerate(labels)}
    bad = not bool(torch.isfinite(probs[mask]).all())

    def mean(d: dict[str, float | None]) -> float | None:
        v = [x for x in d.values() if x is not None]
        return float(np.mean(v)) if v and not bad else None

    return {"ece": mean(ece), "brier": mean(brier), "per_label_ece": ece, "per_label_brier": brier}


def _f1(tp: float, fp: float, fn: float) -> float | None:
    denom = 2 * tp + fp + fn
    return None if denom == 0 else 2 * tp / denom


def _point_metrics(
    probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, labels: Sequence[str]
) -> dict[str, Any]:
    n_bad: list[int] = (~torch.isfinite(probs) & mask).sum(0).tolist()  # per label, unmasked only
    any_bad = any(n_bad)
    per_label: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for j, name in enumerate(labels):
        m = mask[:, j]
        if n_bad[j]:
            per_label[name] = None
            reasons[name] = f"non-finite scores ({n_bad[j]} of {int(m.sum())})"
            continue
        per_label[name] = auroc(probs[m, j], targets[m, j])
        if per_label[name] is None:
            reasons[name] = "one class only"
    defined = [v for v in per_label.values() if v is not None]
    comp_names = [n for n in COMPETITION_LABELS if n in per_label]
    comp = [v for n in comp_names if (v := per_label[n]) is not None]
    pred = probs >= 0.5
    t = targets >= 0.5
    tp = (pred & t & mask).sum(0).double()
    fp = (pred & ~t & mask).sum(0).double()
    fn = (~pred & t & mask).sum(0).double()
    f1_each = [None if bad else _f1(float(a), float(b), float(c)) for a, b, c, bad in zip(tp, fp, fn, n_bad)]
    f1_def = [v for v in f1_each if v is not None]
    correct = ((pred == t) & mask).sum()
    n_scored = int(mask.sum())
    # A label whose scores are non-finite has both classes, so it is not "undefined" in the sense the
    # means exclude: leaving it out would rank a partly-NaN model on its healthy labels only.
    comp_bad = any(dict(zip(labels, n_bad))[n] for n in comp_names)
    return {
        "per_label_auc": per_label,
        "macro_auc": float(np.mean(defined)) if defined and not any_bad else None,
        "micro_auc": None if any_bad else auroc(probs[mask], targets[mask]),
        "competition_auc": float(np.mean(comp)) if comp and not comp_bad else None,
        "f1_micro": None if any_bad else _f1(float(tp.sum()), float(fp.sum()), float(fn.sum())),
        "f1_macro": float(np.mean(f1_def)) if f1_def and not any_bad else None,
        "per_label_f1": dict(zip(labels, f1_each)),
        # no scored entries: undefined, not 0% correct
        "accuracy": float(correct) / n_scored if n_scored and not any_bad else None,
        "n_images": int(probs.shape[0]),
        "n_positive": {name: int((t[:, j] & mask[:, j]).sum()) for j, name in enumerate(labels)},
        "n_nonfinite": sum(n_bad),
        "undefined_labels": [n for n, v in per_label.items() if v is None],
        "undefined_reasons": reasons,
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
        # a CI needs most resamples to define the metric; otherwise say it is undefined.
        # Every metric here lies in [0, 1]; clamp so percentile interpolation cannot step outside.
        out[k] = (
            [_unit(np.percentile(v, lo)), _unit(np.percentile(v, hi))]
            if v and len(v) >= 0.9 * n_bootstrap
            else None
        )
    return out


def _unit(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def compute_metrics(
    probs: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    labels: Sequence[str] = CHEXPERT_LABELS,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> ClassificationMetrics:
    """All metrics of ``probs`` (N, C) against binary ``targets`` (N, C).

    Args:
        probs: predicted probabilities in [0, 1] (apply a sigmoid to logits first: values outside [0, 1]
            are refused; NaN/inf are reported, see below).
        targets: 0/1 targets.
        mask: (N, C) bool, False where a label is ignored (uncertain under the ``ignore`` policy).
        labels: the C label names.
        n_bootstrap: number of bootstrap resamples for the 95% CIs (0: none).

    Returns:
        a JSON-ready dict with ``macro_auc``, ``micro_auc``, ``competition_auc``, ``per_label_auc``
        (label -> value or None), ``f1_micro``, ``f1_macro``, ``accuracy``, counts, and ``ci``.
        ``ece`` / ``brier`` (and ``per_label_ece`` / ``per_label_brier``) measure calibration.
        ``undefined_labels`` lists the labels without an AUC and ``undefined_reasons`` says why
        (``"one class only"`` or ``"non-finite scores (k of n)"``). When any unmasked score is
        NaN/inf (``n_nonfinite`` > 0), ``macro_auc``, ``micro_auc``, the F1s and ``accuracy`` are None
        (``competition_auc`` too when one of its labels is affected): a broken model gets no score.
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
    finite = probs[torch.isfinite(probs) & mask]
    if finite.numel() and (float(finite.min()) < 0.0 or float(finite.max()) > 1.0):
        raise ValueError(
            f"probs must be probabilities in [0, 1], got values in [{float(finite.min()):.3g}, "
            f"{float(finite.max()):.3g}]: these look like logits; pass torch.sigmoid(logits)"
        )
    out = _point_metrics(probs, targets, mask, labels)
    out.update(calibration_metrics(probs, targets, mask, labels))
    out["ci"] = bootstrap_ci(probs, targets, mask, labels, n_bootstrap, seed) if n_bootstrap > 0 else {}
    return ClassificationMetrics(**out)  # type: ignore[typeddict-item]  # (the keys above, checked by tests)
