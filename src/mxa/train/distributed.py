"""torchrun / DDP helpers: process group set-up and teardown, agreement between ranks, gathering."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["agree", "dist_info", "gather_predictions", "process_group"]


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """Join the torchrun process group (NCCL on CUDA, else gloo) for the block; yields whether it did.

    The group is torn down on every exit, normal or not (the one place that does it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield dist.is_initialized()
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield True
    finally:
        dist.destroy_process_group()


def agree(finite: bool, stop: bool, device: torch.device) -> tuple[bool, bool]:
    """(every rank's loss is finite, some rank was asked to stop): one all-reduce per step."""
    if not dist.is_initialized():
        return finite, stop
    t = torch.tensor([0.0 if finite else 1.0, 1.0 if stop else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t[0].item() == 0), bool(t[1].item() > 0)


def all_ranks(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one outside torchrun)."""
    if not dist.is_initialized():
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def gather_predictions(preds: dict[str, Any]) -> dict[str, Any]:
    """Gather every rank's predictions to all ranks and drop DistributedSampler's padding duplicates."""
    if not dist.is_initialized():
        return preds
    parts = all_ranks(preds)
    merged: dict[str, Any] = {}
    for k in preds:
        if isinstance(preds[k], dict):  # rois, points: {block: tensor}
            merged[k] = {b: torch.cat([p[k][b] for p in parts]) for b in preds[k]}
        else:
            merged[k] = torch.cat([p[k] for p in parts])
    order = merged["index"].argsort()
    keep = torch.ones_like(order, dtype=torch.bool)
    sorted_idx = merged["index"][order]
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    sel = order[keep]
    return {
        k: ({b: t[sel] for b, t in v.items()} if isinstance(v, dict) else v[sel]) for k, v in merged.items()
    }
