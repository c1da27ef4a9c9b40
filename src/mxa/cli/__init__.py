"""The ``mxa`` command line. ``python -m mxa`` works the same way; ``mxa <command> --help`` lists every flag.

Each module here defines one command or a group (``add_parsers(sub)`` registers them, ``cmd_*`` run
them); the library below never builds a parser. Errors a user can fix end in one ``error:`` line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mxa._compat import lazy_names

__all__ = ["build_parser", "main", "train_config_from_args"]

#: The command modules, in the order of ``mxa --help`` (imported when a parser is built; the ``mxa`` command
#: answers ``--help`` from the generated help.json without them: ``mxa_cli``).
COMMAND_MODULES = ("train", "evaluate", "predict", "serve", "demo", "export", "bench", "data")

__getattr__ = lazy_names(__name__, {"train_config_from_args": "mxa.cli.config"})


def build_parser() -> argparse.ArgumentParser:
    from mxa import __version__

    parser = argparse.ArgumentParser(
        prog="mxa",
        description=(
            "MXA attention for chest X-rays: train, evaluate, distill, predict, benchmark, export. "
            "Research software, not a medical device."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mxa-attention {__version__}")
    parser.add_argument("--verbose", action="store_true", help="also show debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mxa.cli.{name}").add_parsers(sub)
    parser.set_defaults(commands=list(sub.choices))  # every command's name (an Action's choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status.

    0 ok, 1 partly failed, 2 bad input, 3 non-finite, 130 Ctrl-C.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    from mxa._optional import MissingExtraError
    from mxa.cli._common import guard_io, setup_logging
    from mxa.utils.files import RunLockedError
    from mxa.utils.runtime import NonFiniteError

    parser = build_parser()
    ns = parser.parse_args(args)
    if not getattr(ns, "command", None):
        parser.print_help()
        return 2
    setup_logging(ns.verbose)
    try:
        guard_io(ns)
        return int(ns.func(ns) or 0)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except (MissingExtraError, RunLockedError, ValueError, OSError) as e:
        # FileNotFoundError, PermissionError and a full disk are OSErrors; bad values are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
