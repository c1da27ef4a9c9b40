"""Numbers in the README and docs that come from a run come from a committed results file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script", ["make_demo_docs.py", "make_localization_docs.py", "make_benchmark_docs.py"]
)
def test_numbers_in_docs_are_generated_from_committed_results(script: str) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_lists_every_command() -> None:
    from mxa.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in sub.choices if f"`mxa {name}`" not in readme]
    assert missing == []


def test_the_index_links_every_page() -> None:
    import re

    docs = Path(__file__).resolve().parents[1] / "docs"
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", (docs / "index.md").read_text()))
    pages = {p.name for p in docs.glob("*.md")} - {"index.md"}
    assert pages <= linked, sorted(pages - linked)
