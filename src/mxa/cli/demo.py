"""``mxa demo``: the whole pipeline on built-in phantom X-rays, no download."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mxa.cli._common import declare_io

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on built-in phantom data, no download (about 14 min on 2 CPU cores)",
        description=(
            "Train an MXA-free teacher, cache its logits, then the baseline, +MXA and +MXA+KD students with "
            "identical settings on phantom chest X-rays (M0 at 128 px); print the AUC table with bootstrap "
            "95% "
            "CIs and the ROI localization against chance; write ROI overlays, ROC curves, an attention "
            "comparison and summary.json to OUTPUT. Synthetic data: a demonstration, not a medical result."
        ),
    )
    p.add_argument(
        "--output", default="mxa-demo", help="folder for runs, tables and figures (default mxa-demo)"
    )
    p.add_argument(
        "--quick", action="store_true", help="a one-minute pipeline check (96 px, 384 images, 2 epochs)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in OUTPUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    declare_io(p, outputs=("output",), folders=("output",), overwrite=False)
    p.set_defaults(func=cmd_demo)


def cmd_demo(ns: argparse.Namespace) -> int:
    from mxa.demo import run_demo

    summary = run_demo(
        Path(ns.output), quick=ns.quick, seed=ns.seed, progress=not ns.no_progress, overwrite=ns.overwrite
    )
    print_demo_table(summary["results"])
    for note in summary["notes"]:
        print(f"\nnote: {note}")
    print(f"\nfigures: {', '.join(summary['figures'])}")
    print(f"summary: {Path(ns.output) / 'summary.json'}  ({summary['minutes']:.1f} min)")
    print("The weights trained here are a demonstration on synthetic data, not a medical device.")
    return 0


def print_demo_table(results: dict[str, Any]) -> None:
    from mxa.utils.format import fmt

    def f(m: dict, k: str) -> str:
        return fmt(m.get(k), (m.get("ci") or {}).get(k), digits=3)

    head = (
        f"{'model':<10}{'macro AUC':>24}{'micro AUC':>24}{'comp. AUC':>24}{'crop acc@.3':>13}"
        f"{'crop IoU / chance':>19}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name, m in results.items():
        crop = m.get("crop") or {}
        acc = f"{crop['loc_acc_0.3']:.2f}" if crop else "-"
        iou = f"{crop['mean_iou']:.2f} / {crop['random_iou']:.2f}" if crop else "-"
        aucs = f"{f(m, 'macro_auc'):>24}{f(m, 'micro_auc'):>24}{f(m, 'competition_auc'):>24}"
        print(f"{name:<10}{aucs}{acc:>13}{iou:>19}")
    blocks = {n: m["crop"]["block"] for n, m in results.items() if m.get("crop")}
    if blocks:
        print(
            "crop: what one MXA block crops, on the test phantoms; the block was chosen on the validation "
            "phantoms (" + ", ".join(f"{n}: {b}" for n, b in blocks.items()) + "); chance: boxes of the same "
            "size placed at random"
        )
