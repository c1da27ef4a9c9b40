"""Teacher outputs computed once over a dataset and stored as safetensors, keyed by image id.

Online distillation with DenseNet-121 costs ~5x the student's forward pass per step; reading cached
logits costs nothing. The trade-off: the cache sees the deterministic evaluation view of each image,
not the augmented view the student trains on.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.labels import CHEXPERT_LABELS

__all__ = ["TeacherCache", "build_teacher_cache"]


class TeacherCache:
    """Cached teacher logits.

    Attributes:
        logits: (N, 14) float32.
        mask: (14,) bool, the labels the teacher predicts.
        ids: the N image ids, in row order.
        meta: free-form metadata (teacher name, transform).
    """

    def __init__(
        self, logits: torch.Tensor, mask: torch.Tensor, ids: Sequence[str], meta: dict | None = None
    ) -> None:
        if logits.ndim != 2 or logits.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for logits of shape {tuple(logits.shape)}")
        self.logits = logits.float()
        self.mask = mask.bool()
        self.ids = list(ids)
        self.meta = dict(meta or {})
        self._row = {k: i for i, k in enumerate(self.ids)}
        if len(self._row) != len(self.ids):
            raise ValueError("image ids in a teacher cache must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str]) -> torch.Tensor:
        try:
            return torch.tensor([self._row[i] for i in ids], dtype=torch.long)
        except KeyError as e:
            raise KeyError(
                f"image {e.args[0]!r} is not in the teacher cache ({len(self)} images, teacher "
                f"{self.meta.get('teacher', '?')}); rebuild it with `mxa cache-teacher` for this dataset"
            ) from None

    def lookup(
        self, ids: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 14), mask (14,)) for the given image ids."""
        logits = self.logits[self.rows(ids)]
        return logits.to(device) if device else logits, self.mask.to(device) if device else self.mask

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "ids": json.dumps(self.ids),
            "labels": json.dumps(list(CHEXPERT_LABELS)),
            "meta": json.dumps(self.meta),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                {"logits": self.logits.contiguous(), "mask": self.mask.to(torch.uint8)}, tmp, metadata=meta
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TeacherCache:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache not found: {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            logits, mask = f.get_tensor("logits"), f.get_tensor("mask").bool()
        if "ids" not in meta:
            raise ValueError(f"{path} is not a teacher cache written by mxa (no image ids in its metadata)")
        labels = json.loads(meta.get("labels", "[]"))
        if labels and tuple(labels) != CHEXPERT_LABELS:
            raise ValueError(f"{path} was written for labels {labels}, not the 14 CheXpert labels")
        return cls(logits, mask, json.loads(meta["ids"]), json.loads(meta.get("meta", "{}")))


@torch.no_grad()
def build_teacher_cache(
    teacher: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    dataset: Dataset,
    ids: Sequence[str],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    meta: dict | None = None,
    progress: bool = True,
) -> TeacherCache:
    """Run ``teacher`` over ``dataset`` (use the evaluation transform) and collect its logits.

    ``dataset[i]`` must return the image first; ``ids[i]`` is its id.
    """
    if len(ids) != len(dataset):
        raise ValueError(f"{len(ids)} ids for a dataset of {len(dataset)} images")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    it = loader
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(loader, desc="teacher cache", unit="batch")
        except ImportError:
            pass
    chunks, mask = [], None
    for batch in it:
        images = batch[0].to(device)
        logits, mask = teacher(images)
        chunks.append(logits.float().cpu())
    logits = torch.cat(chunks) if chunks else torch.zeros(0, len(CHEXPERT_LABELS))
    if mask is None:
        mask = torch.zeros(len(CHEXPERT_LABELS), dtype=torch.bool)
    return TeacherCache(logits, mask.cpu(), ids, meta)
