"""Private timm API is read in mxa._timm only; this fails loudly, naming timm's version, if it moves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import timm

from mxa._timm import PRIVATE_NAMES, efficientnet_block_types

SRC = Path(__file__).resolve().parents[1] / "src" / "mxa"


@pytest.mark.parametrize(("module", "name"), PRIVATE_NAMES)
def test_private_timm_names_exist(module: str, name: str) -> None:
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"timm {timm.__version__} moved {module}.{name} ({e}): update mxa/_timm.py")
    assert isinstance(found, type)
    assert found in efficientnet_block_types()


def test_no_other_module_imports_private_timm() -> None:
    offenders = []
    for f in SRC.rglob("*.py"):
        if f.name == "_timm.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("timm"):
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names if a.name.startswith("timm")]
            offenders += [
                f"{f.relative_to(SRC)}: {m}" for m in mods if any(p.startswith("_") for p in m.split("."))
            ]
    assert offenders == []
