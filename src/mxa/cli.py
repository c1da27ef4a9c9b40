"""The ``mxa`` command line: train, eval, report, ablate, predict, demo, and helpers.

Run ``mxa <command> --help`` for every flag. ``python -m mxa`` works the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

S = argparse.SUPPRESS


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """Training flags. Defaults come from TrainConfig (shown here), then --config, then the flags given."""
    from .engine.train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=S,
        help=f"'phantom' (built-in synthetic X-rays, no download) or 'chexpert:<root>' (default {d.data})",
    )
    g.add_argument(
        "--train-samples", type=int, default=S, help=f"phantom training images (default {d.train_samples})"
    )
    g.add_argument(
        "--val-samples", type=int, default=S, help=f"phantom validation images (default {d.val_samples})"
    )
    g.add_argument(
        "--policy",
        choices=["ones", "zeros", "ignore", "mixed"],
        default=S,
        help=f"what an uncertain (-1) CheXpert label becomes; 'ones' is the paper's U-1 (default {d.policy})",
    )
    g.add_argument(
        "--rand-augment", default=S, help=f"timm RandAugment string, or 'none' (default {d.rand_augment})"
    )
    g.add_argument("--workers", type=int, default=S, help=f"data-loading processes (default {d.workers})")
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=S,
        help=f"timm model name, e.g. efficientvit_ml_m0 ... efficientvit_ml_m5 (default {d.model})",
    )
    g.add_argument(
        "--mxa",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="add MXA blocks beside the attention (--no-mxa: the plain multi-label baseline; default on)",
    )
    g.add_argument("--mxa-stages", type=int, nargs="+", default=S, help="stages that get MXA (default: all)")
    g.add_argument("--img-size", type=int, default=S, help=f"input size in pixels (default {d.img_size})")
    g.add_argument(
        "--pretrained",
        action="store_true",
        default=S,
        help="start from timm's ImageNet EfficientViT weights (downloads once)",
    )
    g.add_argument(
        "--pretrained-file", default=S, help="local file with those (or our own) weights: works offline"
    )
    g = p.add_argument_group("optimization (timm AdamW, cosine schedule, EMA, AGC)")
    g.add_argument(
        "--epochs", type=int, default=S, help=f"total epochs, cool-down included (default {d.epochs})"
    )
    g.add_argument(
        "--batch-size", type=int, default=S, help=f"images per step per process (default {d.batch_size})"
    )
    g.add_argument("--lr", type=float, default=S, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--min-lr", type=float, default=S, help=f"cosine floor (default {d.min_lr})")
    g.add_argument(
        "--weight-decay", type=float, default=S, help=f"AdamW weight decay (default {d.weight_decay})"
    )
    g.add_argument(
        "--warmup-epochs", type=int, default=S, help=f"linear warm-up epochs (default {d.warmup_epochs})"
    )
    g.add_argument(
        "--cooldown-epochs",
        type=int,
        default=S,
        help=f"epochs at min-lr at the end (default {d.cooldown_epochs})",
    )
    g.add_argument(
        "--agc", type=float, default=S, help=f"adaptive gradient clipping factor, 0 = off (default {d.agc})"
    )
    g.add_argument(
        "--ema-decay", type=float, default=S, help=f"EMA decay per update, 0 = no EMA (default {d.ema_decay})"
    )
    g.add_argument(
        "--accum-steps", type=int, default=S, help=f"gradient accumulation steps (default {d.accum_steps})"
    )
    g.add_argument(
        "--class-balance",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="class-balanced BCE (pos_weight = negatives/positives, capped at 10), as the paper (default on)",
    )
    g.add_argument(
        "--max-steps-per-epoch", type=int, default=S, help="cap the steps of an epoch (quick experiments)"
    )
    g.add_argument(
        "--stop-after-epoch",
        type=int,
        default=S,
        help="end the run cleanly after this epoch (of the full --epochs schedule); --resume continues it",
    )
    g = p.add_argument_group("distillation")
    g.add_argument(
        "--teacher",
        default=S,
        help="none | densenet121-res224-chex (torchxrayvision) | <checkpoint.pt of ours> | cache:<file> "
        f"(teacher logits precomputed by `mxa cache-teacher`) (default {d.teacher})",
    )
    g.add_argument(
        "--alpha", type=float, default=S, help=f"weight of the distillation term (default {d.alpha})"
    )
    g.add_argument("--tau", type=float, default=S, help=f"distillation temperature T (default {d.tau})")
    g.add_argument(
        "--dynamic-weights",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="per-label dynamic KD weights w_j = 1 - mean p_j (default on)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=S, help=f"random seed (default {d.seed})")
    g.add_argument(
        "--output", default=S, help=f"run folder: last.pt, best.pt, metrics.jsonl (default {d.output})"
    )
    g.add_argument("--resume", default=S, help="continue a run from its last.pt exactly where it stopped")
    g.add_argument(
        "--device", default=S, help="auto, cpu or cuda (default auto; under torchrun one GPU per process)"
    )
    g.add_argument(
        "--amp",
        choices=["auto", "none", "bf16", "fp16"],
        default=S,
        help="mixed precision (default auto: bf16 on CUDA, none on CPU)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="channels_last on CUDA (default on)",
    )
    g.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    g.add_argument(
        "--eval-bootstrap", type=int, default=S, help="bootstrap resamples for per-epoch CIs (default 0)"
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")
    g.add_argument(
        "--config",
        default=None,
        help="YAML file of settings (same names as the flags); flags given override it",
    )


def _train_config(ns: argparse.Namespace) -> Any:
    from .engine.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if getattr(ns, "config", None):
        from ._optional import require

        yaml = require("yaml", "--config")
        path = Path(ns.config)
        if not path.is_file():
            raise SystemExit(f"error: config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"error: {path} must hold a mapping of settings")
        for k, v in loaded.items():
            key = k.replace("-", "_")
            if key not in fields:
                raise SystemExit(
                    f"error: {path}: unknown setting {k!r}; the settings are the `mxa train` flags"
                )
            values[key] = v
    for k, v in vars(ns).items():
        if k in fields:
            values[k] = v
    if values.get("rand_augment") in ("none", "None", ""):
        values["rand_augment"] = None
    return TrainConfig(**values)


def cmd_train(ns: argparse.Namespace) -> int:
    from .engine.train import NonFiniteLossError, train

    cfg = _train_config(ns)
    try:
        train(cfg)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


def _json_ready(obj: Any) -> Any:
    import torch

    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def _print_eval_table(metrics: dict[str, Any], title: str) -> None:
    ci = metrics.get("ci", {})

    def f(v: Any, key: str | None = None) -> str:
        if v is None:
            return "undefined"
        s = f"{v:.4f}"
        if key and ci.get(key):
            s += f"  [{ci[key][0]:.4f}, {ci[key][1]:.4f}]"
        return s

    print(f"\n{title}")
    print(f"{'label':<28} {'AUC':>8}  95% CI              positives")
    print("-" * 68)
    for name, v in metrics["per_label_auc"].items():
        print(f"{name:<28} {f(v, 'auc/' + name):<30} {metrics['n_positive'][name]:>6}")
    print("-" * 68)
    for key, label in (
        ("macro_auc", "macro AUC (defined labels)"),
        ("micro_auc", "micro AUC (pooled)"),
        ("competition_auc", "competition AUC (5 labels)"),
        ("f1_micro", "F1 micro @0.5"),
        ("f1_macro", "F1 macro @0.5"),
        ("accuracy", "accuracy @0.5"),
    ):
        print(f"{label:<28} {f(metrics[key], key)}")
    if metrics["undefined_labels"]:
        print(f"undefined (one class only): {', '.join(metrics['undefined_labels'])}")
    loc = metrics.get("roi_localization")
    if loc:
        print(f"\n{'MXA block':<20} {'hit rate':>9} {'random box':>11} {'box area':>9}")
        for name, v in loc.items():
            print(
                f"{name:<20} {v['hit_rate']:>9.3f} {v['random_hit_rate']:>11.3f} {v['mean_box_area']:>9.3f}"
            )


def cmd_eval(ns: argparse.Namespace) -> int:
    import torch

    from .engine.checkpoint import load_checkpoint, load_model_from_checkpoint
    from .engine.data import build_eval_dataset
    from .engine.evaluate import evaluate_model
    from .viz import plot_roc_curves

    model = load_model_from_checkpoint(ns.checkpoint, use_ema=not ns.no_ema)
    cfg = load_checkpoint(ns.checkpoint).get("config", {})
    policy = ns.policy or cfg.get("policy", "ones")
    seed = cfg.get("seed", 0) + 1 if ns.seed is None else ns.seed
    ds = build_eval_dataset(ns.data, model, policy, ns.val_samples, seed=seed)
    device = (
        "cuda"
        if ns.device == "auto" and torch.cuda.is_available()
        else ("cpu" if ns.device == "auto" else ns.device)
    )
    model.to(device)
    metrics, preds = evaluate_model(
        model, ds, ns.batch_size, device, n_bootstrap=ns.bootstrap, progress=not ns.no_progress
    )
    metrics["checkpoint"] = str(ns.checkpoint)
    metrics["data"] = ns.data
    metrics["model"] = load_checkpoint(ns.checkpoint).get("model_name")
    _print_eval_table(metrics, f"evaluation of {ns.checkpoint} on {ns.data} ({metrics['n_images']} images)")
    roc = Path(ns.roc) if ns.roc else Path(ns.checkpoint).parent / "roc.png"
    plot_roc_curves(
        preds["probs"],
        preds["targets"],
        preds["mask"],
        roc,
        title=f"ROC curves: {Path(ns.checkpoint).parent.name}",
    )
    print(f"\nROC curves: {roc}")
    if ns.json:
        Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json).write_text(json.dumps(_json_ready(metrics), indent=2))
        print(f"metrics: {ns.json}")
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from .engine.report import aggregate_runs, print_report

    rep = aggregate_runs([Path(r) for r in ns.runs], use_ema=not ns.no_ema)
    print_report(rep)
    if ns.json:
        Path(ns.json).write_text(json.dumps(rep, indent=2))
    return 0


def cmd_ablate(ns: argparse.Namespace) -> int:
    from .engine.report import run_ablation

    cfg = _train_config(ns)
    run_ablation(
        cfg,
        seeds=ns.seeds,
        output=Path(ns.ablate_output),
        teacher_epochs=ns.teacher_epochs,
        json_path=ns.json,
    )
    return 0


def cmd_predict(ns: argparse.Namespace) -> int:
    from .predict import predict_files

    predict_files(
        ns.inputs,
        out=ns.out,
        checkpoint=ns.checkpoint,
        model_name=ns.model,
        roi_overlay=ns.roi_overlay,
        device=ns.device,
        batch_size=ns.batch_size,
    )
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(ns.output), quick=ns.quick, seed=ns.seed, progress=not ns.no_progress)
    return 0


def cmd_cache_teacher(ns: argparse.Namespace) -> int:
    import timm
    import torch

    from .distill.cache import build_teacher_cache
    from .distill.teacher import load_teacher
    from .engine.data import build_datasets

    student = timm.create_model(ns.model, img_size=ns.img_size)
    # the deterministic evaluation view of the *training* images
    train_ds, _ = build_datasets(ns.data, student, "ones", ns.train_samples, 1, ns.seed, rand_augment=None)
    from .data.transforms import build_transforms

    base = train_ds.base
    target = base.dataset if hasattr(base, "dataset") else base
    target.transform = build_transforms(student, train=False)
    teacher = load_teacher(ns.teacher, student.pretrained_cfg["mean"], student.pretrained_cfg["std"])
    device = "cuda" if torch.cuda.is_available() and ns.device != "cpu" else "cpu"
    teacher.to(device)
    cache = build_teacher_cache(
        teacher,
        base,
        train_ds.ids,
        batch_size=ns.batch_size,
        device=device,
        meta={"teacher": ns.teacher, "data": ns.data, "img_size": ns.img_size, "transform": "eval"},
    )
    cache.save(ns.output)
    print(f"teacher logits of {len(cache)} images -> {ns.output}")
    return 0


def cmd_make_phantom(ns: argparse.Namespace) -> int:
    from .data.writer import write_phantom_chexpert

    base = write_phantom_chexpert(ns.output, ns.train, ns.valid, ns.img_size, ns.seed)
    print(f"phantom CheXpert set written to {base} (use --data chexpert:{base})")
    return 0


def cmd_preresize(ns: argparse.Namespace) -> int:
    from .data.preresize import preresize_chexpert

    n = preresize_chexpert(ns.src, ns.dst, ns.size, ns.workers)
    print(f"{n} images resized into {ns.dst} (use --data chexpert:{ns.dst})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mxa",
        description="MXA attention for chest X-rays: train, evaluate, distill, predict, benchmark, export.",
    )
    parser.add_argument("--version", action="version", version=f"mxa-attention {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model (baseline, +MXA or +MXA+KD)",
        description=(
            "Train a multi-label model. Settings: the defaults below, then --config FILE.yaml, then the flags given. "
            "Writes OUTPUT/last.pt, OUTPUT/best.pt (best validation macro AUC) and OUTPUT/metrics.jsonl. "
            "Many GPUs: torchrun --nproc_per_node=N -m mxa train ..."
        ),
    )
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: AUC table, CIs, ROC curves, ROI localization")
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt written by `mxa train`")
    p.add_argument(
        "--data", default="phantom", help="'phantom' or 'chexpert:<root>' (valid.csv) (default phantom)"
    )
    p.add_argument("--val-samples", type=int, default=500, help="phantom images to evaluate on (default 500)")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (default: the run's validation seed)")
    p.add_argument("--policy", default=None, help="uncertainty policy (default: the run's)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="bootstrap resamples for the 95%% CIs (default 200; 0 = none)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", default=None, help="write all metrics to this JSON file")
    p.add_argument("--roc", default=None, help="ROC-curve PNG (default: roc.png beside the checkpoint)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not the EMA weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="aggregate runs (seeds) into mean and 95%% CI per metric")
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    p.add_argument("--json", default=None, help="write the aggregate to this JSON file")
    p.add_argument(
        "--no-ema", action="store_true", help="use the raw model's validation metrics, not the EMA's"
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "ablate", help="baseline, +MXA, +MXA+KD with identical settings, over seeds (paper Tables 2-3)"
    )
    _add_train_flags(p)
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3, as the paper)")
    p.add_argument(
        "--ablate-output", default="runs/ablation", help="folder for all runs (default runs/ablation)"
    )
    p.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="with --teacher train: train an MXA-free teacher of the same size for this many epochs first",
    )
    p.add_argument("--json", default=None, help="write the table to this JSON file")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("predict", help="predict the 14 labels for PNG, JPEG or DICOM images")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint written by `mxa train`")
    src.add_argument(
        "--model", help="a timm model name (random or --pretrained weights: for trying the pipeline)"
    )
    p.add_argument("--out", default="preds.csv", help="CSV with one row per image (default preds.csv)")
    p.add_argument(
        "--roi-overlay", default=None, help="folder for one PNG per image with the MXA boxes drawn"
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "demo", help="the whole pipeline on built-in phantom data, no download (<= 10 min on 2 CPU cores)"
    )
    p.add_argument(
        "--output", default="mxa-demo", help="folder for runs, tables and figures (default mxa-demo)"
    )
    p.add_argument("--quick", action="store_true", help="a 2-minute version (smaller data, fewer epochs)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "cache-teacher", help="compute teacher logits once over the training set (safetensors)"
    )
    p.add_argument(
        "--teacher", default="densenet121-res224-chex", help="teacher spec, as for `train --teacher`"
    )
    p.add_argument("--data", default="phantom", help="'phantom' or 'chexpert:<root>'")
    p.add_argument(
        "--model", default="efficientvit_ml_m5", help="the student model (its input size and normalization)"
    )
    p.add_argument("--img-size", type=int, default=224, help="the student's input size (default 224)")
    p.add_argument("--train-samples", type=int, default=2000, help="phantom training images (as for train)")
    p.add_argument("--seed", type=int, default=0, help="the training run's seed (phantom data depends on it)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--output", required=True, help="the .safetensors file to write; train with --teacher cache:<file>"
    )
    p.set_defaults(func=cmd_cache_teacher)

    p = sub.add_parser(
        "make-phantom", help="write a phantom set in the CheXpert layout (PNGs + train.csv/valid.csv)"
    )
    p.add_argument(
        "--output", required=True, help="folder to create (the set goes to OUTPUT/CheXpert-v1.0-small)"
    )
    p.add_argument("--train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--valid", type=int, default=50, help="validation images (default 50)")
    p.add_argument("--img-size", type=int, default=224, help="image size (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.set_defaults(func=cmd_make_phantom)

    p = sub.add_parser(
        "preresize", help="copy CheXpert with smaller images, once (decoding 3000px JPEGs is slow)"
    )
    p.add_argument("--src", required=True, help="the CheXpert-v1.0 (or -small) folder with train.csv")
    p.add_argument("--dst", required=True, help="the folder to write (CSVs copied, images resized)")
    p.add_argument("--size", type=int, default=320, help="shorter side in pixels (default 320)")
    p.add_argument("--workers", type=int, default=8, help="processes (default 8)")
    p.set_defaults(func=cmd_preresize)

    _register_extra_commands(sub)
    return parser


def _register_extra_commands(sub: Any) -> None:
    """Commands defined next to their features."""
    from . import bench, export, viz

    bench.register(sub)
    export.register(sub)
    viz.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "command", None):
        parser.print_help()
        return 2
    try:
        return int(ns.func(ns) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
