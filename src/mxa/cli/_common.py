"""What every command shares: argparse value types with ranges, logging to the terminal, tables, JSON."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mxa.utils.files import atomic_write_text, json_text

__all__ = ["bounded", "checked", "eval_figure", "print_rows", "setup_logging", "write_json"]

log = logging.getLogger("mxa.cli")


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
    return atomic_write_text(path, json_text(json_ready(obj), indent=2))


def eval_figure(ns: argparse.Namespace, flag: str, draw: Callable[[Path], Any]) -> None:
    """Draw a figure of ``mxa eval`` to the path of ``--flag`` (checked by :func:`guard_io` before the
    evaluation). It never stops the command: a failed write is a warning naming the flag."""
    path = Path(getattr(ns, flag.removeprefix("--").replace("-", "_")))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(path)
    except OSError as e:
        log.warning("%s was not written (%s); choose another file with %s", path, e.strerror or e, flag)
        return
    print(f"{flag.removeprefix('--')}: {path}")


def declare_io(
    p: argparse.ArgumentParser,
    *,
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    folders: tuple[str, ...] = (),
    in_folder: dict[str, tuple[str, str]] | None = None,
    defaults: dict[str, Callable[[argparse.Namespace], str]] | None = None,
    overwrite: bool = True,
) -> None:
    """Name the options of a command that read files (``inputs``) and write them (``outputs``; those of
    them that are folders also in ``folders``), by dest. ``in_folder`` gives an output option not given a
    default path in a folder option: ``{"roc": ("output", "roc.png")}``; ``defaults`` an option not given its
    default computed from the others (``{"output": f(ns)}``, before ``in_folder``).

    :func:`guard_io` checks them all before the command runs (no output is an input; no existing file is
    replaced without ``--overwrite``, which this adds unless the command has its own).
    """
    if overwrite:
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace output files that exist (never one of the inputs)",
        )
    p.set_defaults(
        io_inputs=inputs,
        io_outputs=outputs,
        io_folders=folders,
        io_in_folder=in_folder or {},
        io_defaults=defaults or {},
    )


def _input_paths(value: Any) -> list[Path]:
    """The files an input option names: paths (a folder's own files too), ``cache:<file>``, and a ``--data``
    spec's label files."""
    if value is None or value == "" or isinstance(value, bool | int | float):
        return []  # "" is an unset path option (--box-file), not the current folder
    if isinstance(value, list | tuple):
        return [p for v in value for p in _input_paths(v)]
    text = str(value).removeprefix("cache:").removeprefix("local-dir:")
    if text.startswith("hf-hub:"):
        return []  # a Hub repo: no local file
    paths = [Path(text)]
    from mxa.data.spec import parse_data_spec

    try:
        spec = parse_data_spec(text)
    except ValueError:
        spec = None
    if spec is not None:
        for s in spec.sets:
            if s.root:
                root = Path(s.root)
                paths += [f for pat in ("*.csv", "*.json", "*/*.csv", "*/*.json") for f in root.glob(pat)]
    for p in list(paths):
        if p.is_dir():  # a folder we read from (images, a run): the files directly in it
            paths += [f for f in p.iterdir() if f.is_file()]
    return [p for p in paths if p.exists()]


def guard_io(ns: argparse.Namespace) -> None:
    """The CLI's one output guard (:mod:`mxa.utils.outputs`) over the options :func:`declare_io` named."""
    from mxa.utils.outputs import check_outputs

    for dest, make in getattr(ns, "io_defaults", {}).items():  # a default that depends on other flags
        if getattr(ns, dest, None) is None:
            setattr(ns, dest, make(ns))
    for dest, (folder, name) in getattr(ns, "io_in_folder", {}).items():
        if getattr(ns, dest, None) is None:
            setattr(ns, dest, str(Path(getattr(ns, folder)) / name))
    inputs = [p for dest in getattr(ns, "io_inputs", ()) for p in _input_paths(getattr(ns, dest, None))]
    if "inputs" in getattr(ns, "io_inputs", ()):  # images to predict or draw: every file the command reads
        from mxa.data.io import collect_images

        with contextlib.suppress(ValueError, OSError):  # the command reports missing inputs itself
            inputs += collect_images(ns.inputs)
    outputs = {"--" + d.replace("_", "-"): getattr(ns, d, None) for d in getattr(ns, "io_outputs", ())}
    folders = ["--" + d.replace("_", "-") for d in getattr(ns, "io_folders", ())]
    check_outputs(outputs, inputs, overwrite=bool(getattr(ns, "overwrite", False)), folders=folders)
