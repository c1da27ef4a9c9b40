"""Moved to :mod:`mxa.data.spec` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.data.combine",
    {  # 0.2 names that live elsewhere now
        "SCHEMES": "mxa.data.spec",
    },
)
