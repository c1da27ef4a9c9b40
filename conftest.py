"""pytest: the tests in tests/ and the ``Examples:`` blocks of src/mxa (doctests)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    # 0.2 import paths alias new modules (doctest would import one module under two names); the CLI entry
    # point runs the CLI on import
    if collection_path.suffix != ".py" or "src" not in collection_path.parts:
        return None
    alias = re.search(r"alias_module\(\s*__name__", collection_path.read_text())
    if collection_path.name == "__main__.py" or alias:
        return True
    return None


@pytest.fixture(autouse=True)
def _quiet_library_log_in_doctests(request: pytest.FixtureRequest) -> Iterator[None]:
    # an earlier CLI test may have put the mxa logger on the terminal; an example's output is its return value
    if type(request.node).__name__ != "DoctestItem":
        yield
        return
    logger = logging.getLogger("mxa")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
