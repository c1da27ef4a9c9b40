"""Moved to :mod:`mxa.metrics.report` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.metrics.report",
    {  # 0.2 names that live elsewhere now
        "run_ablation": "mxa.train.experiment",
    },
)
