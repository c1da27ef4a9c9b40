"""Input validation that raises clear errors (never a bare assert)."""

from __future__ import annotations

import torch


def check_nchw(x: torch.Tensor, channels: int | None = None, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, C, H, W) tensor with ``channels`` channels."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but this layer was built for {channels} "
            f"(shape {tuple(x.shape)})"
        )


def check_boxes(boxes: torch.Tensor, batch: int) -> None:
    """Raise ``ValueError`` unless ``boxes`` is (batch, 4) floating point."""
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (B, 4) as x1, y1, x2, y2; got {tuple(boxes.shape)}")
    if boxes.shape[0] != batch:
        raise ValueError(f"boxes has {boxes.shape[0]} rows but x has batch size {batch}: one box per image")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be floating point (normalized coordinates), got {boxes.dtype}")
