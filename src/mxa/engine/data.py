"""Datasets for the engine: ``phantom``, ``chexpert:<root>``, ``nih:<root>`` ... or several joined by ``+``,
with image ids and indices."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ..data.transforms import build_transforms
from .sources import SetBundle, build_eval_set, build_train_val, weighted_order

__all__ = [
    "SCHEMES",
    "DataSpec",
    "IndexedDataset",
    "ResumableSampler",
    "build_datasets",
    "build_eval_dataset",
    "parse_data_spec",
]


SCHEMES = ("phantom", "chexpert", "nih", "mimic", "padchest", "vindr", "rsna")
_WEIGHT = re.compile(r"^(?P<spec>.+?)\*(?P<w>\d+(?:\.\d*)?|\.\d+)$")
_SPEC_HELP = (
    "'phantom' or <scheme>:<root> with scheme chexpert, nih, mimic, padchest, vindr or rsna; several joined "
    "by '+', each optionally weighted with *<w> (e.g. chexpert:/data/CheXpert-v1.0-small+nih:/data/nih*0.5)"
)


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "phantom", a scheme of SCHEMES, or "multi" (several sets in ``parts``)
    root: str | None = None
    weight: float = 1.0
    parts: tuple[DataSpec, ...] = ()

    @property
    def sets(self) -> tuple[DataSpec, ...]:
        """The single sets: ``parts`` of a combination, else this one."""
        return self.parts or (self,)


def _parse_one(spec: str) -> DataSpec:
    weight = 1.0
    m = _WEIGHT.match(spec)
    if m:
        spec, weight = m.group("spec"), float(m.group("w"))
    if spec == "phantom":
        return DataSpec("phantom", weight=weight)
    scheme, _, root = spec.partition(":")
    if scheme in SCHEMES[1:] and root:
        return DataSpec(scheme, root, weight)
    raise ValueError(f"--data must be {_SPEC_HELP}; got {spec!r}")


def parse_data_spec(spec: str) -> DataSpec:
    """``phantom``, ``<scheme>:<root>``, or several joined by ``+`` (each optionally ``*<weight>``)."""
    parts = tuple(_parse_one(p) for p in spec.split("+"))
    return parts[0] if len(parts) == 1 else DataSpec("multi", parts=parts)


class IndexedDataset(Dataset):
    """Yields ``(index, image, target, mask[, boxes])`` so a batch knows its image ids.

    ``source_names`` names the sets (one for a single set), ``source_of`` (N,) is each item's set number,
    and ``source_weights`` (or None) how often each set is drawn in a training epoch.
    """

    def __init__(self, base: Dataset, ids: list[str]) -> None:
        self.base, self.ids = base, ids
        self.source_names: list[str] = ["data"]
        self.source_of: Any = None
        self.source_weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (index, *self.base[index])


class ResumableSampler(Sampler[int]):
    """A shuffled order that depends only on ``(seed, epoch)``, split over ranks, resumable mid-epoch.

    One process: ``randperm`` from a generator seeded with ``(seed, epoch)``. Under torchrun:
    ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)``. A dataset with ``source_weights``
    (``--data a+b*w``) draws its sets in proportion to weight x size (same epoch length), the same order on
    every rank, which then takes every ``world``-th index. ``set_epoch(epoch, skip)`` picks the
    epoch and drops its first ``skip`` indices (the batches a resumed run already trained on).
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n = len(dataset)  # type: ignore[arg-type]
        self.seed, self.epoch, self.skip = seed, 0, 0
        self.rank, self.world = rank, world
        self.weights = getattr(dataset, "source_weights", None)
        self.source_of = getattr(dataset, "source_of", None)
        self.dist = (
            DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
            if world > 1 and self.weights is None
            else None
        )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.dist is not None:
            self.dist.set_epoch(self.epoch)
            return list(self.dist)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = weighted_order(self.source_of, self.weights, g)
            return order[self.rank : (len(order) // self.world) * self.world : self.world]
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.skip :])

    def __len__(self) -> int:
        total = len(self.dist) if self.dist is not None else self.n // self.world
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
    geometric: bool = True,
) -> tuple[IndexedDataset, IndexedDataset]:
    """(train, val) datasets for training, with transforms from the model's ``pretrained_cfg``.

    ``augment=False`` gives the training images in the evaluation view (what a teacher cache sees);
    ``geometric=False`` augments without moving pixels, so boxes stay valid (box supervision).

    ``phantom``: ``train_samples`` / ``val_samples`` synthetic images at the model's input size (seeds
    ``seed`` and ``seed + 1``). ``chexpert:<root>``: train.csv for training; validation on valid.csv
    (the official, radiologist-labelled set) when it exists, else a patient-level split of train.csv.
    ``nih``/``mimic``/``padchest``/``vindr``/``rsna``: the official training split where the folder has
    one, validation on MIMIC's official split or a patient-level split (``val_fraction``, ``seed``).
    Several sets (``a+b``) are split each on its own and concatenated; ids are then ``<set>:<id>``.
    Boxes come with the items of every set that has them (NaN boxes for the others).
    """
    d = parse_data_spec(spec)
    eval_tf = build_transforms(model, train=False)
    train_tf = (
        build_transforms(model, train=True, auto_augment=rand_augment, geometric=geometric)
        if augment
        else eval_tf
    )
    size = int(getattr(model, "input_hw", (224, 224))[0])
    train, val = build_train_val(
        d, policy, train_tf, eval_tf, size, (train_samples, val_samples), seed, val_fraction
    )
    return _indexed(train), _indexed(val)


def _indexed(b: SetBundle) -> IndexedDataset:
    ds = IndexedDataset(b.base, b.ids)
    ds.source_names, ds.source_of, ds.source_weights = b.source_names, b.source_of, b.source_weights
    return ds


def build_eval_dataset(
    spec: str,
    model: torch.nn.Module,
    policy: str = "ones",
    samples: int = 500,
    seed: int = 1,
    split_seed: int = 0,
    val_fraction: float = 0.05,
) -> IndexedDataset:
    """The evaluation set of every set of ``spec``.

    Phantom validation images (``samples``, ``seed``); CheXpert valid.csv (with ``boxes_valid.json``
    boxes when present); the official test split of NIH (``test_list.txt``), MIMIC and VinDr (PhysioNet)
    when the folder has it, else the patient-level validation part a training run with seed
    ``split_seed`` and ``val_fraction`` held out (never its training images).
    """
    d = parse_data_spec(spec)
    eval_tf = build_transforms(model, train=False)
    size = int(getattr(model, "input_hw", (224, 224))[0])
    return _indexed(build_eval_set(d, policy, eval_tf, size, samples, seed, split_seed, val_fraction))
