"""Write src/mxa/cli/help.json: the text of ``mxa --help`` and of every ``mxa COMMAND --help``.

Usage: python scripts/make_cli_help.py [--check]
(--check: exit 1 if the file is out of step with the parsers; the tests run it)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mxa.cli import build_parser  # noqa: E402
from mxa_cli import HELP_COLUMNS, HELP_FILE  # noqa: E402


def _help(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args(args)
    return out.getvalue()


def texts() -> dict[str, str]:
    """Every help text, formatted at HELP_COLUMNS columns."""
    with mock.patch.dict(os.environ, {"COLUMNS": str(HELP_COLUMNS)}):
        names = build_parser().get_default("commands")
        return {"": _help(["--help"]), **{n: _help([n, "--help"]) for n in names}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check help.json is in step; exit 1 if not")
    args = ap.parse_args()
    text = json.dumps(texts(), indent=1, sort_keys=True) + "\n"
    if args.check:
        if not HELP_FILE.is_file() or HELP_FILE.read_text() != text:
            print(
                "src/mxa/cli/help.json is out of step with the parsers; run python scripts/make_cli_help.py"
            )
            return 1
        return 0
    HELP_FILE.write_text(text)
    print(f"wrote {HELP_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
