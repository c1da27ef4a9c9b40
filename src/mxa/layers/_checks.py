"""Input validation that raises clear errors (never a bare assert).

Every check returns at once for a ``torch.fx.Proxy``: under ``torch.fx.symbolic_trace`` shapes and values
are unknown, and a traced graph is checked by running it. Under ``torch.compile`` the inputs are (fake)
tensors, so the shape checks run at compile time and cost nothing at run time.
"""

from __future__ import annotations

import torch


def check_nchw(x: torch.Tensor, channels: int | None = None, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, C, H, W) tensor with ``channels`` channels."""
    if isinstance(x, torch.fx.Proxy):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): give at least one image of at least 1x1")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but this layer was built for {channels} "
            f"(shape {tuple(x.shape)})"
        )


def check_size(size: object, name: str = "output_size") -> None:
    """Raise ``ValueError`` unless ``size`` is None, a positive int or a pair of positive ints."""
    pair = size if isinstance(size, tuple | list) else (size, size)
    if size is None:
        return
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or (h, w) of positive ints, got {size!r}")


def check_boxes(boxes: torch.Tensor, batch: int) -> None:
    """Raise ``ValueError`` unless ``boxes`` is (batch, 4) floating point."""
    if isinstance(boxes, torch.fx.Proxy):
        return
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (B, 4) as x1, y1, x2, y2; got {tuple(boxes.shape)}")
    if boxes.shape[0] != batch:
        raise ValueError(f"boxes has {boxes.shape[0]} rows but x has batch size {batch}: one box per image")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be floating point (normalized coordinates), got {boxes.dtype}")


def check_box_values(boxes: torch.Tensor, max_rows: int = 5) -> None:
    """Raise ``ValueError`` unless every (B, 4) box is finite with ``x1 < x2`` and ``y1 < y2``.

    Elementwise tests on (B, 4) and a single ``all()``, so cheap; but reading the answer is a device-to-host
    sync on CUDA (and a data-dependent branch, so a graph break under ``torch.compile``). Coordinates
    outside [0, 1] pass: they are finite and ordered, and the crop defines their meaning.
    """
    if isinstance(boxes, torch.fx.Proxy):
        return
    lo, hi = boxes[:, :2], boxes[:, 2:]  # (B, 2): (x1, y1) and (x2, y2)
    # NaN fails the comparison; isfinite is still needed for +inf / -inf, which compare fine.
    ok = (hi > lo) & torch.isfinite(lo) & torch.isfinite(hi)
    if bool(ok.all()):
        return
    rows = (~ok).any(dim=1).nonzero().flatten().tolist()
    shown = ", ".join(f"row {i}: {[round(v, 4) for v in boxes[i].tolist()]}" for i in rows[:max_rows])
    more = f" and {len(rows) - max_rows} more" if len(rows) > max_rows else ""
    raise ValueError(
        f"{len(rows)} invalid box(es) ({shown}{more}): a valid box is finite, normalized x1, y1, x2, y2 "
        "with x1 < x2 and y1 < y2 (a NaN/inf box or an inverted or zero-size one has no crop). "
        "Check how the boxes were made, or drop those rows."
    )
