"""Write the tables of docs/localization.md from benchmarks/results/localization.json (and the 0.2 study's
benchmarks/results/localization-0.2.json).

    python scripts/make_localization_docs.py            # rewrite the marked blocks
    python scripts/make_localization_docs.py --check    # exit 1 if the page is out of step (run by the tests)

Per variant, mean and standard deviation over seeds. The "best block" of a run is the one (block box or
``<block>/labels`` per-label boxes) with the highest single-finding IoU on the evaluation set: a choice made
on the data it is scored on, so an optimistic number, reported beside the mean over all blocks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from generated_blocks import render  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "localization.json"
RESULTS_02 = ROOT / "benchmarks" / "results" / "localization-0.2.json"
PAGE = ROOT / "docs" / "localization.md"
BINS = ("side <= 0.15", "0.15 < side <= 0.30", "side > 0.30")


def _ms(values: list[Any], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run that the tables show."""
    out: dict[str, Any] = {"auc": run["macro_auc"]}
    loc = run["localization"]
    single = (run.get("single_finding") or {}).get("blocks") or {}
    if not loc or not single:
        return out
    best = max(single, key=lambda k: single[k]["iou"])
    out["best"] = best
    out["single_iou"] = single[best]["iou"]
    out["single_iou_mean"] = statistics.mean(v["iou"] for v in single.values())
    out["single_acc"] = single[best]["loc_acc_0.3"]
    for b in BINS:
        out[b] = single[best]["by_size"].get(b)
    v = loc[best]
    out["acc_03"] = v["loc_acc"]["0.3"]
    out["iobb_03"] = v["iobb_acc"]["0.3"]
    out["area"] = v["mean_box_area"]
    out["margin"] = v["hit_rate"] - v["random_hit_rate"]
    # the localization rule: the best hit margin among blocks whose boxes cover at most half the map
    small = {k: x for k, x in loc.items() if x["mean_box_area"] <= 0.5}
    out["small_margin"] = max((x["hit_rate"] - x["random_hit_rate"] for x in small.values()), default=None)
    det = run.get("detection") or {}
    if det:
        out["ap_03"], out["ap_05"] = det["ap"]["0.3"], det["ap"]["0.5"]
        out["rodeo"] = det["rodeo"]["total"]
    return out


def tables(data: dict[str, Any]) -> dict[str, str]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in data["runs"]:
        runs.setdefault(r["variant"], []).append(run_summary(r))
    main = [
        "| variant | seeds | macro AUC | single-finding IoU (best / mean block) | its block | loc. acc. "
        "IoU 0.3 (single / all findings) | IoBB acc. 0.3 | box area | hit margin over chance (best block; "
        "min over seeds) | AP@0.3 | AP@0.5 | RoDeO |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sizes = [
        "| variant | " + " | ".join(f"IoU, {b}" for b in BINS) + " |",
        "| --- | --- | --- | --- |",
    ]
    for name in data["variants"]:
        rs = runs.get(name)
        if not rs:
            continue

        def col(k: str, rs: list[dict[str, Any]] = rs) -> list[Any]:
            return [r.get(k) for r in rs]

        if "best" not in rs[0]:
            main.append(f"| {name} | {len(rs)} | {_ms(col('auc'))} |" + " - |" * 9)
            continue
        blocks = sorted(set(col("best")))
        where = ", ".join(f"`{b}`" for b in blocks[:2]) + (" ..." if len(blocks) > 2 else "")
        margins = [m for m in col("margin") if m is not None]
        main.append(
            f"| {name} | {len(rs)} | {_ms(col('auc'))} | {_ms(col('single_iou'))} / "
            f"{_ms(col('single_iou_mean'))} | {where} | {_ms(col('single_acc'))} / {_ms(col('acc_03'))} | "
            f"{_ms(col('iobb_03'))} | {_ms(col('area'), 2)} | {_ms(margins)} ({min(margins):+.3f}) | "
            f"{_ms(col('ap_03'))} | {_ms(col('ap_05'))} | {_ms(col('rodeo'))} |"
        )
        sizes.append(f"| {name} | " + " | ".join(_ms(col(b)) for b in BINS) + " |")
    cfg = data["config"]
    first = next((r["single_finding"] for r in data["runs"] if r.get("single_finding")), {})
    bins, n_single = first.get("bins", {}), first.get("n_images", 0)
    setup = (
        f"{cfg['model']} at {cfg['img_size']} px on phantoms: {cfg['train_samples']} training images, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']}, MXA box sides from "
        f"{cfg['mxa_min_size']} of the map; evaluated on {data.get('eval_samples', '?')} validation "
        f"phantoms (seed 1001), the same for every run, {n_single} of them with exactly one finding ("
        + ", ".join(f"{n} with {b}" for b, n in bins.items())
        + ")"
    )
    return {
        "table": "\n".join(main),
        "sizes": "\n".join(sizes),
        "setup": setup,
        "goals": goals(runs, data["variants"]),
    }


