"""Pre-resize CheXpert once: the full-resolution JPEGs (~3000 px) make decoding the training bottleneck."""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "PreresizeError", "preresize_chexpert"]

#: The image files a CheXpert folder may hold.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class PreresizeError(ValueError):
    """Some images could not be resized; every other one was (``n_images`` in all, ``failures`` listed)."""

    def __init__(self, n_images: int, failures: list[str]) -> None:
        self.n_images, self.failures = n_images, failures
        super().__init__(
            f"{len(failures)} of {n_images} image(s) could not be resized (first: {failures[0]}); the others "
            "were. Replace the broken files and run the same command again: finished images are skipped"
        )


def _resize_one(args: tuple[str, str, int, int]) -> str | None:
    from PIL import Image

    src, dst, size, quality = args
    out = Path(dst)
    if out.exists():
        return None
    try:
        with Image.open(src) as opened:
            img = opened.convert("L")
            w, h = img.size
            scale = size / min(w, h)
            if scale < 1:
                img = img.resize(
                    (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC
                )
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".tmp")
            png = out.suffix.lower() == ".png"  # each image keeps its format: the CSVs name the files
            img.save(tmp, format="PNG" if png else "JPEG", **({} if png else {"quality": quality}))
            tmp.replace(out)
    except Exception as e:  # keep going; report every failure at the end
        return f"{src}: {e}"
    return None


def preresize_chexpert(
    src: str | Path, dst: str | Path, size: int = 320, workers: int = 8, quality: int = 95
) -> int:
    """Copy a CheXpert folder (CSVs + images) with every image's shorter side reduced to ``size``.

    The CSVs (and box files, whose coordinates are relative) are copied unchanged: their ``CheXpert-v1.0*/``
    path prefix is ignored by :class:`~mxa.data.CheXpertDataset`, which resolves images next to the CSV.
    JPEG and PNG images (``mxa make-phantom`` writes PNGs) keep their names and formats. Already written
    images are skipped, so an interrupted run can simply be restarted. Returns the number of images; raises
    :class:`PreresizeError` (after doing all the others) when some cannot be read, ``FileNotFoundError``
    when the folder holds no image.
    """
    src, dst = Path(src), Path(dst)
    if not (src / "train.csv").is_file():
        raise FileNotFoundError(f"no train.csv in {src}: pass the CheXpert-v1.0 (or -small) folder")
    images = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise FileNotFoundError(
            f"{src} holds train.csv but no image ({', '.join(IMAGE_SUFFIXES)}) below it: nothing to resize"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for table in [*src.glob("*.csv"), *src.glob("boxes_*.json")]:
        shutil.copy2(table, dst / table.name)
    jobs = [(str(p), str(dst / p.relative_to(src)), size, quality) for p in images]
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover

        def tqdm(x, **_):
            return x

    errors = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for err in tqdm(
            pool.map(_resize_one, jobs, chunksize=64),
            total=len(jobs),
            desc="resizing",
            unit="img",
            disable=None,
        ):
            if err:
                errors.append(err)
    if errors:
        raise PreresizeError(len(jobs), errors)
    return len(jobs)
