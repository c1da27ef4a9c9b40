"""Old import paths of 0.2 kept working after the regroup of 0.3 (docs/architecture.md has the new tree).

Each old module is a two-line file that calls :func:`alias_module`, so ``mxa.engine.train`` *is*
``mxa.train.loop`` (the same module object: patching one patches the other) and says so once.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any


def alias_module(old: str, new: str) -> None:
    """Make ``import old`` give the module ``new``, with a ``DeprecationWarning`` naming the new path."""
    warnings.warn(f"{old} moved to {new} in mxa-attention 0.3; import it from there", DeprecationWarning, 3)
    sys.modules[old] = importlib.import_module(new)


def lazy_names(package: str, where: dict[str, str]) -> Any:
    """A PEP 562 ``__getattr__`` that imports ``name`` from ``where[name]`` on first use."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
