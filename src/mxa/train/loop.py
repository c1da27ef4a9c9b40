"""Training: baseline, +MXA, +MXA+KD, on one CPU, one GPU or many (torchrun + DDP).

Everything reusable comes from timm (AdamW, cosine schedule with warm-up and cool-down, EMA, AGC,
RandAugment) and torch (DDP, AMP). What is ours: the loop, exact resume, the non-finite guard, the logs.
Layout follows timm's ``train.py``: :func:`train` sets up a :class:`Run`, then alternates
:func:`train_one_epoch` and :func:`validate`; :class:`CheckpointSaver` owns the last/best policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, dispatch_clip_grad, random_seed
from torch.utils.data import DataLoader, DistributedSampler

from mxa.data.combine import IndexedDataset, ResumableSampler, build_datasets
from mxa.distill.cache import TeacherCache
from mxa.distill.teacher import load_teacher
from mxa.evaluate import metrics_by_source, predict, roi_localization, summarize_localization
from mxa.files.checkpoint import TrainCheckpoint
from mxa.files.spec import ModelSpec
from mxa.losses import DistillationLoss, class_balanced_pos_weight
from mxa.losses.box import best_match_giou_loss, box_area
from mxa.metrics.classification import SCALAR_METRICS, compute_metrics
from mxa.models import check_model_name
from mxa.models.hooks import BoxCapture
from mxa.train.config import TrainConfig
from mxa.train.distributed import agree, all_ranks, dist_info, gather_predictions, process_group
from mxa.train.run_folder import prepare_run_folder, trim_metrics
from mxa.train.state import capture_rng_state, restore_rng_state
from mxa.utils.files import RunLock, check_writable_dir
from mxa.utils.runtime import NonFiniteError, autocast, resolve_amp, resolve_device

__all__ = ["CheckpointSaver", "NonFiniteLossError", "TrainConfig", "model_spec", "schedule_phases", "train"]

log = logging.getLogger(__name__)

# Settings that fix a run's schedule, data or model (``fixed=True`` in TrainConfig): a resumed run keeps them.
_FIXED_ON_RESUME = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("fixed"))


class NonFiniteLossError(NonFiniteError):
    """The loss, the weights or the validation predictions stopped being finite; training stopped."""


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
        log.warning("Ctrl-C: finishing this step, then saving (press again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def schedule_phases(epochs: int, warmup: int, cooldown: int) -> tuple[int, int, int, bool]:
    """(warm-up, cosine, cool-down) epochs of a run, and whether warm-up and cool-down were scaled.

    When warm-up plus cool-down would take more than half of the run (the defaults 5 + 10 on a 12-epoch
    run leave one cosine epoch), both are scaled down to 30% of the run together, keeping their ratio
    (the paper's 5 + 10 of 50). At least one epoch always follows the warm-up.
    """
    scaled = warmup + cooldown > epochs / 2
    if scaled:
        f = 0.3 * epochs / (warmup + cooldown)
        warmup, cooldown = round(warmup * f), round(cooldown * f)
    warmup = min(warmup, max(0, epochs - 1))
    cooldown = min(cooldown, max(0, epochs - warmup - 1))
    return warmup, epochs - warmup - cooldown, cooldown, scaled


def model_spec(cfg: TrainConfig) -> ModelSpec:
    """What a run builds (and its checkpoints record): the model, its size, and its MXA options."""
    mxa_cfg = {"mode": cfg.mxa_mode} if cfg.mxa_mode != "zoom" else None
    return ModelSpec.for_training(cfg.model, cfg.img_size, cfg.mxa, cfg.mxa_stages, mxa_cfg)


def _all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


@dataclass(kw_only=True)
class Run:
    """Everything a training run holds between epochs."""

    cfg: TrainConfig
    device: torch.device
    amp: str
    rank: int
    world: int
    out_dir: Path
    model: torch.nn.Module
    train_model: torch.nn.Module
    train_ds: IndexedDataset
    val_ds: IndexedDataset
    criterion: DistillationLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler | None
    sampler: ResumableSampler
    steps_per_epoch: int
    phases: tuple[int, int, int, bool]
    teacher: torch.nn.Module | None = None
    cache: TeacherCache | None = None
    boxes: BoxCapture | None = None
    start_epoch: int = 0
    skip_batches: int = 0
    global_update: int = 0
    best: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def use_kd(self) -> bool:
        return self.teacher is not None or self.cache is not None

    def state(self, epoch: int, batch_in_epoch: int) -> TrainCheckpoint:
        """The checkpoint of this moment (call on every rank: the RNG states are gathered)."""
        rng: Any = capture_rng_state()
        if self.distributed:
            rng = all_ranks(rng)
        spec = model_spec(self.cfg)
        return TrainCheckpoint(
            model_name=spec.architecture,
            model_kwargs=spec.kwargs,
            model=self.model.state_dict(),
            ema=self.ema.module.state_dict() if self.ema is not None else None,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            rng=rng,
            epoch=epoch,
            batch_in_epoch=batch_in_epoch,
            global_update=self.global_update,
            best=self.best,
            world_size=self.world,
            config=json.loads(json.dumps(self.cfg.to_dict(), default=str)),
            label_names=list(getattr(self.model, "label_names", []) or []),
        )


class CheckpointSaver:
    """The last/best policy: ``last.pt`` after every epoch (and on Ctrl-C), ``best.pt`` when the
    validation macro AUC improves, one line per epoch in ``metrics.jsonl``. Only finite states are saved,
    so :attr:`last_good` always names a checkpoint whose weights and validation were finite."""

    def __init__(self, out_dir: Path, is_main: bool, last_good: Path | None = None) -> None:
        self.out_dir, self.is_main, self.last_good = out_dir, is_main, last_good
        self.last, self.best = out_dir / "last.pt", out_dir / "best.pt"
        self.metrics = out_dir / "metrics.jsonl"

    def save(self, state: TrainCheckpoint, improved: bool, record: dict[str, Any] | None) -> None:
        if not self.is_main:
            return
        state.save(self.last)
        self.last_good = self.last
        if improved:
            state.save(self.best)
        if record is not None:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")

    def where_good(self) -> str:
        if self.last_good is None or not self.last_good.is_file():
            return "no checkpoint of this run has finite weights (none was saved)"
        return f"the last good checkpoint is {self.last_good}"


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model; returns a summary (best metrics, paths, schedule). See :class:`TrainConfig`."""
    device = resolve_device(cfg.device)
    with _determinism(cfg.deterministic), process_group(device), _output_lock(cfg) as out_dir:
        run = _setup(cfg, device, out_dir)
        saver = CheckpointSaver(out_dir, run.is_main, Path(cfg.resume) if cfg.resume else None)
        with _StopRequest() as stopper:
            _fit(run, saver, stopper)
        summary = _summary(run)
        if summary["best"] is None and run.is_main:
            log.warning(
                "no epoch had a validation macro AUC (%d validation image(s); a label needs both classes), "
                "so there is no best.pt: use %s, or validate on more images",
                len(run.val_ds),
                summary["last"],
            )
        return summary


@contextlib.contextmanager
def _determinism(on: bool) -> Iterator[None]:
    """``--deterministic``: deterministic algorithms for the run, the previous settings restored after.

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before its first call; it is set here if the user has not.
    ``grid_sample``'s CUDA backward has no deterministic kernel: the MXA crops switch to the separable
    method (``crop_method="auto"`` follows ``torch.are_deterministic_algorithms_enabled()``).
    """
    if not on:
        yield
        return
    old = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[1], old[2]


@contextlib.contextmanager
def _output_lock(cfg: TrainConfig) -> Iterator[Path]:
    """Rank 0 checks and locks the output folder; every rank learns whether that worked."""
    rank, _ = dist_info()
    lock, error, out = None, None, Path(cfg.output)
    if rank == 0:
        try:
            check_writable_dir(out, "output folder (--output)")
            lock = RunLock(out).acquire()
            out = prepare_run_folder(cfg.output, cfg.resume, cfg.overwrite)
        except (OSError, ValueError, RuntimeError) as e:
            if lock is not None:
                lock.release()
            error = e if isinstance(e, (ValueError, RuntimeError)) else ValueError(f"--output {out}: {e}")
    errors = all_ranks(str(error) if error else None)
    if error is not None:
        raise error
    if errors[0] is not None:
        raise RuntimeError(f"rank 0 could not use --output: {errors[0]}")
    try:
        yield out
    finally:
        if lock is not None:
            lock.release()


def _setup(cfg: TrainConfig, device: torch.device, out_dir: Path) -> Run:
    """Model, data, teacher, loss, optimizer, schedule, EMA; then the resumed state, if any."""
    rank, world = dist_info()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = resolve_amp(cfg.amp, device)
    random_seed(cfg.seed, rank)  # timm: Python, NumPy's global RNG and torch
    model = _build_model(cfg, device)
    train_ds, val_ds = build_datasets(
        cfg.data,
        model,
        policy=cfg.policy,
        train_samples=cfg.train_samples,
        val_samples=cfg.val_samples,
        seed=cfg.seed,
        rand_augment=cfg.rand_augment,
        geometric=cfg.box_loss == 0,  # box supervision needs boxes that still fit the augmented image
    )
    if len(train_ds) < cfg.batch_size * world:
        raise ValueError(
            f"the training set has {len(train_ds)} images, fewer than one batch ({cfg.batch_size} x {world} "
            "processes); lower --batch-size or use more --train-samples"
        )
    teacher, cache = _build_teacher(cfg, model, device)
    criterion = _build_criterion(cfg, train_ds, teacher is not None or cache is not None).to(device)
    steps = len(train_ds) // (cfg.batch_size * world)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    phases = schedule_phases(cfg.epochs, cfg.warmup_epochs, cfg.cooldown_epochs)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs - phases[2],
        warmup_epochs=phases[0],
        cooldown_epochs=phases[2],
        min_lr=cfg.min_lr,
        warmup_lr=cfg.warmup_lr,
        step_on_epochs=False,
        updates_per_epoch=max(1, steps // cfg.accum_steps),
    )
    if phases[3] and rank == 0:
        log.warning(
            "warm-up (%d) and cool-down (%d) epochs would take most of a %d-epoch run: scaled to %d and %d",
            cfg.warmup_epochs,
            cfg.cooldown_epochs,
            cfg.epochs,
            phases[0],
            phases[2],
        )
    run = Run(
        cfg=cfg,
        device=device,
        amp=amp,
        rank=rank,
        world=world,
        out_dir=out_dir,
        model=model,
        train_model=model,
        train_ds=train_ds,
        val_ds=val_ds,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=scheduler,
        ema=ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None,
        scaler=torch.amp.GradScaler("cuda") if amp == "fp16" else None,
        sampler=ResumableSampler(train_ds, cfg.seed, rank, world),
        steps_per_epoch=steps,
        phases=phases,
        teacher=teacher,
        cache=cache,
    )
    if cfg.box_loss > 0 or cfg.box_area_penalty > 0:
        run.boxes = BoxCapture(model)
    if cfg.resume:
        _resume(run, cfg.resume)
    run.train_model = _wrap_for_training(run)
    return run


def _build_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    spec = model_spec(cfg)
    check_model_name(spec.architecture)
    if cfg.pretrained_file is not None and not Path(cfg.pretrained_file).is_file():
        what = "a folder" if Path(cfg.pretrained_file).is_dir() else "not found"
        raise ValueError(f"--pretrained-file {cfg.pretrained_file} is {what}: name the weights file itself")
    try:
        model = timm.create_model(
            spec.architecture,
            pretrained=cfg.pretrained or cfg.pretrained_file is not None,
            pretrained_cfg_overlay=dict(file=cfg.pretrained_file) if cfg.pretrained_file else None,
            **spec.kwargs,
        )
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, KeyError, EOFError) as e:
        if cfg.pretrained_file is None:  # the hub: offline, or no such weights
            raise ValueError(
                f"--pretrained: the ImageNet weights of {cfg.model} could not be fetched "
                f"({type(e).__name__}: {str(e)[:160]}); offline, pass --pretrained-file with a local copy, "
                "or train with --no-pretrained"
            ) from None
        raise ValueError(
            f"--pretrained-file {cfg.pretrained_file} cannot be loaded into {cfg.model} ({type(e).__name__}: "
            f"{str(e)[:160] or 'no detail'}); it must be a timm state dict (.pth, .bin or .safetensors) read "
            "without running pickled code"
        ) from None
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def _build_teacher(
    cfg: TrainConfig, model: torch.nn.Module, device: torch.device
) -> tuple[torch.nn.Module | None, TeacherCache | None]:
    if cfg.teacher.startswith("cache:"):
        path = cfg.teacher.split(":", 1)[1]
        cache = TeacherCache.load(path)
        cache.check_compatible(img_size=cfg.img_size, policy=cfg.policy)
        return None, cache
    if cfg.teacher == "none":
        return None, None
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    return load_teacher(cfg.teacher, mean, std, trust_pickle=cfg.trust_pickle).to(device), None


