"""The datasets a run uses: per-set train/validation/evaluation datasets, their concatenation with image
ids, label summaries, weighted and resumable epoch orders.

``--data chexpert:A+nih:B*0.5`` trains on both (``*w`` weights how often a set's images are drawn); each
set is split by patient on its own, and evaluation reports every set and the pool.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, Subset

from mxa.data.chexpert import CheXpertDataset, boxes_file, patient_split
from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.phantom import PhantomCXR
from mxa.data.spec import DataSpec, parse_data_spec
from mxa.data.transforms import PAPER_RAND_AUGMENT, build_transforms
from mxa.data.xray_sets import DATASETS

__all__ = [
    "IndexedDataset",
    "MultiSet",
    "ResumableSampler",
    "SetBundle",
    "build_datasets",
    "build_eval_dataset",
    "build_eval_set",
    "build_train_val",
    "label_summary",
    "weighted_order",
]

log = logging.getLogger(__name__)


def _labels_of(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels (N, 14), mask (N, 14), labelled (14,)) of a dataset of ours, a Subset or a MultiSet."""
    if isinstance(ds, Subset):
        labels, mask, labelled = _labels_of(ds.dataset)
        idx = torch.as_tensor(list(ds.indices), dtype=torch.long)
        return labels[idx], mask[idx], labelled
    labelled = getattr(ds, "labelled", None)
    if labelled is None:
        labelled = torch.ones(len(CHEXPERT_LABELS), dtype=torch.bool)
    return ds.labels, ds.label_mask, labelled  # type: ignore[attr-defined]


def _has_boxes(ds: Dataset) -> bool:
    inner = ds.dataset if isinstance(ds, Subset) else ds
    return bool(getattr(inner, "has_boxes", False))


class MultiSet(Dataset):
    """The concatenation of several sets; items carry NaN boxes for sets without boxes when any has them.

    ``labels``/``label_mask`` (N, 14) are concatenated; ``source_of`` (N,) is each item's set number.
    """

    def __init__(self, members: list[Dataset]) -> None:
        self.members = members
        self.sizes = [len(m) for m in members]  # type: ignore[arg-type]
        self.offsets = np.cumsum([0, *self.sizes])
        self.has_boxes = any(_has_boxes(m) for m in members)
        parts = [_labels_of(m) for m in members]
        self.labels = torch.cat([p[0] for p in parts])
        self.label_mask = torch.cat([p[1] for p in parts])
        self.source_of = np.repeat(np.arange(len(members)), self.sizes)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        s = int(np.searchsorted(self.offsets, index, side="right") - 1)
        item = tuple(self.members[s][index - int(self.offsets[s])])
        if self.has_boxes and len(item) == 3:
            item = (*item, torch.full((len(CHEXPERT_LABELS), 4), float("nan")))
        elif not self.has_boxes:
            item = item[:3]
        return item


def _names(specs: tuple[DataSpec, ...]) -> list[str]:
    """One name per set: its scheme, numbered when a scheme comes twice (``nih``, ``nih-2``)."""
    seen: dict[str, int] = {}
    out = []
    for d in specs:
        seen[d.kind] = seen.get(d.kind, 0) + 1
        out.append(d.kind if seen[d.kind] == 1 else f"{d.kind}-{seen[d.kind]}")
    return out


def _with_transform(ds: Dataset, transform: Any) -> Dataset:
    """A shallow copy that reads the same files with another transform (labels are shared, not re-read)."""
    out = copy.copy(ds)
    out.transform = transform  # type: ignore[attr-defined]
    return out


