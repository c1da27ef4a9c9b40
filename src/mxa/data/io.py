"""Reading chest X-rays as (1, H, W) float tensors in [0, 1], white = dense (MONOCHROME2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mxa._optional import require

__all__ = ["IMAGE_SUFFIXES", "collect_images", "load_xray", "output_names"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the images inside folders (recursively, sorted); each file once.

    Raises:
        FileNotFoundError: an input does not exist, or no image was found at all.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not out:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {list(map(str, inputs))}")
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def output_names(files: Sequence[Path], suffix: str) -> dict[Path, str]:
    """A unique output file name per input: ``<stem><suffix>``, or, when two inputs share a stem
    (``a/x.png``, ``b/x.png``), their path below the inputs' common folder joined with ``__``."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return {f: f"{f.stem}{suffix}" for f in files}
    resolved = [Path(f).resolve() for f in files]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    names = {}
    for f, r in zip(files, resolved):
        rel = r.relative_to(common)
        names[f] = "__".join(rel.with_suffix("").parts) + f"_{rel.suffix.lstrip('.')}{suffix}"
    return names


def load_xray(path: str | Path) -> torch.Tensor:
    """Load a PNG (8 or 16 bit), JPEG or DICOM chest X-ray.

    DICOM (needs the ``dicom`` extra) uses the full stored bit depth and the rescale slope/intercept;
    MONOCHROME1 images are inverted so that dense is always white. Colour images are converted to gray.

    Returns:
        (1, H, W) float32 in [0, 1].

    Raises:
        FileNotFoundError: the file does not exist (its path is in the message).
        ValueError: the file cannot be decoded (its path is in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.suffix.lower() in (".dcm", ".dicom"):
        arr = _read_dicom(path)
    else:
        arr = _read_raster(path)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float32)
                top = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
                return np.clip(arr / top, 0.0, 1.0)
            gray = img if img.mode == "L" else img.convert("L")
            return np.asarray(gray, dtype=np.float32) / 255.0
    except Image.DecompressionBombError as e:  # not an OSError: it would abort a whole batch
        raise ValueError(
            f"cannot read image {path}: {e} (a decompression bomb, or a huge image: downscale it first)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _read_dicom(path: Path) -> np.ndarray:
    pydicom = require("pydicom", "Reading DICOM")
    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
    except Exception as e:
        raise ValueError(f"cannot read DICOM {path}: {e}") from e
    if arr.ndim == 3:  # colour or multi-frame: first frame, gray
        arr = arr.mean(-1) if arr.shape[-1] in (3, 4) else arr[0]
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    bits = int(getattr(ds, "BitsStored", 0) or 0)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    if bits:
        lo = -(2 ** (bits - 1)) if signed else 0
        hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        lo, hi = lo * slope + intercept, hi * slope + intercept
    else:
        lo, hi = float(arr.min()), float(arr.max())
    arr = arr * slope + intercept
    arr = np.clip((arr - min(lo, hi)) / max(abs(hi - lo), 1e-6), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = 1.0 - arr
    return arr
