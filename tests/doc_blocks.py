"""The command blocks of the README and the docs as a reader copies them, and the check that a command of
ours in them parses (used by test_docs.py, and by test_walkthrough.py inside its fresh environment).

Run as a script, it checks the commands given as arguments: ``python tests/doc_blocks.py 'mxa train ...'``.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
#: a path of the user's own data (CheXpert, NIH, ... or a cluster's shared folder): not in a clone
USER_DATA = re.compile(r"(?:^|[\s:=])/(?:data|shared)/")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: its document, first line (1-based), language and text."""

    doc: Path
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path, langs: tuple[str, ...] = ("bash",)) -> list[Block]:
    """The fenced blocks of ``doc`` in one of ``langs`` ("" for a block without a language), in order."""
    text = doc.read_text()
    return [
        Block(doc, text[: m.start()].count("\n") + 2, m.group(1), m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) in langs
    ]


def command_lines(text: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.append(line)
    return lines


def mxa_commands(line: str) -> list[list[str]]:
    """The argv (after ``mxa``) of every command of ours on a shell line: ``mxa ...``, ``$ mxa ...`` and
    ``torchrun ... -m mxa ...``, split at ``&&``/``;``/``|``; the placeholders ``...`` and ``[--flag]``
    of usage lines become nothing and ``--flag``."""
    words = [w.strip("[]") for w in shlex.split(line, comments=True) if w != "..."]
    found, segment = [], []
    for w in [*words, ";"]:
        if w in ("&&", ";", "|", "||"):
            if segment[:1] == ["$"]:
                segment = segment[1:]
            if segment[:1] == ["mxa"]:
                found.append(segment[1:])
            elif segment[:1] == ["torchrun"] and "mxa" in segment:
                i = segment.index("mxa")
                if segment[i - 1] == "-m":
                    found.append(segment[i + 1 :])
            segment = []
        else:
            segment.append(w)
    return found


def check_command(argv: list[str]) -> None:
    """Parse ``argv`` as the CLI would (argparse exits on an unknown flag or a bad value), and build the
    settings of ``train``/``ablate`` (a ``--config`` file must exist and hold valid keys). Relative paths
    are read from the working directory (the clone's root)."""
    from mxa.cli import build_parser, train_config_from_args
    from mxa.cli.train import ablate_config

    ns = build_parser().parse_args(argv)
    _light_parser().parse_args(argv)  # the mxa command's fast check must take it too
    if argv[0] == "train":
        train_config_from_args(ns)
    elif argv[0] == "ablate":
        ablate_config(ns)


def _light_parser():
    import json

    from mxa_cli import HELP_FILE, SPEC_KEY, light_parser

    return light_parser(json.loads(HELP_FILE.read_text())[SPEC_KEY])


if __name__ == "__main__":
    for line in sys.argv[1:]:
        commands = mxa_commands(line)
        if not commands:
            sys.exit(f"no command of ours in {line!r}")
        for argv in commands:
            check_command(argv)
        print(f"parses: {line}")
