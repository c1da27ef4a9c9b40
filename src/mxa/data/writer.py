"""Write a phantom set in the CheXpert layout, so CheXpertDataset is exercised exactly as on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mxa._optional import require
from mxa.data.chexpert import CSV_COLUMNS
from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.phantom import PhantomCXR
from mxa.utils.files import atomic_write_text
from mxa.utils.outputs import check_output

__all__ = ["write_phantom_chexpert"]


def _fmt(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.1f}"


def write_phantom_chexpert(
    root: str | Path,
    n_train: int = 64,
    n_valid: int = 16,
    image_size: int = 224,
    seed: int = 0,
    images_per_patient: int = 2,
    lateral_every: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``root/CheXpert-v1.0-small/{train,valid}.csv`` and the PNGs they name.

    Rows follow the official columns (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels with 1.0, 0.0,
    -1.0 or blank). Several images share a patient (``images_per_patient``) so patient splits matter.
    With ``lateral_every=k`` every k-th row is tagged Lateral (to exercise frontal filtering).
    The ground-truth boxes go to ``boxes_{train,valid}.json`` beside the CSVs: per split, image path
    (as in the CSV) -> {finding: normalized xyxy box} for every finding drawn.

    Returns:
        the dataset folder (``root/CheXpert-v1.0-small``).
    """
    pd = require("pandas", "Writing a phantom CheXpert set")
    from PIL import Image

    base = Path(root) / "CheXpert-v1.0-small"
    for split in ("train", "valid"):  # a set already there is kept unless asked (its labels are data)
        for name in (f"{split}.csv", f"boxes_{split}.json"):
            check_output(base / name, what="make-phantom output", overwrite=overwrite)
    for split, n, split_seed in (("train", n_train, seed), ("valid", n_valid, seed + 1_000_003)):
        ds = PhantomCXR(n, image_size=image_size, seed=split_seed)
        rows, boxes = [], {}
        rng = np.random.default_rng(split_seed)
        for i in range(n):
            patient, study = i // images_per_patient + 1, i % images_per_patient + 1
            rel = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study{study}/view1_frontal.png"
            img, bx = ds.render(i)
            out = base / split / f"patient{patient:05d}" / f"study{study}" / "view1_frontal.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255 + 0.5).astype(np.uint8), mode="L").save(out)
            lateral = lateral_every > 0 and i % lateral_every == lateral_every - 1
            raw = ds.raw_labels[i].numpy()
            rows.append(
                [
                    rel,
                    rng.choice(["Female", "Male"]),
                    int(rng.integers(18, 90)),
                    "Lateral" if lateral else "Frontal",
                    "" if lateral else rng.choice(["AP", "PA"]),
                ]
                + [_fmt(x) for x in raw]
            )
            boxes[rel] = {
                CHEXPERT_LABELS[j]: bx[j].tolist()
                for j in range(len(CHEXPERT_LABELS))
                if not np.isnan(bx[j, 0])
            }
        atomic_write_text(
            base / f"{split}.csv", pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(index=False)
        )
        atomic_write_text(base / f"boxes_{split}.json", json.dumps(boxes))
    return base
