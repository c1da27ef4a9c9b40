"""Moved to :mod:`mxa.train.loop` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.train.loop",
    {  # 0.2 names that live elsewhere now
        "model_spec": "mxa.train.state",
    },
)
