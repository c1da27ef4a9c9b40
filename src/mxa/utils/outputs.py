"""The one output guard: nothing we write replaces an input, and nothing replaces an earlier result unasked.

Every command declares which of its options name inputs and which name outputs (``cli/_common.io``); the
CLI checks them all with :func:`check_outputs` before the command runs. Files whose names we generate
(overlays, heatmaps, default figures) go through :func:`check_output` where they are named.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OutputError", "check_output", "check_outputs", "same_file"]


class OutputError(ValueError):
    """An output would replace an input, or an existing file without ``--overwrite``."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same path after resolving symlinks, or a hard link."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str | Path,
    inputs: Iterable[str | Path] = (),
    *,
    what: str = "output",
    overwrite: bool = False,
) -> Path:
    """Return ``path`` if writing it loses nothing; else raise :class:`OutputError` naming the fix.

    Refused: ``path`` is one of ``inputs`` (the same file, a symlink or a hard link to it), whatever
    ``overwrite`` says; an existing file without ``overwrite``. A folder passes (the files written into it
    are checked one by one where they are named).
    """
    path = Path(path)
    _not_an_input(path, inputs, what)
    _not_an_earlier_result(path, what, overwrite)
    return path


def _not_an_input(path: Path, inputs: Iterable[str | Path], what: str) -> None:
    for src in inputs:
        if same_file(path, src):
            raise OutputError(
                f"{what} {path} is the input {src}: writing it would destroy the input; choose another path"
            )


def _not_an_earlier_result(path: Path, what: str, overwrite: bool) -> None:
    # a folder passes: each generated file in it is checked where it is named
    if not path.is_dir() and path.exists() and not overwrite:
        raise OutputError(
            f"{what} {path} already exists: pass --overwrite to replace it, or choose another path"
        )


def check_outputs(
    outputs: dict[str, str | Path | None],
    inputs: Iterable[str | Path],
    overwrite: bool = False,
    folders: Iterable[str] = (),
) -> None:
    """:func:`check_output` for every named output (``{"--json": path}``), also against each other.

    ``folders`` name the outputs that are folders: only checked against the inputs here (what is written
    into them is checked where it is named; a run folder has its own rules).
    """
    folders = set(folders)
    given = {k: Path(v) for k, v in outputs.items() if v is not None}
    ins = [Path(p) for p in inputs]
    files = [p for p in ins if not p.is_dir()]
    for flag, path in given.items():  # inputs first: that is the worse mistake, whatever --overwrite says
        # a folder output may be an input folder: the names written into it are checked one by one
        _not_an_input(path, files if flag in folders else ins, flag)
    for flag, path in given.items():
        if flag in folders and path.exists() and not path.is_dir():
            raise OutputError(
                f"{flag} {path} is a file, not a folder: choose a folder (it may not exist yet)"
            )
        _not_an_earlier_result(path, flag, overwrite or flag in folders)
    flags = list(given)
    for i, a in enumerate(flags):
        for b in flags[i + 1 :]:
            if same_file(given[a], given[b]):
                raise OutputError(f"{a} and {b} name the same file {given[a]}; give each its own path")
