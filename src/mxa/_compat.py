"""Old import paths of 0.2 kept working after the regroup of 0.3 (docs/architecture.md has the new tree).

Each old module is a short file that calls :func:`alias_module`. Where all of its 0.2 names live in one new
module, ``mxa.engine.train`` *is* that module (the same object: patching one patches the other) and says so
once. Where some of its 0.2 names moved elsewhere, it is an :class:`AliasModule` that finds every 0.2 name
in its new home, with a ``DeprecationWarning`` naming it.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any


def alias_module(old: str, new: str, moved: dict[str, str] | None = None) -> None:
    """Make ``import old`` give the module ``new``, with a ``DeprecationWarning`` naming the new path.

    ``moved`` maps the 0.2 names of ``old`` that are not in ``new`` to ``"module"`` or ``"module:name"``
    (renamed), where they are now.
    """
    warnings.warn(f"{old} moved to {new} in mxa-attention 0.3; import it from there", DeprecationWarning, 3)
    target = importlib.import_module(new)
    sys.modules[old] = AliasModule(old, target, moved) if moved else target


class AliasModule(types.ModuleType):
    """A 0.2 module path whose names now live in several modules: ``target``'s names, and each name of
    ``moved`` from its new home (with a ``DeprecationWarning`` that names it)."""

    def __init__(self, name: str, target: types.ModuleType, moved: dict[str, str]) -> None:
        super().__init__(name, target.__doc__)
        self.target, self.moved = target, dict(moved)

    def __getattr__(self, name: str) -> Any:
        if name in self.moved:
            module, _, attr = self.moved[name].partition(":")
            warnings.warn(
                f"{self.__name__}.{name} is {module}.{attr or name} since mxa-attention 0.3; import it from "
                "there",
                DeprecationWarning,
                2,
            )
            return getattr(importlib.import_module(module), attr or name)
        return getattr(self.target, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self.target)) | set(self.moved))


def lazy_names(package: str, where: dict[str, str]) -> Any:
    """A PEP 562 ``__getattr__`` that imports ``name`` from ``where[name]`` on first use."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
