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
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mxa.cli import build_parser  # noqa: E402
from mxa_cli import HELP_COLUMNS, HELP_FILE, SPEC_KEY  # noqa: E402


def _help(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args(args)
    return out.getvalue()


def texts() -> dict[str, Any]:
    """Every help text, formatted at HELP_COLUMNS columns, and (``SPEC_KEY``) the arguments of every
    command, from which ``mxa_cli`` rejects a malformed command line without importing the library."""
    with mock.patch.dict(os.environ, {"COLUMNS": str(HELP_COLUMNS)}):
        parser = build_parser()
        names = parser.get_default("commands")
        out: dict[str, Any] = {"": _help(["--help"]), **{n: _help([n, "--help"]) for n in names}}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out[SPEC_KEY] = {"": _spec(parser), **{n: _spec(sub.choices[n]) for n in names}}
    return out


def _spec(p: argparse.ArgumentParser) -> list[dict[str, Any]]:
    """Each argument's strings, arity and choices (what a light parser needs to check a command line)."""
    kinds = {
        argparse._StoreAction: "store",
        argparse._StoreTrueAction: "store_true",
        argparse._StoreFalseAction: "store_false",
        argparse.BooleanOptionalAction: "boolean",
        argparse._AppendAction: "append",
        argparse._CountAction: "count",
    }
    out = []
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue  # answered elsewhere: help texts, the real parser
        kind = kinds.get(type(a))
        if kind is None:  # mxa_cli's light parser would reject what the real one takes: teach it first
            raise SystemExit(f"make_cli_help.py knows no {type(a).__name__} ({a.option_strings}): add it")
        choices = list(a.choices) if a.choices and all(isinstance(c, str) for c in a.choices) else None
        out.append(
            {
                "strings": list(a.option_strings),
                "dest": a.dest,
                "kind": kind,
                "nargs": a.nargs,
                "required": bool(a.required),
                "choices": choices,
                "metavar": a.metavar if isinstance(a.metavar, str) else None,
            }
        )
    return out


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
