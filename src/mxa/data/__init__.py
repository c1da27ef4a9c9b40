"""Data: CheXpert labels and dataset, the built-in phantom chest X-rays, transforms, image loading."""

from .chexpert import CSV_COLUMNS, CheXpertDataset, patient_id, patient_split, read_chexpert_csv
from .io import load_xray
from .labels import CHEXPERT_LABELS, COMPETITION_LABELS, POLICIES, apply_policy
from .phantom import PhantomCXR
from .transforms import GRAY_MEAN, GRAY_STD, build_transforms, resolve_data_cfg
from .writer import write_phantom_chexpert

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "CSV_COLUMNS",
    "GRAY_MEAN",
    "GRAY_STD",
    "POLICIES",
    "CheXpertDataset",
    "PhantomCXR",
    "apply_policy",
    "build_transforms",
    "load_xray",
    "patient_id",
    "patient_split",
    "read_chexpert_csv",
    "resolve_data_cfg",
    "write_phantom_chexpert",
]
