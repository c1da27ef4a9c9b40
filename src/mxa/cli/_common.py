"""What every command shares: argparse value types with ranges, logging to the terminal, tables, JSON."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mxa.utils.files import atomic_write_text

__all__ = ["bounded", "checked", "print_rows", "setup_logging", "write_json"]


def checked(conv: type, check: Callable[[Any], Any] | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: ``conv(text)``, then ``check(value)``; a ValueError becomes argparse's error."""

    def parse(text: str) -> Any:
        try:
            v = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if conv is int else 'a number'}"
            ) from None
        try:
            return check(v) if check is not None else v
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = conv.__name__  # argparse names the type in its messages
    return parse


def bounded(kind: type, lo: float | None = None, hi: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` (int or float) and checks it is finite and in [lo, hi]."""

    def check(v: Any) -> Any:
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v}")
        if lo is not None and v < lo:
            raise ValueError(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}, got {v}")
        return v

    return checked(kind, check)


class _TerminalHandler(logging.Handler):
    """INFO to stdout as plain lines, warnings and errors to stderr with their level; looks up
    ``sys.stdout``/``sys.stderr`` at each message, so redirected streams (pytest, notebooks) are honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if record.levelno >= logging.WARNING:
                print(f"{record.levelname.lower()}: {msg}", file=sys.stderr, flush=True)
            else:
                print(msg, flush=True)
        except Exception:
            self.handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """Show the library's log (logger ``mxa``) on the terminal: the CLI prints, the library logs."""
    logger = logging.getLogger("mxa")
    if not any(isinstance(h, _TerminalHandler) for h in logger.handlers):
        logger.addHandler(_TerminalHandler())
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def print_rows(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}\n" + "-" * (width + 24))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 24))


def json_ready(obj: Any) -> Any:
    import torch

    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(json_ready(obj), indent=2, default=str))
