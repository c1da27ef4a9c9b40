"""CheXpert: the official CSVs, lazy image loading, uncertainty policies, patient-level splits."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mxa._optional import require
from mxa.data.io import load_xray
from mxa.data.labels import CHEXPERT_LABELS, apply_policy
from mxa.data.validate import box_problem, read_table, warn_bad_boxes

__all__ = [
    "CSV_COLUMNS",
    "CheXpertDataset",
    "boxes_file",
    "patient_id",
    "patient_split",
    "read_box_file",
    "read_chexpert_csv",
]

log = logging.getLogger(__name__)

#: The official CSV columns, in order.
CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
_PREFIX = re.compile(r"^(?:\./)?CheXpert-v1\.0(?:-small)?/")
_PATIENT = re.compile(r"(patient\d+)")
_ALLOWED = {1.0, 0.0, -1.0}


def patient_id(path: str) -> str:
    """``patient01234`` from a CheXpert path (the whole path when there is none)."""
    m = _PATIENT.search(path)
    return m.group(1) if m else path


def _resolve_csv(root: Path, csv: str | Path) -> Path:
    if str(csv) in ("train", "valid"):
        for cand in (
            root / f"{csv}.csv",
            root / "CheXpert-v1.0-small" / f"{csv}.csv",
            root / "CheXpert-v1.0" / f"{csv}.csv",
        ):
            if cand.is_file():
                return cand
        raise FileNotFoundError(
            f"no {csv}.csv under {root} (looked in {root}, {root / 'CheXpert-v1.0-small'}, "
            f"{root / 'CheXpert-v1.0'}); "
            "pass the dataset folder that holds train.csv, or csv=<path to the CSV>"
        )
    path = Path(csv)
    if not path.is_file():
        raise FileNotFoundError(f"CheXpert CSV not found: {path}")
    return path


def read_chexpert_csv(csv_path: str | Path):
    """Read and validate a CheXpert CSV (plain or gzip) with pandas.

    Raises ``ValueError`` naming the missing column, or the row (CSV line) and column of a label value
    other than 1, 0, -1 or blank.
    """
    pd = require("pandas", "Reading CheXpert CSVs")
    csv_path = Path(csv_path)
    df = read_table(
        csv_path, ("Path", "Frontal/Lateral", *CHEXPERT_LABELS), "CheXpert CSV", dtype={"Path": str}
    )
    for col in CHEXPERT_LABELS:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = (values.isna() & df[col].notna()) | (values.notna() & ~values.isin(list(_ALLOWED)))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{csv_path}: row {i} (line {i + 2}), column {col!r}: value {str(df[col].iloc[i])!r} "
                "is not 1, 0, -1 or blank"
            )
        df[col] = values.astype("float32")
    return df


class CheXpertDataset(Dataset):
    """CheXpert images with targets under an uncertainty policy.

    Args:
        root: the folder that holds ``train.csv``/``valid.csv`` (``CheXpert-v1.0-small``), or its parent.
        csv: ``'train'``, ``'valid'`` or the path of a CSV (``.csv`` or ``.csv.gz``).
        policy: ``ones`` (U-1, the paper's), ``zeros``, ``ignore`` or ``mixed``.
        frontal_only: keep frontal views only (the number dropped is logged and kept in ``n_dropped``).
        transform: callable on the loaded (1, H, W) float image in [0, 1].
        image_root: where the images are, if not next to the CSV (e.g. a pre-resized copy).
        boxes: also yield each image's ground-truth boxes from ``boxes_<split>.json`` beside the CSV (as
            :func:`mxa.data.write_phantom_chexpert` writes: image path -> {finding: normalized xyxy}).

    Items: ``(image, target (14,) float, mask (14,) bool[, boxes (14, 4) normalized xyxy, NaN rows])``.
    ``labels``, ``label_mask``, ``raw_labels``,
    ``paths``, ``ids`` and ``patients`` are available without reading any image.
    """

    def __init__(
        self,
        root: str | Path,
        csv: str | Path = "train",
        policy: str = "ones",
        frontal_only: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_root: str | Path | None = None,
        boxes: bool = False,
    ) -> None:
        root = Path(root)
        self.csv_path = _resolve_csv(root, csv)
        df = read_chexpert_csv(self.csv_path)
        self.n_total = len(df)
        if frontal_only:
            df = df[df["Frontal/Lateral"].astype(str).str.lower() == "frontal"]
        self.n_dropped = self.n_total - len(df)
        if self.n_dropped:
            log.info(
                "%s: kept %d frontal of %d rows (%d lateral dropped)",
                self.csv_path.name,
                len(df),
                self.n_total,
                self.n_dropped,
            )
        self.frame = df.reset_index(drop=True)
        self.image_root = Path(image_root) if image_root is not None else self.csv_path.parent
        self.ids: list[str] = self.frame["Path"].astype(str).tolist()
        self.paths = [self.image_root / _PREFIX.sub("", p) for p in self.ids]
        self.patients = [patient_id(p) for p in self.ids]
        raw = torch.from_numpy(self.frame[list(CHEXPERT_LABELS)].to_numpy(dtype=np.float32))
        self.raw_labels = raw
        self.policy = policy
        self.labels, self.label_mask = apply_policy(raw, policy)
        self.transform = transform
        self.has_boxes = boxes
        self.labelled = torch.ones(len(CHEXPERT_LABELS), dtype=torch.bool)  # CheXpert labels all 14
        if boxes:
            self.box_table = _read_boxes(self.csv_path, self.ids)  # (N, 14, 4) normalized, NaN rows: none

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image = load_xray(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.has_boxes:
            return image, self.labels[index], self.label_mask[index], self.box_table[index]
        return image, self.labels[index], self.label_mask[index]

    def boxes(self, index: int, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(14, 4) normalized xyxy boxes of image ``index`` (NaN rows: none; all NaN without a box file)."""
        if not self.has_boxes:
            return torch.full((len(CHEXPERT_LABELS), 4), float("nan"))
        return self.box_table[index]


