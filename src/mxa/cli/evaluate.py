"""``mxa eval`` and ``mxa report``: a checkpoint's metrics, and runs aggregated over seeds."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mxa.cli import _decisions
from mxa.cli._common import bounded, declare_io, eval_figure, write_json
from mxa.data.labels import POLICIES
from mxa.data.spec import SCHEMES
from mxa.metrics.classification import SCALAR_METRICS
from mxa.utils.format import fmt

__all__ = ["add_parsers"]

log = logging.getLogger(__name__)

_METRIC_NAMES = {
    "macro_auc": "macro AUC (defined labels)",
    "micro_auc": "micro AUC (pooled)",
    "competition_auc": "competition AUC (5 labels)",
    "f1_micro": "F1 micro @0.5",
    "f1_macro": "F1 macro @0.5",
    "accuracy": "accuracy @0.5",
}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: AUC table, CIs, ROC curves, ROI localization",
        description=(
            "Evaluate a model of ours on phantom validation images or CheXpert's valid.csv: per-label AUC "
            "with bootstrap 95% CIs, macro/micro/competition AUC, F1 and accuracy at 0.5, and for MXA models "
            "how often each block's box lands on a planted finding against area-matched chance. Also ECE and "
            "Brier score; --thresholds picks per-label operating points (sensitivity, specificity, PPV, NPV "
            "with CIs), --calibrate fits temperature/Platt scaling, --save-model keeps both. Writes the "
            "--json first, then the ROC figure and the reliability diagram to --output (a figure that "
            "cannot be written is a warning)."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a last.pt/best.pt written by `mxa train`, or an exported .safetensors",
    )
    p.add_argument(
        "--data",
        default="phantom",
        help="'phantom', 'phantom-small', <scheme>:<root> "
        f"({', '.join(SCHEMES[1:])}: each set's test split or the run's held-out patients) or several "
        "joined by '+', reported per set and pooled (default phantom)",
    )
    p.add_argument(
        "--val-samples", type=bounded(int, 1), default=500, help="phantom images to evaluate on (default 500)"
    )
    p.add_argument(
        "--seed",
        type=bounded(int, 0),
        default=None,
        help="phantom seed of the test images (default: the run's seed + 2; the run trained on its seed and "
        "validated on seed + 1)",
    )
    p.add_argument(
        "--loc-block",
        default=None,
        metavar="NAME",
        help="the MXA box set `detection` reports: a block (stages.1.blocks.0) or its per-label boxes "
        "(stages.1.blocks.0/labels); default the best AP at IoU 0.3 on the run's validation split (not on "
        "the evaluated images)",
    )
    p.add_argument(
        "--policy",
        choices=POLICIES,
        default=None,
        help="uncertainty policy (default: the run's)",
    )
    p.add_argument(
        "--bootstrap",
        type=bounded(int, 0),
        default=200,
        help="bootstrap resamples for the 95%% CIs (default 200; 0 = none)",
    )
    p.add_argument("--batch-size", type=bounded(int, 1), default=64, help="images per batch (default 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", default=None, help="write all metrics to this JSON file")
    p.add_argument(
        "--output",
        default=None,
        help="folder for the figures that --roc/--reliability do not name elsewhere (default: a new folder "
        "mxa-eval/<checkpoint>-<date>-<time> per evaluation, so a rerun with other flags neither replaces "
        "nor is blocked by an earlier one's figures)",
    )
    p.add_argument("--roc", default=None, help="ROC-curve PNG (default OUTPUT/roc.png)")
    _decisions.add_eval_arguments(p)
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not the EMA weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    declare_io(
        p,
        inputs=("checkpoint", "data", "thresholds"),
        outputs=("json", "roc", "reliability", "save_model", "output"),
        folders=("output",),
        in_folder={"roc": ("output", "roc.png"), "reliability": ("output", "reliability.png")},
        defaults={"output": eval_folder},
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "report",
        help="aggregate runs (seeds) into mean and 95%% CI per metric",
        description=(
            "Read each run folder's metrics.jsonl, take its best epoch by validation macro AUC, and print "
            "the "
            "mean and Student-t 95% CI over the runs of every metric and per-label AUC."
        ),
    )
    p.add_argument(
        "runs",
        nargs="+",
        help="run folders (each with metrics.jsonl), or experiment folders of mxa ablate / mxa demo (their "
        "<variant>/seed<k> runs); runs are grouped by variant (their folder's parent)",
    )
    p.add_argument(
        "--json",
        default=None,
        help="write the aggregate to this JSON file ({variant: aggregate} when there are several variants)",
    )
    p.add_argument(
        "--curves",
        default=None,
        help="draw every run's learning curves (training loss, validation macro AUC, MXA box area per "
        "block, over epochs) to this PNG",
    )
    p.add_argument(
        "--no-ema", action="store_true", help="use the raw model's validation metrics, not the EMA's"
    )
    declare_io(p, inputs=("runs",), outputs=("json", "curves"))
    p.set_defaults(func=cmd_report)


def eval_folder(ns: argparse.Namespace, root: str = "mxa-eval") -> str:
    """``mxa-eval/<checkpoint>-<date>-<time>``: a folder of its own for every evaluation (never one that
    exists), named after what was evaluated."""
    import re
    import time

    src = str(ns.checkpoint)
    if src.startswith(("hf-hub:", "local-dir:")):
        label = src.split(":", 1)[1]
    else:
        label = f"{Path(src).parent.name}-{Path(src).stem}" if Path(src).parent.name else Path(src).stem
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.") or "model"
    base = Path(root) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return str(folder)


def cmd_eval(ns: argparse.Namespace) -> int:
    from mxa.data.combine import build_eval_dataset
    from mxa.evaluate import evaluate_model
    from mxa.files.checkpoint import load_checkpoint
    from mxa.files.load import load_model
    from mxa.utils.runtime import NonFiniteError, resolve_device

    _decisions.check_args(ns)
    device = resolve_device(ns.device)
    model = load_model(ns.checkpoint, use_ema=not ns.no_ema)
    run_cfg = load_checkpoint(ns.checkpoint).get("config", {}) if Path(ns.checkpoint).suffix == ".pt" else {}
    policy = ns.policy or run_cfg.get("policy", "ones")
    run_seed = run_cfg.get("seed", 0)
    from mxa.predict import warn_if_synthetic

    warn_if_synthetic(model, ns.data)
    seed = run_seed + 2 if ns.seed is None else ns.seed
    ds = build_eval_dataset(
        ns.data, model, policy=policy, samples=ns.val_samples, seed=seed, split_seed=run_seed
    )
    block, chosen_on = _loc_block(ns, model.to(device), ds, policy, run_seed, device)
    typed, preds = evaluate_model(
        model,
        ds,
        ns.batch_size,
        device,
        n_bootstrap=ns.bootstrap,
        progress=not ns.no_progress,
        loc_block=block,
        loc_chosen_on=chosen_on,
    )
    metrics: dict[str, Any] = dict(typed)  # the JSON of --json: decisions and per-set results join it
    metrics.update(
        checkpoint=str(ns.checkpoint),
        data=ns.data,
        model=getattr(model, "pretrained_cfg", {}).get("architecture"),
    )
    if metrics.get("n_nonfinite"):
        # a broken model: its scores and boxes are NaN/inf, so no metric, threshold, calibration or figure
        if ns.json:
            print(f"metrics: {write_json(ns.json, metrics)}")
        raise NonFiniteError(
            f"{ns.checkpoint} gives non-finite scores ({metrics['n_nonfinite']} of {preds['probs'].numel()}):"
            " its weights are broken (a diverged run?), so nothing was measured; evaluate another checkpoint"
        )
    _per_dataset(metrics, preds, ds, ns.bootstrap)
    rule, cal_probs = _decisions.eval_decisions(ns, model, metrics, preds)
    print_eval_table(metrics, f"evaluation of {ns.checkpoint} on {ns.data} ({metrics['n_images']} images)")
    _decisions.print_decisions(metrics)
    if ns.json:
        print(f"\nmetrics: {write_json(ns.json, metrics)}")
    _decisions.save_model(ns, rule)
    _roc_figure(ns, preds)
    _decisions.reliability_figure(ns, preds, cal_probs, list(metrics["per_label_auc"]))
    return 0


def _loc_block(
    ns: argparse.Namespace, model: Any, ds: Any, policy: str, run_seed: int, device: Any
) -> tuple[str | None, str | None]:
    """The box set to report and where it was chosen: ``--loc-block``, else the best on the run's validation
    split (when it has boxes and is not the evaluated set itself), else (None, None): the evaluated set."""
    from mxa.data.combine import build_eval_dataset
    from mxa.evaluate import choose_loc_block
    from mxa.models.hooks import has_rois

    if ns.loc_block is not None:
        return ns.loc_block, None
    if not has_rois(model) or not getattr(ds.base, "has_boxes", True):
        return None, None
    val = build_eval_dataset(
        ns.data, model, policy=policy, samples=ns.val_samples, seed=run_seed + 1, split_seed=run_seed,
        split="validation",
    )  # fmt: skip
    if set(val.ids) & set(ds.ids):
        print("the validation split holds evaluated images: the reported MXA box set is chosen on them")
        return None, None
    block = choose_loc_block(model, val, ns.batch_size, device)
    if block is None:
        return None, None
    which = f"phantom seed {run_seed + 1}" if ns.data.startswith("phantom") else "the run's held-out images"
    return block, f"validation split of {ns.data} ({len(val)} images, {which})"


def _per_dataset(metrics: dict[str, Any], preds: dict[str, Any], ds: Any, bootstrap: int) -> None:
    """Print which observations each set labels; with several sets, add and print each set's metrics."""
    from mxa.data.combine import label_summary
    from mxa.evaluate import metrics_by_source

    summary = label_summary(ds)
    metrics["datasets"] = summary
    print("\nlabels per set (masked: not labelled by the set, never counted as negatives)")
    print(f"{'observation':<28} " + " ".join(f"{n[:14]:>14}" for n in summary))
    for label in next(iter(summary.values()))["labels"]:
        cells = [s["labels"][label] for s in summary.values()]
        print(
            f"{label:<28} " + " ".join(f"{c['positives'] if c['labelled'] else 'masked':>14}" for c in cells)
        )
    per = metrics_by_source(preds, ds, bootstrap)
    if not per:
        return
    metrics["per_dataset"] = per
    for name, m in per.items():
        print_eval_table(dict(m), f"set {name} ({m['n_images']} images)")
    print("\npooled over all sets:")


