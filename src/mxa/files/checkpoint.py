"""The checkpoint file format: ``torch.save`` written atomically, with a digest of every tensor.

A checkpoint is a dict. :func:`save_checkpoint` adds ``integrity`` = {algorithm, digest, n_tensors}: a
BLAKE2b digest over the dtype, shape and bytes of every tensor in the dict (walked in a fixed order).
:func:`load_checkpoint` reads it with ``weights_only=True`` (no pickled code runs) and recomputes the
digest, so a flipped byte in the weights is an error naming the file, never a silently different model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mxa.utils.files import atomic_path

__all__ = ["CorruptCheckpointError", "TrainCheckpoint", "load_checkpoint", "save_checkpoint", "tensor_digest"]

log = logging.getLogger(__name__)
# v2 also covers every non-tensor value (config, decision rule, positions); v1 files (0.2) are still verified
_ALGORITHM = "blake2b-v2"
_ALGORITHM_V1 = "blake2b-tensors-v1"


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose tensors do not match their digest."""


def _walk(
    obj: Any, prefix: str, out: list[tuple[str, torch.Tensor]], values: list[str] | None = None
) -> None:
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _walk(obj[k], f"{prefix}/{k}", out, values)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk(v, f"{prefix}/{i}", out, values)
    elif values is not None:
        values.append(f"{prefix}={type(obj).__name__}:{obj!r}")


def tensor_digest(obj: Any, values: bool = True) -> tuple[str, int]:
    """(hex digest, number of tensors) of a nested dict/list: every tensor by path, dtype, shape and bytes,
    and (``values``) every other value by path, type and ``repr``, so an edited threshold is caught too."""
    tensors: list[tuple[str, torch.Tensor]] = []
    others: list[str] | None = [] if values else None
    _walk(obj, "", tensors, others)
    h = hashlib.blake2b(digest_size=32)
    for line in others or ():
        h.update(line.encode() + b"\n")
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
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, struct.error) as e:
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
    algorithm = record.get("algorithm") if isinstance(record, dict) else None
    if algorithm not in (_ALGORITHM, _ALGORITHM_V1):
        raise CorruptCheckpointError(f"checkpoint {path} has an integrity record this version cannot check")
    digest, n = tensor_digest(
        {k: v for k, v in obj.items() if k != "integrity"}, values=algorithm == _ALGORITHM
    )
    if algorithm == _ALGORITHM_V1:
        log.info("%s: integrity record of 0.2 (tensors only); its settings are not covered", path)
    if digest != record.get("digest") or n != record.get("n_tensors"):
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: its contents do not match the digest written with them (the file "
            "changed after it was saved: weights, settings or its decision rule); use an earlier checkpoint"
        )
    return obj


@dataclass(kw_only=True)
class TrainCheckpoint:
    """What ``mxa train`` writes to ``last.pt``/``best.pt``: the one description of that file's keys.

    ``model_name`` + ``model_kwargs`` are the :class:`~mxa.files.spec.ModelSpec`; ``model``/``ema`` state
    dicts; the optimizer, scheduler, scaler and RNG states and the position (``epoch`` done, then
    ``batch_in_epoch`` batches of the next) for an exact resume; ``config`` the run's ``TrainConfig``;
    ``decision`` the stored decision rule (``mxa eval --save-model``). Files of 0.1 lack the last keys.
    """

    model_name: str
    model: dict[str, torch.Tensor]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: Any = None
    epoch: int = 0
    batch_in_epoch: int = 0
    global_update: int = 0
    best: float = -math.inf
    world_size: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)
    decision: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["decision"] is None:
            del out["decision"]  # files without a rule keep the 0.2 key set
        return out

    def save(self, path: str | Path) -> Path:
        """Atomically, with the integrity record (see :func:`save_checkpoint`)."""
        return save_checkpoint(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> TrainCheckpoint:
        """Read and verify ``path``; a ``ValueError`` names the file when it is not a training checkpoint."""
        obj = load_checkpoint(path, map_location)
        obj.pop("integrity", None)
        if not isinstance(obj.get("model_name"), str) or not isinstance(obj.get("model"), dict):
            raise CorruptCheckpointError(
                f"{path} is not a checkpoint written by `mxa train` (no model_name/model)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            log.warning("%s has keys this version does not know (ignored): %s", path, unknown)
        values = {k: v for k, v in obj.items() if k in known and v is not None}
        if not isinstance(values.get("model_kwargs", {}), dict):
            raise CorruptCheckpointError(f"{path}: model_kwargs must be a mapping")
        return cls(**values)
