"""Moved to :mod:`mxa.losses.distillation` (0.3); this path still imports it."""

from mxa._compat import alias_module

alias_module(
    __name__,
    "mxa.losses.distillation",
    {  # 0.2 names that live elsewhere now
        "DEFAULT_MAX_POS_WEIGHT": "mxa.losses.multilabel",
        "class_balanced_pos_weight": "mxa.losses.multilabel",
    },
)