def _roc_figure(ns: argparse.Namespace, preds: dict[str, Any]) -> None:
    from mxa.viz import plot_roc_curves

    title = f"ROC curves: {Path(ns.checkpoint).parent.name}"
    eval_figure(
        ns,
        "--roc",
        lambda p: plot_roc_curves(preds["probs"], preds["targets"], preds["mask"], p, title=title),
    )


def print_eval_table(metrics: dict[str, Any], title: str) -> None:
    ci = metrics.get("ci", {})
    print(f"\n{title}")
    print(f"{'label':<28} {'AUC':>8}  95% CI              positives")
    print("-" * 68)
    for name, v in metrics["per_label_auc"].items():
        print(f"{name:<28} {fmt(v, ci.get('auc/' + name)):<30} {metrics['n_positive'][name]:>6}")
    print("-" * 68)
    for key in SCALAR_METRICS:
        print(f"{_METRIC_NAMES[key]:<28} {fmt(metrics[key], ci.get(key))}")
    reasons = metrics.get("undefined_reasons") or {n: "one class only" for n in metrics["undefined_labels"]}
    for name, why in reasons.items():
        print(f"undefined: {name} ({why})")
    if metrics.get("n_nonfinite"):
        print(f"warning: {metrics['n_nonfinite']} predicted scores are NaN/inf: the model is broken")
    loc = metrics.get("roi_localization")
    if loc:
        print_localization(loc)
    det = metrics.get("detection")
    if det:
        print_detection(det, loc or {})


