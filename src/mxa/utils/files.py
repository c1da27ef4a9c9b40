"""Files that are never left half-written, and a lock so two runs cannot write one folder."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "RunLock",
    "RunLockedError",
    "atomic_path",
    "atomic_write_text",
    "check_writable_dir",
    "json_text",
    "write_failure",
]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On an error the temporary file is removed and ``path`` keeps its previous content (or stays absent).
    The temporary name keeps ``path``'s suffix, so writers that look at it (matplotlib, safetensors) work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        reason = write_failure(e)
        if reason is not None:
            # the usual message names no file; say which one, and that nothing earlier was lost
            raise OSError(
                e.errno if isinstance(e, OSError) and e.errno else errno.ENOSPC,
                f"could not write {path}: {reason} (free space on that disk, or write elsewhere); "
                f"{'its earlier content is kept' if path.exists() else 'nothing was written'}",
            ) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: How writers report a full or failing disk: errno values, and the words of torch's zip writer and of
#: safetensors, which raise RuntimeError / SafetensorError instead of OSError.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)
_DISK_WORDS = ("file write failed", "No space left", "StorageFull", "Disk quota", "Input/output error")


def write_failure(e: BaseException) -> str | None:
    """Why writing failed when the disk is full or failing, else None (another error, raised as it is)."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return e.strerror or str(e)
    text = str(e)
    if any(w in text for w in _DISK_WORDS):
        return (
            "No space left on device"
            if "space" in text or "StorageFull" in text
            else "the disk failed to write"
        )
    return None


def _create_temporary(path: Path) -> str:
    """A new empty file ``.<stem>.<random>.tmp<suffix>`` beside ``path``, created 0666 so the kernel applies
    the umask as for any file (mkstemp's 0600 would make every result private)."""
    for _ in range(100):
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that every JSON reader accepts: NaN and infinities become ``null`` (``json.dumps``
    writes ``NaN``/``Infinity``, which are not JSON); ``default=str`` for anything else not JSON.

    Examples:
        >>> json_text({"auc": float("nan"), "n": [1, float("inf")]})
        '{"auc": null, "n": [1, null]}'
    """
    return json.dumps(_finite(obj), allow_nan=False, default=str, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it is a writable folder; a clear error otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"the {what} {path} exists and is not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"the {what} {path} is not writable ({e.strerror or e}); choose another path") from e
    return path


class RunLockedError(RuntimeError):
    """Another process holds the lock of a run folder."""


class RunLock:
    """An exclusive lock file (``.lock``, created with O_EXCL) in a run folder.

    It holds the owner's host, pid and SLURM job (``-`` outside SLURM). A lock left by a process that no
    longer runs on this host is taken over (a crash or SIGKILL must not block the folder forever), and so
    is one of the same SLURM job (a preempted job requeued on another node); any other lock raises
    :class:`RunLockedError` naming the owner.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / ".lock"
        self.held = False

    def _owner(self) -> tuple[str, int, str] | None:
        try:
            parts = self.path.read_text().split()
            return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "-"
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> RunLock:
        job = slurm_job()
        me = f"{socket.gethostname()} {os.getpid()} {job}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                here = owner is not None and owner[0] == socket.gethostname()
                stale = here and not _alive(owner[1])  # type: ignore[index]
                # the same SLURM job on another node: requeued (SLURM ran it there before); on this node
                # only a dead owner is taken over (two runs of one job script must not share a folder)
                requeued = owner is not None and job != "-" and owner[2] == job and not here
                if stale or requeued:
                    self.path.unlink(missing_ok=True)  # its process is gone (or was this job, requeued)
                    continue
                who = f"process {owner[1]} on {owner[0]}" if owner else "another process"
                raise RunLockedError(
                    f"{self.path.parent} is in use by {who} (lock file {self.path}); wait for that run to "
                    "end, or choose another --output. If no run is using it, delete the lock file."
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise RunLockedError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def slurm_job() -> str:
    """This process's SLURM job (``<array job>_<task>`` in a job array), or ``-`` outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True
