"""``mxa --help`` and ``mxa COMMAND --help`` from ``help.json``, generated from the parsers.

Building the parsers imports the library (torch, timm): seconds. The help texts are generated once by
``python scripts/make_cli_help.py`` (at :data:`HELP_COLUMNS` columns) and a test checks they equal what
the parsers print, so they cannot drift.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

__all__ = ["HELP_COLUMNS", "HELP_FILE", "cached_help"]

HELP_FILE = Path(__file__).with_name("help.json")
#: the terminal width the help texts are formatted for
HELP_COLUMNS = 100
_FLAGS = ("-h", "--help")


@lru_cache(maxsize=1)
def _texts() -> dict[str, str]:
    try:
        data = json.loads(HELP_FILE.read_text())
    except (OSError, ValueError):  # not generated (a source checkout mid-edit): build the parsers
        return {}
    return data if isinstance(data, dict) else {}


def cached_help(args: list[str]) -> str | None:
    """The help text ``args`` asks for (``["--help"]``, ``["train", "-h"]``), or None for anything else."""
    if len(args) == 1 and args[0] in _FLAGS:
        return _texts().get("")
    if len(args) == 2 and args[1] in _FLAGS:
        return _texts().get(args[0])
    return None
