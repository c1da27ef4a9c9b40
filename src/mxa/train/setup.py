"""Setting up a run: the model, data, teacher, loss, optimizer, schedule and EMA (timm's), the output lock
and deterministic algorithms; then the resumed state, if any."""

from __future__ import annotations

import contextlib
import logging
import pickle
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, random_seed

from mxa.data.chexpert import read_box_file
from mxa.data.combine import IndexedDataset, ResumableSampler, build_datasets
from mxa.distill.cache import TeacherCache
from mxa.distill.teacher import load_teacher
from mxa.losses import DistillationLoss, class_balanced_pos_weight
from mxa.models import check_model_name
from mxa.models.hooks import BoxCapture, has_rois
from mxa.train.config import ConfigError, TrainConfig
from mxa.train.distributed import all_ranks, dist_info
from mxa.train.run_folder import prepare_run_folder
from mxa.train.state import Run, model_spec, resume
from mxa.utils.files import RunLock, check_writable_dir
from mxa.utils.runtime import determinism, resolve_amp

__all__ = ["determinism", "output_lock", "schedule_phases", "setup"]

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def output_lock(cfg: TrainConfig) -> Iterator[Path]:
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


#: a CPU-sized recipe in the repository (the settings of ``mxa demo``)
CPU_RECIPE = "recipes/cpu_m0_phantom.yaml"


def cpu_recipe_flag() -> str:
    """``--config <the CPU recipe>`` as it can be typed here: relative to the working directory when the
    clone (an editable install) is below it, else absolute; without a clone, its settings as flags."""
    recipe = Path(__file__).resolve().parents[3] / CPU_RECIPE
    if not recipe.is_file():  # installed from a wheel: no recipes/ folder
        return "--model efficientvit_ml_m0 --img-size 128 --batch-size 32 --epochs 4 --ema-decay 0.99"
    with contextlib.suppress(ValueError):  # not below the working directory: the absolute path
        recipe = recipe.relative_to(Path.cwd().resolve())
    return f"--config {shlex.quote(str(recipe))}"


def _warn_about_sizes(cfg: TrainConfig, device: torch.device, steps: int) -> None:
    """Say so when the settings cannot do what they look like: a GPU recipe on the CPU, an EMA that cannot
    follow a short run (``best.pt`` is chosen on the EMA weights)."""
    if device.type == "cpu" and cfg.img_size * cfg.img_size * cfg.batch_size >= 224 * 224 * 256:
        log.warning(
            "training %s at %d px with batch %d on the CPU: a GPU-sized run (a batch takes tens of seconds "
            "here); for a CPU-sized run use %s, or lower --img-size/--batch-size",
            cfg.model,
            cfg.img_size,
            cfg.batch_size,
            cpu_recipe_flag(),
        )
    updates = steps * cfg.epochs // max(1, cfg.accum_steps)
    if cfg.ema_decay > 0 and updates < 1 / (1 - cfg.ema_decay):
        log.warning(
            "the EMA (--ema-decay %g) averages over about %d updates, more than this run's %d: its weights "
            "stay close to where they started, and best.pt and the summary use them; lower --ema-decay "
            "(e.g. 0.999) or turn it off with --ema-decay 0",
            cfg.ema_decay,
            round(1 / (1 - cfg.ema_decay)),
            updates,
        )


def _steps_per_epoch(cfg: TrainConfig, n_train: int, world: int) -> int:
    """Optimizer batches per epoch; refuses a set smaller than a batch and accumulation that never steps."""
    if n_train < cfg.batch_size * world:
        raise ValueError(
            f"the training set has {n_train} images, fewer than one batch ({cfg.batch_size} x {world} "
            "processes); lower --batch-size or use more --train-samples"
        )
    steps = n_train // (cfg.batch_size * world)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if cfg.accum_steps > steps:  # gradients would pile up and be dropped at every epoch's end, never applied
        raise ValueError(
            f"--accum-steps {cfg.accum_steps} is more than the {steps} batches of an epoch, so the optimizer "
            "would never step: lower --accum-steps, or use a smaller --batch-size or more training images"
            + (" or a larger --max-steps-per-epoch" if cfg.max_steps_per_epoch else "")
        )
    return steps


def _schedule(
    cfg: TrainConfig, optimizer: Any, steps: int, rank: int
) -> tuple[Any, tuple[int, int, int, bool]]:
    """timm's cosine schedule with warm-up and cool-down, stepped per update; and the epoch phases."""
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
    return scheduler, phases


def _use_box_file(train_ds: IndexedDataset, path: str) -> None:
    """The training images' box labels from ``path`` (--box-file) instead of the data's."""
    if not Path(path).is_file():
        raise ConfigError(f"--box-file {path} does not exist: give a JSON box file (docs/data.md)")
    with_boxes = train_ds.use_boxes(read_box_file(path, train_ds.ids))
    log.info("--box-file %s: box labels for %d of %d training images", path, with_boxes, len(train_ds))
    if with_boxes == 0:
        raise ConfigError(
            f"--box-file {path} has no box for any training image: its keys must be the images' ids (e.g. "
            f"{train_ds.ids[0]!r})"
        )


def setup(cfg: TrainConfig, device: torch.device, out_dir: Path) -> Run:
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
    if cfg.box_file:
        _use_box_file(train_ds, cfg.box_file)
    if cfg.box_fraction < 1:
        kept = train_ds.keep_boxes(cfg.box_fraction, cfg.seed)
        log.info(
            "--box-fraction %g: box labels of the %d of %d training images drawn (where they have boxes)",
            cfg.box_fraction,
            kept,
            len(train_ds),
        )
        if kept == 0:
            log.warning(
                "--box-fraction %g keeps no training image's boxes: --box-loss has nothing to use",
                cfg.box_fraction,
            )
    steps = _steps_per_epoch(cfg, len(train_ds), world)
    teacher, cache = _build_teacher(cfg, model, device)
    criterion = _build_criterion(cfg, train_ds, teacher is not None or cache is not None).to(device)
    if rank == 0:
        _warn_about_sizes(cfg, device, steps)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, phases = _schedule(cfg, optimizer, steps, rank)
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
    if cfg.box_loss > 0 or cfg.box_area_penalty > 0 or (cfg.roi_mil > 0 and has_rois(model)):
        run.boxes = BoxCapture(model)
    if cfg.resume:
        resume(run, cfg.resume)
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
