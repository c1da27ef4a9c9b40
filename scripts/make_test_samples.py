"""Regenerate the small real chest X-ray samples in ``tests/data/cxr/`` from ``../shared/data/cxr/``.

The tests need real radiographs (8-bit PNG, DICOM MONOCHROME2 and MONOCHROME1) but must run wherever the
repository is cloned, so small copies live in the repository. Deterministic: same sources, same Pillow and
pydicom, same bytes.

Usage: ``python scripts/make_test_samples.py [--src ../shared/data/cxr] [--dst tests/data/cxr] [--size 128]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PNGS = ("00000001_000.png", "00027426_000.png")
MONO2, MONO1 = "siim_pa_mono2.dcm", "siim_pa_mono1_tag.dcm"


def _shrink(arr: np.ndarray, size: int) -> np.ndarray:
    """Area (box-filter) downscale of an 8-bit gray image to ``size`` x ``size``."""
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="L")
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def make_pngs(src: Path, dst: Path, size: int) -> None:
    for name in PNGS:
        with Image.open(src / name) as img:
            arr = np.asarray(img.convert("L"))
        # optimize=True: smaller file, still deterministic (no timestamp or gamma chunk is written)
        Image.fromarray(_shrink(arr, size), mode="L").save(dst / name, optimize=True)


def make_dicoms(src: Path, dst: Path, size: int) -> None:
    import pydicom
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    mono2, mono1 = pydicom.dcmread(src / MONO2), pydicom.dcmread(src / MONO1)
    pixels = mono2.pixel_array
    if not np.array_equal(pixels, mono1.pixel_array):
        raise ValueError(f"{MONO1} must hold the same pixels as {MONO2}")
    # One downscaled array for both files, so the MONOCHROME1 copy loads as exactly 1 - the MONOCHROME2 one.
    small = _shrink(pixels, size)
    for name, ds in ((MONO2, mono2), (MONO1, mono1)):
        if "PixelSpacing" in ds:
            ds.PixelSpacing = [round(float(p) * ds.Columns / size, 6) for p in ds.PixelSpacing]
        # Uncompressed 8-bit: re-encoding as JPEG would add a second lossy step and need a JPEG codec.
        ds.set_pixel_data(
            small,
            photometric_interpretation=ds.PhotometricInterpretation,
            bits_stored=8,
            generate_instance_uid=False,
        )
        # A derived image gets its own UIDs; derived from the source UIDs so reruns give the same bytes.
        for key in ("SOPInstanceUID", "SeriesInstanceUID"):
            setattr(ds, key, generate_uid(entropy_srcs=[str(ds[key].value), f"test-sample-{size}"]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID  # pydicom wrote this file
        ds.file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
        ds.save_as(dst / name, enforce_file_format=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "cxr")
    ap.add_argument("--dst", type=Path, default=ROOT / "tests" / "data" / "cxr")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    args.dst.mkdir(parents=True, exist_ok=True)
    make_pngs(args.src, args.dst, args.size)
    make_dicoms(args.src, args.dst, args.size)
    for f in sorted(args.dst.iterdir()):
        print(f"{f.name}: {f.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
