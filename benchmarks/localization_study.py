"""Does the MXA crop find the finding? The study behind docs/localization.md, in one command.

    python benchmarks/localization_study.py     # 20 variants, 2 kinds, 3 seeds: most of a day on 2 cores
    python benchmarks/localization_study.py --variants zoom labels --kinds phantom --seeds 1 --epochs 1
    python scripts/make_localization_docs.py    # the tables in docs/localization.md

M0 at 224 px (the ``-320`` variants at 320 px) on two phantom kinds: ``phantom`` (CheXpert's label patterns,
mostly several findings of all sizes) and ``phantom-small`` (at most one finding per image, box side
0.05-0.20). Every variant is trained with identical settings for seeds 0, 1 and 2, then evaluated on two
held-out sets drawn with their own seeds: a validation split, on which each run's reported box set is chosen
(the block, or a side head's per-label boxes, with the best single-finding IoU), and a test split, on which
everything is scored. Per box set it records the single-finding IoU and localization accuracy, by the
finding's size in NIH's strata (side <= 0.10, 0.10-0.20, > 0.20), the median area of the box over the
finding's, the hit rate against area-matched chance, and, for the chosen sets, AP and RoDeO. The crop's own
numbers (what the block refines: its box, or its label ROIs) are kept apart from the side heads'
(``<block>/labels``). Nothing is tuned to the answer: the variants, seeds, sets and settings are fixed here
before the study runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import mxa
from mxa.data.chexpert import read_box_file
from mxa.data.combine import build_eval_dataset
from mxa.evaluate import LABEL_BOXES, _with_label_boxes, evaluate_model
from mxa.metrics.detection import detection_metrics
from mxa.metrics.localization import overlaps, roi_localization
from mxa.train.boxes import occlusion_box_file
from mxa.train.config import TrainConfig
from mxa.train.experiment import train_or_continue
from mxa.utils.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

#: The single box with per-label boxes, trained on box labels (classbox+box-loss and the variants from it).
_CLASSBOX_BOXES: dict[str, Any] = dict(
    mxa_rois=0, mxa_mode="paste", roi_mil=1.0, mxa_class_boxes=True, box_loss=1.0
)

#: name -> (description, TrainConfig changes)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("no MXA (the AUC reference)", dict(mxa=False)),
    "zoom": (
        "the paper's MXA: one box per block from its box head, the crop resized to the whole map",
        dict(mxa_rois=0, mxa_mode="zoom", roi_mil=0.0, mxa_class_boxes=False),
    ),
    "classbox+mil": (
        "0.3's default: one box per block, pasted back; a side head of per-label boxes trained by the ROI "
        "objective",
        dict(mxa_rois=0, mxa_mode="paste", roi_mil=1.0, mxa_class_boxes=True),
    ),
    "labels": (
        "0.4's default: the block crops the peak boxes of its 2 highest-peaking label maps, the ROI "
        "objective and the coarse-to-fine guide",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0),
    ),
    "labels-r3": (
        "labels with 3 ROIs per block instead of 2 (more findings get a box of their own label)",
        dict(mxa_rois=3, roi_mil=1.0, roi_guide=1.0),
    ),
    "labels-half": (
        "labels with ROI edges at the half maximum (--mxa-roi-fraction 0.5): the threshold the validation "
        "split chose in every phantom run of the read-out analysis (benchmarks/localization_readout.py)",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, mxa_roi_fraction=0.5),
    ),
    "labels-320": (
        "labels at 320 px input instead of 224: a small finding covers twice the pixels and stage 0's map is "
        "20 x 20 (a cell is 0.05 of the image side, 0.071 at 224)",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, img_size=320),
    ),
    "labels+box-loss-320": (
        "labels+box-loss at 320 px input",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=1.0, img_size=320),
    ),
    "labels+box-loss-0.1": (
        "labels+box-loss with the box labels of a tenth of the training images (--box-fraction 0.1; the "
        "others train from image labels alone): the issue's untried 'few boxed images beside many labelled'",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=1.0, box_fraction=0.1),
    ),
    "labels+box-loss-0.1w": (
        "labels+box-loss-0.1 with the box term weighted by the boxed share (--box-loss 0.1 "
        "--box-fraction 0.1): the box term is averaged over the few boxed images of a batch, so at weight 1 "
        "it pulled the maps as hard as with every box; the weight was fixed as the share before the runs, "
        "not tuned",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=0.1, box_fraction=0.1),
    ),
    "baseline-320": ("no MXA at 320 px (the AUC reference of labels-320)", dict(mxa=False, img_size=320)),
    "labels-first": (
        "labels with MXA in the first block of each stage only (--mxa-per-stage first: 3 of M0's 6 blocks, 3 "
        "of M5's 8): the blocks the validation split chose for labels in 4 of its 6 runs; expected before "
        "the runs to save a third to a half of the latency MXA adds (issue 34)",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, mxa_per_stage="first"),
    ),
    "labels-noguide": (
        "labels without the coarse-to-fine guide",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=0.0),
    ),
    "classbox+box-loss": (
        "classbox+mil with box labels: GIoU of every label's box to its true box (weight 1)",
        _CLASSBOX_BOXES,
    ),
    "labels+box-loss": (
        "labels with box labels: every label map high inside its true box, low outside (weight 1)",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=1.0),
    ),
    "labels+occlusion-boxes": (
        "labels+box-loss without box labels: the boxes are drawn by occlusion of the same seed's labels run "
        "on its own training images (mxa.viz.cam.occlusion_boxes: where hiding the image lowers the label's "
        "probability), then a second run trains on them (--box-file)",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=1.0),
    ),
    "labels+occlusion-boxes-r3": (
        "labels+occlusion-boxes, a third round: the boxes are drawn by occlusion of the same seed's "
        "labels+occlusion-boxes run (round 2), and a third run trains on them",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=1.0),
    ),
    "labels+occlusion-boxes-f0.8": (
        "labels+occlusion-boxes with box edges at 0.8 of the way from each map's mean to its peak "
        "(--mxa-roi-fraction 0.8) instead of 0.7: added after the read-out analysis of "
        "labels+occlusion-boxes (benchmarks/results/localization-readout-occlusion.json), whose validation "
        "split chose 0.8 in all "
        "three seeds; fixed before the runs",
        dict(mxa_rois=2, roi_mil=1.0, roi_guide=1.0, box_loss=1.0, mxa_roi_fraction=0.8),
    ),
    "classbox+occlusion-boxes": (
        "classbox+box-loss without box labels: the block's own box (and every label's) trained by GIoU "
        "to the boxes labels+occlusion-boxes trains on (the same file, drawn by occlusion of the same "
        "seed's labels run): added after labels+occlusion-boxes, whose crop came out 2.7x the finding "
        "from boxes 1.4-1.5x it, because with true boxes classbox+box-loss's crop fitted small findings "
        "best (1.2x)",
        _CLASSBOX_BOXES,
    ),
    "classbox+occlusion-boxes-sg": (
        "classbox+occlusion-boxes with the box heads behind a stop-gradient (--mxa-box-grad 0): no "
        "gradient through the boxes (the GIoU's, the task's through the crop) reaches the backbone; added "
        "after classbox+occlusion-boxes crossed every crop goal and lost 0.04 of macro AUC, to test whether "
        "the gradient through its boxes costs it",
        dict(_CLASSBOX_BOXES, mxa_box_grad=0.0),
    ),
    "classbox+occlusion-boxes-g0.1": (
        "classbox+occlusion-boxes with a tenth of the gradient through the boxes reaching the backbone "
        "(--mxa-box-grad 0.1): added after the stop-gradient (0) kept more AUC and lost the fit, to see "
        "whether a share of it keeps both; 0.1 fixed before the runs, not tuned",
        dict(_CLASSBOX_BOXES, mxa_box_grad=0.1),
    ),
    "classbox+occlusion-boxes-s2": (
        "classbox+occlusion-boxes with MXA in the last stage only (--mxa-stages 2): added after validation "
        "chose a stage-2 block in all nine runs of the three classbox+occlusion-boxes variants, to test "
        "whether the AUC cost comes from the box losses of the earlier stages' blocks, whose boxes are not "
        "the crop scored; fixed before the runs",
        dict(_CLASSBOX_BOXES, mxa_stages=[2]),
    ),
}

#: Variants run on some phantom kinds only (the rest run on every kind; labels+occlusion-boxes and its -f0.8
#: ran on phantom-small first, then on phantom): the questions they answer are about
#: small findings, and at 320 px a run costs about twice a 224 px one (occlusion boxes: ~20 min more a run).
ONLY_ON: dict[str, tuple[str, ...]] = {
    name: ("phantom-small",)
    for name in (
        "labels-320",
        "labels+box-loss-320",
        "labels+box-loss-0.1",
        "labels+box-loss-0.1w",
        "baseline-320",
        "labels+occlusion-boxes-r3",
        "classbox+occlusion-boxes",
        "classbox+occlusion-boxes-sg",
        "classbox+occlusion-boxes-g0.1",
        "classbox+occlusion-boxes-s2",
    )
}

#: Per phantom kind: training images and epochs (the small kind needs more to learn small findings at all:
#: development runs, seed 100, reached a baseline macro AUC of 0.75 with 1,600 images before its findings
#: were drawn brighter, and the label maps did not localize with 800), and the seeds of its two held-out sets.
KINDS: dict[str, dict[str, Any]] = {
    "phantom": dict(train_samples=800, epochs=8),
    "phantom-small": dict(train_samples=1600, epochs=12),
}
VALIDATION = dict(seed=3001, samples=400)
TEST = dict(seed=4001, samples=800)

BASE = TrainConfig(
    data="phantom",
    model="efficientvit_ml_m0",
    img_size=224,
    val_samples=100,  # the per-epoch validation; the study's own splits are VALIDATION and TEST
    batch_size=32,
    lr=2e-3,
    min_lr=1e-5,
    warmup_epochs=1,
    cooldown_epochs=0,
    ema_decay=0.0,
    class_balance=False,
    progress=False,
)

#: NIH's size strata of a finding's box side (square root of its area, as a share of the image side), and
#: the issue's "small" (side <= 0.15), which overlaps them.
SIZE_BINS = {
    "side <= 0.10": (0.0, 0.10),
    "0.10 < side <= 0.20": (0.10, 0.20),
    "side > 0.20": (0.20, 1.01),
    "side <= 0.15": (0.0, 0.15),
}


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def single_finding(boxes: dict[str, torch.Tensor], true: torch.Tensor) -> dict[str, Any]:
    """Over the images with exactly one finding: per box set its IoU with that finding (0 where the set has
    no box for the finding's label), localization accuracy at IoU 0.3, median area ratio, and IoU by size."""
    present = ~torch.isnan(true[..., 0])
    one = present.sum(1) == 1
    if not bool(one.any()):
        return {}
    label = present[one].float().argmax(1)
    rows = torch.arange(int(one.sum()))
    t = true[one][rows, label]  # (M, 4): the one true box
    side = _area(t).sqrt()
    out: dict[str, Any] = {"n_images": int(one.sum()), "bins": {}, "sets": {}}
    out["bins"] = {b: int(((side > lo) & (side <= hi)).sum()) for b, (lo, hi) in SIZE_BINS.items()}
    for name, b in boxes.items():
        pred = b[one][rows, label] if b.ndim == 3 else b[one]  # (M, 4), NaN: the label has no box
        boxed = torch.isfinite(pred).all(1)
        iou = torch.where(boxed, overlaps(pred.nan_to_num(0.0), t[:, None])[0][:, 0], torch.zeros(()))
        ratio = _area(pred[boxed]) / _area(t[boxed]).clamp(min=1e-9)
        rec: dict[str, Any] = {
            "iou": float(iou.mean()),
            "loc_acc_0.3": float((iou >= 0.3).float().mean()),
            "median_area_ratio": float(ratio.median()) if ratio.numel() else None,
            "box_rate": float(boxed.float().mean()),
            "by_size": {},
        }
        for bin_name, (lo, hi) in SIZE_BINS.items():
            sel = (side > lo) & (side <= hi)
            if bool(sel.any()):
                rec["by_size"][bin_name] = float(iou[sel].mean())
        out["sets"][name] = rec
    return out


def _evaluate(model: torch.nn.Module, kind: str, split: dict[str, int]) -> dict[str, Any]:
    ds = build_eval_dataset(kind, model, samples=split["samples"], seed=split["seed"])
    metrics, preds = evaluate_model(model, ds, batch_size=64, n_bootstrap=0)
    out: dict[str, Any] = {"macro_auc": metrics["macro_auc"]}
    if "rois" in preds:
        boxes = _with_label_boxes(preds)
        out["single"] = single_finding(boxes, preds["true_boxes"])
        loc = roi_localization(boxes, preds["true_boxes"], per_label=False)
        out["localization"] = {k: {m: v[m] for m in v if m != "per_label"} for k, v in loc.items()}
        out["_preds"] = (boxes, preds)
    return out


def _choose(single: dict[str, Any], crop: bool) -> str | None:
    """The box set with the best single-finding IoU: among the blocks' crops, or among the side heads."""
    sets = {k: v for k, v in single.get("sets", {}).items() if k.endswith(LABEL_BOXES) != crop}
    return max(sets, key=lambda k: sets[k]["iou"]) if sets else None


#: Variants whose box labels are not the data's but drawn by occlusion of the same seed's run of another
#: variant (the value) on its own training images: the file :func:`mxa.train.boxes.occlusion_box_file` writes.
#: Image labels only, as long as the chain starts at a variant without box labels.
FROM_OCCLUSION = {
    "labels+occlusion-boxes": "labels",
    "labels+occlusion-boxes-r3": "labels+occlusion-boxes",
    "labels+occlusion-boxes-f0.8": "labels",
    "classbox+occlusion-boxes": "labels",
    "classbox+occlusion-boxes-sg": "labels",
    "classbox+occlusion-boxes-g0.1": "labels",
    "classbox+occlusion-boxes-s2": "labels",
}


def box_file_quality(path: Path, kind: str, seed: int, model: torch.nn.Module) -> dict[str, Any]:
    """How well a box file of the training images of ``kind`` and ``seed`` (drawn at ``model``'s size) fits
    their true boxes, for the record only: :func:`single_finding` over the images with one finding
    (``box_rate``: the share with a box)."""
    ds = build_eval_dataset(kind, model, samples=KINDS[kind]["train_samples"], seed=seed)
    true = torch.stack([ds[i][4] for i in range(len(ds))])
    return single_finding({"occlusion": read_box_file(path, ds.ids)}, true)["sets"]["occlusion"]


def _config(name: str, kind: str, seed: int, output: Path, epochs: int | None) -> TrainConfig:
    settings = dict(KINDS[kind], **({"epochs": epochs} if epochs else {}))
    cfg = dataclasses.replace(BASE, data=kind, seed=seed, output=str(output / kind / name / f"seed{seed}"))
    if name in FROM_OCCLUSION:  # in the folder of the run that draws it, for every variant trained on it;
        # kept once drawn: delete it and the folders of the runs trained on it to draw it again
        source = output / kind / FROM_OCCLUSION[name] / f"seed{seed}"
        settings["box_file"] = str(source / "occlusion_boxes.json")
    return dataclasses.replace(cfg, **settings, **VARIANTS[name][1])


def _refuse_stale(box_file: Path, source: Path, run: Path) -> None:
    """Stop where a box file is older than the run that draws it, or a run trained on it is older than the
    file or outlived it: a run's settings name its box file by path only, so files' times are the record
    (copy run folders with ``cp -p`` or ``rsync -a``, which keep them)."""
    drawn = box_file.stat().st_mtime if box_file.is_file() else None
    if drawn is not None and source.is_file() and source.stat().st_mtime > drawn:
        raise SystemExit(f"{box_file} was drawn by an earlier run than {source}: delete it to draw it again")
    if run.is_file() and (drawn is None or drawn > run.stat().st_mtime):
        raise SystemExit(
            f"{run.parent} holds a run trained on a box file that is gone or was drawn again since: delete "
            "the folder to retrain it on today's boxes"
        )


def _trained(
    name: str, kind: str, seed: int, output: Path, epochs: int | None, record: bool = True
) -> dict[str, Any]:
    """Train the run of ``name`` (kept if trained) after what it needs: for a variant of
    :data:`FROM_OCCLUSION`, its source's run (the same, recursively) and the box file drawn from it. Returns
    the record's box-file entries (``occlusion_boxes``, ``box_minutes``; with ``record``) and
    ``train_minutes``."""
    cfg, rec = _config(name, kind, seed, output, epochs), {}
    if name in FROM_OCCLUSION:
        source = _config(FROM_OCCLUSION[name], kind, seed, output, epochs)
        _trained(FROM_OCCLUSION[name], kind, seed, output, epochs, record=False)
        box_file, run = Path(str(cfg.box_file)), Path(cfg.output) / "last.pt"
        _refuse_stale(box_file, Path(source.output) / "last.pt", run)
        if not box_file.is_file():
            t0 = time.perf_counter()
            box_file.parent.mkdir(parents=True, exist_ok=True)
            occlusion_box_file(Path(source.output) / "last.pt", box_file, batch_size=512, progress=False)
            rec["box_minutes"] = (time.perf_counter() - t0) / 60
        if record:
            source_model = mxa.load_model(Path(source.output) / "last.pt")
            rec["occlusion_boxes"] = box_file_quality(box_file, kind, seed, source_model)
    t0 = time.perf_counter()
    train_or_continue(cfg)  # a run already trained with these settings is kept: re-evaluation is cheap
    rec["train_minutes"] = (time.perf_counter() - t0) / 60
    return rec


def run_one(name: str, kind: str, seed: int, output: Path, epochs: int | None) -> dict[str, Any]:
    cfg = _config(name, kind, seed, output, epochs)
    rec: dict[str, Any] = {"variant": name, "kind": kind, "seed": seed}
    rec.update(_trained(name, kind, seed, output, epochs))
    model = mxa.load_model(Path(cfg.output) / "last.pt")
    val, test = _evaluate(model, kind, VALIDATION), _evaluate(model, kind, TEST)
    rec["macro_auc"] = test["macro_auc"]
    if "single" not in test:
        return rec
    boxes, preds = test.pop("_preds")
    rec["chosen"] = {}
    for role, crop in (("crop", True), ("side_head", False)):
        chosen = _choose(val["single"], crop)
        if chosen is None:
            continue
        det = detection_metrics(
            {chosen: boxes[chosen]}, preds["probs"], preds["true_boxes"], preds["targets"]
        )
        rec["chosen"][role] = {
            "set": chosen,
            "chosen_by": f"validation (phantom seed {VALIDATION['seed']}, {VALIDATION['samples']} images)",
            "single": test["single"]["sets"][chosen],
            "localization": test["localization"].get(chosen),
            "ap": det.get("ap"),
            "rodeo": det.get("rodeo"),
        }
    rec["test"] = {k: v for k, v in test.items() if k != "macro_auc"}  # every box set on the test split
    return rec


def trained_runs(root: Path, variants: Sequence[str]) -> Iterator[tuple[str, str, int, Path]]:
    """(kind, variant, seed, run folder) of every finished run under ``root`` (``KIND/VARIANT/seedN``), in the
    order of :data:`KINDS`, ``variants`` and seeds: what the post-hoc analyses of these runs read."""
    for kind in KINDS:
        for variant in variants:
            for run in sorted((root / kind / variant).glob("seed*")):
                if (run / "last.pt").is_file():
                    yield kind, variant, int(run.name[4:]), run


def analyse_runs(
    doc: str,
    results_name: str,
    variants: list[str],
    analyse: Callable[[Path, str], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    header: dict[str, Any],
    figure: Callable[[Path, Path], None] | None = None,
) -> int:
    """The command line of a post-hoc analysis: ``analyse(run folder, kind)`` on every run of ``--variants``
    under ``--runs``, each described by ``describe(record)`` as it ends; ``header`` and the records are
    written to ``--json`` (default ``benchmarks/results/<results_name>``). With ``figure``, ``--figure PNG``
    calls ``figure(runs folder, PNG)`` instead."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", default="runs/localization-study-v4", help="the study's run folders")
    ap.add_argument("--variants", nargs="+", default=variants, help="the study's variants to analyse")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / results_name), help="results")
    if figure is not None:
        ap.add_argument("--figure", metavar="PNG", help="draw the analysis's figure to PNG instead")
    args = ap.parse_args()
    if figure is not None and args.figure:
        figure(Path(args.runs), Path(args.figure))
        print(f"figure: {args.figure}")
        return 0
    results = []
    for kind, variant, seed, run in trained_runs(Path(args.runs), args.variants):
        print(f"--- {kind}, {variant}, seed {seed}", flush=True)
        rec = analyse(run, kind)
        results.append({"kind": kind, "variant": variant, "seed": seed, **rec})
        print(describe(rec), flush=True)
    atomic_write_text(Path(args.json), json.dumps({**header, "runs": results}, indent=1))
    print(f"results: {args.json}")
    return 0


def _write(path: Path, results: list[dict[str, Any]]) -> None:
    out = {
        "config": {k: v for k, v in BASE.to_dict().items() if k not in ("output", "seed", "data")},
        "kinds": KINDS,
        "validation": VALIDATION,
        "test": TEST,
        "variants": {k: v[0] for k, v in VARIANTS.items()},
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.machine(),
        },
        "runs": results,
    }
    atomic_write_text(path, json.dumps(out, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="what to train"
    )
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="phantom kinds")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...; default 3)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default: each kind's)")
    ap.add_argument("--output", default="runs/localization-study-v4", help="run folders")
    ap.add_argument(
        "--json", default=str(ROOT / "benchmarks" / "results" / "localization.json"), help="results"
    )
    args = ap.parse_args()
    path = Path(args.json)
    results = json.loads(path.read_text())["runs"] if path.is_file() else []
    done = {(r["variant"], r["kind"], r["seed"]) for r in results}
    for seed in range(args.seeds):
        for kind in args.kinds:
            for name in args.variants:
                if (name, kind, seed) in done or kind not in ONLY_ON.get(name, (kind,)):
                    continue  # restartable: a killed study continues where it stopped
                print(f"--- {kind}, {name}, seed {seed}", flush=True)
                results.append(run_one(name, kind, seed, Path(args.output), args.epochs))
                _write(path, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
