"""Operating points chosen on validation data (``mxa eval --thresholds``), with bootstrap CIs.

Thresholds (per label, on the probability the model outputs: calibrated when it carries a calibration):

* ``youden``: the cut that maximizes sensitivity + specificity - 1;
* ``f1``: the cut that maximizes F1;
* ``sensitivity:X``: the highest cut whose sensitivity is at least X (the best specificity there);
* ``specificity:X``: the lowest cut whose specificity is at least X (the best sensitivity there);
* a number (every label) or a JSON file ``{label: value}`` (fixed values, method ``fixed``).

The ROC points come from ``sklearn.metrics.roc_curve``. A cut sits halfway between the two distinct scores
it separates; the rule is "positive iff p >= threshold"; among equally good cuts the highest wins. A label
whose (unmasked) validation data has one class only gets no threshold (``None``, with the reason).
Operating-point metrics come with percentile bootstrap CIs over images; measured on the data the points
were chosen on they are optimistic (check a saved model on other data with ``mxa eval --checkpoint``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mxa.decision.rule import threshold_value
from mxa.metrics.classification import roc_points

log = logging.getLogger(__name__)

__all__ = ["ThresholdSpec", "choose_thresholds", "operating_points", "parse_threshold_spec"]


@dataclass(frozen=True)
class ThresholdSpec:
    """How to choose thresholds: ``method`` in youden, f1, sensitivity, specificity, fixed; ``target`` the
    sensitivity/specificity to reach; ``values`` the fixed thresholds (label -> value; ``"*"``: all)."""

    method: str
    target: float | None = None
    values: dict[str, float] | None = None

    @property
    def name(self) -> str:
        return f"{self.method}:{self.target:g}" if self.target is not None else self.method


def parse_threshold_spec(text: str) -> ThresholdSpec:
    """``youden``, ``f1``, ``sensitivity:0.9``, ``specificity:0.9``, a number in [0, 1] or a JSON file.

    Raises:
        ValueError: anything else (the message lists the accepted forms).
        FileNotFoundError: a ``.json`` path that does not exist.
    """
    forms = (
        "youden, f1, sensitivity:X, specificity:X (X in (0, 1]), a number in [0, 1] or a {label: value} .json"
    )
    t = text.strip().lower()
    if t in ("youden", "f1"):
        return ThresholdSpec(t)
    kind, sep, val = t.partition(":")
    if sep and kind in ("sensitivity", "specificity"):
        try:
            x = float(val)
        except ValueError:
            raise ValueError(f"thresholds {text!r}: {val!r} is not a number; use {forms}") from None
        if not 0 < x <= 1:
            raise ValueError(f"thresholds {text!r}: the target {kind} must be in (0, 1], got {x}")
        return ThresholdSpec(kind, x)
    if text.endswith(".json"):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"thresholds file not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not JSON ({e}); it must hold {{label: threshold}}") from None
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"{path} must hold a non-empty JSON object {{label: threshold}}")
        values = {str(k): threshold_value(v, f"{path}: the threshold of {k}") for k, v in raw.items()}
        return ThresholdSpec("fixed", values=values)
    try:
        x = float(t)
    except ValueError:
        raise ValueError(f"unknown thresholds {text!r}; use {forms}") from None
    if not 0 <= x <= 1:
        raise ValueError(f"a fixed threshold must be in [0, 1], got {x}")
    return ThresholdSpec("fixed", values={"*": x})


def one_class_reason(y: np.ndarray, s: np.ndarray) -> str | None:
    if not np.isfinite(s).all():
        return f"non-finite scores ({int((~np.isfinite(s)).sum())} of {s.size})"
    if y.size == 0:
        return "no scored images"
    if y.min() == y.max():
        return "no positives" if y.max() == 0 else "no negatives"
    return None


def _cut(thr: np.ndarray, i: int) -> float:
    """The threshold halfway between roc_curve's threshold ``thr[i]`` and the next lower distinct score."""
    if i == 0:  # nothing positive: above the highest score
        top = float(thr[1])
        return (top + 1.0) / 2 if top < 1.0 else float(np.nextafter(top, np.inf))
    if i == len(thr) - 1:  # everything positive: below the lowest score
        return float(thr[i]) / 2
    return (float(thr[i]) + float(thr[i + 1])) / 2


