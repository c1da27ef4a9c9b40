"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

__all__ = [
    "atomic_save",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "restore_rng_state",
]


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or Ctrl-C mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint of ours safely (``weights_only=True``); a clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


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


def load_model_from_checkpoint(
    path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild the model a ``mxa train`` checkpoint describes and load its (EMA, if any) weights."""
    ckpt = load_checkpoint(path, map_location)
    if "model_name" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint written by `mxa train` (no model_name)")
    model = timm.create_model(ckpt["model_name"], **ckpt.get("model_kwargs", {}))
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model.eval()