def print_localization(loc: dict[str, Any]) -> None:
    """Per MXA box set: hit rate, IoU and pointing game, each beside its area-matched chance; the box's area
    (of the map, and over the finding's), and the share of findings it has a box for."""
    print("\nROI localization (each beside its chance: boxes of the same size placed at random)")
    head = (
        f"{'MXA box set':<26} {'hit':>6} {'chance':>7} {'IoU':>6} {'chance':>7} {'area':>6} {'x find.':>7} "
        f"{'boxed':>6} {'pointing':>9} {'chance':>7}"
    )
    print(head + "\n" + "-" * len(head))
    for name, v in loc.items():
        point = (
            f"{v['pointing_game']:>9.3f} {v['pointing_chance']:>7.3f}"
            if "pointing_game" in v
            else f"{'-':>9} {'-':>7}"
        )
        print(
            f"{name:<26} {v['hit_rate']:>6.3f} {v['random_hit_rate']:>7.3f} "
            f"{v.get('mean_iou', float('nan')):>6.3f} {v.get('random_iou', float('nan')):>7.3f} "
            f"{v['mean_box_area']:>6.3f} {v.get('median_area_ratio', float('nan')):>7.2f} "
            f"{v.get('box_rate', float('nan')):>6.2f} {point}"
        )
    print("(x find.: median box area over the finding's; boxed: share of findings with a box of their label)")