def _build_criterion(cfg: TrainConfig, train_ds: IndexedDataset, use_kd: bool) -> DistillationLoss:
    pos_weight = None
    if cfg.class_balance:
        base = train_ds.base
        labels, mask = getattr(base, "labels", None), getattr(base, "label_mask", None)
        if labels is None and hasattr(base, "dataset"):  # a Subset
            labels = base.dataset.labels[base.indices]
            mask = base.dataset.label_mask[base.indices]
        pos_weight = class_balanced_pos_weight(labels, mask, max_weight=cfg.max_pos_weight)
    return DistillationLoss(cfg.alpha if use_kd else 0.0, cfg.tau, pos_weight, cfg.dynamic_weights)


def _resume(run: Run, path: str) -> None:
    """Restore weights, optimizer, schedule, EMA, RNG and position; refuse a checkpoint of another run."""
    ckpt = TrainCheckpoint.load(path, map_location="cpu")
    old = ckpt.config
    changed = [
        f"{k} ({old[k]!r} -> {getattr(run.cfg, k)!r})"
        for k in _FIXED_ON_RESUME
        if k in old and json.loads(json.dumps(getattr(run.cfg, k), default=str)) != old[k]
    ]
    if changed:
        raise ValueError(
            f"--resume {path}: that run was started with other settings: {', '.join(changed)}. A run's "
            "schedule, data and model are fixed when it starts: resume with its settings, or start a new run "
            "from its weights with --pretrained-file"
        )
    if ckpt.optimizer is None or ckpt.scheduler is None or ckpt.rng is None:
        raise ValueError(
            f"--resume {path}: it holds weights only (no optimizer/schedule state) to resume from"
        )
    if ckpt.epoch >= run.cfg.epochs and not ckpt.batch_in_epoch:
        raise ValueError(f"--resume {path}: that run already finished all {run.cfg.epochs} epochs")
    try:
        run.model.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise ValueError(f"--resume {path}: its weights do not fit --model {run.cfg.model} ({e})") from None
    run.optimizer.load_state_dict(ckpt.optimizer)
    run.scheduler.load_state_dict(ckpt.scheduler)
    if run.ema is not None and ckpt.ema is not None:
        run.ema.module.load_state_dict(ckpt.ema)
    if run.scaler is not None and ckpt.scaler:
        run.scaler.load_state_dict(ckpt.scaler)
    run.start_epoch, run.skip_batches = int(ckpt.epoch), int(ckpt.batch_in_epoch)
    run.best, run.global_update = float(ckpt.best), int(ckpt.global_update)
    if ckpt.world_size == run.world:
        restore_rng_state(ckpt.rng[run.rank] if isinstance(ckpt.rng, list) else ckpt.rng)
    if run.is_main:
        trim_metrics(run.out_dir / "metrics.jsonl", run.start_epoch)
        where = f"epoch {run.start_epoch + 1}" + (
            f", batch {run.skip_batches + 1}" if run.skip_batches else ""
        )
        log.info("resumed from %s: continuing at %s", path, where)


