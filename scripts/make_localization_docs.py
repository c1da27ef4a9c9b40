"""Write the tables of docs/localization.md from benchmarks/results/localization.json (and the earlier
studies' benchmarks/results/localization-0.3.json and localization-0.2.json, kept for the record).

    python scripts/make_localization_docs.py            # rewrite the marked blocks
    python scripts/make_localization_docs.py --check    # exit 1 if the page is out of step (run by the tests)

Per variant and phantom kind, mean ± standard deviation over seeds. Each run's reported box sets (the crop:
what a block refines; the side head: a block's ``/labels`` per-label boxes) were chosen on the study's
validation split and are scored on its test split.
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
RESULTS_03 = ROOT / "benchmarks" / "results" / "localization-0.3.json"
RESULTS_02 = ROOT / "benchmarks" / "results" / "localization-0.2.json"
RESULTS_READOUT = ROOT / "benchmarks" / "results" / "localization-readout.json"
RESULTS_DEBLUR = ROOT / "benchmarks" / "results" / "localization-readout-deblur.json"
RESULTS_READOUT_OCCLUSION = ROOT / "benchmarks" / "results" / "localization-readout-occlusion.json"
RESULTS_EVIDENCE = ROOT / "benchmarks" / "results" / "localization-evidence.json"
PAGE = ROOT / "docs" / "localization.md"
BINS = ("side <= 0.10", "0.10 < side <= 0.20", "side > 0.20", "side <= 0.15")
#: stride of each stage's map in M0 (at 224 px: 14, 7 and 4 cells)
STRIDE = {"0": 16, "1": 32, "2": 64}


def _ms(values: list[Any], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean(values: list[Any]) -> float:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else float("nan")


def _sd(values: list[Any]) -> float:
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def role_summary(run: dict[str, Any], role: str) -> dict[str, Any] | None:
    """The test numbers of a run's box set chosen (on validation) for ``role``: crop or side_head."""
    chosen = (run.get("chosen") or {}).get(role)
    if not chosen:
        return None
    single, loc = chosen["single"], chosen["localization"] or {}
    out = {
        "set": chosen["set"],
        "iou": single["iou"],
        "acc": single["loc_acc_0.3"],
        "ratio": single["median_area_ratio"],
        "box_rate": single["box_rate"],
        "acc_all": (loc.get("loc_acc") or {}).get("0.3"),
        "margin": loc["hit_rate"] - loc["random_hit_rate"] if loc else None,
        "iou_all": loc.get("mean_iou"),
        "chance_iou": loc.get("random_iou"),
        "ap": (chosen.get("ap") or {}).get("0.3"),
        "rodeo": (chosen.get("rodeo") or {}).get("total"),
    }
    out.update({b: single["by_size"].get(b) for b in BINS})
    return out


