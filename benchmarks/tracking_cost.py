"""What ``mxa train --log tensorboard,mlflow,wandb`` costs, at the demo's size (issue 24's goal: < 2% of
an epoch).

One +MXA run of the demo's settings (M0, 128 px, 1600 phantoms, 500 validation images) with all three
trackers (W&B offline, MLflow to a local file store) and validation images logged every epoch (the worst
case; the default is every 5th). Every tracker call is timed where the training loop makes it, and each
epoch's cost is set against that epoch's wall time. The one-off start (W&B's service, MLflow's store) is
reported apart.

Usage: python benchmarks/tracking_cost.py [--epochs 3] [--output benchmarks/results/cpu-tracking.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import mxa.train.loop as loop
import mxa.train.tracking as tracking
from mxa.demo import demo_experiment
from mxa.train.config import TrainConfig
from mxa.utils.files import atomic_write_text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--output", default="benchmarks/results/cpu-tracking.json")
    args = ap.parse_args()
    if Path(args.output).exists():  # before the run, not after it
        raise SystemExit(f"{args.output} exists: move it away first (results are never overwritten)")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    spent: dict[str, float] = {"start": 0.0, "close": 0.0}
    per_epoch: dict[str, dict[int, float]] = {"scalars": {}, "images": {}}
    epoch_start: dict[int, float] = {}
    epoch_wall: dict[int, float] = {}

    def timed(fn, key):  # type: ignore[no-untyped-def]
        def inner(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = fn(*a, **k)
            dt = time.perf_counter() - t0
            if key == "start":
                spent["start"] += dt
                spent["close"] = dt  # the last one-off call (close) is not part of the last epoch
            else:
                per_epoch[key][a[1]] = per_epoch[key].get(a[1], 0.0) + dt
            return out

        return inner

    init = tracking.Tracking.__init__
    tracking.Tracking.__init__ = timed(init, "start")  # type: ignore[method-assign]
    tracking.Tracking.log_epoch = timed(tracking.Tracking.log_epoch, "scalars")  # type: ignore[method-assign]
    tracking.Tracking.close = timed(tracking.Tracking.close, "start")  # type: ignore[method-assign]
    loop.log_roi_overlays = timed(loop.log_roi_overlays, "images")  # type: ignore[assignment]
    one_epoch = loop.train_one_epoch

    def epoch_timer(run, epoch, *a, **k):  # type: ignore[no-untyped-def]
        if epoch > 0:
            epoch_wall[epoch] = time.perf_counter() - epoch_start[epoch - 1]
        epoch_start[epoch] = time.perf_counter()
        return one_epoch(run, epoch, *a, **k)

    loop.train_one_epoch = epoch_timer  # type: ignore[assignment]

    with tempfile.TemporaryDirectory(prefix="mxa-tracking-") as tmp:
        base = demo_experiment(quick=False, output=Path(tmp), progress=False).base
        cfg = dataclasses.replace(
            base,
            mxa=True,
            epochs=args.epochs,
            output=str(Path(tmp) / "run"),
            log="tensorboard,mlflow,wandb",
            log_images_every=1,
            progress=False,
        )
        t0 = time.perf_counter()
        loop.train(cfg)
        total = time.perf_counter() - t0
        # the last epoch's wall time: from its start to the end of the run
        epoch_wall[args.epochs] = time.perf_counter() - epoch_start[args.epochs - 1] - spent["close"]
    rows = []
    for e in range(1, args.epochs + 1):
        wall = epoch_wall[e]
        sc, im = per_epoch["scalars"].get(e, 0.0), per_epoch["images"].get(e, 0.0)
        rows.append(
            {
                "epoch": e,
                "epoch_s": wall,
                "scalars_s": sc,
                "images_s": im,
                "scalars_share": sc / wall,
                "images_share": im / wall,
            }
        )
    scalars = max(r["scalars_share"] for r in rows)
    images = max(r["images_share"] for r in rows)
    default_every = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "log_images_every")
    amortized = scalars + images / default_every
    result = {
        "machine": f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "setting": "demo size: efficientvit_ml_m0 +MXA, 128 px, 1600 train / 500 val phantoms; "
        "tensorboard + mlflow (file store) + wandb (offline); 4 validation images with their MXA boxes "
        "logged every epoch",
        "start_and_close_s": spent["start"],
        "total_s": total,
        "epochs": rows,
        "max_scalars_share": scalars,
        "max_images_share": images,
        "share_at_default_images_every_5": amortized,
        "goal": "< 0.02 of an epoch",
        "met_at_default": amortized < 0.02,
        "met_with_images_every_epoch": scalars + images < 0.02,
    }
    out = Path(args.output)
    if out.exists():
        raise SystemExit(f"{out} exists: move it away first (results are never overwritten)")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(
            f"epoch {r['epoch']}: {r['epoch_s']:.1f} s; numbers {r['scalars_s']:.3f} s "
            f"({r['scalars_share']:.2%}), images {r['images_s']:.3f} s ({r['images_share']:.2%})"
        )
    print(f"at the default (images every {default_every} epochs): {amortized:.2%} of an epoch")
    print(f"start and close of the trackers (once per run): {spent['start']:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
