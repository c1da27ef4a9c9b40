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


def _doc_commands() -> list[tuple[str, list[str]]]:
    """Every command of ours in the README, the docs (shell blocks, and ``$ mxa`` lines of plain blocks)
    and the recipes' comments, with where it is."""
    from doc_blocks import blocks, command_lines, mxa_commands

    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in blocks(doc, langs=("bash", "")):
            lines = command_lines(block.text)
            if block.lang == "":
                lines = [line for line in lines if line.startswith("$ ")]
            found += [(f"{block}: {line}", argv) for line in lines for argv in mxa_commands(line)]
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        for line in recipe.read_text().splitlines():
            if line.lstrip("# ").startswith("mxa "):
                found += [(f"{recipe.name}: {line}", argv) for argv in mxa_commands(line.lstrip("# "))]
    return found


def test_every_command_in_the_docs_parses(monkeypatch) -> None:
    from doc_blocks import check_command

    monkeypatch.chdir(ROOT)  # the docs' relative paths (recipes/...) are the clone's
    commands = _doc_commands()
    assert len(commands) > 20, commands  # the block parser found the docs' commands
    failed = []
    for where, argv in commands:
        try:
            check_command(argv)
        except SystemExit:  # argparse: an unknown flag or a bad value (its message is on stderr)
            failed.append(where)
        except ValueError as e:
            failed.append(f"{where}: {e}")
    assert failed == []


def test_the_readme_test_command_is_what_ci_runs() -> None:
    from doc_blocks import blocks, command_lines

    (block,) = [b for b in blocks(ROOT / "README.md") if "pytest" in b.text]
    # CI's own additions: its site folder (the clone's site/ stays untouched)
    ci = [
        line.strip().replace(" --site-dir .ci-site", "")
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
    ]
    for line in command_lines(block.text):
        for command in (c.strip() for c in line.split("&&")):
            if command.startswith(("python3 -m venv", ". ")):  # CI makes its own fresh venv
                continue
            assert command in ci, command
