"""Data: CheXpert labels and dataset, the built-in phantom chest X-rays, transforms, image loading.

Names are imported on first use (PEP 562), so ``import mxa`` (which needs only the label names and the
gray mean/std) does not load the CSV reader, the phantom generator or the writer.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CSV_COLUMNS": "chexpert",
    "CheXpertDataset": "chexpert",
    "patient_id": "chexpert",
    "patient_split": "chexpert",
    "read_chexpert_csv": "chexpert",
    "IMAGE_SUFFIXES": "io",
    "collect_images": "io",
    "load_xray": "io",
    "output_names": "io",
    "CHEXPERT_LABELS": "labels",
    "COMPETITION_LABELS": "labels",
    "POLICIES": "labels",
    "apply_policy": "labels",
    "PhantomCXR": "phantom",
    "InputSanityWarning": "sanity",
    "input_problems": "sanity",
    "GRAY_MEAN": "transforms",
    "GRAY_STD": "transforms",
    "build_transforms": "transforms",
    "resolve_data_cfg": "transforms",
    "write_phantom_chexpert": "writer",
    "DATASETS": "xray_sets",
    "MIMICDataset": "xray_sets",
    "NIHDataset": "xray_sets",
    "PadChestDataset": "xray_sets",
    "RSNADataset": "xray_sets",
    "VinDrDataset": "xray_sets",
    "XRayDataset": "xray_sets",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mxa.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
