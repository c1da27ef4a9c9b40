"""What ``mxa eval`` reports and stores about decisions: calibration, thresholds, operating points."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from mxa.decision.calibration import fit_calibration
from mxa.decision.rule import DecisionRule
from mxa.decision.thresholds import ThresholdSpec, choose_thresholds, operating_points, parse_threshold_spec
from mxa.metrics.classification import calibration_metrics

__all__ = ["decision_report"]

log = logging.getLogger(__name__)


def decision_report(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    labels: Sequence[str],
    thresholds: ThresholdSpec | str | None = None,
    calibrate: str | None = None,
    current: DecisionRule | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> tuple[dict[str, Any], DecisionRule | None, dict[str, torch.Tensor]]:
    """What ``mxa eval`` reports and stores about decisions.

    Calibration: ``calibrate`` fits a new one; otherwise the ``current`` rule's (a saved model's) is
    evaluated. Thresholds: ``thresholds`` chooses new ones on the (calibrated) probabilities; otherwise the
    ``current`` rule's are evaluated (held-out check of a saved model).

    Returns:
        (JSON-ready metrics: ``ece``/``brier`` as numbers, or ``{"before", "after"}`` when there is a
        calibration, ``per_label_ece``/``per_label_brier`` likewise, ``calibration``, ``thresholds``,
        ``threshold_method``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``ci``,
        ``undefined_thresholds``;
        the rule to store or None; {"before": probs, "after": probs or absent} for the reliability diagram).
    """
    mask = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.bool()
    labels = list(labels)
    if current is not None:
        current.check_labels(labels, "the model's decision rule")
    if calibrate and thresholds is None and current is not None and current.thresholds is not None:
        raise ValueError(
            "the model carries thresholds chosen on its present probabilities, which a new calibration "
            "changes; choose them again on the new scale with --thresholds too (e.g. --thresholds youden)"
        )
    raw = torch.sigmoid(logits.float())
    out: dict[str, Any] = {}
    cal_rule = current if current is not None and current.calibration is not None else None
    if calibrate:
        cal_rule, why = fit_calibration(logits, targets, mask, labels, calibrate)
        out["calibration_notes"] = why
    before = calibration_metrics(raw, targets, mask, labels)
    probs = {"before": raw}
    if cal_rule is not None:
        probs["after"] = cal_rule.probabilities(logits)
        after = calibration_metrics(probs["after"], targets, mask, labels)
        for k in before:
            out[k] = {"before": before[k], "after": after[k]}
        out["calibration"] = cal_rule.to_dict()["calibration"]
    else:
        out.update(before)
    final = probs.get("after", raw)
    th_values: dict[str, float | None] | None = None
    method = None
    if thresholds is not None:
        spec = parse_threshold_spec(thresholds) if isinstance(thresholds, str) else thresholds
        th_values, why_none = choose_thresholds(final, targets, mask, labels, spec)
        method = spec.name
        out["undefined_thresholds"] = why_none
    elif current is not None and current.thresholds is not None:
        th_values, method = dict(current.thresholds), current.threshold_method
    if th_values is not None:
        out["thresholds"] = th_values
        out["threshold_method"] = method
        out.update(operating_points(final, targets, mask, labels, th_values, n_bootstrap, seed))
    rule = None
    if calibrate or thresholds is not None:
        rule = DecisionRule(
            tuple(labels),
            th_values,
            method,
            cal_rule.calibration if cal_rule else None,
            cal_rule.slope if cal_rule else None,
            cal_rule.intercept if cal_rule else None,
        )
    return out, rule, probs
