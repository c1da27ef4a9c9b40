"""Training checkpoints: the file format (atomic, digest-verified) and the RNG state for exact resume.

The file format lives in :mod:`mxa.utils.checkpoint`; rebuilding a model from a checkpoint in
:func:`mxa.models.load_model`. Both are re-exported here for the engine's callers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.loading import load_model_from_checkpoint
from ..utils.checkpoint import CorruptCheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "CorruptCheckpointError",
    "atomic_save",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]


def atomic_save(obj: dict[str, Any], path: str | Path) -> Path:
    """Save a checkpoint atomically with its integrity record (alias of :func:`save_checkpoint`)."""
    return save_checkpoint(obj, path)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, as plain tensors and ints (safe to load with weights_only)."""
    np_state = np.random.get_state()  # noqa: NPY002  (the legacy global RNG, used by third-party code)
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": (py_version, list(py_state), py_gauss),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    n = state["numpy"]
    legacy = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
