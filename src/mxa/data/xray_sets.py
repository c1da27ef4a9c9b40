"""NIH ChestX-ray14, MIMIC-CXR-JPG, PadChest, VinDr-CXR and RSNA Pneumonia, on the 14 CheXpert labels.

torchxrayvision's dataset classes read the label CSVs (its wheel ships the NIH, PadChest, VinDr and RSNA
ones) and extract its labels (NIH's ``Finding Labels``, PadChest's 174 Spanish-report findings and their
synonyms, VinDr's three readers); :func:`torchxrayvision.datasets.relabel_dataset` then aligns them by name
onto the CheXpert observations. Images are read by :func:`mxa.data.io.load_xray` (not by torchxrayvision,
which scales to [-1024, 1024]), so every dataset enters the model in the same convention as CheXpert.

An observation a dataset does not label is masked (never a negative). Radiologists' boxes (NIH, VinDr,
RSNA) come with each item as (14, 4) normalized xyxy, NaN rows where the image has no box for that label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from mxa._optional import require
from mxa.data.io import IMAGE_SUFFIXES, load_xray
from mxa.data.labels import CHEXPERT_LABELS, apply_policy
from mxa.data.validate import BOX_TOLERANCE, box_problem, read_table, warn_bad_boxes

__all__ = [
    "DATASETS",
    "LABEL_SYNONYMS",
    "MIMICDataset",
    "NIHDataset",
    "PadChestDataset",
    "RSNADataset",
    "VinDrDataset",
    "XRayDataset",
]

log = logging.getLogger(__name__)

#: CheXpert observation -> the torchxrayvision label names that mean it (any positive is a positive; a
#: negative needs all of them negative). Names equal to a CheXpert observation map to it as they are.
LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("Effusion",),
    "Lung Lesion": ("Nodule", "Mass", "Nodule/Mass"),
}
_COL = {name: j for j, name in enumerate(CHEXPERT_LABELS)}
_NAN_BOX = (float("nan"),) * 4


def _xrv() -> Any:
    return require("torchxrayvision", "Reading NIH, PadChest, VinDr and RSNA label files")


def _shipped(name: str) -> Path:
    return Path(_xrv().__file__).parent / "data" / name


def _checked(csv: Path, columns: Sequence[str], what: str) -> Path:
    """``csv``, after :func:`~mxa.data.validate.read_table` has read a user's copy (files torchxrayvision
    ships are known good): one error naming the file instead of a traceback from torchxrayvision."""
    if _shipped("") not in csv.parents:
        read_table(csv, columns, what, nrows=1000)
    return csv


def _first_file(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _xrv_quietly(cls: Callable[..., Any], **kwargs: Any) -> Any:
    """Build a torchxrayvision dataset without its side effect on NumPy's global seed."""
    state = np.random.get_state()  # noqa: NPY002  (the legacy global state is what it resets)
    try:
        return cls(**kwargs)
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _to_chexpert(xrv_ds: Any, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(N, 14) raw labels from a torchxrayvision dataset: 1/0 where labelled, NaN where not.

    Synonyms (:data:`LABEL_SYNONYMS`) are merged first, then ``relabel_dataset`` aligns by name.
    ``extra`` adds columns the library does not extract (e.g. ``No Finding``).
    """
    names = [str(p) for p in xrv_ds.pathologies]
    labels = np.asarray(xrv_ds.labels, dtype=np.float32)
    cols, new_names = [], []
    for target, sources in LABEL_SYNONYMS.items():
        idx = [names.index(s) for s in sources if s in names]
        if idx and target not in names:
            sub = labels[:, idx]
            merged = np.where(np.isnan(sub).all(1), np.nan, np.nanmax(np.nan_to_num(sub, nan=-1.0), 1))
            cols.append(np.where(merged < 0, np.nan, merged))
            new_names.append(target)
    for name, values in (extra or {}).items():
        cols.append(np.asarray(values, dtype=np.float32))
        new_names.append(name)

    class _Labels:  # relabel_dataset edits .labels/.pathologies of what it is given
        pass

    tmp = _Labels()
    tmp.labels = np.concatenate([labels, np.stack(cols, 1)], 1) if cols else labels
    tmp.pathologies = names + new_names
    _xrv().datasets.relabel_dataset(list(CHEXPERT_LABELS), tmp, silent=True)
    return np.asarray(tmp.labels, dtype=np.float32)


def _index_images(folder: Path, what: str) -> dict[str, Path]:
    """Image file stem -> path, for every image under ``folder`` (one walk of the tree)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: image folder {folder} not found; {_LAYOUT_HINT}")
    out: dict[str, Path] = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_SUFFIXES:
                out.setdefault(stem, Path(dirpath) / f)
    return out


_LAYOUT_HINT = "pass the dataset's folder as its publisher distributes it (see docs/data.md)"


class XRayDataset(Dataset):
    """Images, raw labels on the 14 CheXpert observations, and (optionally) radiologists' boxes.

    Items: ``(image (1, H, W) or transformed, target (14,) float, mask (14,) bool[, boxes (14, 4)])``.
    ``labels``, ``label_mask``, ``raw_labels``, ``labelled``, ``ids``, ``paths`` and ``patients`` are
    available without reading any image. ``raw_labels`` holds 1, 0, -1 (uncertain) or NaN; NaN in a column
    the dataset does not label (``labelled`` False) is masked, NaN in a labelled column is a blank (a
    negative, as in CheXpert).

    Boxes are kept in the pixel frame of their CSV (``box_frame`` (N, 2) width/height, NaN: the image as
    loaded) and normalized when an item is read, before the transform (which only resizes at evaluation).
    """

    name = "xray"
    has_boxes = False

    def _finish(
        self,
        root: Path,
        csv_path: Path | str,
        ids: Sequence[str],
        stems: Sequence[str],
        patients: Sequence[str],
        raw: np.ndarray,
        policy: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        image_folder: Path,
        boxes_px: np.ndarray | None = None,
        box_frame: np.ndarray | None = None,
        paths: Sequence[Path] | None = None,
    ) -> None:
        self.root, self.csv_path, self.policy, self.transform = root, Path(csv_path), policy, transform
        keep = np.arange(len(ids))
        if paths is None:  # flat names: find every image once, keep the rows whose image exists
            found = _index_images(image_folder, self.name)
            hit = np.array([s in found for s in stems], dtype=bool)
            if len(ids) and not hit.any():
                raise FileNotFoundError(
                    f"{self.name}: none of the {len(ids)} images named in {csv_path} is under {image_folder} "
                    f"(e.g. {stems[0]}); {_LAYOUT_HINT}"
                )
            keep = np.flatnonzero(hit)
            paths = [found[stems[i]] for i in keep]
        self.n_missing = len(ids) - len(keep)
        if self.n_missing:
            log.warning(
                "%s: %d of %d labelled images are not under %s and are left out",
                self.name,
                self.n_missing,
                len(ids),
                image_folder,
            )
        self.ids = [str(ids[i]) for i in keep]
        self.paths = list(paths)
        self.patients = [str(patients[i]) for i in keep]
        raw = raw[keep]
        self.raw_labels = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        self.labelled = torch.from_numpy(~np.isnan(raw).all(0)) if len(raw) else torch.zeros(14, dtype=bool)
        targets, mask = apply_policy(self.raw_labels, policy)
        self.labels, self.label_mask = targets, mask & self.labelled
        if boxes_px is not None:
            self.has_boxes = True
            self.boxes_px = torch.from_numpy(np.ascontiguousarray(boxes_px[keep], dtype=np.float32))
            frame = box_frame[keep] if box_frame is not None else np.full((len(keep), 2), np.nan)
            self.box_frame = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def boxes(self, index: int, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(14, 4) normalized xyxy boxes of image ``index`` (loaded at ``image_hw``), NaN rows for none."""
        if not self.has_boxes:
            return torch.full((len(CHEXPERT_LABELS), 4), float("nan"))
        w, h = self.box_frame[index].tolist()
        if np.isnan(w):
            if image_hw is None:
                raise ValueError(f"{self.name}: boxes are in each image's own pixel frame; pass image_hw")
            h, w = image_hw
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = self.boxes_px[index] / scale
        # a box checked only for order at read time (the image size was unknown) may lie outside the image
        out = (boxes[:, :2] < -BOX_TOLERANCE).any(1) | (boxes[:, 2:] > 1 + BOX_TOLERANCE).any(1)
        if bool(out.any()):
            warned = self.__dict__.setdefault("_warned_boxes", set())
            if index not in warned:  # once per image, not once per epoch
                warned.add(index)
                labels = [CHEXPERT_LABELS[j] for j in torch.nonzero(out).flatten().tolist()]
                bad = [(self.ids[index], n, f"outside the {w:g} x {h:g} image") for n in labels]
                warn_bad_boxes(self.csv_path, bad)
            boxes[out] = float("nan")
        return boxes.clamp(0.0, 1.0)  # NaN rows stay NaN

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image = load_xray(self.paths[index])
        boxes = self.boxes(index, tuple(image.shape[-2:])) if self.has_boxes else None
        if self.transform is not None:
            image = self.transform(image)
        item = (image, self.labels[index], self.label_mask[index])
        return (*item, boxes) if boxes is not None else item


def _box_table(
    image_ids: Sequence[str],
    rows: Iterable[tuple[str, str, float, float, float, float]],
    source: str | Path,
    frame: tuple[float, float] | None = None,
) -> np.ndarray:
    """(N, 14, 4) pixel xyxy per image and CheXpert label from (image id, label, x1, y1, x2, y2) rows.

    A label with several boxes on one image (several readers, or both lungs) keeps its largest box. Boxes
    that are not finite, inverted or outside the ``frame`` (width, height) image are left out with one
    warning naming ``source`` (:func:`mxa.data.validate.box_problem`); rows without a box (NaN, e.g. a
    "No finding" row) are no boxes, not bad ones.
    """
    where = {k: i for i, k in enumerate(image_ids)}
    out = np.full((len(image_ids), len(CHEXPERT_LABELS), 4), np.nan, np.float32)
    area = np.zeros((len(image_ids), len(CHEXPERT_LABELS)), np.float64)
    bad: list[tuple[str, str, str]] = []
    for image_id, label, x1, y1, x2, y2 in rows:
        i, j = where.get(image_id), _COL.get(label)
        if i is None or j is None or np.isnan([x1, y1, x2, y2]).all():
            continue
        why = box_problem((x1, y1, x2, y2), frame)
        if why:
            bad.append((str(image_id), label, f"{why} {[round(float(v), 1) for v in (x1, y1, x2, y2)]}"))
            continue
        if frame is not None:
            x1, x2 = min(max(x1, 0.0), frame[0]), min(max(x2, 0.0), frame[0])
            y1, y2 = min(max(y1, 0.0), frame[1]), min(max(y2, 0.0), frame[1])
        a = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        if a > area[i, j] or np.isnan(out[i, j, 0]):
            out[i, j], area[i, j] = (x1, y1, x2, y2), a
    warn_bad_boxes(source, bad)
    return out


def _chexpert_name(name: str) -> str | None:
    """A torchxrayvision/CSV finding name as a CheXpert observation, or None."""
    for target, sources in LABEL_SYNONYMS.items():
        if name.lower() in {s.lower() for s in sources}:
            return target
    return next((c for c in CHEXPERT_LABELS if c.lower() == name.lower()), None)


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


class NIHDataset(XRayDataset):
    """NIH ChestX-ray14: ``root`` holds the PNGs (``images/`` or ``images_001/images/`` ...).

    ``split``: ``all``, ``train`` (``train_val_list.txt``) or ``test`` (``test_list.txt``) when the root
    has the official lists. Boxes (``BBox_List_2017.csv``) are in the 1024 x 1024 frame of the released PNGs.
    """

    name = "nih"
    CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv")
    BOX_NAMES = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
    SPLIT_FILES: ClassVar[dict[str, str]] = {"train": "train_val_list.txt", "test": "test_list.txt"}

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        policy: str = "ones",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        root = Path(root)
        csv = _first_file(root, self.CSV_NAMES) or _shipped("Data_Entry_2017_v2020.csv.gz")
        bbox = _first_file(root, self.BOX_NAMES) or _shipped("BBox_List_2017.csv.gz")
        _checked(csv, ("Image Index", "Finding Labels", "Patient ID", "View Position"), "NIH label file")
        _checked(bbox, ("Image Index", "Finding Label"), "NIH box file")
        if not root.is_dir():
            raise FileNotFoundError(f"nih: dataset folder {root} not found; {_LAYOUT_HINT}")
        d = _xrv_quietly(
            _xrv().datasets.NIH_Dataset,
            imgpath=str(root),
            csvpath=str(csv),
            bbox_list_path=str(bbox),
            views=["PA", "AP"],
            unique_patients=False,
        )
        frame = d.csv
        sel = np.ones(len(frame), bool)
        if split != "all":
            listed = _first_file(root, [self.SPLIT_FILES[split]]) if split in self.SPLIT_FILES else None
            if listed is None:
                raise FileNotFoundError(
                    f"nih: split {split!r} needs {root / self.SPLIT_FILES.get(split, split)} (from the NIH "
                    "release)"
                )
            sel = frame["Image Index"].isin(_read_list(listed)).to_numpy()
        raw = _to_chexpert(d, {"No Finding": (frame["Finding Labels"] == "No Finding").to_numpy(np.float32)})
        ids = frame["Image Index"].astype(str).to_numpy()[sel]
        b = d.pathology_maskscsv
        rows = zip(
            b["Image Index"],
            b["Finding Label"].map(lambda n: _chexpert_name(str(n)) or ""),
            b["x"],
            b["y"],
            b["x"] + b["w"],
            b["y"] + b["h"],
        )
        boxes = _box_table(list(ids), rows, bbox, (1024.0, 1024.0))
        self._finish(
            root,
            csv,
            ids,
            [Path(i).stem for i in ids],
            frame["Patient ID"].astype(str).to_numpy()[sel],
            raw[sel],
            policy,
            transform,
            root,
            boxes,
            np.full((len(ids), 2), 1024.0),
        )

    @classmethod
    def has_split(cls, root: str | Path, split: str) -> bool:
        return split in cls.SPLIT_FILES and (Path(root) / cls.SPLIT_FILES[split]).is_file()


class PadChestDataset(XRayDataset):
    """PadChest: ``root`` holds the PNGs (flat, or in the release's numbered folders ``0/`` ... ``54/``)."""

    name = "padchest"
    CSV_NAMES = (
        "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
        "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        policy: str = "ones",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        root = Path(root)
        if split != "all":
            raise FileNotFoundError(f"padchest has no official {split!r} split; use a patient-level split")
        if not root.is_dir():
            raise FileNotFoundError(f"padchest: dataset folder {root} not found; {_LAYOUT_HINT}")
        csv = _first_file(root, self.CSV_NAMES) or _shipped(self.CSV_NAMES[1])
        _checked(csv, ("ImageID", "Labels", "PatientID", "Projection"), "PadChest label file")
        d = _xrv_quietly(
            _xrv().datasets.PC_Dataset,
            imgpath=str(root),
            csvpath=str(csv),
            views=["PA", "AP", "AP Supine"],
            unique_patients=False,
        )
        frame = d.csv
        normal = frame["Labels"].astype(str).str.contains("'normal'", regex=False).to_numpy(np.float32)
        raw = _to_chexpert(d, {"No Finding": normal})
        ids = frame["ImageID"].astype(str).to_numpy()
        self._finish(
            root,
            csv,
            ids,
            [Path(i).stem for i in ids],
            frame["PatientID"].astype(str).to_numpy(),
            raw,
            policy,
            transform,
            root,
        )

    @classmethod
    def has_split(cls, root: str | Path, split: str) -> bool:
        return False


class VinDrDataset(XRayDataset):
    """VinDr-CXR: ``root/train/*.dicom`` with ``root/train.csv`` (Kaggle) or
    ``root/annotations/annotations_{train,test}.csv`` (PhysioNet). Boxes are in the DICOM's pixel frame.

    There are no patient ids in VinDr: every image is its own patient.
    """

    name = "vindr"

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        policy: str = "ones",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        root = Path(root)
        part = "test" if split == "test" else "train"
        csv = self._csv(root, part)
        if csv is None:
            if part == "test":
                raise FileNotFoundError(
                    f"vindr: split 'test' needs {root / 'annotations' / 'annotations_test.csv'}"
                )
            csv = _shipped("vinbigdata-train.csv.gz")
        folder = root / part
        if not folder.is_dir():
            raise FileNotFoundError(
                f"vindr: image folder {folder} not found (expected {part}/<image_id>.dicom under {root}); "
                f"{_LAYOUT_HINT}"
            )
        _checked(csv, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max"), "VinDr label file")
        d = _xrv_quietly(_xrv().datasets.VinDr_Dataset, imgpath=str(folder), csvpath=str(csv))
        frame = d.csv
        raw = _to_chexpert(d, {"No Finding": (frame["class_name"] == "No finding").to_numpy(np.float32)})
        ids = frame["image_id"].astype(str).to_numpy()
        r = d.rawcsv
        rows = zip(
            r["image_id"].astype(str),
            r["class_name"].map(lambda n: _chexpert_name(str(n)) or ""),
            r["x_min"],
            r["y_min"],
            r["x_max"],
            r["y_max"],
        )
        boxes = _box_table(list(ids), rows, csv)
        self._finish(root, csv, ids, list(ids), ids, raw, policy, transform, folder, boxes)

    @staticmethod
    def _csv(root: Path, part: str) -> Path | None:
        names = [f"annotations/annotations_{part}.csv"] + (["train.csv"] if part == "train" else [])
        return _first_file(root, names)

    @classmethod
    def has_split(cls, root: str | Path, split: str) -> bool:
        return split == "test" and cls._csv(Path(root), "test") is not None


class RSNADataset(XRayDataset):
    """RSNA Pneumonia: ``root/stage_2_train_images/<patientId>.dcm`` (or .jpg/.png).

    ``Target`` labels both Pneumonia and Lung Opacity (as torchxrayvision does); with
    ``stage_2_detailed_class_info.csv`` in the root, class ``Normal`` labels No Finding. Boxes are in the
    1024 x 1024 frame of the challenge images. ``patientId`` names one image, so it is the patient id.
    """

    name = "rsna"
    CSV_NAMES = ("stage_2_train_labels.csv", "stage_2_train_labels.csv.zip")
    IMAGE_FOLDERS = ("stage_2_train_images", "stage_2_train_images_jpg", "images")

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        policy: str = "ones",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        root = Path(root)
        if split != "all":
            raise FileNotFoundError(f"rsna has no labelled {split!r} split; use a patient-level split")
        csv = _first_file(root, self.CSV_NAMES) or _shipped("kaggle_stage_2_train_labels.csv.zip")
        _checked(csv, ("patientId", "x", "y", "width", "height", "Target"), "RSNA label file")
        folder = next(
            (root / f for f in self.IMAGE_FOLDERS if (root / f).is_dir()), root / self.IMAGE_FOLDERS[0]
        )
        if not folder.is_dir():
            raise FileNotFoundError(
                f"rsna: image folder {folder} not found (expected stage_2_train_images/<patientId>.dcm under "
                f"{root}); {_LAYOUT_HINT}"
            )
        d = _xrv_quietly(
            _xrv().datasets.RSNA_Pneumonia_Dataset, imgpath=str(folder), csvpath=str(csv), views=["*"]
        )
        frame = d.csv
        extra = {}
        info = _first_file(root, ["stage_2_detailed_class_info.csv"])
        if info is not None:
            pd = require("pandas", "Reading RSNA labels")
            cls = pd.read_csv(info).groupby("patientId")["class"].first()
            extra["No Finding"] = (frame["patientId"].map(cls) == "Normal").to_numpy(np.float32)
        raw = _to_chexpert(d, extra)
        ids = frame["patientId"].astype(str).to_numpy()
        r = d.raw_csv[d.raw_csv["Target"] == 1]
        rows = [
            (pid, label, x, y, x + w, y + h)
            for pid, x, y, w, h in zip(r["patientId"], r["x"], r["y"], r["width"], r["height"])
            for label in ("Pneumonia", "Lung Opacity")
        ]
        boxes = _box_table(list(ids), rows, csv, (1024.0, 1024.0))
        self._finish(
            root,
            csv,
            ids,
            list(ids),
            ids,
            raw,
            policy,
            transform,
            folder,
            boxes,
            np.full((len(ids), 2), 1024.0),
        )

    @classmethod
    def has_split(cls, root: str | Path, split: str) -> bool:
        return False


class MIMICDataset(XRayDataset):
    """MIMIC-CXR-JPG: ``root/files/pXX/p<subject>/s<study>/<dicom_id>.jpg`` and the release's CSVs
    ``mimic-cxr-2.0.0-{chexpert,metadata,split}.csv(.gz)``.

    The labels are CheXpert's (same labeler, 1/0/-1/blank), so the uncertainty policy applies as to CheXpert.
    ``split``: ``all``, ``train``, ``validate`` or ``test`` (the release's split file). Frontal views only.
    torchxrayvision's MIMIC reader is not used: it turns uncertain labels into NaN and drops No Finding.
    """

    name = "mimic"
    SPLITS = ("train", "validate", "test")

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        policy: str = "ones",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        pd = require("pandas", "Reading MIMIC-CXR labels")
        root = Path(root)
        files = {k: self._file(root, k) for k in ("chexpert", "metadata", "split")}
        for k in ("chexpert", "metadata"):
            if files[k] is None:
                raise FileNotFoundError(
                    f"mimic: mimic-cxr-2.0.0-{k}.csv.gz not found in {root}; pass the MIMIC-CXR-JPG folder "
                    "(https://physionet.org/content/mimic-cxr-jpg/2.0.0/) that holds it and files/"
                )
        labels = read_table(files["chexpert"], ("subject_id", "study_id"), "MIMIC-CXR label file")
        meta = read_table(
            files["metadata"],
            ("dicom_id", "subject_id", "study_id", "ViewPosition"),
            "MIMIC-CXR metadata file",
            dtype={"dicom_id": str},
        )
        missing = [c for c in ("subject_id", "study_id", *CHEXPERT_LABELS) if c not in labels.columns]
        if missing:
            raise ValueError(f"{files['chexpert']}: missing column(s) {missing}")
        df = meta[meta["ViewPosition"].isin(["PA", "AP"])].merge(labels, on=["subject_id", "study_id"])
        if split != "all":
            if files["split"] is None or split not in self.SPLITS:
                raise FileNotFoundError(
                    f"mimic: split {split!r} needs mimic-cxr-2.0.0-split.csv.gz in {root}"
                )
            sp = pd.read_csv(files["split"], dtype={"dicom_id": str})
            df = df[df["dicom_id"].isin(sp.loc[sp["split"] == split, "dicom_id"])]
        df = df.sort_values(["subject_id", "study_id", "dicom_id"]).reset_index(drop=True)
        raw = df[list(CHEXPERT_LABELS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        bad = ~np.isnan(raw) & ~np.isin(raw, [1.0, 0.0, -1.0])
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise ValueError(
                f"{files['chexpert']}: {CHEXPERT_LABELS[j]!r} = {raw[i, j]} is not 1, 0, -1 or blank"
            )
        subj, study = df["subject_id"].astype(str), df["study_id"].astype(str)
        paths = [
            root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg"
            for s, t, d in zip(subj, study, df["dicom_id"])
        ]
        if not (root / "files").is_dir():
            raise FileNotFoundError(f"mimic: image folder {root / 'files'} not found; {_LAYOUT_HINT}")
        present = [i for i, p in enumerate(paths) if p.is_file()]
        if paths and not present:
            raise FileNotFoundError(
                f"mimic: none of the {len(paths)} images is under {root / 'files'} (e.g. {paths[0]})"
            )
        ids = [f"p{s}/s{t}/{d}" for s, t, d in zip(subj, study, df["dicom_id"])]
        sel = np.asarray(present, dtype=np.int64)
        self._finish(
            root,
            files["chexpert"],
            [ids[i] for i in sel],
            [],
            subj.to_numpy()[sel],
            raw[sel],
            policy,
            transform,
            root / "files",
            paths=[paths[i] for i in sel],
        )
        self.n_missing = len(paths) - len(present)
        self.labelled = torch.ones(len(CHEXPERT_LABELS), dtype=torch.bool)  # blanks are negatives
        self.labels, self.label_mask = apply_policy(self.raw_labels, policy)
        if self.n_missing:
            log.warning(
                "mimic: %d of %d labelled images are not under %s", self.n_missing, len(paths), root / "files"
            )

    @staticmethod
    def _file(root: Path, kind: str) -> Path | None:
        return _first_file(root, [f"mimic-cxr-2.0.0-{kind}.csv", f"mimic-cxr-2.0.0-{kind}.csv.gz"])

    @classmethod
    def has_split(cls, root: str | Path, split: str) -> bool:
        return split in cls.SPLITS and cls._file(Path(root), "split") is not None


#: ``--data`` scheme -> dataset class.
DATASETS: dict[str, type[XRayDataset]] = {
    "nih": NIHDataset,
    "mimic": MIMICDataset,
    "padchest": PadChestDataset,
    "vindr": VinDrDataset,
    "rsna": RSNADataset,
}
