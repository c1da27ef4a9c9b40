"""A run folder: refused when it already holds a run (unless resumed or overwritten), locked while in use."""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path

from mxa.utils.files import atomic_write_text, check_writable_dir

__all__ = [
    "RUN_FILES",
    "TRACKER_OUTPUTS",
    "RunFolderError",
    "prepare_run_folder",
    "remove_stale_temporaries",
    "trim_metrics",
]

log = logging.getLogger(__name__)

#: What `mxa train` writes into a run folder.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")
#: What `--log` adds (trackers' files and their run ids): replaced with the run under --overwrite.
TRACKER_OUTPUTS = ("tracking.json", "tensorboard", "mlruns", "wandb")


class RunFolderError(ValueError):
    """The output folder holds another run, or cannot be written."""


def prepare_run_folder(output: str | Path, resume: str | None, overwrite: bool) -> Path:
    """Check ``output`` is a writable folder that may receive this run; with ``overwrite``, clear its run.

    A folder holding a run (any of :data:`RUN_FILES`) is refused unless the run resumes from a checkpoint
    in that same folder, or ``overwrite`` is given. Call it while holding the folder's lock.
    """
    out = check_writable_dir(output, "output folder (--output)")
    remove_stale_temporaries(out)
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if not existing:
        return out
    if resume and Path(resume).resolve().parent == out.resolve():
        return out
    if not overwrite:
        hint = (
            f"continue it with `mxa train --resume {shlex.quote(str(out / 'last.pt'))}`, "
            if (out / "last.pt").exists()
            else ""
        )
        raise RunFolderError(
            f"{out} already holds a run ({', '.join(existing)}); {hint}replace it with --overwrite, "
            "or choose another --output"
        )
    for f in existing:
        (out / f).unlink()
    for name in TRACKER_OUTPUTS:  # the earlier run's tracker logs: the new run must not continue them
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
            existing.append(name + "/")
        elif p.is_file():
            p.unlink()
            existing.append(name)
    log.warning("--overwrite: removed the earlier run's %s from %s", ", ".join(existing), out)
    return out


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files of our atomic writes that a killed process (kill -9, power loss) left in
    ``folder``; the files they were replacing were never touched. Call it while holding the lock."""
    stale = [p for name in RUN_FILES for p in folder.glob(f".{Path(name).stem}.*.tmp{Path(name).suffix}")]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d temporary file(s) an interrupted save left in %s", len(stale), folder)


def trim_metrics(path: Path, last_epoch: int) -> None:
    """Keep the records of epochs <= ``last_epoch`` (a resumed run continues the log from its checkpoint)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if int(json.loads(ln)["epoch"]) <= last_epoch:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a killed process
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(f"{ln}\n" for ln in keep))
