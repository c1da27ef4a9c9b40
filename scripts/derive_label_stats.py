"""Derive the phantom's label distribution from the real CheXpert train.csv.

Reads ``torchxrayvision/data/chexpert_train.csv.gz`` (223,414 rows, shipped in torchxrayvision's wheel),
keeps the frontal images and writes ``src/mxa/data/chexpert_label_patterns.json.gz``: every distinct
14-label pattern (1, 0, -1 or blank per label) with its count, plus per-label marginals. Sampling whole
patterns reproduces CheXpert's prevalence, uncertainty rate and co-occurrence exactly.

Run: python scripts/derive_label_stats.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import torchxrayvision

from mxa.data.labels import CHEXPERT_LABELS

CODE = {1.0: "1", 0.0: "0", -1.0: "u"}  # blank -> "."


def main() -> None:
    src = Path(torchxrayvision.__file__).parent / "data" / "chexpert_train.csv.gz"
    df = pd.read_csv(src)
    if list(df.columns[5:]) != list(CHEXPERT_LABELS):
        raise SystemExit(f"unexpected columns in {src}: {list(df.columns)}")
    frontal = df[df["Frontal/Lateral"] == "Frontal"]
    labels = frontal[list(CHEXPERT_LABELS)]
    codes = labels.apply(lambda col: col.map(CODE).fillna(".")).agg("".join, axis=1)
    counts = codes.value_counts()
    marginals = {
        name: {
            "positive": int((labels[name] == 1).sum()),
            "negative": int((labels[name] == 0).sum()),
            "uncertain": int((labels[name] == -1).sum()),
            "blank": int(labels[name].isna().sum()),
        }
        for name in CHEXPERT_LABELS
    }
    out = {
        "source": "CheXpert v1.0 train.csv (torchxrayvision "
        + torchxrayvision.__version__
        + "), frontal only",
        "rows_total": len(df),
        "rows_frontal": len(frontal),
        "labels": list(CHEXPERT_LABELS),
        "code": "one character per label: 1 positive, 0 negative, u uncertain (-1), . blank",
        "marginals": marginals,
        "patterns": dict(zip(counts.index.tolist(), counts.astype(int).tolist())),
    }
    dst = Path(__file__).resolve().parents[1] / "src" / "mxa" / "data" / "chexpert_label_patterns.json.gz"
    with gzip.open(dst, "wt", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {dst}: {len(counts)} patterns over {len(frontal)} frontal rows")


if __name__ == "__main__":
    main()
