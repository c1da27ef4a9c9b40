"""``mxa demo``: the paper's pipeline end to end on built-in phantom data, on a laptop CPU.

An :class:`~mxa.train.experiment.Experiment` trains an MXA-free teacher, caches its logits, then the
baseline, +MXA and +MXA+KD students with identical settings; all four are evaluated (AUC with bootstrap
CIs, ROI localization against chance) and ROI overlays, ROC curves and an attention comparison are drawn.
No download. Returns (and writes to ``summary.json``) every number; the CLI prints the table.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from mxa.data.combine import build_eval_dataset
from mxa.data.transforms import PAPER_RAND_AUGMENT
from mxa.evaluate import evaluate_model
from mxa.files.load import load_model
from mxa.train.config import TrainConfig
from mxa.train.experiment import Experiment, run_experiment
from mxa.utils.files import atomic_write_text

__all__ = ["demo_experiment", "run_demo"]

log = logging.getLogger(__name__)

# What summary.json keeps of each model's metrics.
_SUMMARY_KEYS = (
    "macro_auc",
    "micro_auc",
    "competition_auc",
    "f1_macro",
    "accuracy",
    "ci",
    "per_label_auc",
    "roi_localization",
    "undefined_labels",
)

QUICK_NOTE = (
    "--quick trains for 2 epochs on 384 images: the models rank images within each label (macro AUC) "
    "before their probabilities are comparable across labels, so the pooled micro AUC can sit near or "
    "below 0.5. It checks the pipeline; the full demo's numbers are the ones to read."
)


def demo_experiment(
    quick: bool, output: Path, seed: int = 0, progress: bool = True, overwrite: bool = False
) -> Experiment:
    """The demo's experiment: M0 on phantoms, a teacher on a longer schedule, cached teacher logits."""
    common: dict[str, Any] = dict(
        data="phantom",
        model="efficientvit_ml_m0",
        policy="ones",
        lr=2e-3,
        min_lr=1e-5,
        weight_decay=0.025,
        warmup_epochs=1,
        cooldown_epochs=0,
        agc=0.02,
        ema_decay=0.0,
        batch_size=32,
        seed=seed,
        alpha=0.5,
        tau=1.0,
        progress=progress,
        overwrite=overwrite,
        rand_augment=PAPER_RAND_AUGMENT,
        # Plain BCE: the paper's class-balanced pos_weight inflates rare labels' probabilities, which
        # distorts the pooled micro AUC and every metric at threshold 0.5 (per-label AUCs are unaffected).
        class_balance=False,
    )
    if quick:
        base = TrainConfig(img_size=96, train_samples=384, val_samples=192, epochs=2, **common)
        return Experiment(base, output, seeds=1, teacher_epochs=3, cache_teacher=True)
    base = TrainConfig(img_size=128, train_samples=1600, val_samples=500, epochs=4, **common)
    return Experiment(base, output, seeds=1, teacher_epochs=5, cache_teacher=True)


def run_demo(
    output: Path, quick: bool = False, seed: int = 0, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Run the demo into ``output``; returns the summary (also ``output/summary.json``)."""
    t_start = time.perf_counter()
    output = Path(output)
    exp = demo_experiment(quick, output, seed, progress, overwrite)
    cfg = exp.base
    log.info(
        "mxa demo%s: phantom chest X-rays at %dpx, %d training / %d validation images, %s",
        " --quick" if quick else "",
        cfg.img_size,
        cfg.train_samples,
        cfg.val_samples,
        cfg.model,
    )
    run_experiment(exp)
    log.info("evaluation on the validation phantoms (bootstrap 95% CIs)")
    dirs = {"teacher": exp.teacher_dir, **{v.name: exp.run_dir(v, 0) for v in exp.variants}}
    results, evaluated = _evaluate_all(dirs, cfg, n_bootstrap=100 if quick else 200)
    figures = _draw_figures(output, evaluated, n_overlays=3 if quick else 6)
    summary = {
        "quick": quick,
        "runs": {name: {"folder": str(d), "config": _run_config(d)} for name, d in dirs.items()},
        "results": {k: {m: v[m] for m in _SUMMARY_KEYS if m in v} for k, v in results.items()},
        "figures": [str(f) for f in figures],
        "notes": [QUICK_NOTE] if quick else [],
        "minutes": (time.perf_counter() - t_start) / 60,
        "versions": {"torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def _run_config(run_dir: Path) -> dict[str, Any]:
    from mxa.files.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "best.pt").get("config", {})


def _evaluate_all(dirs: dict[str, Path], cfg: TrainConfig, n_bootstrap: int) -> tuple[dict, dict]:
    from mxa.data.transforms import resolve_data_cfg
    from mxa.viz import plot_roc_curves

    results, evaluated = {}, {}
    ds, ds_cfg = None, None  # one evaluation set for every model that takes the same input
    for name, run_dir in dirs.items():
        model = load_model(run_dir / "best.pt")
        if ds is None or resolve_data_cfg(model) != ds_cfg:
            ds, ds_cfg = (
                build_eval_dataset(
                    "phantom", model, policy=cfg.policy, samples=cfg.val_samples, seed=cfg.seed + 1
                ),
                resolve_data_cfg(model),
            )
        metrics, preds = evaluate_model(model, ds, batch_size=128, n_bootstrap=n_bootstrap)
        results[name], evaluated[name] = metrics, (model, ds, preds)
        plot_roc_curves(
            preds["probs"], preds["targets"], preds["mask"], run_dir / "roc.png", title=f"ROC curves: {name}"
        )
    return results, evaluated


def _draw_figures(output: Path, evaluated: dict[str, Any], n_overlays: int) -> list[Path]:
    from mxa.viz import plot_attention_comparison, plot_roi_overlay

    model, ds, preds = evaluated["+MXA+KD"]
    figs = []
    for i in range(n_overlays):
        true_boxes = ds.base[i][3]
        boxes = {k: v[i] for k, v in preds.get("rois", {}).items()}
        figs.append(
            plot_roi_overlay(
                ds.base.render(i)[0],
                boxes,
                output / f"roi_overlay_{i}.png",
                probs=preds["probs"][i],
                true_boxes=true_boxes,
                targets=preds["targets"][i],
                title=f"phantom {i}: MXA boxes (solid) and planted findings (dashed)",
            )
        )
    baseline = evaluated["baseline"][0]
    figs.append(
        plot_attention_comparison(
            ds.base[0][0][None], baseline, model, output / "attention_comparison.png", stage=1
        )
    )
    return figs
