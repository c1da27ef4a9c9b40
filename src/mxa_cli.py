"""The ``mxa`` command's entry point: ``mxa --help`` and ``mxa COMMAND --help`` from the generated
``mxa/cli/help.json``, without importing the library (torch and timm take seconds), and a command line that
is malformed (an unknown or repeated-wrong option, a missing value or required option, a choice that does
not exist) rejected as argparse would, just as fast; everything else goes to :func:`mxa.cli.main`.

``python scripts/make_cli_help.py`` writes the help texts (at :data:`HELP_COLUMNS` columns) and every
command's argument spec from the parsers; a test checks they are what the parsers give, so they cannot drift.
The light parser is looser than the real one (types, ranges and exclusive groups are the real parser's):
it rejects no command line the real parser accepts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["HELP_COLUMNS", "HELP_FILE", "SPEC_KEY", "cached_help", "light_parser", "main"]

# beside this module, as installed (site-packages/mxa_cli.py, site-packages/mxa/) and in src/
HELP_FILE = Path(__file__).resolve().parent / "mxa" / "cli" / "help.json"
#: the terminal width the help texts are formatted for
HELP_COLUMNS = 100
_FLAGS = ("-h", "--help")
#: the key of help.json that holds the commands' argument specs (no command has this name)
SPEC_KEY = "__arguments__"


def cached_help(args: Sequence[str]) -> str | None:
    """The help text ``args`` asks for (``["--help"]``, ``["train", "-h"]``), or None for anything else
    (and where help.json is missing or unreadable: then the parsers answer)."""
    if len(args) == 1 and args[0] in _FLAGS:
        key = ""
    elif len(args) == 2 and args[1] in _FLAGS:
        key = args[0]
    else:
        return None
    try:
        texts = json.loads(HELP_FILE.read_text())
    except (OSError, ValueError):
        return None
    text = texts.get(key) if isinstance(texts, dict) else None
    return text if isinstance(text, str) else None


def light_parser(spec: dict[str, Any]) -> argparse.ArgumentParser:
    """An argparse parser of every command from help.json's spec: strings, arity, required, choices."""
    parser = argparse.ArgumentParser(prog="mxa", add_help=False)
    _add(parser, spec.get("", []))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, arguments in spec.items():
        if name:
            _add(sub.add_parser(name, add_help=False), arguments)
    return parser


def _add(p: argparse.ArgumentParser, arguments: list[dict[str, Any]]) -> None:
    actions = {"boolean": argparse.BooleanOptionalAction}
    for a in arguments:
        kw: dict[str, Any] = {"dest": a["dest"]} if a["strings"] else {}
        kind = a["kind"]
        kw["action"] = actions.get(kind, kind)
        if kind in ("store", "append"):
            kw.update(nargs=a["nargs"], choices=a["choices"], metavar=a["metavar"])
        if a["strings"]:
            kw["required"] = a["required"]
        p.add_argument(*(a["strings"] or [a["dest"]]), **kw)


def _light_check(args: list[str]) -> None:
    """Exit 2 with argparse's message where the spec already says the command line is malformed."""
    try:
        texts = json.loads(HELP_FILE.read_text())
        spec = texts[SPEC_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no spec: the real parser answers
    if not args or args[0].startswith("-") or args[0] not in spec:
        return  # --version, no command, an unknown command: the real parser's words
    light_parser(spec).parse_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``mxa ...``: the help texts at once, a malformed command line at once, any other command through
    :func:`mxa.cli.main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = cached_help(args)
    if text is not None:
        sys.stdout.write(text)
        return 0
    try:
        _light_check(args)
    except SystemExit as e:  # argparse printed usage and the error
        return int(e.code or 0)
    from mxa.cli import main as run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