def _wrap_for_training(run: Run) -> torch.nn.Module:
    net: torch.nn.Module = torch.compile(run.model) if run.cfg.compile else run.model
    if run.distributed:
        # static_graph: the graph is the same every step; it also accepts parameters that are never used
        # (the box head of an MXA block on a 1x1 map, where the crop cannot depend on the box).
        dev = run.device
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None, static_graph=True
        )
    return net


def _fit(run: Run, saver: CheckpointSaver, stopper: _StopRequest) -> None:
    """The epoch loop: train, validate, save; stops after ``stop_after_epoch`` or on Ctrl-C."""
    cfg = run.cfg
    for epoch in range(run.start_epoch, cfg.epochs):
        skip = run.skip_batches if epoch == run.start_epoch else 0
        record = train_one_epoch(run, epoch, skip, stopper, saver)
        if record is None:  # Ctrl-C: saved mid-epoch
            raise KeyboardInterrupt
        record.update(validate(run))
        _check_finite_state(run, saver, epoch, record)
        score = record.get("val_ema", record["val"])["macro_auc"] if run.ema else record["val"]["macro_auc"]
        improved = score is not None and score > run.best
        run.best = max(run.best, score) if score is not None else run.best
        record["best_macro_auc"] = run.best if run.best > -math.inf else None
        run.history.append(record)
        saver.save(run.state(epoch + 1, 0), improved, record)
        if run.is_main:
            _log_epoch(run, record, improved)
        if cfg.stop_after_epoch is not None and cfg.stop_after_epoch <= epoch + 1 < cfg.epochs:
            if run.is_main:
                log.info("stopping after epoch %d as asked; continue with --resume %s", epoch + 1, saver.last)
            break


