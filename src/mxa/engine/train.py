"""Training: baseline, +MXA, +MXA+KD, on one CPU, one GPU or many (torchrun + DDP).

Everything reusable comes from timm (AdamW, cosine schedule with warm-up and cool-down, EMA, AGC,
RandAugment) and torch (DDP, AMP). What is ours: the loop, exact resume, the NaN guard, the logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ..distill.cache import TeacherCache
from ..distill.losses import DistillationLoss, class_balanced_pos_weight
from ..distill.teacher import load_teacher
from .checkpoint import atomic_save, capture_rng_state, load_checkpoint, restore_rng_state
from .data import SkipSampler, build_datasets
from .evaluate import predict, roi_localization, summarize_localization
from .metrics import compute_metrics

__all__ = ["NonFiniteLossError", "TrainConfig", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint was left untouched."""


@dataclass
class TrainConfig:
    """Every setting of a run (the ``mxa train`` flags; a YAML ``--config`` uses the same names)."""

    data: str = "phantom"
    train_samples: int = 2000
    val_samples: int = 500
    model: str = "efficientvit_ml_m5"
    mxa: bool = True
    mxa_stages: list[int] | None = None
    pretrained: bool = False
    pretrained_file: str | None = None
    img_size: int = 224
    epochs: int = 50
    batch_size: int = 512
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.025
    warmup_epochs: int = 5
    cooldown_epochs: int = 10
    warmup_lr: float = 1e-6
    agc: float = 0.02
    ema_decay: float = 0.99996
    rand_augment: str | None = "rand-m5-mstd0.2-inc2"
    teacher: str = "none"
    alpha: float = 0.5
    tau: float = 1.0
    dynamic_weights: bool = True
    class_balance: bool = True
    policy: str = "ones"
    seed: int = 0
    output: str = "runs/mxa"
    resume: str | None = None
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    accum_steps: int = 1
    workers: int = 0
    device: str = "auto"
    eval_bootstrap: int = 0
    progress: bool = True
    max_steps_per_epoch: int | None = None
    stop_after_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- distributed helpers ------------------------------------------------------------------------------
