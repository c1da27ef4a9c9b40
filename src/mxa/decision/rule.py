"""From logits to decisions: a model's per-label calibration and operating thresholds, stored with it.

A :class:`DecisionRule` is plain data (JSON-ready through :meth:`DecisionRule.to_dict`). It travels

* in a ``mxa train`` checkpoint under the key ``decision`` (``mxa eval --save-model``),
* in an exported safetensors file's config (``mxa_config`` metadata and ``config.json``) and in an ONNX
  file's metadata (key ``mxa_decision``),

and :func:`mxa.load_model` attaches it to the model as ``model.decision_rule`` (``None`` when the file has
none). ``forward`` still returns raw logits; :func:`mxa.predict_files` applies the rule.

The maths, per label j with logit z:

* calibration ``p = sigmoid(slope_j * z + intercept_j)``: temperature scaling is ``slope = 1 / T``,
  ``intercept = 0``; Platt scaling fits both. Both keep ``slope > 0``, so the ranking (and the AUC) is kept.
* decision: positive iff ``p >= threshold_j``, where ``p`` is the calibrated probability when the rule has
  a calibration (the thresholds were chosen on that scale). A label without a threshold (``None``: its
  validation data had one class only) has no decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CALIBRATION_METHODS", "DecisionRule", "get_decision_rule"]

CALIBRATION_METHODS = ("temperature", "platt")


def _finite(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class DecisionRule:
    """Per-label calibration (optional) and thresholds (optional) for a model's ``labels``.

    Args:
        labels: the C label names, in the model's output order.
        thresholds: label -> threshold on the output probability (calibrated when ``calibration`` is set),
            or ``None`` for a label without one; ``None`` for no thresholds at all.
        threshold_method: how they were chosen (``youden``, ``f1``, ``sensitivity:0.9``, ``fixed``...).
        calibration: ``temperature``, ``platt`` or ``None``.
        slope: per-label calibration slopes (C,); a temperature is ``1 / slope``.
        intercept: per-label calibration intercepts (C,) (0 for temperature scaling).
    """

    labels: tuple[str, ...]
    thresholds: dict[str, float | None] | None = None
    threshold_method: str | None = None
    calibration: str | None = None
    slope: tuple[float, ...] | None = None
    intercept: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        c = len(self.labels)
        if self.calibration is not None:
            if self.calibration not in CALIBRATION_METHODS:
                raise ValueError(
                    f"calibration must be one of {CALIBRATION_METHODS}, got {self.calibration!r}"
                )
            if (
                self.slope is None
                or self.intercept is None
                or len(self.slope) != c
                or len(self.intercept) != c
            ):
                raise ValueError(f"a {self.calibration} calibration needs {c} slopes and intercepts")
            if any(_finite(s, "a calibration slope") <= 0 for s in self.slope):
                raise ValueError("calibration slopes must be > 0 (a temperature must be positive)")
            for b in self.intercept:
                _finite(b, "a calibration intercept")
        if self.thresholds is not None:
            extra = sorted(set(self.thresholds) - set(self.labels))
            if extra:
                raise ValueError(
                    f"thresholds for unknown labels {extra}; the model's labels are {list(self.labels)}"
                )
            for name, t in self.thresholds.items():
                if t is not None:
                    _finite(t, f"the threshold of {name}")

    # --- applying it ----------------------------------------------------------------------------------
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) logits -> (B, C) probabilities, calibrated when the rule has a calibration."""
        z = logits.float()
        if self.calibration is None:
            return torch.sigmoid(z)
        a = torch.tensor(self.slope, dtype=torch.float32, device=z.device)
        b = torch.tensor(self.intercept, dtype=torch.float32, device=z.device)
        return torch.sigmoid(z * a + b)

    def threshold(self, label: str) -> float | None:
        """``label``'s threshold, or None where it has none (or there are no thresholds)."""
        return (self.thresholds or {}).get(label)

    def threshold_tensor(self) -> torch.Tensor:
        """(C,) thresholds, NaN where a label has none (or no thresholds at all)."""
        th = self.thresholds or {}
        return torch.tensor([math.nan if (v := th.get(n)) is None else float(v) for n in self.labels])

    def decide(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) probabilities -> (positive, defined): two (B, C) bool tensors; ``positive`` is False where
        ``defined`` is False (no threshold for that label)."""
        t = self.threshold_tensor().to(probs.device)
        defined = torch.isfinite(t).expand_as(probs)
        return (probs >= t) & defined, defined.clone()

    @property
    def temperatures(self) -> dict[str, float] | None:
        """label -> temperature ``1 / slope`` (temperature scaling only)."""
        if self.calibration != "temperature" or self.slope is None:
            return None
        return {n: 1.0 / s for n, s in zip(self.labels, self.slope)}

    # --- storing it -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what checkpoints, exported configs and ONNX metadata hold)."""
        cal: dict[str, Any] | None = None
        if self.calibration is not None:
            cal = {"method": self.calibration}
            if self.calibration == "temperature":
                cal["temperature"] = self.temperatures
            else:
                cal["slope"] = dict(zip(self.labels, self.slope or ()))
                cal["intercept"] = dict(zip(self.labels, self.intercept or ()))
        return {
            "labels": list(self.labels),
            "thresholds": None if self.thresholds is None else dict(self.thresholds),
            "threshold_method": self.threshold_method,
            "calibration": cal,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "the decision rule") -> DecisionRule:
        """Inverse of :meth:`to_dict`; a ``ValueError`` naming ``source`` when the data is malformed."""
        try:
            labels = tuple(str(n) for n in d["labels"])
            cal = d.get("calibration")
            slope = intercept = None
            method = None
            if cal:
                method = cal["method"]
                if method == "temperature":
                    temps = [_finite(cal["temperature"][n], f"the temperature of {n}") for n in labels]
                    if any(t <= 0 for t in temps):
                        raise ValueError("temperatures must be > 0")
                    slope, intercept = tuple(1.0 / t for t in temps), tuple(0.0 for _ in labels)
                elif method != "platt":
                    raise ValueError(
                        f"unknown calibration method {method!r} (not {' or '.join(CALIBRATION_METHODS)})"
                    )
                else:
                    slope = tuple(_finite(cal["slope"][n], f"the Platt slope of {n}") for n in labels)
                    intercept = tuple(
                        _finite(cal["intercept"][n], f"the Platt intercept of {n}") for n in labels
                    )
                    if any(a <= 0 for a in slope):
                        raise ValueError("Platt slopes must be > 0")
            th = d.get("thresholds")
            thresholds = (
                None
                if th is None
                else {
                    str(k): (None if v is None else threshold_value(v, f"the threshold of {k}"))
                    for k, v in th.items()
                }
            )
            return cls(labels, thresholds, d.get("threshold_method"), method, slope, intercept)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(
                f"{source} cannot be read ({type(e).__name__}: {e}); run `mxa eval` again"
            ) from None

    def check_labels(self, labels: Sequence[str], source: str = "the decision rule") -> DecisionRule:
        """Raise ``ValueError`` unless the rule is for exactly these labels, in this order."""
        if tuple(labels) != self.labels:
            raise ValueError(
                f"{source} is for the labels {list(self.labels)}, but the model outputs {list(labels)}"
            )
        return self


def threshold_value(v: Any, what: str = "a threshold") -> float:
    """``v`` as a probability threshold: a real number in [0, 1] (not a bool, not NaN), else ``ValueError``.

    Examples:
        >>> from mxa.decision.rule import threshold_value
        >>> threshold_value(0.25)
        0.25
        >>> threshold_value(True)
        Traceback (most recent call last):
        ...
        ValueError: a threshold must be a number in [0, 1], got True
    """
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {v!r}")
    return float(v)


def get_decision_rule(model: torch.nn.Module) -> DecisionRule | None:
    """The :class:`DecisionRule` :func:`mxa.load_model` attached to ``model`` (``None`` when it has none)."""
    rule = getattr(model, "decision_rule", None)
    return rule if isinstance(rule, DecisionRule) else None