def print_detection(det: dict[str, Any], loc: dict[str, Any]) -> None:
    """Per MXA block: localization accuracy, AP and RoDeO of its boxes as detections."""
    print(
        f"\nDetection (per box set: what a block crops, its label ROIs each for its own finding or its box "
        f"for every finding; <block>/labels: its ROI classifier's box for each finding; {det['n_images']} "
        "images with boxes)"
    )
    head = (
        f"{'MXA box set':<26} {'acc@.1':>7} {'acc@.3':>7} {'acc@.5':>7} {'AP@.3':>7} {'AP@.5':>7} "
        f"{'RoDeO':>7} {'cls':>6} {'loc':>6} {'shape':>6}"
    )
    print(head + "\n" + "-" * len(head))
    for name, v in det["per_block"].items():
        acc = loc.get(name, {}).get("loc_acc", {})  # the same boxes as the AP and RoDeO
        r = v["rodeo"]
        cells = [acc.get(k, float("nan")) for k in ("0.1", "0.3", "0.5")] + [v["ap"]["0.3"], v["ap"]["0.5"]]
        print(
            f"{name:<26} "
            + " ".join(f"{c:>7.3f}" for c in cells)
            + f" {r['total']:>7.3f} {r['classification']:>6.3f} {r['localization']:>6.3f} {r['shape']:>6.3f}"
        )
    print(
        f"top level (`detection` in --json): {det['block']}, chosen by {det['block_chosen_by']} "
        f"({det['block_chosen_on']})"
    )


def cmd_report(ns: argparse.Namespace) -> int:
    from mxa.metrics.report import aggregate_runs, group_runs
    from mxa.train.experiment import PAPER_VARIANTS

    groups = group_runs([Path(r) for r in ns.runs], names={v.folder: v.name for v in PAPER_VARIANTS})
    reps = {name: aggregate_runs(runs, use_ema=not ns.no_ema) for name, runs in groups.items()}
    if len(reps) == 1:
        rep: dict[str, Any] = next(iter(reps.values()))
        print_report(rep)
    else:
        print_groups(reps)
        rep = reps
    if ns.curves:
        from mxa.viz.curves import plot_learning_curves

        print(f"\nlearning curves: {plot_learning_curves(groups, ns.curves, use_ema=not ns.no_ema)}")
    if ns.json:
        write_json(ns.json, rep)
    return 0


def print_groups(reps: dict[str, dict[str, Any]]) -> None:
    """Variants x metrics: mean [95% CI] over each variant's seeds."""
    cols = [("macro_auc", "macro AUC"), ("micro_auc", "micro AUC"), ("competition_auc", "comp. AUC")]
    head = f"{'variant':<14}{'runs':>5}" + "".join(f"{c[1]:>30}" for c in cols)
    print(f"\nmean [95% CI] over seeds\n{head}\n" + "-" * len(head))
    for name, rep in reps.items():
        m = rep["metrics"]
        cells = [fmt(m[k]["mean"], m[k]["ci"]) if k in m else "undefined" for k, _ in cols]
        print(f"{name:<14}{len(rep['runs']):>5}" + "".join(f"{c:>30}" for c in cells))


def print_report(rep: dict[str, Any]) -> None:
    print(f"\n{len(rep['runs'])} run(s): mean [95% CI]")
    print("-" * 56)
    for k, m in rep["metrics"].items():
        print(f"{k:<22} {fmt(m['mean'], m['ci'])}")
    print("-" * 56)
    for n, m in rep["per_label_auc"].items():
        print(f"AUC {n:<26} {fmt(m['mean'], m['ci'])}")