def _check_finite_state(run: Run, saver: CheckpointSaver, epoch: int, record: dict[str, Any]) -> None:
    """An epoch whose weights or validation predictions are not finite is never saved: stop instead."""
    bad = [] if _all_finite(run.model) else ["the weights"]
    if run.ema is not None and not _all_finite(run.ema.module):
        bad.append("the EMA weights")
    bad += [f"the {k} predictions" for k in ("val", "val_ema") if record.get(k, {}).get("n_nonfinite")]
    finite, _ = agree(not bad, False, run.device)
    if not finite:
        raise NonFiniteLossError(
            f"after epoch {epoch + 1}, {' and '.join(bad) or 'another process'} are not finite (NaN/inf), "
            f"although the loss was (lr {run.optimizer.param_groups[0]['lr']:.3g}). Training stopped without "
            f"saving this epoch; {saver.where_good()}. Lower --lr or --weight-decay, or raise "
            "--warmup-epochs."
        )


def _log_epoch(run: Run, record: dict[str, Any], improved: bool) -> None:
    from mxa.utils.format import fmt

    ema_txt = f", EMA {fmt(record['val_ema']['macro_auc'])}" if "val_ema" in record else ""
    log.info(
        "epoch %d/%d: loss %.4f, val macro AUC %s%s, %.0f img/s%s",
        record["epoch"],
        run.cfg.epochs,
        record["train_loss"],
        fmt(record["val"]["macro_auc"]),
        ema_txt,
        record["train_images_per_s"],
        " (best)" if improved else "",
    )


