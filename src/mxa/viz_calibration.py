"""Moved to :mod:`mxa.viz.calibration` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(__name__, "mxa.viz.calibration")