def _split(ds: Dataset, eval_ds: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    tr, va = patient_split(ds.patients, val_fraction, seed)  # type: ignore[attr-defined]
    return Subset(ds, tr), Subset(eval_ds, va)


def _ids(ds: Dataset) -> list[str]:
    if isinstance(ds, Subset):
        base = _ids(ds.dataset)
        return [base[i] for i in ds.indices]
    return list(ds.ids)  # type: ignore[attr-defined]


def _one_train_val(
    d: DataSpec,
    policy: str,
    train_tf: Any,
    eval_tf: Any,
    size: int,
    n: tuple[int, int],
    seed: int,
    val_fraction: float,
) -> tuple[Dataset, Dataset]:
    if d.kind == "phantom":
        # Phantoms are drawn at the model's size; the eval transform then only normalizes.
        kind = d.phantom_kind
        return (
            PhantomCXR(n[0], image_size=size, seed=seed, policy=policy, transform=train_tf, kind=kind),
            PhantomCXR(n[1], image_size=size, seed=seed + 1, policy=policy, transform=eval_tf, kind=kind),
        )
    if d.kind == "chexpert":
        train_full = CheXpertDataset(d.root, "train", policy=policy, transform=train_tf)
        if boxes_file(train_full.csv_path).is_file():  # our writer's boxes: for box supervision
            train_full = CheXpertDataset(d.root, "train", policy=policy, transform=train_tf, boxes=True)
        try:
            valid_csv = CheXpertDataset(d.root, "valid", policy=policy, transform=eval_tf).csv_path
        except FileNotFoundError:
            boxes = boxes_file(train_full.csv_path).is_file()
            val_full = CheXpertDataset(d.root, "train", policy=policy, transform=eval_tf, boxes=boxes)
            return _split(train_full, val_full, val_fraction, seed)
        val = CheXpertDataset(
            d.root, valid_csv, policy=policy, transform=eval_tf, boxes=boxes_file(valid_csv).is_file()
        )
        return train_full, val
    cls = DATASETS[d.kind]
    part = "train" if cls.has_split(d.root, "train") else "all"
    train_full = cls(d.root, part, policy=policy, transform=train_tf)
    if cls.has_split(d.root, "validate"):  # MIMIC's official validation split
        return train_full, cls(d.root, "validate", policy=policy, transform=eval_tf)
    return _split(train_full, _with_transform(train_full, eval_tf), val_fraction, seed)


@dataclass
class SetBundle:
    """What :class:`IndexedDataset` wraps: the dataset, its ids and where each item is from."""

    base: Dataset
    ids: list[str]
    source_names: list[str]
    source_of: np.ndarray  # (N,) set number of every item
    source_weights: list[float] | None = None


def _combine(specs: tuple[DataSpec, ...], sets: list[Dataset], with_weights: bool) -> SetBundle:
    names = _names(specs)
    if len(sets) == 1:
        base, ids = sets[0], _ids(sets[0])
    else:
        base, ids = MultiSet(sets), [f"{name}:{i}" for name, s in zip(names, sets) for i in _ids(s)]
    source_of = np.repeat(np.arange(len(sets)), [len(s) for s in sets])  # type: ignore[arg-type]
    weights = [d.weight for d in specs] if with_weights and any(d.weight != 1.0 for d in specs) else None
    return SetBundle(base, ids, names, source_of, weights)


def _once_each(b: SetBundle, what: str) -> SetBundle:
    """``b`` with every image once: duplicated rows would be counted twice in every metric and CI."""
    first: dict[str, int] = {}
    for i, key in enumerate(b.ids):
        first.setdefault(key, i)
    if len(first) == len(b.ids):
        return b
    keep = sorted(first.values())
    dup = [k for k, c in Counter(b.ids).items() if c > 1]
    log.warning(
        "the %s set names %d image(s) more than once (e.g. %s): each is counted once; remove the duplicated "
        "rows from its label file",
        what,
        len(b.ids) - len(keep),
        dup[0],
    )
    source_of = np.asarray(b.source_of)[keep] if b.source_of is not None else None
    return SetBundle(
        Subset(b.base, keep), [b.ids[i] for i in keep], b.source_names, source_of, b.source_weights
    )


def build_train_val(
    d: DataSpec,
    policy: str,
    train_tf: Any,
    eval_tf: Any,
    size: int,
    n: tuple[int, int],
    seed: int,
    val_fraction: float,
) -> tuple[SetBundle, SetBundle]:
    """(train, val) over every set of ``d``; see :func:`mxa.data.combine.build_datasets`."""
    pairs = [_one_train_val(s, policy, train_tf, eval_tf, size, n, seed, val_fraction) for s in d.sets]
    train = _combine(d.sets, [p[0] for p in pairs], with_weights=True)
    val = _once_each(_combine(d.sets, [p[1] for p in pairs], with_weights=False), "validation")
    both = set(train.ids) & set(val.ids)
    if both:
        log.warning(
            "%d image(s) are in both the training and the validation set (e.g. %s): validation numbers are "
            "optimistic; validate on images the run does not train on",
            len(both),
            sorted(both)[0],
        )
    return train, val


def build_eval_set(
    d: DataSpec,
    policy: str,
    eval_tf: Any,
    size: int,
    samples: int,
    seed: int,
    split_seed: int,
    val_fraction: float = 0.05,
    split: str = "test",
) -> SetBundle:
    """Every set's evaluation images: an official test split where the folder has one, else the
    patient-level validation part that training with ``split_seed`` held out. ``split="validation"`` never
    takes an official test split: the images a run validates on (where a set has no test split, both are the
    same images)."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    sets: list[Dataset] = []
    for s in d.sets:
        if s.kind == "phantom":
            sets.append(
                PhantomCXR(
                    samples, image_size=size, seed=seed, policy=policy, transform=eval_tf, kind=s.phantom_kind
                )
            )
        elif s.kind == "chexpert":
            ds = CheXpertDataset(s.root, "valid", policy=policy, transform=eval_tf)
            if boxes_file(ds.csv_path).is_file():
                ds = CheXpertDataset(s.root, ds.csv_path, policy=policy, transform=eval_tf, boxes=True)
            sets.append(ds)
        else:
            cls = DATASETS[s.kind]
            if split == "test" and cls.has_split(s.root, "test"):
                sets.append(cls(s.root, "test", policy=policy, transform=eval_tf))
            elif cls.has_split(s.root, "validate"):
                sets.append(cls(s.root, "validate", policy=policy, transform=eval_tf))
            else:
                part = "train" if cls.has_split(s.root, "train") else "all"
                full = cls(s.root, part, policy=policy, transform=eval_tf)
                sets.append(_split(full, full, val_fraction, split_seed)[1])
    ds = _once_each(_combine(d.sets, sets, with_weights=False), "evaluation")
    for line in describe(ds, "evaluation" if split == "test" else "validation"):
        log.info("%s", line)
    return ds


def label_summary(ds: Any) -> dict[str, dict[str, Any]]:
    """Per set of an ``IndexedDataset`` (or :class:`SetBundle`): images, and per observation whether it
    is labelled (else masked) and its positives."""
    members = ds.base.members if isinstance(ds.base, MultiSet) else [ds.base]
    out = {}
    for name, m in zip(getattr(ds, "source_names", ["data"]), members):
        labels, mask, labelled = _labels_of(m)
        pos = ((labels > 0) & mask).sum(0)
        out[name] = {
            "n_images": len(m),  # type: ignore[arg-type]
            "boxes": _has_boxes(m),
            "labels": {
                c: {
                    "labelled": bool(labelled[j]),
                    "positives": int(pos[j]),
                    "n_labelled": int(mask[:, j].sum()),
                }
                for j, c in enumerate(CHEXPERT_LABELS)
            },
        }
    return out


def describe(ds: Any, what: str) -> list[str]:
    """One line per set: images, and the observations it does not label (masked, never negatives)."""
    lines = []
    for name, s in label_summary(ds).items():
        masked = [c for c, v in s["labels"].items() if not v["labelled"]]
        lines.append(
            f"{what} set {name}: {s['n_images']} images{', with boxes' if s['boxes'] else ''}; "
            f"masked (not labelled): {', '.join(masked) or 'none'}"
        )
    return lines


def weighted_order(source_of: np.ndarray, weights: list[float], g: torch.Generator) -> list[int]:
    """An epoch's order with set ``s`` drawn in proportion to ``weights[s] x its size``, as many draws as
    images in all: a set gets whole shuffled passes, then a random part of one more pass."""
    sizes = np.bincount(source_of, minlength=len(weights)).astype(np.float64)
    share = sizes * np.asarray(weights, dtype=np.float64)
    if share.sum() <= 0:
        raise ValueError("the --data weights give every set zero weight")
    exact = share / share.sum() * len(source_of)
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: len(source_of) - counts.sum()]] += 1
    order: list[torch.Tensor] = []
    for s, c in enumerate(counts):
        members = torch.as_tensor(np.flatnonzero(source_of == s))
        while c > 0 and len(members):
            take = min(int(c), len(members))
            order.append(members[torch.randperm(len(members), generator=g)[:take]])
            c -= take
    flat = torch.cat(order) if order else torch.zeros(0, dtype=torch.long)
    return flat[torch.randperm(len(flat), generator=g)].tolist()


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
        self.box_kept: torch.Tensor | None = None  # (N,) bool: items whose boxes are given (None: all)
        self.box_table: torch.Tensor | None = None  # (N, K, 4): boxes given instead of the data's (None: its)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        item = (index, *self.base[index])
        if self.box_table is not None:
            item = (*item[:4], self.box_table[index])
        if self.box_kept is not None and len(item) > 4 and not bool(self.box_kept[index]):
            item = (*item[:4], torch.full_like(item[4], float("nan")))  # trained from its labels alone
        return item

    def use_boxes(self, table: torch.Tensor) -> int:
        """Give the boxes of ``table`` (N, K, 4) (NaN rows: none) instead of the data's, for box supervision;
        returns the number of items with at least one box.

        Examples:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> from mxa.data.combine import IndexedDataset
            >>> base = TensorDataset(torch.zeros(2, 1), torch.zeros(2, 3), torch.ones(2, 3))
            >>> ds = IndexedDataset(base, ["a", "b"])
            >>> table = torch.full((2, 3, 4), float("nan"))
            >>> table[1, 2] = torch.tensor([0.1, 0.2, 0.3, 0.4])
            >>> ds.use_boxes(table), ds[1][4][2].tolist(), bool(ds[0][4].isnan().all())
            (1, [0.10000000149011612, 0.20000000298023224, 0.30000001192092896, 0.4000000059604645], True)
        """
        if table.shape[0] != len(self) or table.shape[-1] != 4:
            raise ValueError(
                f"need a ({len(self)}, K, 4) box table, one row per item; got {tuple(table.shape)}"
            )
        self.box_table = table
        return int((~table.isnan().any(-1)).any(-1).sum())

    def keep_boxes(self, fraction: float, seed: int) -> int:
        """Give the boxes of ``round(fraction * N)`` items only, drawn by ``seed``; the others' are NaN.

        Returns the number of items drawn (those of them without boxes in the data stay without).

        Examples:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> from mxa.data.combine import IndexedDataset
            >>> z = torch.zeros  # 4 items: image, target, mask, boxes
            >>> base = TensorDataset(z(4, 1), z(4, 2), torch.ones(4, 2), z(4, 2, 4))
            >>> ds = IndexedDataset(base, ["a", "b", "c", "d"])
            >>> ds.keep_boxes(0.5, seed=0)
            2
            >>> sum(bool(ds[i][4].isnan().all()) for i in range(4))
            2
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        kept = torch.zeros(n, dtype=torch.bool)
        kept[order[: round(fraction * n)]] = True
        self.box_kept = kept
        return int(kept.sum())


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
    *,
    policy: str = "ones",
    train_samples: int = 2000,
    val_samples: int = 500,
    seed: int = 0,
    rand_augment: str | None = PAPER_RAND_AUGMENT,
    val_fraction: float = 0.05,
    augment: bool = True,
    geometric: bool = True,
    describe_validation: bool = True,
) -> tuple[IndexedDataset, IndexedDataset]:
    """(train, val) datasets for training, with transforms from the model's ``pretrained_cfg``.

    ``augment=False`` gives the training images in the evaluation view (what a teacher cache sees);
    ``geometric=False`` augments without moving pixels, so boxes stay valid (box supervision);
    ``describe_validation=False`` logs the training set only (a teacher cache: the split is made, but its
    validation part is not used).

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
    for line in describe(train, "train") + (describe(val, "validation") if describe_validation else []):
        log.info("%s", line)
    return _indexed(train), _indexed(val)


def _indexed(b: SetBundle) -> IndexedDataset:
    ds = IndexedDataset(b.base, b.ids)
    ds.source_names, ds.source_of, ds.source_weights = b.source_names, b.source_of, b.source_weights
    return ds


def build_eval_dataset(
    spec: str,
    model: torch.nn.Module,
    *,
    policy: str = "ones",
    samples: int = 500,
    seed: int = 1,
    split_seed: int = 0,
    val_fraction: float = 0.05,
    split: str = "test",
) -> IndexedDataset:
    """The evaluation set of every set of ``spec``.

    Phantom validation images (``samples``, ``seed``); CheXpert valid.csv (with ``boxes_valid.json``
    boxes when present); the official test split of NIH (``test_list.txt``), MIMIC and VinDr (PhysioNet)
    when the folder has it, else the patient-level validation part a training run with seed
    ``split_seed`` and ``val_fraction`` held out (never its training images). ``split="validation"``: the
    images such a run validated on (phantoms: give the run's validation ``seed``), never an official test
    split.
    """
    d = parse_data_spec(spec)
    eval_tf = build_transforms(model, train=False)
    size = int(getattr(model, "input_hw", (224, 224))[0])
    return _indexed(build_eval_set(d, policy, eval_tf, size, samples, seed, split_seed, val_fraction, split))