def train_one_epoch(
    run: Run, epoch: int, skip: int, stopper: _StopRequest, saver: CheckpointSaver
) -> dict[str, Any] | None:
    """One pass over the training set (from batch ``skip``); the epoch's record, or None after Ctrl-C."""
    cfg, dev = run.cfg, run.device
    run.sampler.set_epoch(epoch, skip * cfg.batch_size)
    loader = DataLoader(
        run.train_ds,
        batch_size=cfg.batch_size,
        sampler=run.sampler,
        num_workers=cfg.workers,
        drop_last=True,
        pin_memory=dev.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch),
    )
    run.model.train()
    t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
    bar = _progress(run, run.steps_per_epoch - skip, f"epoch {epoch + 1}/{cfg.epochs}")
    run.optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader, start=skip):
        if step >= run.steps_per_epoch:
            break
        loss = _forward_loss(run, batch)
        finite, stop_now = agree(bool(torch.isfinite(loss)), stopper.requested, dev)
        if not finite:
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1} "
                f"(lr {run.optimizer.param_groups[0]['lr']:.3g}). Training stopped; {saver.where_good()}. "
                "Lower --lr, raise --warmup-epochs, or use --amp bf16/none."
            )
        _backward_and_step(run, loss, step)
        seen += batch[1].shape[0] * run.world
        loss_sum, n_loss = loss_sum + float(loss.detach()), n_loss + 1
        if bar is not None:
            lr = run.optimizer.param_groups[0]["lr"]
            rate = seen / max(1e-9, time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum / n_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            bar.update(1)
        if stop_now and (step + 1) % cfg.accum_steps == 0:
            # a consistent point: the update is complete, the next batch not yet drawn
            _save_on_stop(run, saver, epoch, step + 1)
            return None
    if bar is not None:
        bar.close()
    run.scheduler.step(epoch + 1)
    train_time = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(1, n_loss),
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_images_per_s": seen / max(1e-9, train_time),
        "train_time_s": train_time,
    }


