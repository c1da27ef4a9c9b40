"""The pictures of docs/localization.md, from one seed's runs of the study (benchmarks/localization_study.py).

    python scripts/make_localization_figures.py --seed 1   # writes docs/img/localization_crops_*.png

For each phantom kind and each of the paper's design (``zoom``) and 0.4's default (``labels``): what the
block reported for that run (chosen on the study's validation split, as recorded in
benchmarks/results/localization.json) crops on the first eight test images with exactly one finding, in
order: hits and misses as they come.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mxa
from mxa.data.combine import build_eval_dataset
from mxa.evaluate import predict
from mxa.viz import plot_crop_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from localization_study import TEST  # noqa: E402  (benchmarks/ is not a package)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/localization-study-v4", help="the study's run folders")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the pictures go")
    ap.add_argument("--seed", type=int, default=0, help="whose runs to draw (default 0)")
    args = ap.parse_args()
    results = json.loads((ROOT / "benchmarks" / "results" / "localization.json").read_text())
    runs = [r for r in results["runs"] if r["seed"] == args.seed]
    chosen = {(r["kind"], r["variant"]): r["chosen"]["crop"]["set"] for r in runs if r.get("chosen")}
    for kind in ("phantom-small", "phantom"):
        for variant, what in (("zoom", "the paper's MXA"), ("labels", "label ROIs (0.4's default)")):
            block = chosen.get((kind, variant))
            if block is None:
                continue
            ckpt = Path(args.runs) / kind / variant / f"seed{args.seed}" / "last.pt"
            if not ckpt.is_file():
                print(f"skipped {kind}, {variant}: no {ckpt}")
                continue
            model = mxa.load_model(ckpt)
            ds = build_eval_dataset(kind, model, samples=200, seed=TEST["seed"])
            preds = predict(model, ds, batch_size=64)
            out = Path(args.out) / f"localization_crops_{variant}_{kind.replace('-', '_')}.png"
            title = f"{kind}, {variant} ({what}), seed {args.seed}: what {block} crops (chosen on validation)"
            print(f"wrote {plot_crop_examples(ds, preds, block, out, title=title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
