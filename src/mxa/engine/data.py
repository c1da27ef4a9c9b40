"""Datasets for the engine: ``phantom`` or ``chexpert:<root>``, with image ids and indices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from ..data.chexpert import CheXpertDataset, patient_split
from ..data.phantom import PhantomCXR
from ..data.transforms import build_transforms

__all__ = ["DataSpec", "IndexedDataset", "SkipSampler", "build_datasets", "parse_data_spec"]


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "phantom" or "chexpert"
    root: str | None = None


def parse_data_spec(spec: str) -> DataSpec:
    if spec == "phantom":
        return DataSpec("phantom")
    if spec.startswith("chexpert:") and len(spec) > len("chexpert:"):
        return DataSpec("chexpert", spec.split(":", 1)[1])
    raise ValueError(f"--data must be 'phantom' or 'chexpert:<root>', got {spec!r}")


class IndexedDataset(Dataset):
    """Yields ``(index, image, target, mask[, boxes])`` so a batch knows its image ids."""

    def __init__(self, base: Dataset, ids: list[str]) -> None:
        self.base, self.ids = base, ids

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (index, *self.base[index])


class SkipSampler(Sampler[int]):
    """Drop the first ``skip`` indices of a (deterministic) sampler: resume in the middle of an epoch."""

    def __init__(self, base: Sampler[int], skip: int = 0) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        for i, idx in enumerate(self.base):
            if i >= self.skip:
                yield idx

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


def build_datasets(
    spec: str,
    model: torch.nn.Module,
    policy: str = "ones",
    train_samples: int = 2000,
    val_samples: int = 500,
    seed: int = 0,
    rand_augment: str | None = "rand-m5-mstd0.2-inc2",
    val_fraction: float = 0.05,
    split: str = "val",
) -> tuple[IndexedDataset | None, IndexedDataset]:
    """(train, val) for training, or (None, eval set) with ``split='test'``-like use; transforms from the model.

    ``phantom``: ``train_samples`` / ``val_samples`` synthetic images at the model's input size (seeds
    ``seed`` and ``seed + 1``). ``chexpert:<root>``: train.csv for training; validation on valid.csv
    (the official, radiologist-labelled set) when it exists, else a patient-level split of train.csv.
    """
    d = parse_data_spec(spec)
    train_tf = build_transforms(model, train=True, auto_augment=rand_augment)
    eval_tf = build_transforms(model, train=False)
    size = int(getattr(model, "input_hw", (224, 224))[0])
    if d.kind == "phantom":
        # Phantoms are drawn at the model's size; the eval transform then only normalizes.
        train = PhantomCXR(train_samples, image_size=size, seed=seed, policy=policy, transform=train_tf)
        val = PhantomCXR(val_samples, image_size=size, seed=seed + 1, policy=policy, transform=eval_tf)
        return IndexedDataset(train, train.ids), IndexedDataset(val, val.ids)
    train_full = CheXpertDataset(d.root, "train", policy=policy, transform=train_tf)
    try:
        val = CheXpertDataset(d.root, "valid", policy=policy, transform=eval_tf)
        train_ds: Dataset = train_full
        train_ids = train_full.ids
    except FileNotFoundError:
        tr_idx, va_idx = patient_split(train_full.patients, val_fraction, seed)
        val_full = CheXpertDataset(d.root, "train", policy=policy, transform=eval_tf)
        val = torch.utils.data.Subset(val_full, va_idx)
        val.ids = [val_full.ids[i] for i in va_idx]  # type: ignore[attr-defined]
        train_ds = torch.utils.data.Subset(train_full, tr_idx)
        train_ids = [train_full.ids[i] for i in tr_idx]
    return IndexedDataset(train_ds, train_ids), IndexedDataset(val, list(val.ids))


def build_eval_dataset(
    spec: str, model: torch.nn.Module, policy: str = "ones", samples: int = 500, seed: int = 1
) -> IndexedDataset:
    """The evaluation set: phantom validation images, or CheXpert valid.csv."""
    d = parse_data_spec(spec)
    eval_tf = build_transforms(model, train=False)
    if d.kind == "phantom":
        size = int(getattr(model, "input_hw", (224, 224))[0])
        ds = PhantomCXR(samples, image_size=size, seed=seed, policy=policy, transform=eval_tf)
        return IndexedDataset(ds, ds.ids)
    ds = CheXpertDataset(d.root, "valid", policy=policy, transform=eval_tf)
    return IndexedDataset(ds, ds.ids)
