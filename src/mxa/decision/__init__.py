"""Decisions: the stored rule (calibration + per-label thresholds), choosing thresholds, calibrating."""

from mxa.decision.rule import CALIBRATION_METHODS, DecisionRule, get_decision_rule

__all__ = ["CALIBRATION_METHODS", "DecisionRule", "get_decision_rule"]
