"""Moved to :mod:`mxa.losses.box` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.losses.box",
    {  # 0.2 names that live elsewhere now
        "BoxCapture": "mxa.models.hooks",
    },
)
