"""Where and how a model runs: device resolution, autocast and deterministic algorithms (one helper each)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["AMP_CHOICES", "NonFiniteError", "autocast", "determinism", "resolve_amp", "resolve_device"]

AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` -> this process's CUDA device when there is one, else the CPU; ``cuda`` under torchrun ->
    ``cuda:LOCAL_RANK``; ``cuda:N`` and ``cpu`` are kept as given.

    Raises:
        ValueError: CUDA asked for but not available, or a device string torch does not know.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} was asked for but no CUDA device is available; use --device cpu"
            )
        index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", 0))
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device cuda:{index} does not exist: {torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device("cuda", index)
    if dev.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return dev


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA device that supports it, else none; checks fp16 is on CUDA."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 needs CUDA; use bf16 or none on the CPU")
    return amp


def autocast(device: torch.device | str, amp: str) -> Any:
    """The autocast context for ``amp`` (none, bf16 or fp16) on ``device``."""
    if amp in ("none", "auto"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class NonFiniteError(RuntimeError):
    """Numbers stopped being finite (weights, loss or scores); the CLI exits with status 3."""


@contextlib.contextmanager
def determinism(on: bool) -> Iterator[None]:
    """``--deterministic``: deterministic algorithms for the run, the previous settings restored after.

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before its first call; it is set here if the user has not.
    ``grid_sample``'s CUDA backward has no deterministic kernel: the MXA crops switch to the separable
    method (``crop_method="auto"`` follows ``torch.are_deterministic_algorithms_enabled()``).
    """
    if not on:
        yield
        return
    old = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[1], old[2]
