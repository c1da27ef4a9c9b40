"""The pictures of docs/localization.md, from the study's seed-0 runs (benchmarks/localization_study.py).

    python scripts/make_localization_figures.py    # writes docs/img/localization_*.png

One validation phantom with one finding (the first such image of the study's validation set): the boxes of
the paper's design (`zoom`), and the per-label boxes of `classbox+mil` for the image's most probable
findings (trained from image labels only), beside the dashed true box.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import mxa
from mxa.data.combine import build_eval_dataset
from mxa.evaluate import predict
from mxa.viz import plot_roi_overlay

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/localization-study-v3", help="the study's run folders")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the pictures go")
    args = ap.parse_args()
    runs = Path(args.runs)
    zoom = mxa.load_model(runs / "zoom" / "seed0" / "last.pt")
    ours = mxa.load_model(runs / "classbox+mil" / "seed0" / "last.pt")
    ds = build_eval_dataset("phantom", ours, policy="ones", samples=200, seed=1001)
    sample = next(ds[i] for i in range(len(ds)) if int((~torch.isnan(ds[i][4][:, 0])).sum()) == 1)
    image, true = sample[1], sample[4]
    one = torch.utils.data.TensorDataset(torch.tensor([0]), image[None], sample[2][None], sample[3][None])
    for name, model, title in (
        ("zoom", zoom, "zoom (the paper's design): one box per block, image labels only"),
        ("classbox", ours, "classbox+mil: one box per finding, image labels only"),
    ):
        preds = predict(model, one, batch_size=1)
        probs = preds["probs"][0]
        if "label_rois" in preds:
            block = "stages.1.blocks.1"
            top = probs.argsort(descending=True)[:3].tolist()
            labels = model.label_names
            boxes = {f"{labels[k]} ({block})": preds["label_rois"][block][0, k] for k in top}
        else:
            boxes = {k: v[0] for k, v in preds["rois"].items()}
        out = Path(args.out) / f"localization_{name}.png"
        plot_roi_overlay(image, boxes, out, probs=probs, true_boxes=true, title=title, targets=sample[2])
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
