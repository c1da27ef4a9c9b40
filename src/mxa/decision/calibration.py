"""Per-label calibration fitted on validation logits (``mxa eval --calibrate``).

``temperature`` (``sigmoid(z / T)``) or ``platt`` (``sigmoid(a z + b)``, ``a > 0``), maximum likelihood with
SciPy's L-BFGS-B, T and 1/a bounded to [0.01, 100]. A label with one class only, or with non-finite
logits, is left uncalibrated (identity) with the reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from mxa._optional import require
from mxa.decision.rule import CALIBRATION_METHODS, DecisionRule
from mxa.decision.thresholds import one_class_reason

log = logging.getLogger(__name__)

__all__ = ["fit_calibration"]

_TEMP_RANGE = (0.01, 100.0)
_INTERCEPT_RANGE = (-50.0, 50.0)


def _nll_and_grad(params: np.ndarray, z: np.ndarray, y: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of ``sigmoid(a z + b)`` and its gradient in the optimized parameters."""
    if method == "temperature":
        a, b = math.exp(-params[0]), 0.0  # params: log T
    else:
        a, b = math.exp(params[0]), params[1]  # params: log a, b
    x = a * z + b
    loss = float(np.mean(np.logaddexp(0.0, x) - y * x))
    r = 1.0 / (1.0 + np.exp(-x)) - y  # d loss / d x
    if method == "temperature":
        return loss, np.array([float(np.mean(r * z)) * -a])
    return loss, np.array([float(np.mean(r * z)) * a, float(np.mean(r))])


def fit_calibration(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    labels: Sequence[str],
    method: str = "temperature",
) -> tuple[DecisionRule, dict[str, str]]:
    """Fit per-label temperature or Platt scaling on (N, C) validation ``logits`` by maximum likelihood.

    Returns:
        (a :class:`DecisionRule` with the calibration and no thresholds, {label: why it was left as is}).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration must be one of {CALIBRATION_METHODS}, got {method!r}")
    opt = require("scipy.optimize", "Fitting a calibration")
    mask = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.bool()
    lt = (math.log(_TEMP_RANGE[0]), math.log(_TEMP_RANGE[1]))
    slope, intercept, reasons = [], [], {}
    for j, name in enumerate(labels):
        m = mask[:, j]
        z = logits[m, j].double().numpy()
        y = (targets[m, j] >= 0.5).double().numpy()
        why = one_class_reason(y, z)
        if why:
            slope.append(1.0)
            intercept.append(0.0)
            reasons[name] = f"{why}: not calibrated"
            continue
        neg, pos = z[y == 0], z[y == 1]
        if neg.max() < pos.min():  # separable: the likelihood keeps rising to the bound, so go there
            a = 1 / _TEMP_RANGE[0]
            cut = 0.0 if method == "temperature" else (neg.max() + pos.min()) / 2
            slope.append(a)
            intercept.append(float(np.clip(-a * cut, *_INTERCEPT_RANGE)))
            reasons[name] = "perfectly separable: sharpened to the bound (probabilities near 0 and 1)"
            continue
        if method == "temperature":
            x0, bounds = np.zeros(1), [lt]
        else:
            x0, bounds = np.zeros(2), [(-lt[1], -lt[0]), _INTERCEPT_RANGE]
        res = opt.minimize(_nll_and_grad, x0, args=(z, y, method), jac=True, method="L-BFGS-B", bounds=bounds)
        if method == "temperature":
            slope.append(math.exp(-float(res.x[0])))
            intercept.append(0.0)
        else:
            slope.append(math.exp(float(res.x[0])))
            intercept.append(float(res.x[1]))
        if not np.any(z != z[0]) and method == "temperature" and z[0] == 0:
            reasons[name] = "constant zero logits: a temperature cannot change them"
        elif any(abs(float(v) - b) < 1e-6 for v, bd in zip(res.x, bounds) for b in bd):
            reasons[name] = "the fit reached its bound (perfectly separable or degenerate scores)"
    rule = DecisionRule(tuple(labels), calibration=method, slope=tuple(slope), intercept=tuple(intercept))
    return rule, reasons
