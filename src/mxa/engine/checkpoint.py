"""Moved to :mod:`mxa.train.state` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.train.state",
    {  # 0.2 names that live elsewhere now
        "CorruptCheckpointError": "mxa.files.checkpoint",
        "atomic_save": "mxa.files.checkpoint:save_checkpoint",
        "load_checkpoint": "mxa.files.checkpoint",
        "load_model_from_checkpoint": "mxa.files.load",
        "save_checkpoint": "mxa.files.checkpoint",
    },
)
