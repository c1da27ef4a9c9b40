"""Write the tables of docs/localization.md from benchmarks/results/localization.json.

    python scripts/make_localization_docs.py            # rewrite the marked blocks
    python scripts/make_localization_docs.py --check    # exit 1 if the page is out of step (run by the tests)

Per variant, mean and standard deviation over seeds of: macro AUC; the block that localizes best under
the issue's rule (largest hit-rate margin over area-matched chance among blocks whose mean box covers at
most half of the map): its margin and area; the mean box area over all blocks; IoU and pointing game of
the best block by IoU margin, each against chance; the IoU on single-finding images (best block).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from generated_blocks import render  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "localization.json"
PAGE = ROOT / "docs" / "localization.md"


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def run_summary(run: dict) -> dict:
    loc = run["localization"]
    out: dict = {"auc": run["macro_auc"]}
    if not loc:
        return out
    small = {k: v for k, v in loc.items() if v["mean_box_area"] <= 0.5}
    if small:
        best = max(small, key=lambda k: small[k]["hit_rate"] - small[k]["random_hit_rate"])
        out["margin"] = small[best]["hit_rate"] - small[best]["random_hit_rate"]
        out["margin_area"] = small[best]["mean_box_area"]
    else:
        out["margin"], out["margin_area"] = None, None
    out["n_small"] = len(small)
    out["area"] = statistics.mean(v["mean_box_area"] for v in loc.values())
    by_iou = max(loc, key=lambda k: loc[k]["mean_iou"] - loc[k]["random_iou"])
    out["iou"], out["iou_chance"] = loc[by_iou]["mean_iou"], loc[by_iou]["random_iou"]
    pts = {k: v for k, v in loc.items() if "pointing_game" in v}
    if pts:
        by_pt = max(pts, key=lambda k: pts[k]["pointing_game"] - pts[k]["pointing_chance"])
        out["pointing"], out["pointing_chance"] = pts[by_pt]["pointing_game"], pts[by_pt]["pointing_chance"]
    single = run.get("single_finding_iou") or {}
    out["single_iou"] = max(single.values()) if single else None
    out["single_iou_mean"] = statistics.mean(single.values()) if single else None
    return out


def tables(data: dict) -> dict[str, str]:
    runs: dict[str, list[dict]] = {}
    for r in data["runs"]:
        runs.setdefault(r["variant"], []).append(run_summary(r))
    rows = [
        "| variant | seeds | macro AUC | best small-box hit margin (its area) | blocks with area <= 0.5 "
        "| mean box area | IoU / chance (best block) | pointing / chance (best block) | single-finding IoU "
        "(best / mean block) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in data["variants"]:
        rs = runs.get(name)
        if not rs:
            continue

        def col(k: str, rs: list[dict] = rs) -> list:
            return [r.get(k) for r in rs]

        if "area" not in rs[0]:
            rows.append(f"| {name} | {len(rs)} | {_ms(col('auc'))} | - | - | - | - | - | - |")
            continue
        margin = _ms(col("margin"))
        margin += f" ({_ms(col('margin_area'), 2)})" if any(v is not None for v in col("margin_area")) else ""
        rows.append(
            f"| {name} | {len(rs)} | {_ms(col('auc'))} | {margin} | {_ms(col('n_small'), 1)} of 6 | "
            f"{_ms(col('area'), 2)} "
            f"| {_ms(col('iou'))} / {_ms(col('iou_chance'))} | {_ms(col('pointing'))} / "
            f"{_ms(col('pointing_chance'))} "
            f"| {_ms(col('single_iou'))} / {_ms(col('single_iou_mean'))} |"
        )
    cfg = data["config"]
    setup = (
        f"{cfg['model']} at {cfg['img_size']} px on phantoms: {cfg['train_samples']} training images, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']}; evaluated on 500 validation "
        "phantoms "
        "(seed 1001), the same for every run"
    )
    return {"table": "\n".join(rows), "setup": setup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the page is in step; exit 1 if not")
    args = ap.parse_args()
    old = PAGE.read_text()
    new = render(old, "study", tables(json.loads(RESULTS.read_text())))
    if new != old:
        if args.check:
            print(
                f"{PAGE.name} is out of step with {RESULTS.name}; run python "
                "scripts/make_localization_docs.py"
            )
            return 1
        PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