def _runs(data: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in data["runs"]:
        out.setdefault((r["kind"], r["variant"]), []).append(r)
    return out


def _where(sets: list[str]) -> str:
    names = sorted(set(sets))
    return ", ".join(f"`{n}`" for n in names[:2]) + (f" (+{len(names) - 2})" if len(names) > 2 else "")


def role_table(data: dict[str, Any], kind: str, role: str) -> str:
    rows = [
        "| variant | seeds | macro AUC | box set (chosen on validation) | single-finding IoU | "
        "loc. acc. IoU 0.3 "
        "(single / all) | box area / finding (median) | findings boxed | hit − chance | AP@0.3 | RoDeO |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (k, name), rs in _runs(data).items():
        if k != kind:
            continue
        s = [x for x in (role_summary(r, role) for r in rs) if x]
        auc = _ms([r["macro_auc"] for r in rs])
        if not s:
            rows.append(f"| {name} | {len(rs)} | {auc} |" + " - |" * 8)
            continue

        def col(key: str, s: list[dict[str, Any]] = s) -> list[Any]:
            return [x[key] for x in s]

        rows.append(
            f"| {name} | {len(rs)} | {auc} | {_where(col('set'))} | {_ms(col('iou'))} | "
            f"{_ms(col('acc'), 2)} / "
            f"{_ms(col('acc_all'), 2)} | {_ms(col('ratio'), 1)} | {_ms(col('box_rate'), 2)} | "
            f"{_ms(col('margin'), 2)} | {_ms(col('ap'))} | {_ms(col('rodeo'))} |"
        )
    return "\n".join(rows)


def size_table(data: dict[str, Any], kind: str) -> str:
    rows = [
        "| variant | box set | n | " + " | ".join(f"IoU, {b}" for b in BINS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in BINS) + " |",
    ]
    for (k, name), rs in _runs(data).items():
        if k != kind:
            continue
        bins = (rs[0].get("test") or {}).get("single", {}).get("bins", {})
        n = ", ".join(str(bins.get(b, 0)) for b in BINS[:3])
        for role, label in (("crop", "crop"), ("side_head", "side head")):
            s = [x for x in (role_summary(r, role) for r in rs) if x]
            if s:
                rows.append(
                    f"| {name} | {label} | {n} | " + " | ".join(_ms([x[b] for x in s]) for b in BINS) + " |"
                )
    return "\n".join(rows)


def stage_table(data: dict[str, Any], kind: str, variant: str = "labels", img_size: int = 224) -> str:
    """Every block's crop on the test split (no choice), by finding size: what each stage can fit."""
    rs = _runs(data).get((kind, variant), [])
    per: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        for name, rec in ((r.get("test") or {}).get("single", {}).get("sets", {})).items():
            if not name.endswith("/labels"):
                per.setdefault(name, []).append(rec)
    rows = [
        f"| block | map at {img_size} px | cell (share of the image side) | single-finding IoU | "
        + " | ".join(f"IoU, {b}" for b in BINS[:3])
        + " | box area / finding |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in BINS[:3]) + " | --- |",
    ]
    for name, recs in per.items():
        side = -(-img_size // STRIDE[name.split(".")[1]])  # the map's side: the image's over the stride
        rows.append(
            f"| `{name}` | {side} x {side} | {1 / side:.3f} | {_ms([x['iou'] for x in recs])} | "
            + " | ".join(_ms([x["by_size"].get(b) for x in recs]) for b in BINS[:3])
            + f" | {_ms([x['median_area_ratio'] for x in recs], 1)} |"
        )
    return "\n".join(rows)


def goals(data: dict[str, Any]) -> str:
    """Issue 31's goals: the crop of the default (``labels``), and with box labels."""
    runs = _runs(data)
    rows = ["| goal | phantom kind | target | measured | |", "| --- | --- | --- | --- | --- |"]
    for kind in data["kinds"]:
        s = _crops(runs, kind, "labels")
        if not s:
            continue
        rows.append(_iou_row("the crop, no box labels: single-finding IoU (`labels`)", kind, s))
        half = _crops(runs, kind, "labels-half")
        if half:  # the same crop with --mxa-roi-fraction 0.5, the threshold the read-out analysis chose
            what = "the same, box edges at half maximum (`labels-half`, not the default)"
            rows.append(_iou_row(what, kind, half))
        rows += _fit_rows("localization accuracy at IoU 0.3 (single findings)", "median box area", kind, s)
        rows.append(_small_row("findings of side <= 0.15, no box labels", kind, 0.25, s))
        for variant, round_ in OCCLUSION_ROUNDS.items():
            occ = _crops(runs, kind, variant)
            if not occ:  # image labels only: boxes by occlusion of the previous round, then box training
                continue
            what = f"trained on occlusion boxes (`{variant}`: {round_} rounds, not the default)"
            rows.append(_iou_row(f"the crop, no box labels, {what}: single-finding IoU", kind, occ))
            same = ("the same: localization accuracy at IoU 0.3", "the same: median box area")
            rows += _fit_rows(*same, kind, occ)
            rows.append(_small_row(f"findings of side <= 0.15, no box labels, {what}", kind, 0.25, occ))
            rows.append(
                _auc_row(
                    f"the same: macro AUC (`{variant}`) against the no-MXA baseline", runs, kind, variant
                )
            )
        sup = _crops(runs, kind, "labels+box-loss")
        if sup:
            rows.append(_small_row("findings of side <= 0.15, `--box-loss`", kind, 0.45, sup))
        rows.append(_auc_row("macro AUC against the no-MXA baseline", runs, kind, "labels"))
        rows += _goals_320(runs, kind)
    return "\n".join(rows)


def _auc_row(what: str, runs: dict[tuple[str, str], list[dict[str, Any]]], kind: str, variant: str) -> str:
    """The goal row of a variant's macro AUC: no lower than the no-MXA baseline's minus 0.01."""
    base = _mean([r["macro_auc"] for r in runs.get((kind, "baseline"), [])])
    auc = _mean([r["macro_auc"] for r in runs.get((kind, variant), [])])
    return f"| {what} | {kind} | >= {base - 0.01:.3f} | {auc:.3f} | {_mark(auc >= base - 0.01)} |"


def _crops(
    runs: dict[tuple[str, str], list[dict[str, Any]]], kind: str, variant: str
) -> list[dict[str, Any]]:
    """The chosen crop's test numbers of every run of a variant."""
    return [x for x in (role_summary(r, "crop") for r in runs.get((kind, variant), [])) if x]


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _iou_row(what: str, kind: str, s: list[dict[str, Any]]) -> str:
    """A goal row for the crop's single-finding IoU: >= 0.35 with sd <= 0.05 over the seeds."""
    iou = [x["iou"] for x in s]
    m, sd = _mean(iou), _sd(iou)
    return (
        f"| {what} | {kind} | >= 0.35, sd <= 0.05 | {m:.3f} ± {sd:.3f} | {_mark(m >= 0.35 and sd <= 0.05)} |"
    )


def _fit_rows(acc_what: str, area_what: str, kind: str, s: list[dict[str, Any]]) -> list[str]:
    """Goal rows for the crop's localization accuracy at IoU 0.3 (>= 0.5) and median box area over the
    finding's (within 2x)."""
    acc, ratio = _mean([x["acc"] for x in s]), _mean([x["ratio"] for x in s])
    return [
        f"| {acc_what} | {kind} | >= 0.5 | {acc:.3f} | {_mark(acc >= 0.5)} |",
        f"| {area_what} over the finding's | {kind} | within 2x (0.5-2) | {ratio:.2f} | "
        f"{_mark(0.5 <= ratio <= 2)} |",
    ]


def _small_row(what: str, kind: str, target: float, s: list[dict[str, Any]]) -> str:
    """A goal row for the crop's IoU on findings of side <= 0.15."""
    v = _mean([x["side <= 0.15"] for x in s])
    return f"| {what} | {kind} | IoU >= {target} | {v:.3f} | {_mark(v >= target)} |"


def _goals_320(runs: dict[tuple[str, str], list[dict[str, Any]]], kind: str) -> list[str]:
    """The same goals for the variants at 320 px input (not the default), where the study has them."""
    rows = []
    s = _crops(runs, kind, "labels-320")
    if s:
        rows.append(_iou_row("at 320 px (`labels-320`, not the default): single-finding IoU", kind, s))
        rows.append(_small_row("at 320 px: findings of side <= 0.15, no box labels", kind, 0.25, s))
    sup = _crops(runs, kind, "labels+box-loss-320")
    if sup:
        what = "at 320 px: findings of side <= 0.15, `--box-loss` (`labels+box-loss-320`)"
        rows.append(_small_row(what, kind, 0.45, sup))
    base_runs = runs.get((kind, "baseline-320"), [])
    for name in ("labels-320", "labels+box-loss-320"):
        if base_runs and runs.get((kind, name)):
            base = _mean([r["macro_auc"] for r in base_runs])
            auc = _mean([r["macro_auc"] for r in runs[(kind, name)]])
            rows.append(
                f"| at 320 px: macro AUC of `{name}` against the no-MXA baseline at 320 px "
                f"({len(base_runs)} seeds) | {kind} | >= {base - 0.01:.3f} | {auc:.3f} | "
                f"{_mark(auc >= base - 0.01)} |"
            )
    return rows


def setup(data: dict[str, Any]) -> str:
    cfg = data["config"]
    kinds = "; ".join(
        f"{k}: {v['train_samples']:,} training images, {v['epochs']} epochs" for k, v in data["kinds"].items()
    )
    n_single = {}
    for r in data["runs"]:
        sf = (r.get("test") or {}).get("single")
        if sf:
            n_single.setdefault(r["kind"], sf)
    counts = "; ".join(
        f"{k}: {v['n_images']} with one finding ("
        + ", ".join(f"{n} {b}" for b, n in v["bins"].items() if b != "side <= 0.15")
        + ")"
        for k, v in n_single.items()
    )
    at_320 = (
        " (the `-320` variants at 320 px)" if any(r["variant"].endswith("-320") for r in data["runs"]) else ""
    )
    return (
        f"{cfg['model']} at {cfg['img_size']} px{at_320}, batch {cfg['batch_size']}, lr {cfg['lr']}; "
        f"{kinds}. Every run "
        f"is scored on {data['test']['samples']} test phantoms (seed {data['test']['seed']}) "
        "after its box sets "
        f"were chosen on {data['validation']['samples']} validation phantoms (seed "
        f"{data['validation']['seed']}), "
        f"the same for every run of a kind. Test images with exactly one finding: {counts}"
    )


READOUTS = {
    "bbox": "box around the threshold, 0.7 (today's crop)",
    "bbox+fraction": "box around the threshold, threshold chosen on validation",
    "component": "peak's connected region, 0.7",
    "component+fraction": "peak's connected region, threshold chosen on validation",
}
DEBLUR = {
    "deblur@0": "the block's own box (w0 = 0)",
    "deblur": "deblurred, w0 chosen on validation",
}


def readout_table(
    data: dict[str, Any], readouts: dict[str, str] = READOUTS, chose: str = "thresholds"
) -> str:
    """benchmarks/localization_readout.py: the same label maps read out several ways (test IoU, mean ± sd)."""
    rows = [
        "| phantom kind | variant | seeds | read-out | single-finding IoU | IoU, side <= 0.15 | "
        f"box area / finding | {chose} chosen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in data["runs"]:
        groups.setdefault((r["kind"], r["variant"]), []).append(r)
    for (kind, variant), rs in groups.items():
        seeds = ", ".join(str(r["seed"]) for r in rs)
        for key, what in readouts.items():
            recs = [r[key] for r in rs]
            chosen = ", ".join(x["set"].rsplit("@", 1)[1] for x in recs)
            rows.append(
                f"| {kind} | `{variant}` | {seeds} | {what} | {_ms([x['iou'] for x in recs])} | "
                f"{_ms([x['by_size'].get('side <= 0.15') for x in recs])} | "
                f"{_ms([x['median_area_ratio'] for x in recs], 1)} | {chosen} |"
            )
    return "\n".join(rows)


def evidence_table(data: dict[str, Any]) -> str:
    """benchmarks/localization_evidence.py: occlusion, Grad-CAM and label-map pointing (test, mean ± sd)."""
    rows = [
        "| phantom kind | variant | seeds | p(label): as drawn / finding blurred / control blurred | "
        "Grad-CAM pointing, stage 0 / 1 / 2 | label-map pointing, first block of stage 0 / 1 / 2 (chance) | "
        "label-map peak offset (y, x cells), first block of stage 0 / 1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in data["runs"]:
        groups.setdefault((r["kind"], r["variant"]), []).append(r)
    for (kind, variant), rs in groups.items():
        occ = " / ".join(
            _ms([r["occlusion"]["all"][k] for r in rs], 2) for k in ("original", "finding", "control")
        )
        cam = " / ".join(_ms([r["gradcam"][s]["pointing"] for r in rs], 2) for s in sorted(rs[0]["gradcam"]))
        firsts = sorted(k for k in rs[0]["maps"] if k.endswith(".blocks.0"))

        def stat(block: str, key: str, rs: list[dict[str, Any]] = rs) -> list[float]:
            return [r["maps"][block][key] for r in rs]

        maps = " / ".join(f"{_ms(stat(k, 'pointing'), 2)} ({_mean(stat(k, 'chance')):.2f})" for k in firsts)
        offsets = " / ".join(
            f"{_mean(stat(k, 'offset_y')):+.2f}, {_mean(stat(k, 'offset_x')):+.2f}" for k in firsts[:2]
        )
        seeds = ", ".join(str(r["seed"]) for r in rs)
        rows.append(f"| {kind} | `{variant}` | {seeds} | {occ} | {cam} | {maps} | {offsets} |")
    return "\n".join(rows)


# --- the earlier studies, for the record ------------------------------------------------------------
def table_03(data: dict[str, Any]) -> str:
    """0.3's study (issue 22; the best block chosen on the evaluated images)."""
    rows = [
        "| variant | seeds | macro AUC | single-finding IoU (best block) | loc. acc. IoU 0.3 "
        "(single) | IoU, side <= 0.15 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in data["runs"]:
        single = (r.get("single_finding") or {}).get("blocks") or {}
        s: dict[str, Any] = {"auc": r["macro_auc"]}
        if single:
            best = max(single, key=lambda k: single[k]["iou"])
            s.update(iou=single[best]["iou"], acc=single[best]["loc_acc_0.3"])
            s["small"] = single[best]["by_size"].get("side <= 0.15")
        runs.setdefault(r["variant"], []).append(s)
    for name in data["variants"]:
        rs = runs.get(name, [])
        if rs:
            rows.append(
                f"| {name} | {len(rs)} | {_ms([r['auc'] for r in rs])} | {_ms([r.get('iou') for r in rs])} | "
                f"{_ms([r.get('acc') for r in rs])} | {_ms([r.get('small') for r in rs])} |"
            )
    return "\n".join(rows)


def table_02(data: dict[str, Any]) -> str:
    """0.2's study (min box side 0.25, 3 epochs)."""
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


#: The occlusion variants by round (round 1: the ``labels`` run that draws the first boxes).
OCCLUSION_ROUNDS = {
    "labels+occlusion-boxes": 2,
    "labels+occlusion-boxes-r3": 3,
    "labels+occlusion-boxes-f0.8": 2,
    "classbox+occlusion-boxes": 2,
    "classbox+occlusion-boxes-sg": 2,
    "classbox+occlusion-boxes-g0.1": 2,
    "classbox+occlusion-boxes-s2": 2,
}


def occlusion_table(data: dict[str, Any]) -> str:
    """Per round and seed of the occlusion variants: how well the boxes drawn by the previous round fit the
    training images' true boxes (read for the record, never used), and what the crop trained on them then
    reaches on the test split."""
    rows = [
        "| variant | round | seed | boxes drawn by the previous round, on the training images: "
        "IoU / side <= 0.15 / loc. acc. / area / boxed | the crop on the test split: IoU / "
        "side <= 0.15 / loc. acc. / area | macro AUC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def cells(values: list[float | None], digits: tuple[int, ...]) -> str:
        return " / ".join("-" if v is None else f"{v:.{d}f}" for v, d in zip(values, digits, strict=True))

    for variant, round_ in OCCLUSION_ROUNDS.items():
        runs = sorted((r for r in data["runs"] if r["variant"] == variant), key=lambda r: r["seed"])
        for r in runs:
            box, crop = r.get("occlusion_boxes") or {}, role_summary(r, "crop") or {}
            fit = [box.get("iou"), (box.get("by_size") or {}).get("side <= 0.15"), box.get("loc_acc_0.3")]
            fit += [box.get("median_area_ratio"), box.get("box_rate")]
            got = [crop.get("iou"), crop.get("side <= 0.15"), crop.get("acc"), crop.get("ratio")]
            rows.append(
                f"| `{variant}` | {round_} | {r['seed']} | {cells(fit, (3, 3, 2, 1, 2))} | "
                f"{cells(got, (3, 3, 2, 1))} | {r['macro_auc']:.3f} |"
            )
    return "\n".join(rows) if len(rows) > 2 else "(no runs of these variants in the results yet)"


def tables(data: dict[str, Any]) -> dict[str, str]:
    out = {"setup": setup(data), "goals": goals(data)}
    for kind in data["kinds"]:
        key = kind.replace("-", "_")
        out[f"crop_{key}"] = role_table(data, kind, "crop")
        out[f"side_{key}"] = role_table(data, kind, "side_head")
        out[f"sizes_{key}"] = size_table(data, kind)
        out[f"stages_{key}"] = stage_table(data, kind)
    out["stages_phantom_small_320"] = stage_table(data, "phantom-small", "labels-320", 320)
    out["occlusion"] = occlusion_table(data)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the page is in step; exit 1 if not")
    args = ap.parse_args()
    old = PAGE.read_text()
    values = tables(json.loads(RESULTS.read_text()))
    values["table03"] = table_03(json.loads(RESULTS_03.read_text()))
    values["table02"] = table_02(json.loads(RESULTS_02.read_text()))
    values["readout"] = readout_table(json.loads(RESULTS_READOUT.read_text()))
    values["deblur"] = readout_table(json.loads(RESULTS_DEBLUR.read_text()), DEBLUR, "w0")
    values["readout_occlusion"] = readout_table(json.loads(RESULTS_READOUT_OCCLUSION.read_text()))
    values["evidence"] = evidence_table(json.loads(RESULTS_EVIDENCE.read_text()))
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
