"""Data loading per format, images per second in one worker: NIH (8-bit PNG), PadChest (16-bit PNG),
MIMIC (JPEG), VinDr and RSNA (DICOM), read and transformed to 224 as in evaluation, boxes included.

Images are generated at a typical pre-resized size (512 px) in each release's layout, with labels from the
label files torchxrayvision ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm

import mxa  # noqa: F401
from mxa.data import build_transforms

pytest.importorskip("torchxrayvision")
pytest.importorskip("pydicom")
pd = pytest.importorskip("pandas")

N, PX = 32, 512
SHIPPED = Path(__import__("torchxrayvision").__file__).parent / "data"


@pytest.fixture(scope="module")
def model():
    return timm.create_model("efficientvit_ml_m5", mxa=False)


def _nih(root: Path, rng: np.random.Generator):
    from PIL import Image

    from mxa.data.xray_sets import NIHDataset

    df = pd.read_csv(SHIPPED / "Data_Entry_2017_v2020.csv.gz", index_col=False, nrows=N)
    (root / "images").mkdir()
    for name in df["Image Index"]:
        Image.fromarray(rng.integers(0, 255, (PX, PX), dtype=np.uint8), mode="L").save(root / "images" / name)
    return NIHDataset


def _padchest(root: Path, rng: np.random.Generator):
    from PIL import Image

    from mxa.data.xray_sets import PadChestDataset

    df = pd.read_csv(SHIPPED / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", nrows=4 * N)
    for image_id, folder in zip(df["ImageID"], df["ImageDir"]):
        (root / str(folder)).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 65535, (PX, PX), dtype=np.uint16)).save(root / str(folder) / image_id)
    return PadChestDataset


def _dicom(path: Path, rng: np.random.Generator) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows = ds.Columns = PX
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.PixelData = rng.integers(0, 4096, (PX, PX), dtype=np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _rsna(root: Path, rng: np.random.Generator):
    from mxa.data.xray_sets import RSNADataset

    df = pd.read_csv(SHIPPED / "kaggle_stage_2_train_labels.csv.zip")
    (root / "stage_2_train_images").mkdir()
    for pid in df["patientId"].drop_duplicates()[:N]:
        _dicom(root / "stage_2_train_images" / f"{pid}.dcm", rng)
    return RSNADataset


def _vindr(root: Path, rng: np.random.Generator):
    from mxa.data.xray_sets import VinDrDataset

    df = pd.read_csv(SHIPPED / "vinbigdata-train.csv.gz")
    (root / "train").mkdir()
    for image_id in df["image_id"].drop_duplicates()[:N]:
        _dicom(root / "train" / f"{image_id}.dicom", rng)
    return VinDrDataset


def _mimic(root: Path, rng: np.random.Generator):
    from PIL import Image

    from mxa.data.labels import CHEXPERT_LABELS
    from mxa.data.xray_sets import MIMICDataset

    cx = pd.read_csv(SHIPPED / "chexpert_train.csv.gz", nrows=N)
    subj, study = 10_000_000 + np.arange(N), 50_000_000 + np.arange(N)
    dicom = [f"{i:08x}" for i in range(N)]
    meta = pd.DataFrame({"dicom_id": dicom, "subject_id": subj, "study_id": study, "ViewPosition": "PA"})
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    cx[list(CHEXPERT_LABELS)].assign(subject_id=subj, study_id=study).to_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False
    )
    for s, t, d in zip(subj.astype(str), study, dicom):
        out = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (PX, PX), dtype=np.uint8), mode="L").save(out, quality=90)
    return MIMICDataset


@pytest.mark.parametrize(
    "make",
    [_nih, _padchest, _mimic, _vindr, _rsna],
    ids=["nih-png8", "padchest-png16", "mimic-jpeg", "vindr-dicom", "rsna-dicom"],
)
@pytest.mark.benchmark(group="data: images per worker, by format")
def test_dataset_format(benchmark, model, tmp_path_factory, make) -> None:
    root = tmp_path_factory.mktemp(make.__name__.strip("_"))
    cls = make(root, np.random.default_rng(0))
    ds = cls(root, transform=build_transforms(model, train=False))
    n = min(N, len(ds))
    benchmark.pedantic(lambda: [ds[i] for i in range(n)], rounds=3, iterations=1)
    benchmark.extra_info["images_per_call"] = n
