"""Datasets for the engine: ``phantom`` or ``chexpert:<root>``, with image ids and indices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ..data.chexpert import CheXpertDataset, patient_split
from ..data.phantom import PhantomCXR
from ..data.transforms import build_transforms

__all__ = [
    "DataSpec",
    "IndexedDataset",
    "ResumableSampler",
    "build_datasets",
    "build_eval_dataset",
    "parse_data_spec",
]


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


class ResumableSampler(Sampler[int]):
    """A shuffled order that depends only on ``(seed, epoch)``, split over ranks, resumable mid-epoch.

    One process: ``randperm`` from a generator seeded with ``(seed, epoch)``. Under torchrun:
    ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)``. ``set_epoch(epoch, skip)`` picks the
    epoch and drops its first ``skip`` indices (the batches a resumed run already trained on).
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n = len(dataset)  # type: ignore[arg-type]
        self.seed, self.epoch, self.skip = seed, 0, 0
        self.dist = (
            DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
            if world > 1
            else None
        )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.dist is not None:
            self.dist.set_epoch(self.epoch)
            return list(self.dist)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.skip :])

    def __len__(self) -> int:
        total = len(self.dist) if self.dist is not None else self.n
        return max(0, total - self.skip)


def build_datasets(
    spec: str,
    model: torch.nn.Module,
    policy: str = "ones",
    train_samples: int = 2000,
    val_samples: int = 500,
    seed: int = 0,
    rand_augment: str | None = "rand-m5-mstd0.2-inc2",
    val_fraction: float = 0.05,
    augment: bool = True,
) -> tuple[IndexedDataset, IndexedDataset]:
    """(train, val) datasets for training, with transforms from the model's ``pretrained_cfg``.

    ``augment=False`` gives the training images in the evaluation view (what a teacher cache sees).

    ``phantom``: ``train_samples`` / ``val_samples`` synthetic images at the model's input size (seeds
    ``seed`` and ``seed + 1``). ``chexpert:<root>``: train.csv for training; validation on valid.csv
    (the official, radiologist-labelled set) when it exists, else a patient-level split of train.csv.
    """
    d = parse_data_spec(spec)
    eval_tf = build_transforms(model, train=False)
    train_tf = build_transforms(model, train=True, auto_augment=rand_augment) if augment else eval_tf
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
