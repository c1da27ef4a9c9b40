"""NIH, MIMIC, PadChest, VinDr and RSNA on tiny folders in each release's layout, built from rows of the
real label files torchxrayvision ships (MIMIC's, which it does not ship, from rows of CheXpert's train.csv:
the same labeler and columns), and training on several sets at once."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mxa.data.labels import CHEXPERT_LABELS

xrv = pytest.importorskip("torchxrayvision")
pd = pytest.importorskip("pandas")
pytest.importorskip("pydicom")

from mxa.data.xray_sets import MIMICDataset, NIHDataset, PadChestDataset, RSNADataset, VinDrDataset  # noqa: E402

SHIPPED = Path(xrv.__file__).parent / "data"
C = {n: j for j, n in enumerate(CHEXPERT_LABELS)}
SIZE = 40  # pixels of the generated images


def _png(path: Path, rng: np.random.Generator, bits: int = 8, hw: tuple[int, int] = (SIZE, SIZE)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(rng.integers(0, 65535, hw, dtype=np.uint16)).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, hw, dtype=np.uint8), mode="L").save(path)


def _dicom(path: Path, rng: np.random.Generator, hw: tuple[int, int], mono1: bool = False) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = hw
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.PixelData = rng.integers(0, 4096, hw, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


# --- tiny folders in each release's layout ------------------------------------------------------------


@pytest.fixture(scope="module")
def nih(tmp_path_factory) -> Path:
    """120 real Data_Entry rows (every boxed image among the first 40 boxes, their patients' other images,
    then more patients), PNGs in images_001/images and images_002/images, the official split lists."""
    root = tmp_path_factory.mktemp("nih")
    rng = np.random.default_rng(0)
    entry = _lines(SHIPPED / "Data_Entry_2017_v2020.csv.gz")
    boxes = _lines(SHIPPED / "BBox_List_2017.csv.gz")
    boxed = {line.split(",")[0] for line in boxes[1:41]}
    patient = {line.split(",")[0]: line.split(",")[3] for line in entry[1:]}
    box_patients = {patient[b] for b in boxed}
    rows = [line for line in entry[1:] if line.split(",")[0] in boxed]
    same = [line for line in entry[1:] if line.split(",")[3] in box_patients and line not in rows]
    rows += same[:15]
    rows += [line for line in entry[1:400] if line not in rows][: 120 - len(rows)]
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([entry[0], *rows]) + "\n")
    names = [r.split(",")[0] for r in rows]
    (root / "BBox_List_2017.csv").write_text(
        "\n".join([boxes[0], *[b for b in boxes[1:] if b.split(",")[0] in names]]) + "\n"
    )
    test_patients = box_patients
    (root / "test_list.txt").write_text("\n".join(n for n in names if patient[n] in test_patients))
    (root / "train_val_list.txt").write_text("\n".join(n for n in names if patient[n] not in test_patients))
    for i, n in enumerate(names):
        _png(root / f"images_00{1 + i % 2}" / "images" / n, rng)
    return root


@pytest.fixture(scope="module")
def vindr(tmp_path_factory) -> Path:
    """40 real images' rows of the Kaggle train.csv (all three readers), DICOMs (12-bit, some MONOCHROME1)
    at 1/32 of a typical size, box coordinates scaled with them (as a pre-resized copy's CSV is)."""
    root = tmp_path_factory.mktemp("vindr")
    rng = np.random.default_rng(1)
    df = pd.read_csv(SHIPPED / "vinbigdata-train.csv.gz")
    has_box = df.dropna(subset=["x_min"])["image_id"].drop_duplicates()[:30]
    ids = list(has_box) + list(df["image_id"].drop_duplicates()[:200].loc[lambda s: ~s.isin(has_box)][:20])
    sub = df[df["image_id"].isin(ids)].copy()
    for c in ("x_min", "y_min", "x_max", "y_max"):
        sub[c] = sub[c] / 32
    sub.to_csv(root / "train.csv", index=False)
    for k, image_id in enumerate(ids):
        _dicom(root / "train" / f"{image_id}.dicom", rng, (96, 80), mono1=k % 3 == 0)
    # PhysioNet's test split: annotations/annotations_test.csv (its column order) and test/
    (root / "annotations").mkdir()
    test_ids = ids[:8]
    cols = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    sub[sub["image_id"].isin(test_ids)][cols].to_csv(
        root / "annotations" / "annotations_test.csv", index=False
    )
    for image_id in test_ids:
        _dicom(root / "test" / f"{image_id}.dicom", rng, (96, 80))
    return root


@pytest.fixture(scope="module")
def rsna(tmp_path_factory) -> Path:
    """60 real patients' rows of stage_2_train_labels.csv (45 with opacity boxes), DICOMs."""
    root = tmp_path_factory.mktemp("rsna")
    rng = np.random.default_rng(2)
    with zipfile.ZipFile(SHIPPED / "kaggle_stage_2_train_labels.csv.zip") as z:
        df = pd.read_csv(io.BytesIO(z.read(z.namelist()[0])))
    pos = df[df["Target"] == 1]["patientId"].drop_duplicates()[:45]
    neg = df[df["Target"] == 0]["patientId"].drop_duplicates()[:15]
    df[df["patientId"].isin(set(pos) | set(neg))].to_csv(root / "stage_2_train_labels.csv", index=False)
    for pid in list(pos) + list(neg):
        _dicom(root / "stage_2_train_images" / f"{pid}.dcm", rng, (SIZE, SIZE))
    return root


@pytest.fixture(scope="module")
def padchest(tmp_path_factory) -> Path:
    """200 real rows (laterals included), 16-bit PNGs in the release's numbered folders."""
    root = tmp_path_factory.mktemp("padchest")
    rng = np.random.default_rng(3)
    df = pd.read_csv(
        SHIPPED / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", nrows=200, index_col=0
    )
    df.to_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv")
    for image_id, folder in zip(df["ImageID"], df["ImageDir"]):
        _png(root / str(folder) / image_id, rng, bits=16)
    return root


MIMIC_ORDER = sorted(CHEXPERT_LABELS)


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> Path:
    """MIMIC-CXR-JPG's CSVs with the label values of 200 real CheXpert rows, JPEGs under files/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("mimic")
    rng = np.random.default_rng(4)
    cx = pd.read_csv(SHIPPED / "chexpert_train.csv.gz", nrows=200)
    patient = cx["Path"].str.extract(r"patient(\d+)")[0].astype(int) + 10_000_000
    study = cx["Path"].str.extract(r"study(\d+)")[0].astype(int) + 50_000_000 + patient * 10
    dicom = [f"{i:08x}-{j:08x}" for i, j in zip(range(200), rng.integers(0, 2**31, 200))]
    view = np.where(cx["Frontal/Lateral"] == "Frontal", cx["AP/PA"].fillna("AP"), "LATERAL")
    meta = pd.DataFrame({"dicom_id": dicom, "subject_id": patient, "study_id": study, "ViewPosition": view})
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    lab = cx[list(CHEXPERT_LABELS)].assign(subject_id=patient, study_id=study)
    lab = lab.drop_duplicates(["subject_id", "study_id"])[["subject_id", "study_id", *MIMIC_ORDER]]
    lab.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    split = np.where(patient % 10 == 0, "test", np.where(patient % 10 == 1, "validate", "train"))
    pd.DataFrame({"dicom_id": dicom, "study_id": study, "subject_id": patient, "split": split}).to_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz", index=False
    )
    for d, s, t in zip(dicom, patient.astype(str), study.astype(str)):
        out = root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8), mode="L").save(out)
    return root


# --- label mapping, checked against the real CSV rows ---------------------------------------------------


def _check(ds, expected: dict[str, np.ndarray]) -> None:
    """Every mapped observation equals the oracle; every other one is masked on every row."""
    raw = ds.raw_labels.numpy()
    for name, j in C.items():
        if name in expected:
            np.testing.assert_array_equal(raw[:, j], expected[name], err_msg=name)
            assert ds.label_mask[:, j].all(), name
        else:
            assert not ds.label_mask[:, j].any(), f"{name} should be masked"


def test_nih_labels_and_boxes(nih: Path) -> None:
    ds = NIHDataset(nih, "all")
    frame = pd.read_csv(nih / "Data_Entry_2017_v2020.csv", index_col=False, usecols=[0, 1, 3]).set_index(
        "Image Index"
    )
    assert len(ds) == len(frame) and sorted(ds.ids) == sorted(frame.index)
    f = frame.loc[ds.ids, "Finding Labels"].str.split("|")
    has = lambda *xs: np.array([any(x in v for x in xs) for v in f], dtype=np.float32)  # noqa: E731
    expected = {n: has(n) for n in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pneumonia")}
    expected |= {"Pneumothorax": has("Pneumothorax"), "Pleural Effusion": has("Effusion")}
    expected |= {"Lung Lesion": has("Nodule", "Mass"), "No Finding": has("No Finding")}
    _check(ds, expected)
    assert ds.patients == [str(p) for p in frame.loc[ds.ids, "Patient ID"]]
    # boxes: the CSV's x, y, w, h in the 1024 x 1024 frame of the released PNGs, normalized
    bb = pd.read_csv(
        nih / "BBox_List_2017.csv", names=["id", "label", "x", "y", "w", "h"], skiprows=1, usecols=range(6)
    )
    name_of = {"Effusion": "Pleural Effusion", "Nodule": "Lung Lesion", "Mass": "Lung Lesion"}
    checked = 0
    for (image_id, label), g in bb.groupby(["id", "label"]):
        target = name_of.get(label, label)
        i = ds.ids.index(image_id)
        got = ds[i][3]
        if target not in C:  # Infiltrate: no CheXpert observation
            continue
        if len(g) == 1 and not (
            target == "Lung Lesion" and len(bb[(bb.id == image_id) & bb.label.isin(["Nodule", "Mass"])]) > 1
        ):
            r = g.iloc[0]
            want = torch.tensor([r.x, r.y, r.x + r.w, r.y + r.h]) / 1024
            torch.testing.assert_close(got[C[target]], want.float().clamp(0, 1))
            checked += 1
    assert checked >= 20
    unboxed = next(i for i, n in enumerate(ds.ids) if n not in set(bb.id))
    assert torch.isnan(ds[unboxed][3]).all()


def test_vindr_labels_and_boxes(vindr: Path) -> None:
    ds = VinDrDataset(vindr)
    df = pd.read_csv(vindr / "train.csv")
    classes = df.groupby("image_id")["class_name"].apply(set).loc[ds.ids]
    has = lambda *xs: np.array([bool(set(xs) & v) for v in classes], dtype=np.float32)  # noqa: E731
    expected = {
        n: has(n) for n in ("Atelectasis", "Cardiomegaly", "Consolidation", "Lung Opacity", "Pneumothorax")
    }
    expected |= {"Pleural Effusion": has("Pleural effusion"), "Lung Lesion": has("Nodule/Mass")}
    expected["No Finding"] = np.array([v == {"No finding"} for v in classes], dtype=np.float32)
    _check(ds, expected)
    # boxes: per label, the largest of the readers' boxes, over the DICOM's own width and height
    for i, image_id in enumerate(ds.ids[:15]):
        image, _, _, boxes = ds[i]
        g = df[(df.image_id == image_id) & (df.class_name == "Cardiomegaly")].dropna(subset=["x_min"])
        if len(g):
            r = g.loc[((g.x_max - g.x_min) * (g.y_max - g.y_min)).idxmax()]
            want = torch.tensor([r.x_min / 80, r.y_min / 96, r.x_max / 80, r.y_max / 96]).float().clamp(0, 1)
            torch.testing.assert_close(boxes[C["Cardiomegaly"]], want)
        else:
            assert torch.isnan(boxes[C["Cardiomegaly"]]).all()
        assert image.shape == (1, 96, 80) and image.min() >= 0 and image.max() <= 1


def test_dicom_monochrome1_is_inverted(vindr: Path) -> None:
    import pydicom

    from mxa.data.io import load_xray

    path = sorted((vindr / "train").iterdir())[0]
    d = pydicom.dcmread(path)
    img = load_xray(path)[0].numpy()
    raw = d.pixel_array / 4095.0
    want = 1 - raw if d.PhotometricInterpretation == "MONOCHROME1" else raw
    np.testing.assert_allclose(img, want, atol=1e-6)


def test_rsna_labels_and_boxes(rsna: Path) -> None:
    ds = RSNADataset(rsna)
    df = pd.read_csv(rsna / "stage_2_train_labels.csv")
    target = df.groupby("patientId")["Target"].first().loc[ds.ids].to_numpy(np.float32)
    _check(ds, {"Pneumonia": target, "Lung Opacity": target})
    for i, pid in enumerate(ds.ids):
        g = df[(df.patientId == pid) & (df.Target == 1)]
        boxes = ds.boxes(i, (SIZE, SIZE))
        if len(g):
            r = g.loc[(g.width * g.height).idxmax()]
            want = torch.tensor([r.x, r.y, r.x + r.width, r.y + r.height]).float() / 1024
            torch.testing.assert_close(boxes[C["Pneumonia"]], want)
            torch.testing.assert_close(boxes[C["Lung Opacity"]], want)
        else:
            assert torch.isnan(boxes).all()


def test_padchest_labels(padchest: Path) -> None:
    ds = PadChestDataset(padchest)
    df = pd.read_csv(padchest / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").set_index("ImageID")
    assert set(df.loc[ds.ids, "Projection"]) <= {"PA", "AP", "AP_horizontal"}  # laterals dropped
    assert (df["Projection"] == "L").any()
    labels = df.loc[ds.ids, "Labels"].astype(str)
    has = lambda *xs: np.array([any(x in v for x in xs) for v in labels], dtype=np.float32)  # noqa: E731
    assert np.array_equal(ds.raw_labels[:, C["Cardiomegaly"]].numpy(), has("cardiomegaly"))
    assert np.array_equal(ds.raw_labels[:, C["Pleural Effusion"]].numpy(), has("effusion"))
    assert np.array_equal(ds.raw_labels[:, C["Lung Lesion"]].numpy(), has("nodule", "mass"))
    assert np.array_equal(ds.raw_labels[:, C["No Finding"]].numpy(), has("'normal'"))
    for name in ("Lung Opacity", "Enlarged Cardiomediastinum", "Pleural Other"):
        assert not ds.label_mask[:, C[name]].any()
    image = ds[0][0]
    assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32


def test_mimic_labels_policy_and_splits(mimic: Path) -> None:
    lab = pd.read_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz").set_index(["subject_id", "study_id"])
    for policy in ("ones", "ignore"):
        ds = MIMICDataset(mimic, "all", policy=policy)
        keys = [(int(i.split("/")[0][1:]), int(i.split("/")[1][1:])) for i in ds.ids]
        raw = lab.loc[keys, list(CHEXPERT_LABELS)].to_numpy(np.float32)
        np.testing.assert_array_equal(ds.raw_labels.numpy(), raw)
        if policy == "ones":
            assert torch.equal(ds.labels, torch.from_numpy(np.nan_to_num(np.abs(raw))))
            assert ds.label_mask.all()  # blanks are negatives, as in CheXpert
        else:
            assert torch.equal(ds.label_mask, torch.from_numpy(raw != -1))
    meta = pd.read_csv(mimic / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert len(ds) == int(meta["ViewPosition"].isin(["PA", "AP"]).sum())
    parts = {s: set(MIMICDataset(mimic, s).patients) for s in ("train", "validate", "test")}
    assert parts["train"] and parts["test"] and not (parts["train"] & parts["test"])


# --- errors, splits, several sets -----------------------------------------------------------------------


def test_missing_images_name_the_folder(tmp_path: Path, nih: Path, rsna: Path) -> None:
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text((nih / "Data_Entry_2017_v2020.csv").read_text())
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        NIHDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="stage_2_train_images"):
        RSNADataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"vindr: image folder .*train"):
        VinDrDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-chexpert"):
        MIMICDataset(tmp_path)


@pytest.fixture(scope="module")
def model():
    import timm

    import mxa  # noqa: F401

    return timm.create_model("efficientvit_ml_m0", img_size=64, mxa=True)


def test_patient_splits_and_multi_set_loader(model, nih, padchest, rsna) -> None:
    from torch.utils.data import DataLoader

    from mxa.data.combine import ResumableSampler, build_datasets

    for spec in (f"nih:{nih}", f"padchest:{padchest}"):
        train, val = build_datasets(spec, model, val_fraction=0.3, augment=False)
        pat = lambda d: {d.base.dataset.patients[i] for i in d.base.indices}  # noqa: E731
        assert pat(train) and pat(val) and not (pat(train) & pat(val))
    train, val = build_datasets(f"nih:{nih}+padchest:{padchest}+rsna:{rsna}*3", model, augment=False)
    assert len(set(train.ids)) == len(train.ids) and train.ids[0].startswith("nih:")
    assert train.source_names == ["nih", "padchest", "rsna"] and train.source_weights == [1.0, 1.0, 3.0]
    batch = next(iter(DataLoader(val, batch_size=len(val))))
    index, images, targets, mask, boxes = batch
    assert images.shape[1:] == (1, 64, 64) and boxes.shape == (len(val), 14, 4)
    src = torch.as_tensor(val.source_of)[index]
    assert torch.isnan(boxes[src == 1]).all()  # PadChest has no boxes
    assert not mask[src == 2][:, C["Cardiomegaly"]].any()  # RSNA does not label it: masked
    # the weighted order: RSNA drawn 3x as often per image, same epoch length, ranks disjoint
    counts = torch.bincount(
        torch.as_tensor(train.source_of)[ResumableSampler(train, 0)._order()], minlength=3
    )
    sizes = torch.bincount(torch.as_tensor(train.source_of), minlength=3)
    assert counts.sum() == len(train)
    share = sizes * torch.tensor([1.0, 1.0, 3.0])
    assert (counts - share / share.sum() * len(train)).abs().max() <= 1
    full = ResumableSampler(train, 0)._order()
    r0, r1 = ResumableSampler(train, 0, 0, 2)._order(), ResumableSampler(train, 0, 1, 2)._order()
    n = len(train) // 2  # each rank its own positions of one shared order (DistributedSampler's drop_last)
    assert r0 == full[0 : 2 * n : 2] and r1 == full[1 : 2 * n : 2] and len(r0) == len(r1) == n


def test_train_and_eval_on_every_scheme(tmp_path, nih, vindr, rsna, padchest, mimic, capsys) -> None:
    """One tiny run on all five schemes and a CheXpert-layout folder at once, then `mxa eval`."""
    import json

    from mxa.cli import main
    from mxa.data import write_phantom_chexpert

    cx = write_phantom_chexpert(tmp_path / "cx", n_train=16, n_valid=4, image_size=48)
    data = f"chexpert:{cx}+nih:{nih}+mimic:{mimic}+padchest:{padchest}+vindr:{vindr}*2+rsna:{rsna}"
    out = tmp_path / "run"
    flags = "--model efficientvit_ml_m0 --img-size 64 --epochs 1 --batch-size 16 --max-steps-per-epoch 2"
    rc = main(["train", "--data", data, *flags.split(), "--ema-decay", "0", "--warmup-epochs", "0",
               "--no-progress", "--output", str(out), "--workers", "0"])  # fmt: skip
    assert rc == 0
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(rec["val"]["per_dataset"]) == {"chexpert", "nih", "mimic", "padchest", "vindr", "rsna"}
    capsys.readouterr()
    js = tmp_path / "eval.json"
    spec = f"nih:{nih}+vindr:{vindr}+rsna:{rsna}+chexpert:{cx}"
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--data", spec, "--bootstrap", "0",
                 "--no-progress", "--json", str(js), "--roc", str(tmp_path / "roc.png")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    m = json.loads(js.read_text())
    loc_blocks = m["roi_localization"]
    assert loc_blocks
    for name in ("nih", "vindr", "rsna", "chexpert"):
        assert f"set {name}" in text
        assert set(m["per_dataset"][name]["roi_localization"]) == set(loc_blocks), name  # every MXA block
    assert "masked" in text and "MXA box set" in text
    assert m["datasets"]["rsna"]["labels"]["Cardiomegaly"]["labelled"] is False


def test_every_dataset_follows_the_one_protocol(nih, vindr, rsna, padchest, mimic, tmp_path) -> None:
    from mxa.data import (
        CheXpertDataset,
        MIMICDataset,
        NIHDataset,
        PadChestDataset,
        PhantomCXR,
        RSNADataset,
        VinDrDataset,
    )
    from mxa.data.base import XRaySet
    from mxa.data.writer import write_phantom_chexpert

    base = write_phantom_chexpert(tmp_path, n_train=4, n_valid=2, image_size=32)
    sets = [
        NIHDataset(nih),
        VinDrDataset(vindr),
        RSNADataset(rsna),
        PadChestDataset(padchest),
        MIMICDataset(mimic),
        CheXpertDataset(base, "valid", boxes=True),
        CheXpertDataset(base, "valid"),
        PhantomCXR(3, image_size=32),
    ]
    for ds in sets:
        assert isinstance(ds, XRaySet), type(ds).__name__
        n = len(ds)
        assert len(ds.ids) == n and ds.labels.shape == ds.label_mask.shape == (n, 14)
        assert ds.labelled.shape == (14,) and ds.labelled.dtype == torch.bool
        item = ds[0]
        assert len(item) == (4 if ds.has_boxes else 3), type(ds).__name__
        b = ds.boxes(0, tuple(item[0].shape[-2:]))
        assert b.shape == (14, 4)
        if ds.has_boxes:
            torch.testing.assert_close(b, item[3], equal_nan=True)
        else:
            assert torch.isnan(b).all()


def test_a_box_outside_its_image_is_left_out_and_named_once(vindr: Path, caplog) -> None:
    from mxa.data import VinDrDataset

    ds = VinDrDataset(vindr)
    i = next(k for k in range(len(ds)) if torch.isfinite(ds.boxes_px[k, :, 0]).any())
    j = int(torch.nonzero(torch.isfinite(ds.boxes_px[i, :, 0]))[0])
    ds.boxes_px[i, j] = torch.tensor([10.0, 10.0, 1e5, 20.0])  # far past any image's right edge
    hw = tuple(ds[i][0].shape[-2:])
    with caplog.at_level("WARNING", logger="mxa"):
        first, again = ds.boxes(i, hw), ds.boxes(i, hw)
    assert torch.isnan(first[j]).all() and torch.isnan(again[j]).all()
    assert caplog.text.count("cannot be used and are left out") == 1 and "outside the" in caplog.text
