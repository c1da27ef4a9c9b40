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
        help="the whole pipeline on built-in phantom data, no download (about 3 min on 2 CPU cores)",
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
    from mxa.evaluate import summarize_localization
    from mxa.utils.format import fmt

    def f(m: dict, k: str) -> str:
        return fmt(m.get(k), (m.get("ci") or {}).get(k), digits=3)

    head = f"{'model':<10}{'macro AUC':>24}{'micro AUC':>24}{'comp. AUC':>24}{'ROI hit / chance':>20}"
    print("\n" + head + "\n" + "-" * len(head))
    for name, m in results.items():
        loc = summarize_localization(m.get("roi_localization") or {})
        loc_txt = f"{loc['hit_rate']:.2f} / {loc['random_hit_rate']:.2f}" if loc else "-"
        print(
            f"{name:<10}{f(m, 'macro_auc'):>24}{f(m, 'micro_auc'):>24}"
            f"{f(m, 'competition_auc'):>24}{loc_txt:>20}"
        )