def _mean(v: list[Any]) -> float:
    v = [x for x in v if x is not None]
    return statistics.mean(v) if v else float("nan")


def goals(runs: dict[str, list[dict[str, Any]]], variants: dict[str, str]) -> str:
    """Issue 22's goals against the study: the best variant without box labels, and --box-loss."""
    base_auc = _mean([r["auc"] for r in runs.get("baseline", [])])
    weak = [n for n in variants if n in runs and "best" in runs[n][0] and "box-loss" not in n]
    if not weak:
        return "-"
    best = max(weak, key=lambda n: _mean([r["single_iou"] for r in runs[n]]))
    rs = runs[best]
    iou = [r["single_iou"] for r in rs]
    sd = statistics.stdev(iou) if len(iou) > 1 else 0.0
    margins = [r["margin"] for r in rs]
    areas = [r["area"] for r in rs]

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        "| goal | target | measured | |",
        "| --- | --- | --- | --- |",
        f"| single-finding IoU of the best block, without box labels (`{best}`) | >= 0.30, sd <= 0.05 | "
        f"{_mean(iou):.3f} ± {sd:.3f} | {mark(_mean(iou) >= 0.30 and sd <= 0.05)} |",
        f"| localization accuracy at IoU 0.3 (`{best}`, single / all findings) | >= 0.5 | "
        f"{_mean([r['single_acc'] for r in rs]):.3f} / {_mean([r['acc_03'] for r in rs]):.3f} | "
        f"{mark(_mean([r['single_acc'] for r in rs]) >= 0.5)} |",
        f"| hit margin over chance at box area <= 0.5, every seed (`{best}`) | >= 0.20 | "
        + ", ".join(f"{m:+.3f} (area {a:.2f})" for m, a in zip(margins, areas, strict=True))
        + f" | {mark(all(m >= 0.2 and a <= 0.5 for m, a in zip(margins, areas, strict=True)))} |",
        f"| macro AUC (`{best}`) against the no-MXA baseline | >= {base_auc - 0.01:.3f} | "
        f"{_mean([r['auc'] for r in rs]):.3f} | {mark(_mean([r['auc'] for r in rs]) >= base_auc - 0.01)} |",
    ]
    for sup_name in (n for n in variants if "box-loss" in n and n in runs and "best" in runs[n][0]):
        sup = runs[sup_name]
        small = _mean([r["side <= 0.15"] for r in sup])
        whole = _mean([r["single_iou"] for r in sup])
        rows.append(
            f"| with box labels (`{sup_name}`): IoU of findings with side <= 0.15 | >= 0.4 | {small:.3f} | "
            f"{mark(small >= 0.4)} |"
        )
        rows.append(
            f"| with box labels (`{sup_name}`): single-finding IoU | >= 0.5 | {whole:.3f} | "
            f"{mark(whole >= 0.5)} |"
        )
    return "\n".join(rows)


def tables_02(data: dict[str, Any]) -> str:
    """The 0.2 study's table (min box side 0.25, 3 epochs), kept for the record."""
    rows = [
        "| variant | seeds | macro AUC | best small-box hit margin | mean box area "
        "| single-finding IoU (best block) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in data["runs"]:
        loc = r["localization"]
        s: dict[str, Any] = {"auc": r["macro_auc"]}
        if loc:
            small = [v["hit_rate"] - v["random_hit_rate"] for v in loc.values() if v["mean_box_area"] <= 0.5]
            s["margin"] = max(small) if small else None
            s["area"] = statistics.mean(v["mean_box_area"] for v in loc.values())
            s["single"] = max(r["single_finding_iou"].values())
        runs.setdefault(r["variant"], []).append(s)
    for name in data["variants"]:
        rs = runs.get(name)
        if not rs:
            continue
        rows.append(
            f"| {name} | {len(rs)} | {_ms([r['auc'] for r in rs])} | {_ms([r.get('margin') for r in rs])} | "
            f"{_ms([r.get('area') for r in rs], 2)} | {_ms([r.get('single') for r in rs])} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the page is in step; exit 1 if not")
    args = ap.parse_args()
    old = PAGE.read_text()
    values = tables(json.loads(RESULTS.read_text()))
    values["table02"] = tables_02(json.loads(RESULTS_02.read_text()))
    new = render(old, "study", values)
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