def _progress(run: Run, total: int, desc: str) -> Any:
    if not (run.cfg.progress and run.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch")


def _forward_loss(run: Run, batch: Any) -> torch.Tensor:
    index, images, targets, mask = batch[:4]
    dev = run.device
    images = images.to(dev, non_blocking=True)
    if run.cfg.channels_last and dev.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    targets, mask = targets.to(dev), mask.to(dev)
    t_logits = t_mask = None
    if run.cache is not None:
        t_logits, t_mask = run.cache.lookup([run.train_ds.ids[i] for i in index.tolist()], dev)
    elif run.teacher is not None:
        t_logits, t_mask = run.teacher(images)
    with autocast(dev, run.amp):
        logits = run.train_model(images)
    loss = run.criterion(logits.float(), targets, t_logits, t_mask, mask)
    if run.boxes is not None:
        loss = loss + _box_terms(run, run.boxes.take(), batch[4].to(dev) if len(batch) > 4 else None)
    return loss


def _box_terms(run: Run, boxes: list[torch.Tensor], true: torch.Tensor | None) -> torch.Tensor:
    """``--box-loss`` x GIoU to the best-matching true box + ``--box-area-penalty`` x mean box area."""
    cfg = run.cfg
    total = sum(box_area(b).mean() for b in boxes) / len(boxes) * cfg.box_area_penalty
    if cfg.box_loss > 0 and true is not None:
        total = total + cfg.box_loss * sum(best_match_giou_loss(b, true) for b in boxes) / len(boxes)
    return total


def _backward_and_step(run: Run, loss: torch.Tensor, step: int) -> None:
    cfg, scaler = run.cfg, run.scaler
    (scaler.scale(loss / cfg.accum_steps) if scaler else loss / cfg.accum_steps).backward()
    if (step + 1) % cfg.accum_steps != 0:
        return
    if scaler is not None:
        scaler.unscale_(run.optimizer)
    if cfg.agc > 0:
        # AGC on everything but the classifier, as in NFNets and timm's train.py
        params = [p for n, p in run.model.named_parameters() if not n.startswith("head.")]
        dispatch_clip_grad(params, cfg.agc, mode="agc")
    if scaler is not None:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.global_update += 1
    run.scheduler.step_update(run.global_update)
    if run.ema is not None:
        run.ema.update(run.model, step=run.global_update)


def _save_on_stop(run: Run, saver: CheckpointSaver, epoch: int, batch_in_epoch: int) -> None:
    state = run.state(epoch, batch_in_epoch)
    if not _all_finite(run.model):
        log.warning("Ctrl-C: the weights are not finite, so nothing was saved; %s", saver.where_good())
        return
    saver.save(state, improved=False, record=None)
    if run.is_main:
        log.info(
            "saved %s (epoch %d, batch %d); continue with --resume %s",
            saver.last,
            epoch + 1,
            batch_in_epoch,
            saver.last,
        )


def validate(run: Run) -> dict[str, Any]:
    """Validation metrics of the model (``val``) and of its EMA (``val_ema``), gathered over ranks."""
    out: dict[str, Any] = {}
    nets = {"val": run.model, "val_ema": run.ema.module if run.ema is not None else None}
    for tag, net in nets.items():
        if net is None:
            continue
        sampler = (
            DistributedSampler(run.val_ds, run.world, run.rank, shuffle=False) if run.distributed else None
        )
        preds = gather_predictions(
            predict(
                net,
                run.val_ds,
                batch_size=run.cfg.batch_size,
                device=run.device,
                amp=run.amp,
                sampler=sampler,
            )
        )
        m = compute_metrics(
            preds["probs"], preds["targets"], preds["mask"], n_bootstrap=run.cfg.eval_bootstrap
        )
        rec = {k: m[k] for k in SCALAR_METRICS}
        rec.update(
            per_label_auc=m["per_label_auc"], n_images=m["n_images"], n_nonfinite=m.get("n_nonfinite", 0)
        )
        if "rois" in preds and "true_boxes" in preds:
            rec["roi_localization"] = summarize_localization(
                roi_localization(
                    preds["rois"],
                    preds["true_boxes"],
                    n_random=16,
                    points=preds.get("points"),
                    per_label=False,
                )
            )
        per_set = metrics_by_source(preds, run.val_ds)  # --data a+b: each set beside the pool
        if per_set:
            rec["per_dataset"] = {
                name: {k: v[k] for k in ("macro_auc", "micro_auc", "n_images")} for name, v in per_set.items()
            }
        out[tag] = rec
    return out


def _summary(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    warmup, cosine, cooldown, scaled = run.phases
    return {
        "output": str(run.out_dir),
        "model": cfg.model,
        "mxa": cfg.mxa,
        "distillation": cfg.teacher if run.use_kd else "none",
        "best_macro_auc": run.best if run.best > -math.inf else None,
        "epochs": cfg.epochs,
        "schedule": {
            "warmup_epochs": warmup,
            "cosine_epochs": cosine,
            "cooldown_epochs": cooldown,
            "scaled": scaled,
        },
        "history": run.history,
        "last": str(run.out_dir / "last.pt"),
        # None when no epoch had a validation macro AUC (e.g. too few validation images): no best.pt
        "best": str(run.out_dir / "best.pt") if (run.out_dir / "best.pt").is_file() else None,
    }
