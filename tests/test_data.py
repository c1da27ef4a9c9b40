from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mxa.data import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    CheXpertDataset,
    PhantomCXR,
    apply_policy,
    build_transforms,
    load_xray,
    patient_split,
    write_phantom_chexpert,
)
from mxa.data.phantom import label_pattern_table

pd = pytest.importorskip("pandas")


def test_label_constants() -> None:
    assert (
        len(CHEXPERT_LABELS) == 14
        and CHEXPERT_LABELS[0] == "No Finding"
        and CHEXPERT_LABELS[-1] == "Support Devices"
    )
    assert set(COMPETITION_LABELS) <= set(CHEXPERT_LABELS) and len(COMPETITION_LABELS) == 5


def test_policies_small() -> None:
    nan = float("nan")
    raw = torch.tensor([[1, 0, -1, nan] + [nan] * 10, [-1] * 14], dtype=torch.float32)
    t, m = apply_policy(raw, "ones")
    assert t[0, :4].tolist() == [1, 0, 1, 0] and m.all()
    t, m = apply_policy(raw, "zeros")
    assert t[0, :4].tolist() == [1, 0, 0, 0] and m.all()
    t, m = apply_policy(raw, "ignore")
    assert m[0, :4].tolist() == [True, True, False, True] and not m[1].any()
    t, m = apply_policy(raw, "mixed")
    ones = {CHEXPERT_LABELS.index("Atelectasis"), CHEXPERT_LABELS.index("Edema")}
    assert t[1].tolist() == [1.0 if j in ones else 0.0 for j in range(14)] and m.all()
    with pytest.raises(ValueError, match="unknown uncertainty policy"):
        apply_policy(raw, "maybe")


@pytest.fixture(scope="module")
def real_csv() -> Path:
    xrv = pytest.importorskip("torchxrayvision")
    return Path(xrv.__file__).parent / "data" / "chexpert_train.csv.gz"


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore", "mixed"])
def test_policies_on_real_train_csv(real_csv, policy) -> None:
    ds = CheXpertDataset(real_csv.parent, csv=real_csv, policy=policy)
    assert ds.n_total == 223_414 and len(ds) == 191_027 and ds.n_dropped == 32_387
    with gzip.open(real_csv, "rt") as f:
        df = pd.read_csv(f)
    df = df[df["Frontal/Lateral"] == "Frontal"]
    for j, name in enumerate(CHEXPERT_LABELS):
        col = df[name]
        pos, unc = int((col == 1).sum()), int((col == -1).sum())
        to_one = policy == "ones" or (policy == "mixed" and name in ("Atelectasis", "Edema"))
        assert int(ds.labels[:, j].sum()) == pos + (unc if to_one else 0), name
        assert int((~ds.label_mask[:, j]).sum()) == (unc if policy == "ignore" else 0), name
    # blank is a negative, never masked
    blank = torch.isnan(ds.raw_labels)
    assert (ds.labels[blank] == 0).all() and ds.label_mask[blank].all()


def test_full_table_keeps_laterals(real_csv) -> None:
    ds = CheXpertDataset(real_csv.parent, csv=real_csv, frontal_only=False)
    assert len(ds) == 223_414 and ds.n_dropped == 0


def test_committed_label_table_matches_real_csv(real_csv) -> None:
    _, _, meta = label_pattern_table()
    with gzip.open(real_csv, "rt") as f:
        df = pd.read_csv(f)
    df = df[df["Frontal/Lateral"] == "Frontal"]
    assert meta["rows_frontal"] == len(df)
    for name in CHEXPERT_LABELS:
        assert meta["marginals"][name]["positive"] == int((df[name] == 1).sum())
        assert meta["marginals"][name]["uncertain"] == int((df[name] == -1).sum())


def _write_csv(path: Path, rows: list[list]) -> Path:
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path


def _row(path="CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.png", value=""):
    return [path, "Male", 50, "Frontal", "PA", value] + [""] * 13


def test_bad_label_value_names_row_and_column(tmp_path) -> None:
    csv = _write_csv(tmp_path / "train.csv", [_row(), _row(value="2.0")])
    with pytest.raises(ValueError, match=r"row 1 \(line 3\), column 'No Finding': value '2\.0'"):
        CheXpertDataset(tmp_path, csv=csv)
    csv = _write_csv(tmp_path / "train.csv", [_row(value="yes")])
    with pytest.raises(ValueError, match="row 0.*'yes'"):
        CheXpertDataset(tmp_path, csv=csv)


def test_missing_column(tmp_path) -> None:
    df = pd.DataFrame([_row()], columns=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS])
    df.drop(columns=["Edema"]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['Edema'\]"):
        CheXpertDataset(tmp_path, "train")


def test_missing_csv_and_image(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no valid.csv"):
        CheXpertDataset(tmp_path, "valid")
    _write_csv(tmp_path / "train.csv", [_row()])
    ds = CheXpertDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="patient00001/study1/view1_frontal.png"):
        ds[0]


def test_unreadable_image(tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        load_xray(bad)


def test_patient_split_has_no_overlap() -> None:
    patients = [f"patient{i // 3:03d}" for i in range(300)]
    train, val = patient_split(patients, val_fraction=0.2, seed=1)
    assert sorted(train + val) == list(range(300))
    assert not {patients[i] for i in train} & {patients[i] for i in val}
    assert abs(len({patients[i] for i in val}) - 20) <= 1
    assert patient_split(patients, 0.2, seed=1) == (train, val)


def test_patient_split_real_csv(real_csv) -> None:
    ds = CheXpertDataset(real_csv.parent, csv=real_csv)
    train, val = patient_split(ds.patients, 0.05, seed=0)
    assert not {ds.patients[i] for i in train} & {ds.patients[i] for i in val}


def test_phantom_determinism_and_format() -> None:
    a, b = PhantomCXR(6, image_size=64, seed=3), PhantomCXR(6, image_size=64, seed=3)
    for i in range(6):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(y))
    img, target, mask, boxes = a[0]
    assert (
        img.shape == (1, 64, 64)
        and target.shape == (14,)
        and mask.dtype == torch.bool
        and boxes.shape == (14, 4)
    )
    assert not torch.equal(PhantomCXR(6, 64, seed=4)[0][0], img)
    # a drawn finding has a box inside the image; an absent one has none
    raw = a.raw_labels
    for i in range(6):
        _, _, _, bx = a[i]
        drawn = ~torch.isnan(bx[:, 0])
        present = (raw[i] == 1) | (raw[i] == -1)
        present[0] = False  # No Finding is the absence of findings
        assert torch.equal(drawn, present)
        assert (bx[drawn] >= 0).all() and (bx[drawn] <= 1).all()


def test_phantom_follows_chexpert_prevalence() -> None:
    ds = PhantomCXR(4000, image_size=64, seed=0)
    patterns, cum, meta = label_pattern_table()
    n = meta["rows_frontal"]
    for j, name in enumerate(CHEXPERT_LABELS):
        expected = meta["marginals"][name]["positive"] / n
        got = float((ds.raw_labels[:, j] == 1).float().mean())
        assert abs(got - expected) < 4 * np.sqrt(expected * (1 - expected) / 4000) + 1e-3, name
    assert (ds.raw_labels == -1).any()  # uncertain labels exist, so policies matter


def test_phantom_findings_are_visible() -> None:
    ds = PhantomCXR(200, image_size=128, seed=0)
    cm = CHEXPERT_LABELS.index("Cardiomegaly")
    # render the same anatomy with and without the finding: the box region changes
    i = int(torch.nonzero(ds.raw_labels[:, cm] == 1)[0])
    raw = ds.raw_labels[i].numpy().copy()
    from mxa.data.phantom import render_phantom

    with_f, boxes = render_phantom(raw, 128, ds._rng(i, 1))
    raw[cm] = 0.0
    without, _ = render_phantom(raw, 128, ds._rng(i, 1))
    x1, y1, x2, y2 = (boxes[cm] * 128).astype(int)
    assert np.abs(with_f - without)[y1:y2, x1:x2].mean() > 0.02


def test_phantom_speed() -> None:
    ds = PhantomCXR(60, image_size=224, seed=0)
    ds[0]
    t0 = time.process_time()
    for i in range(60):
        ds.render(i)
    per_image = (time.process_time() - t0) / 60
    # a loose sanity bound (timings are measured in benchmarks/, not asserted to the millisecond)
    assert per_image < 0.05


def test_phantom_chexpert_roundtrip(tmp_path) -> None:
    base = write_phantom_chexpert(tmp_path, n_train=8, n_valid=4, image_size=64, seed=5, lateral_every=4)
    ds = CheXpertDataset(tmp_path, "train", policy="ignore")
    assert len(ds) == 6 and ds.n_dropped == 2
    ph = PhantomCXR(8, image_size=64, seed=5, policy="ignore")
    keep = [i for i in range(8) if i % 4 != 3]
    torch.testing.assert_close(ds.raw_labels, ph.raw_labels[keep], equal_nan=True)
    torch.testing.assert_close(ds.labels, ph.labels[keep])
    assert torch.equal(ds.label_mask, ph.label_mask[keep])
    img, target, mask = ds[1]
    ref, _ = ph.render(keep[1])
    assert img.shape == (1, 64, 64)
    assert (img[0] - torch.from_numpy(ref)).abs().max() <= 1 / 255 + 1e-6  # PNG quantization only
    assert len(CheXpertDataset(base, "valid")) == 3  # row 4 of 4 is lateral too
    assert len(set(ds.patients)) == 4  # rows 0-7 belong to patients 1-4, two images each


def test_transforms_from_model_cfg() -> None:
    import timm

    m = timm.create_model("efficientvit_ml_m0", img_size=96)
    ev, tr = build_transforms(m, train=False), build_transforms(m, train=True)
    x = torch.rand(1, 300, 250)
    a, b = ev(x), tr(x)
    assert a.shape == b.shape == (1, 96, 96)
    mean, std = m.pretrained_cfg["mean"][0], m.pretrained_cfg["std"][0]
    assert ev(torch.full((1, 96, 96), mean))[0].abs().max() < 1e-5
    assert ev(torch.ones(1, 96, 96)).max().item() == pytest.approx((1 - mean) / std)
    # RandAugment runs on grayscale, many times
    torch.manual_seed(0)
    for _ in range(50):
        assert tr(x).shape == (1, 96, 96)


def test_three_channel_transform() -> None:
    ev = build_transforms(
        {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, train=False
    )
    assert ev(torch.rand(1, 40, 40)).shape == (3, 32, 32)


def test_png_bit_depths(tmp_path) -> None:
    from PIL import Image

    a16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "x16.png")
    x = load_xray(tmp_path / "x16.png")
    assert x.shape == (1, 64, 64)
    assert x.min() == 0 and x.max() == pytest.approx(1.0) and len(x.unique()) > 256  # full depth kept
    Image.fromarray((a16 >> 8).astype(np.uint8)).save(tmp_path / "x8.jpg", quality=95)
    assert load_xray(tmp_path / "x8.jpg").shape == (1, 64, 64)


def test_real_samples_and_monochrome1(shared_cxr) -> None:
    pytest.importorskip("pydicom")
    mono2 = load_xray(shared_cxr / "siim_pa_mono2.dcm")
    mono1 = load_xray(shared_cxr / "siim_pa_mono1_tag.dcm")
    assert mono2.shape == (1, 128, 128)
    torch.testing.assert_close(mono1, 1.0 - mono2)
    png = load_xray(shared_cxr / "00000001_000.png")
    assert png.shape == (1, 128, 128) and 0.1 < png.mean() < 0.9


def test_preresize_roundtrip(tmp_path) -> None:
    from PIL import Image

    from mxa.data.preresize import preresize_chexpert

    base = write_phantom_chexpert(tmp_path / "src", n_train=4, n_valid=2, image_size=96)
    for png in base.rglob("*.png"):  # CheXpert ships JPEGs
        Image.open(png).save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    for csv in base.glob("*.csv"):
        csv.write_text(csv.read_text().replace(".png", ".jpg"))
    n = preresize_chexpert(base, tmp_path / "small", size=48, workers=1)
    assert n == 6
    ds = CheXpertDataset(tmp_path / "small", "train")
    assert len(ds) == 4 and ds[0][0].shape == (1, 48, 48)
    assert preresize_chexpert(base, tmp_path / "small", size=48, workers=1) == 6  # restartable