def _choose_one(y: np.ndarray, s: np.ndarray, spec: ThresholdSpec) -> float:
    fpr, tpr, thr = roc_points(s, y)
    if spec.method == "youden":
        i = int(np.argmax(tpr - fpr))
    elif spec.method == "f1":
        p, n = float(y.sum()), float(y.size - y.sum())
        tp, fp = tpr * p, fpr * n
        i = int(np.argmax(2 * tp / np.maximum(2 * tp + fp + (p - tp), 1e-12)))
    elif spec.method == "sensitivity":
        assert spec.target is not None  # parse_threshold_spec sets it for this method
        i = int(np.argmax(tpr >= spec.target - 1e-12))  # first (highest) cut reaching it
    elif spec.method == "specificity":
        assert spec.target is not None
        i = int(np.nonzero(1 - fpr >= spec.target - 1e-12)[0][-1])  # last (lowest) cut keeping it
    else:
        raise ValueError(f"unknown threshold method {spec.method!r}")
    return _cut(thr, i)


def choose_thresholds(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    labels: Sequence[str],
    spec: ThresholdSpec | str,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Per-label thresholds on (N, C) ``probs`` against 0/1 ``targets``.

    Returns:
        ({label: threshold or None}, {label: why None}).
    """
    spec = parse_threshold_spec(spec) if isinstance(spec, str) else spec
    probs, targets = probs.double(), targets.double()
    mask = torch.ones_like(probs, dtype=torch.bool) if mask is None else mask.bool()
    out: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    if spec.method == "fixed":
        values = spec.values or {}
        unknown = sorted(set(values) - {"*", *labels})
        if unknown:
            raise ValueError(f"thresholds for unknown labels {unknown}; the labels are {list(labels)}")
        for name in labels:
            out[name] = values.get(name, values.get("*"))
            if out[name] is None:
                reasons[name] = "no threshold given"
        return out, reasons
    for j, name in enumerate(labels):
        m = mask[:, j]
        y, s = (targets[m, j] >= 0.5).numpy().astype(np.int64), probs[m, j].numpy()
        why = one_class_reason(y, s)
        if why:
            out[name], reasons[name] = None, why
            continue
        out[name] = _choose_one(y, s, spec)
    return out, reasons


def _rates(pred: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sensitivity, specificity, PPV, NPV over dim -2 of (..., N, C) bool tensors; NaN where undefined."""
    tp = (pred & t & m).sum(-2).double()
    fp = (pred & ~t & m).sum(-2).double()
    fn = (~pred & t & m).sum(-2).double()
    tn = (~pred & ~t & m).sum(-2).double()

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a + b > 0, a / (a + b).clamp_min(1), torch.full_like(a, math.nan))

    return {
        "sensitivity": ratio(tp, fn),
        "specificity": ratio(tn, fp),
        "ppv": ratio(tp, fp),
        "npv": ratio(tn, fn),
    }


def operating_points(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    labels: Sequence[str],
    thresholds: dict[str, float | None],
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV of "positive iff p >= threshold", per label, with CIs.

    Returns:
        ``{"sensitivity": {label: v}, "specificity": ..., "ppv": ..., "npv": ...,
        "ci": {"sensitivity/<label>": [lo, hi] or None, ...}}``; a value is None where its denominator is
        empty or the label has no threshold, a CI is None unless 90% of the resamples define it.
    """
    mask = torch.ones_like(probs, dtype=torch.bool) if mask is None else mask.bool()
    th = torch.tensor([math.nan if (v := thresholds.get(n)) is None else float(v) for n in labels])
    valid = torch.isfinite(th)
    pred, t = probs.double() >= th.double(), targets >= 0.5
    rates = _rates(pred, t, mask)
    out: dict[str, Any] = {
        k: {n: (float(v[j]) if valid[j] and not math.isnan(v[j]) else None) for j, n in enumerate(labels)}
        for k, v in rates.items()
    }
    ci: dict[str, list[float] | None] = {}
    if n_bootstrap > 0:
        g = torch.Generator().manual_seed(seed)
        n = probs.shape[0]
        idx = torch.randint(0, n, (n_bootstrap, n), generator=g)
        boot = _rates(pred[idx], t[idx], mask[idx])  # each (B, C)
        lo, hi = (1 - level) / 2, (1 + level) / 2
        for k, b in boot.items():
            for j, name in enumerate(labels):
                col = b[:, j][~torch.isnan(b[:, j])]
                ok = bool(valid[j]) and col.numel() >= 0.9 * n_bootstrap
                ci[f"{k}/{name}"] = (
                    [float(torch.quantile(col, lo)), float(torch.quantile(col, hi))] if ok else None
                )
    out["ci"] = ci
    return out
