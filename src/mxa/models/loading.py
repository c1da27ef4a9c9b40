"""Moved to :mod:`mxa.files.load` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.files.load",
    {  # 0.2 names that live elsewhere now
        "ALLOWED_MODEL_KWARGS": "mxa.files.spec",
        "PREPROCESSING": "mxa.files.spec",
    },
)
