"""A run's state between epochs: :class:`Run`, the last/best :class:`CheckpointSaver`, and exact resume
(the RNG state, the checks that a checkpoint belongs to this run); the format: :mod:`mxa.files.checkpoint`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3

from mxa.data.combine import IndexedDataset, ResumableSampler
from mxa.data.labels import CHEXPERT_LABELS
from mxa.distill.cache import TeacherCache
from mxa.files.checkpoint import TrainCheckpoint
from mxa.files.spec import ModelSpec
from mxa.layers.mxa_block import MXABlock
from mxa.losses import DistillationLoss
from mxa.models.hooks import BoxCapture
from mxa.train.config import TrainConfig, stored_settings
from mxa.train.distributed import all_ranks
from mxa.train.run_folder import trim_metrics
from mxa.utils.files import json_text

__all__ = [
    "FIXED_ON_RESUME",
    "CheckpointSaver",
    "Run",
    "all_finite",
    "capture_rng_state",
    "model_spec",
    "restore_rng_state",
    "resume",
]

log = logging.getLogger(__name__)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, as plain tensors and ints (safe to load with weights_only)."""
    np_state: Any = np.random.get_state()  # noqa: NPY002  (the legacy global RNG, used by third-party code)
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": (py_version, list(py_state), py_gauss),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    n = state["numpy"]
    legacy = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Settings that fix a run's schedule, data or model (``fixed=True`` in TrainConfig): a resumed run keeps them.
FIXED_ON_RESUME = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("fixed"))


def all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


def model_spec(cfg: TrainConfig) -> ModelSpec:
    """What a run builds (and its checkpoints record): the model, its size, and its MXA options."""
    if cfg.mxa_rois:  # ROIs from the label maps: the single box's settings do not apply
        rois = {
            "rois": cfg.mxa_rois,
            "roi_classes": len(CHEXPERT_LABELS),
            "roi_skip": [CHEXPERT_LABELS.index("No Finding")],  # the one label without a place
        }
        if cfg.mxa_roi_fraction != _MXA_DEFAULTS["roi_fraction"]:  # recorded only where it differs
            rois["roi_fraction"] = cfg.mxa_roi_fraction
        return ModelSpec.for_training(
            cfg.model, cfg.img_size, cfg.mxa, cfg.mxa_stages, rois, cfg.mxa_per_stage
        )
    chosen = {
        "mode": cfg.mxa_mode,
        "min_size": cfg.mxa_min_size,
        "init_size": cfg.mxa_init_size,
        "crop_size": cfg.mxa_crop_size,
        "saliency_temperature": cfg.mxa_saliency_temperature,
        "crop_method": cfg.mxa_crop_method,
        "box_size": cfg.mxa_box_size,
        "roi_classes": len(CHEXPERT_LABELS) if cfg.roi_mil > 0 else 0,
        "class_boxes": cfg.mxa_class_boxes and cfg.roi_mil > 0,
        "box_grad": cfg.mxa_box_grad,
    }
    # Only what differs from MXABlock's defaults: a checkpoint rebuilds with timm.create_model as it was.
    mxa_cfg = {k: v for k, v in chosen.items() if v != _MXA_DEFAULTS[k]}
    return ModelSpec.for_training(
        cfg.model, cfg.img_size, cfg.mxa, cfg.mxa_stages, mxa_cfg or None, cfg.mxa_per_stage
    )


_MXA_DEFAULTS = {k: p.default for k, p in inspect.signature(MXABlock).parameters.items() if k != "dim"}


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
                f.write(json_text(record) + "\n")  # NaN as null: every JSON reader takes it

    def where_good(self) -> str:
        if self.last_good is None or not self.last_good.is_file():
            return "no checkpoint of this run has finite weights (none was saved)"
        return f"the last good checkpoint is {self.last_good}"


def resume(run: Run, path: str) -> None:
    """Restore weights, optimizer, schedule, EMA, RNG and position; refuse a checkpoint of another run."""
    ckpt = TrainCheckpoint.load(path, map_location="cpu")
    old = stored_settings(ckpt.config)
    changed = [
        f"{k} ({old[k]!r} -> {getattr(run.cfg, k)!r})"
        for k in FIXED_ON_RESUME
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
