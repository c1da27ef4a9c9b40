"""The checkpoint file format: ``torch.save`` written atomically, with a digest of every tensor.

A checkpoint is a dict. :func:`save_checkpoint` adds ``integrity`` = {algorithm, digest, n_tensors}: a
BLAKE2b digest over the dtype, shape and bytes of every tensor in the dict (walked in a fixed order).
:func:`load_checkpoint` reads it with ``weights_only=True`` (no pickled code runs) and recomputes the
digest, so a flipped byte in the weights is an error naming the file, never a silently different model.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mxa.utils.files import atomic_path

__all__ = ["CorruptCheckpointError", "load_checkpoint", "save_checkpoint", "tensor_digest"]

log = logging.getLogger(__name__)
_ALGORITHM = "blake2b-tensors-v1"


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose tensors do not match their digest."""


def _walk(obj: Any, prefix: str, out: list[tuple[str, torch.Tensor]]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _walk(obj[k], f"{prefix}/{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk(v, f"{prefix}/{i}", out)


def tensor_digest(obj: Any) -> tuple[str, int]:
    """(hex digest, number of tensors) of every tensor in a nested dict/list, by path, dtype, shape, bytes."""
    tensors: list[tuple[str, torch.Tensor]] = []
    _walk(obj, "", tensors)
    h = hashlib.blake2b(digest_size=32)
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest(), len(tensors)


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` plus its integrity record to ``path`` atomically (temporary file, fsync, rename).

    A crash, Ctrl-C or full disk mid-write leaves the previous file intact.
    """
    digest, n = tensor_digest({k: v for k, v in obj.items() if k != "integrity"})
    record = {**obj, "integrity": {"algorithm": _ALGORITHM, "digest": digest, "n_tensors": n}}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCheckpointError: the file is empty, truncated, not a checkpoint, or its tensors do not
            match the digest written with them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"checkpoint {path} is empty (0 bytes): use an earlier checkpoint")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CorruptCheckpointError(
                f"{path} is not a checkpoint written by mxa: it holds pickled Python objects, which are "
                "never loaded from files we did not write"
            ) from None
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt or truncated ({e})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read ({type(e).__name__}: "
            f"{str(e)[:200]}); use an earlier checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(
            f"{path} is not a checkpoint written by mxa (it holds a {type(obj).__name__})"
        )
    record = obj.get("integrity")
    if record is None:
        log.warning(
            "%s has no integrity record (written before mxa 0.2): its weights cannot be verified", path
        )
        return obj
    digest, n = tensor_digest({k: v for k, v in obj.items() if k != "integrity"})
    if (
        record.get("algorithm") != _ALGORITHM
        or digest != record.get("digest")
        or n != record.get("n_tensors")
    ):
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: its tensors do not match the digest written with them "
            "(the file changed after it was saved); use an earlier checkpoint"
        )
    return obj
