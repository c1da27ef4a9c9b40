"""Moved to :mod:`mxa.decision` (0.3: rule, thresholds, calibration, report); this path still imports it."""

from mxa._compat import alias_module

alias_module(__name__, "mxa.decision.report")
