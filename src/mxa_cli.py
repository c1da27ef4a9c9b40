"""The ``mxa`` command's entry point: ``mxa --help`` and ``mxa COMMAND --help`` from the generated
``mxa/cli/help.json``, without importing the library (torch and timm take seconds); everything else goes
to :func:`mxa.cli.main`.

``python scripts/make_cli_help.py`` writes the help texts from the parsers (at :data:`HELP_COLUMNS`
columns); a test checks they are what the parsers print, so they cannot drift.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HELP_COLUMNS", "HELP_FILE", "cached_help", "main"]

# beside this module, as installed (site-packages/mxa_cli.py, site-packages/mxa/) and in src/
HELP_FILE = Path(__file__).resolve().parent / "mxa" / "cli" / "help.json"
#: the terminal width the help texts are formatted for
HELP_COLUMNS = 100
_FLAGS = ("-h", "--help")


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


def main(argv: Sequence[str] | None = None) -> int:
    """``mxa ...``: the help texts at once, any other command through :func:`mxa.cli.main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = cached_help(args)
    if text is not None:
        sys.stdout.write(text)
        return 0
    from mxa.cli import main as run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