def boxes_file(csv_path: str | Path) -> Path:
    """``boxes_<split>.json`` beside a CheXpert-layout ``<split>.csv``."""
    csv_path = Path(csv_path)
    return csv_path.parent / f"boxes_{csv_path.name.split('.')[0]}.json"


def _read_boxes(csv_path: Path, ids: Sequence[str]) -> torch.Tensor:
    """(N, 14, 4) boxes of the CSV's images from ``boxes_<split>.json``; NaN rows where there is none."""
    path = boxes_file(csv_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no box file {path} beside {csv_path.name}; write one or evaluate without boxes"
        )
    return read_box_file(path, ids)


def read_box_file(path: str | Path, ids: Sequence[str]) -> torch.Tensor:
    """(N, 14, 4) normalized xyxy boxes of images ``ids`` from a JSON box file (``{image id: {label: [x1, y1,
    x2, y2]}}``, the format of ``boxes_<split>.json``); NaN rows for labels an image has no box for.

    Raises ``ValueError`` naming the entry for a file that is not such a map (unknown labels included);
    boxes that are not boxes, and images not among ``ids``, are left out with a warning.
    """
    path = Path(path)
    repeated: list[str] = []
    try:
        table = json.loads(path.read_text(), object_pairs_hook=partial(_merge_repeated, repeated))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a JSON box file ({e}); write it again (see docs/data.md)") from None
    if repeated:
        log.warning(
            "%s lists %d key(s) more than once (first: %r): their entries are merged, and a label with two "
            "boxes keeps the larger one (as for NIH's list); write each image once",
            path,
            len(repeated),
            repeated[0],
        )
    if not isinstance(table, dict):
        raise ValueError(
            f"{path} must map image paths to {{label: [x1, y1, x2, y2]}}, not a {type(table).__name__}"
        )
    out = torch.full((len(ids), len(CHEXPERT_LABELS), 4), float("nan"))
    col = {name: j for j, name in enumerate(CHEXPERT_LABELS)}
    bad: list[tuple[str, str, str]] = []
    for i, key in enumerate(ids):
        entry = table.get(key) or {}
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {key!r} must map CheXpert labels to [x1, y1, x2, y2], got {entry!r}")
        for name, box in entry.items():
            if name not in col:
                raise ValueError(
                    f"{path}: {key!r} has a box for {name!r}; expected a CheXpert label -> [x1, y1, x2, y2]"
                )
            why = box_problem(box if isinstance(box, list | tuple) else [box], (1.0, 1.0))
            if why:
                bad.append((key, name, f"{why} {box!r}"))
                continue
            out[i, col[name]] = torch.tensor([float(v) for v in box]).clamp(0.0, 1.0)
    warn_bad_boxes(path, bad)
    unknown = sorted(set(table) - set(ids))
    if unknown:
        log.warning(
            "%s lists %d image(s) that are not among the %d images it is read for (e.g. %r): their boxes are "
            "not used; key the file by those images' ids",
            path,
            len(unknown),
            len(ids),
            unknown[0],
        )
    return out


def _merge_repeated(repeated: list[str], pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose repeated keys are merged, not overwritten (``json.loads`` keeps the last): an
    image's entries are joined, and of two boxes for one label the larger is kept. Repeats are noted."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key not in out:
            out[key] = value
            continue
        repeated.append(key)
        old = out[key]
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = {**old, **{k: v for k, v in value.items() if k not in old}}
            for k in set(old) & set(value):
                out[key][k] = max(old[k], value[k], key=_box_area)
        elif _box_area(value) > _box_area(old):
            out[key] = value
    return out


def _box_area(box: Any) -> float:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return -1.0
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def patient_split(
    patients: Sequence[str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split row indices into train/val so that no patient is in both.

    Args:
        patients: the patient id of every row (``CheXpertDataset.patients``).
        val_fraction: fraction of *patients* that go to validation.
        seed: the shuffle of patients.

    Returns:
        (train indices, val indices), each sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = max(1, round(len(unique) * val_fraction)) if len(unique) > 1 else 0
    val_patients = {unique[i] for i in order[:n_val]}
    train: list[int] = []
    val: list[int] = []
    for i, p in enumerate(patients):
        (val if p in val_patients else train).append(i)
    return train, val