def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _init_distributed(device_kind: str) -> bool:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device_kind == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def _agree(finite: bool, stop: bool, device: torch.device) -> tuple[bool, bool]:
    """(every rank's loss is finite, some rank was asked to stop): one all-reduce per step."""
    if not dist.is_initialized():
        return finite, stop
    t = torch.tensor([0.0 if finite else 1.0, 1.0 if stop else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t[0].item() == 0), bool(t[1].item() > 0)


class _StopRequest:
    """First Ctrl-C: finish the current update, save, exit. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step, then saving (press again to stop at once)", flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _gather_predictions(preds: dict[str, Any]) -> dict[str, Any]:
    """Gather every rank's predictions to all ranks and drop DistributedSampler's padding duplicates."""
    if not dist.is_initialized():
        return preds
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, preds)
    merged: dict[str, Any] = {}
    for k in preds:
        if k == "rois":
            merged[k] = {b: torch.cat([p[k][b] for p in parts]) for b in preds[k]}
        else:
            merged[k] = torch.cat([p[k] for p in parts])
    order = merged["index"].argsort()
    keep = torch.ones_like(order, dtype=torch.bool)
    sorted_idx = merged["index"][order]
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    sel = order[keep]
    return {k: ({b: t[sel] for b, t in v.items()} if k == "rois" else v[sel]) for k, v in merged.items()}


# --- the run --------------------------------------------------------------------------------------------
def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = cfg.device
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(kind)


def _resolve_amp(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.amp == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"--amp must be auto, none, bf16 or fp16, got {cfg.amp!r}")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs CUDA; use --amp bf16 or none on the CPU")
    return cfg.amp


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (third-party code draws from the global RNG)
    torch.manual_seed(seed)


def _model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {"img_size": cfg.img_size}
    if cfg.model.startswith("efficientvit_ml_"):
        kw["mxa"] = cfg.mxa
        if cfg.mxa_stages is not None:
            kw["mxa_stages"] = list(cfg.mxa_stages)
    return kw


def _schedule_lengths(cfg: TrainConfig) -> tuple[int, int]:
    warmup = min(cfg.warmup_epochs, max(0, cfg.epochs - 1))
    cooldown = min(cfg.cooldown_epochs, max(0, cfg.epochs - warmup - 1))
    return warmup, cooldown


def _print_table(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}\n" + "-" * (width + 24))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 24))


def _fmt(v: Any) -> str:
    if v is None:
        return "undefined"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model; returns a summary (best metrics, paths). See :class:`TrainConfig`."""
    device = _resolve_device(cfg)
    distributed = _init_distributed(device.type)
    rank, world, _ = _dist_info()
    is_main = rank == 0
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = _resolve_amp(cfg, device)
    out_dir = Path(cfg.output)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed + rank)

    # model, data
    model = timm.create_model(
        cfg.model,
        pretrained=cfg.pretrained or cfg.pretrained_file is not None,
        pretrained_cfg_overlay=dict(file=cfg.pretrained_file) if cfg.pretrained_file else None,
        **_model_kwargs(cfg),
    )
    train_ds, val_ds = build_datasets(
        cfg.data, model, cfg.policy, cfg.train_samples, cfg.val_samples, cfg.seed, cfg.rand_augment
    )
    assert train_ds is not None
    if len(train_ds) < cfg.batch_size * world:
        raise ValueError(
            f"the training set has {len(train_ds)} images, fewer than one batch ({cfg.batch_size} x {world} "
            "processes); lower --batch-size or use more --train-samples"
        )
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    # teacher
    teacher = cache = None
    if cfg.teacher.startswith("cache:"):
        cache = TeacherCache.load(cfg.teacher.split(":", 1)[1])
    elif cfg.teacher != "none":
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
        teacher = load_teacher(cfg.teacher, mean, std).to(device)
    use_kd = teacher is not None or cache is not None

    # loss
    pos_weight = None
    if cfg.class_balance:
        base = train_ds.base
        labels = getattr(base, "labels", None)
        lmask = getattr(base, "label_mask", None)
        if labels is None and hasattr(base, "dataset"):  # a Subset
            labels = base.dataset.labels[base.indices]
            lmask = base.dataset.label_mask[base.indices]
        pos_weight = class_balanced_pos_weight(labels, lmask, max_weight=10.0)
    criterion = DistillationLoss(cfg.alpha if use_kd else 0.0, cfg.tau, pos_weight, cfg.dynamic_weights).to(
        device
    )

    # loaders
    def make_sampler(skip: int = 0):
        if distributed:
            base = DistributedSampler(
                train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
            )
        else:
            g = torch.Generator()
            base = RandomSampler(train_ds, generator=g)
        return SkipSampler(base, skip)

    steps_per_epoch = len(train_ds) // (cfg.batch_size * world)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    updates_per_epoch = max(1, steps_per_epoch // cfg.accum_steps)

    # optimizer, schedule, EMA (timm)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup, cooldown = _schedule_lengths(cfg)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs - cooldown,
        warmup_epochs=warmup,
        cooldown_epochs=cooldown,
        min_lr=cfg.min_lr,
        warmup_lr=cfg.warmup_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    start_epoch, skip_batches, best, global_update = 0, 0, -math.inf, 0
    if cfg.resume:
        ckpt = load_checkpoint(cfg.resume, map_location="cpu")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, skip_batches = int(ckpt["epoch"]), int(ckpt.get("batch_in_epoch", 0))
        best, global_update = float(ckpt.get("best", -math.inf)), int(ckpt.get("global_update", 0))
        if ckpt.get("world_size", 1) == world:
            restore_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        if is_main:
            where = f"epoch {start_epoch + 1}" + (f", batch {skip_batches + 1}" if skip_batches else "")
            print(f"resumed from {cfg.resume}: continuing at {where}")

    train_model: torch.nn.Module = model
    if cfg.compile:
        train_model = torch.compile(model)
    if distributed:
        # static_graph: the graph is the same every step; it also accepts parameters that are never used
        # (the box head of an MXA block on a 1x1 map, where the crop cannot depend on the box).
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
        )

    def state(epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        rng: Any = capture_rng_state()
        if distributed:
            all_rng: list[Any] = [None] * world
            dist.all_gather_object(all_rng, rng)
            rng = all_rng
        return {
            "model_name": cfg.model,
            "model_kwargs": _model_kwargs(cfg),
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "global_update": global_update,
            "best": best,
            "world_size": world,
            "config": json.loads(json.dumps(cfg.to_dict(), default=str)),
            "label_names": list(getattr(model, "label_names", []) or []),
        }

    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
        if amp != "none"
        else contextlib.nullcontext()
    )
    metrics_path = out_dir / "metrics.jsonl"
    history: list[dict[str, Any]] = []
    if is_main and not cfg.resume and metrics_path.exists():
        metrics_path.unlink()
    ids = train_ds.ids
    pbar_cls = None
    if cfg.progress and is_main:
        from tqdm.auto import tqdm

        pbar_cls = tqdm

    epoch = start_epoch
    stopper = _StopRequest()
    interrupted = False
    try:
        stopper.__enter__()
        for epoch in range(start_epoch, cfg.epochs):
            skip = skip_batches if epoch == start_epoch else 0
            sampler = make_sampler(skip * cfg.batch_size)
            sampler.set_epoch(epoch)
            if isinstance(sampler.base, RandomSampler):
                sampler.base.generator.manual_seed(
                    cfg.seed * 100_003 + epoch
                )  # the epoch's order, reproducible
            loader = DataLoader(
                train_ds,
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.workers,
                drop_last=True,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
                generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch),
            )
            model.train()
            t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
            total = steps_per_epoch - skip
            bar = (
                pbar_cls(total=total, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
                if pbar_cls
                else None
            )
            optimizer.zero_grad(set_to_none=True)
            for step, batch in enumerate(loader, start=skip):
                if step >= steps_per_epoch:
                    break
                index, images, targets, mask = batch[:4]
                images = images.to(device, non_blocking=True)
                if cfg.channels_last and device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                targets, mask = targets.to(device), mask.to(device)
                t_logits = t_mask = None
                if cache is not None:
                    t_logits, t_mask = cache.lookup([ids[i] for i in index.tolist()], device)
                elif teacher is not None:
                    t_logits, t_mask = teacher(images)
                with autocast:
                    logits = train_model(images)
                loss = criterion(logits.float(), targets, t_logits, t_mask, mask)
                finite, stop_now = _agree(bool(torch.isfinite(loss)), stopper.requested, device)
                if not finite:
                    raise NonFiniteLossError(
                        f"the loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1} "
                        f"(lr {optimizer.param_groups[0]['lr']:.3g}). Training stopped; the last good checkpoint "
                        f"{out_dir / 'last.pt'} is intact. Lower --lr, raise --warmup-epochs, or use --amp bf16/none."
                    )
                (scaler.scale(loss / cfg.accum_steps) if scaler else loss / cfg.accum_steps).backward()
                if (step + 1) % cfg.accum_steps == 0:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    if cfg.agc > 0:
                        # AGC on everything but the classifier, as in NFNets and timm's train.py
                        params = [p for n, p in model.named_parameters() if not n.startswith("head.")]
                        dispatch_clip_grad(params, cfg.agc, mode="agc")
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_update += 1
                    scheduler.step_update(global_update)
                    if ema is not None:
                        ema.update(model, step=global_update)
                seen += images.shape[0] * world
                loss_sum += float(loss.detach())
                n_loss += 1
                if bar is not None:
                    rate = seen / max(1e-9, time.perf_counter() - t0)
                    bar.set_postfix(
                        loss=f"{loss_sum / n_loss:.4f}",
                        lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                        img_s=f"{rate:.0f}",
                    )
                    bar.update(1)
                if stop_now and (step + 1) % cfg.accum_steps == 0:
                    # a consistent point: the update is complete, the next batch not yet drawn
                    ckpt = state(epoch, step + 1)
                    if is_main:
                        atomic_save(ckpt, out_dir / "last.pt")
                        print(
                            f"saved {out_dir / 'last.pt'} (epoch {epoch + 1}, batch {step + 1}); "
                            f"continue with --resume {out_dir / 'last.pt'}",
                            flush=True,
                        )
                    interrupted = True
                    break
            if bar is not None:
                bar.close()
            if interrupted:
                break
            scheduler.step(epoch + 1)
            train_time = time.perf_counter() - t0

            # validation (model, and EMA when enabled), on every rank's shard, gathered
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(1, n_loss),
                "lr": optimizer.param_groups[0]["lr"],
                "train_images_per_s": seen / max(1e-9, train_time),
                "train_time_s": train_time,
            }
            for tag, net in (("val", model), ("val_ema", ema.module if ema is not None else None)):
                if net is None:
                    continue
                val_sampler = DistributedSampler(val_ds, world, rank, shuffle=False) if distributed else None
                preds = predict(
                    net, val_ds, batch_size=cfg.batch_size, device=device, amp=amp, sampler=val_sampler
                )
                preds = _gather_predictions(preds)
                m = compute_metrics(
                    preds["probs"], preds["targets"], preds["mask"], n_bootstrap=cfg.eval_bootstrap
                )
                rec = {
                    k: m[k]
                    for k in ("macro_auc", "micro_auc", "competition_auc", "f1_micro", "f1_macro", "accuracy")
                }
                rec["per_label_auc"] = m["per_label_auc"]
                rec["n_images"] = m["n_images"]
                if "rois" in preds and "true_boxes" in preds:
                    rec["roi_localization"] = summarize_localization(
                        roi_localization(preds["rois"], preds["true_boxes"])
                    )
                record[tag] = rec
            score_src = record.get("val_ema", record["val"]) if ema is not None else record["val"]
            score = score_src["macro_auc"] if score_src["macro_auc"] is not None else -math.inf
            improved = score > best
            best = max(best, score)
            record["best_macro_auc"] = best if best > -math.inf else None
            history.append(record)
            ckpt = state(epoch + 1, 0)
            if is_main:
                atomic_save(ckpt, out_dir / "last.pt")
                if improved:
                    atomic_save(ckpt, out_dir / "best.pt")
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                ema_txt = f", EMA {_fmt(record['val_ema']['macro_auc'])}" if "val_ema" in record else ""
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}, val macro AUC "
                    f"{_fmt(record['val']['macro_auc'])}{ema_txt}, {record['train_images_per_s']:.0f} img/s"
                    + (" (best)" if improved else "")
                )
            if (
                cfg.stop_after_epoch is not None
                and epoch + 1 >= cfg.stop_after_epoch
                and epoch + 1 < cfg.epochs
            ):
                if is_main:
                    print(
                        f"stopping after epoch {epoch + 1} as asked; continue with --resume {out_dir / 'last.pt'}"
                    )
                break
    except BaseException:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
        raise
    finally:
        stopper.__exit__()
    if interrupted:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
        raise KeyboardInterrupt

    summary = {
        "output": str(out_dir),
        "best_macro_auc": best if best > -math.inf else None,
        "epochs": cfg.epochs,
        "history": history,
        "last": str(out_dir / "last.pt"),
        "best": str(out_dir / "best.pt"),
    }
    if is_main and history:
        last = history[-1]
        rows = [
            ("model", f"{cfg.model} (mxa={cfg.mxa})"),
            ("distillation", cfg.teacher if use_kd else "none"),
            ("epochs", str(cfg.epochs)),
            ("final train loss", f"{last['train_loss']:.4f}"),
            ("val macro AUC", _fmt(last["val"]["macro_auc"])),
            ("val micro AUC", _fmt(last["val"]["micro_auc"])),
            ("val competition AUC", _fmt(last["val"]["competition_auc"])),
        ]
        if "val_ema" in last:
            rows.append(("val macro AUC (EMA)", _fmt(last["val_ema"]["macro_auc"])))
        rows += [
            ("best macro AUC", _fmt(summary["best_macro_auc"])),
            ("checkpoints", f"{out_dir}/last.pt, best.pt"),
        ]
        _print_table(rows, "training summary")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary
