"""Moved to :mod:`mxa.data.combine` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.data.combine",
    {  # 0.2 names that live elsewhere now
        "metrics_by_source": "mxa.evaluate",
    },
)
