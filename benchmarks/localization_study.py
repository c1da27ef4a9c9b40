"""Does the MXA box find the finding? The study behind docs/localization.md, in one command.

    python benchmarks/localization_study.py    # 3 seeds (zoom+area: 1), about 40 min on 2 idle cores
    python benchmarks/localization_study.py --variants zoom paste --seeds 1 --epochs 1   # a quick look
    python scripts/make_localization_docs.py                     # the tables in docs/localization.md

M0 on phantom chest X-rays at 224 px, each variant trained with identical settings for each seed, then
evaluated on the same validation phantoms: macro AUC (bootstrap CI), and per MXA block the hit rate, IoU
and pointing game, each against area-matched chance, and the mean box area; plus the mean IoU on the
validation images that have exactly one finding. Writes benchmarks/results/localization.json (and the
run folders under --output). Nothing is tuned to the answer: the seeds are 0, 1, 2 for every variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import mxa
from mxa.data.combine import build_eval_dataset
from mxa.evaluate import evaluate_model
from mxa.metrics.localization import _pairwise_iou
from mxa.train.config import TrainConfig
from mxa.train.loop import train
from mxa.utils.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

#: name -> (description, TrainConfig changes)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("no MXA (the AUC reference)", dict(mxa=False)),
    "zoom": ("the paper's MXA: crop resized to the whole map (our default)", dict()),
    "zoom+area": ("zoom, with a box-area penalty (0.5)", dict(box_area_penalty=0.5)),
    "paste": ("the gated crop pasted back where the box is", dict(mxa_mode="paste")),
    "paste+area": ("paste, with a box-area penalty (0.5)", dict(mxa_mode="paste", box_area_penalty=0.5)),
    "zoom+box-loss": ("zoom, GIoU box supervision (weight 1)", dict(box_loss=1.0)),
    "paste+box-loss": ("paste, GIoU box supervision (weight 1)", dict(mxa_mode="paste", box_loss=1.0)),
}

BASE = TrainConfig(
    data="phantom",
    model="efficientvit_ml_m0",
    img_size=224,
    train_samples=800,
    val_samples=200,
    epochs=3,
    batch_size=32,
    lr=2e-3,
    min_lr=1e-5,
    warmup_epochs=1,
    cooldown_epochs=0,
    ema_decay=0.0,
    class_balance=False,
    progress=False,
)


def single_finding_iou(preds: dict[str, Any]) -> dict[str, float]:
    """Mean IoU of each block's box with the true box, over images with exactly one finding."""
    true = preds["true_boxes"]
    one = (~torch.isnan(true[..., 0])).sum(1) == 1
    if not bool(one.any()):
        return {}
    return {
        name: float(_pairwise_iou(b[one].float(), true[one]).amax(1).mean())
        for name, b in preds["rois"].items()
    }


def run_one(name: str, seed: int, base: TrainConfig, output: Path) -> dict[str, Any]:
    cfg = dataclasses.replace(base, seed=seed, output=str(output / name / f"seed{seed}"), overwrite=True)
    cfg = dataclasses.replace(cfg, **VARIANTS[name][1])
    t0 = time.perf_counter()
    train(cfg)
    minutes = (time.perf_counter() - t0) / 60
    model = mxa.load_model(Path(cfg.output) / "last.pt")
    ds = build_eval_dataset(
        "phantom", model, policy=cfg.policy, samples=cfg.val_samples, seed=1001
    )  # one val set for all
    metrics, preds = evaluate_model(model, ds, batch_size=64, n_bootstrap=200)
    loc = metrics.get("roi_localization", {})
    for v in loc.values():
        v.pop("per_label", None)  # kept in the run's eval, not in the study table
    return {
        "variant": name,
        "seed": seed,
        "macro_auc": metrics["macro_auc"],
        "macro_auc_ci": metrics["ci"].get("macro_auc"),
        "localization": loc,
        "single_finding_iou": single_finding_iou(preds) if "rois" in preds else {},
        "train_minutes": minutes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="what to train"
    )
    ap.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...; default 3)")
    ap.add_argument(
        "--one-seed", nargs="*", default=["zoom+area"], help="variants trained with the first seed only"
    )
    ap.add_argument("--epochs", type=int, default=BASE.epochs, help=f"epochs per run (default {BASE.epochs})")
    ap.add_argument("--output", default="runs/localization-study", help="run folders")
    ap.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results" / "localization.json"), help="results"
    )
    args = ap.parse_args()
    base = dataclasses.replace(BASE, epochs=args.epochs)
    path = Path(args.json)
    results = json.loads(path.read_text())["runs"] if path.is_file() else []
    done = {(r["variant"], r["seed"]) for r in results}
    for seed in range(args.seeds):
        for name in args.variants:
            if (name, seed) in done or (seed > 0 and name in args.one_seed):
                continue  # restartable: a killed study continues where it stopped
            print(f"--- {name}, seed {seed}", flush=True)
            results.append(run_one(name, seed, base, Path(args.output)))
            out = {
                "config": {k: v for k, v in base.to_dict().items() if k not in ("output", "seed")},
                "variants": {k: v[0] for k, v in VARIANTS.items()},
                "machine": {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "cpu": platform.machine(),
                },
                "runs": results,
            }
            atomic_write_text(path, json.dumps(out, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
