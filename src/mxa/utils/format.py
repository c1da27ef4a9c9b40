"""Number formatting for tables (one place, so every table says 'undefined' the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["fmt"]


def fmt(value: Any, ci: Sequence[float] | None = None, digits: int = 4) -> str:
    """``0.8123`` / ``0.8123 [0.7900, 0.8300]``; ``undefined`` for None; non-floats as ``str``."""
    if value is None:
        return "undefined"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.{digits}f}"
    if ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text
