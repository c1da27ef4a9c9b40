"""Training: baseline, +MXA, +MXA+KD, on one CPU, one GPU or many (torchrun + DDP).

Everything reusable comes from timm (AdamW, cosine schedule with warm-up and cool-down, EMA, AGC,
RandAugment) and torch (DDP, AMP). What is ours: the loop, exact resume, the non-finite guard, the logs.
Layout follows timm's ``train.py``: :func:`train` sets up a :class:`~mxa.train.state.Run`
(:mod:`mxa.train.setup`), then alternates :func:`train_one_epoch` and :func:`validate`;
:class:`~mxa.train.state.CheckpointSaver` owns the last/best policy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import signal
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from timm.utils import dispatch_clip_grad
from torch.utils.data import DataLoader, DistributedSampler

from mxa.data.labels import CHEXPERT_LABELS
from mxa.evaluate import (
    _with_label_boxes,
    metrics_by_source,
    predict,
    roi_localization,
    summarize_localization,
)
from mxa.losses.box import (
    best_match_giou_loss,
    box_area,
    guided_mil_loss,
    per_label_giou_loss,
    roi_mil_loss,
    true_box_map_loss,
)
from mxa.metrics.classification import SCALAR_METRICS, compute_metrics
from mxa.models.hooks import BoxCapture, has_rois
from mxa.train.config import TrainConfig
from mxa.train.distributed import agree, gather_predictions, process_group
from mxa.train.setup import determinism, output_lock, schedule_phases, setup
from mxa.train.state import CheckpointSaver, Run, all_finite
from mxa.train.tracking import Tracking, log_roi_overlays, parse_trackers
from mxa.utils.runtime import NonFiniteError, autocast, resolve_device

__all__ = ["NonFiniteLossError", "TrainConfig", "schedule_phases", "train", "train_one_epoch", "validate"]

log = logging.getLogger(__name__)


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


#: What to run to continue a stopped run, when it is part of a command that continues it (``mxa demo``,
#: ``mxa ablate``: set by :func:`mxa.train.experiment.run_experiment`); unset: ``mxa train --resume``.
CONTINUE_HINT: ContextVar[str | None] = ContextVar("continue_hint", default=None)


def continue_hint(last: Path) -> str:
    """The command that continues a run stopped with ``last`` as its checkpoint, ready to paste."""
    return CONTINUE_HINT.get() or f"mxa train --resume {shlex.quote(str(last))}"


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model; returns a summary (best metrics, paths, schedule). See :class:`TrainConfig`."""
    device = resolve_device(cfg.device)
    with determinism(cfg.deterministic), process_group(device), output_lock(cfg) as out_dir:
        run = setup(cfg, device, out_dir)
        saver = CheckpointSaver(out_dir, run.is_main, Path(cfg.resume) if cfg.resume else None)
        tracking = Tracking(
            parse_trackers(cfg.log),
            out_dir,
            config=dataclasses.asdict(cfg),
            enabled=run.is_main,
            images_every=cfg.log_images_every,
            resume=bool(cfg.resume),
        )
        with _StopRequest() as stopper, tracking:
            _fit(run, saver, stopper, tracking)
        summary = _summary(run)
        if summary["best"] is None and run.is_main:
            log.warning(
                "no epoch had a validation macro AUC (%d validation image(s); a label needs both classes), "
                "so there is no best.pt: use %s, or validate on more images",
                len(run.val_ds),
                summary["last"],
            )
        return summary


def _fit(run: Run, saver: CheckpointSaver, stopper: _StopRequest, tracking: Tracking) -> None:
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
            tracking.log_epoch(epoch + 1, record)
            if tracking.wants_images(epoch + 1) and has_rois(run.model):
                images = torch.stack([run.val_ds[i][1] for i in range(min(4, len(run.val_ds)))])
                labels = list(getattr(run.model, "label_names", None) or CHEXPERT_LABELS)
                log_roi_overlays(tracking, epoch + 1, run.model, images.to(run.device), labels)
        if cfg.stop_after_epoch is not None and cfg.stop_after_epoch <= epoch + 1 < cfg.epochs:
            if run.is_main:
                log.info(
                    "stopping after epoch %d as asked; continue with: %s",
                    epoch + 1,
                    continue_hint(saver.last),
                )
            break


def _check_finite_state(run: Run, saver: CheckpointSaver, epoch: int, record: dict[str, Any]) -> None:
    """An epoch whose weights or validation predictions are not finite is never saved: stop instead."""
    bad = [] if all_finite(run.model) else ["the weights"]
    if run.ema is not None and not all_finite(run.ema.module):
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
        # best.pt is chosen on the EMA's AUC where there is one: say which number it is
        (" (best EMA AUC: best.pt)" if "val_ema" in record else " (best: best.pt)") if improved else "",
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

    return tqdm(total=total, desc=desc, unit="batch", disable=None)  # None: no bar when not a terminal


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
        true = batch[4].to(dev) if len(batch) > 4 else None
        loss = loss + _localization_terms(run.cfg, run.boxes, targets, mask, true)
    return loss


def _localization_terms(
    cfg: TrainConfig, boxes: BoxCapture, targets: torch.Tensor, mask: torch.Tensor, true: torch.Tensor | None
) -> torch.Tensor:
    """The box and ROI objectives of the last forward pass (:class:`~mxa.models.hooks.BoxCapture`):
    ``--box-loss``/``--box-area-penalty`` on single boxes, ``--box-loss`` on per-label boxes or label-ROI
    maps, ``--roi-mil`` on the ROI classifiers and ``--roi-guide`` between label-ROI blocks."""
    dev = targets.device
    zero = torch.zeros((), device=dev)
    total = zero
    single = [b for b in boxes.take() if b.ndim == 2]  # label-ROI boxes (B, R, 4) are a read-out
    if single:
        total = total + _box_terms(cfg, single, true)
    label_boxes, maps = boxes.take_label_boxes(), boxes.take_label_maps()
    if maps and cfg.box_loss > 0 and true is not None:  # label-ROI maps high in each label's true box
        total = total + cfg.box_loss * sum((true_box_map_loss(z, true) for z in maps), zero) / len(maps)
    elif label_boxes and cfg.box_loss > 0 and true is not None:  # each label's box to its own box
        total = total + cfg.box_loss * sum((per_label_giou_loss(b, true) for b in label_boxes), zero) / len(
            label_boxes
        )
    roi_logits = boxes.take_roi_logits()
    findings = torch.tensor([name != "No Finding" for name in CHEXPERT_LABELS], device=dev)
    if roi_logits:
        per_block = (roi_mil_loss(z, targets, mask, findings) for z in roi_logits)
        total = total + cfg.roi_mil * sum(per_block, zero) / len(roi_logits)
    if len(maps) > 1 and cfg.roi_guide > 0:  # the deepest block's maps guide the earlier ones
        per_block = (guided_mil_loss(z, maps[-1], targets, mask, findings) for z in maps[:-1])
        total = total + cfg.roi_guide * sum(per_block, zero) / (len(maps) - 1)
    return total


def _box_terms(cfg: TrainConfig, boxes: list[torch.Tensor], true: torch.Tensor | None) -> torch.Tensor:
    """``--box-loss`` x GIoU to the best-matching true box + ``--box-area-penalty`` x mean box area."""
    zero = torch.zeros((), device=boxes[0].device)  # sum()'s start, typed (0 + x is exact)
    total = sum((box_area(b).mean() for b in boxes), zero) / len(boxes) * cfg.box_area_penalty
    if cfg.box_loss > 0 and true is not None:
        total = total + cfg.box_loss * sum((best_match_giou_loss(b, true) for b in boxes), zero) / len(boxes)
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
    if not all_finite(run.model):
        log.warning("Ctrl-C: the weights are not finite, so nothing was saved; %s", saver.where_good())
        return
    saver.save(state, improved=False, record=None)
    if run.is_main:
        log.info(
            "saved %s (epoch %d, batch %d); continue with: %s",
            saver.last,
            epoch + 1,
            batch_in_epoch,
            continue_hint(saver.last),
        )


def validate(run: Run) -> dict[str, Any]:
    """Validation metrics of the model (``val``) and of its EMA (``val_ema``), gathered over ranks."""
    out: dict[str, Any] = {}
    nets = {"val": run.model, "val_ema": run.ema.module if run.ema is not None else None}
    for tag, net in nets.items():
        if net is None:
            continue
        sampler: DistributedSampler | None = (
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
        rec: dict[str, Any] = {k: dict(m).get(k) for k in SCALAR_METRICS}
        rec.update(
            per_label_auc=m["per_label_auc"], n_images=m["n_images"], n_nonfinite=m.get("n_nonfinite", 0)
        )
        if "rois" in preds and "true_boxes" in preds:
            loc = roi_localization(
                _with_label_boxes(preds),
                preds["true_boxes"],
                n_random=16,
                points=preds.get("points"),
                per_label=False,
            )
            # the mean over blocks, and each block's own numbers (learning curves, trackers)
            per_block = {b: {k: v for k, v in m.items() if isinstance(v, float)} for b, m in loc.items()}
            rec["roi_localization"] = {**summarize_localization(loc), "per_block": per_block}
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
        "best_weights": "ema" if run.ema is not None else "model",  # what best.pt was chosen on, and holds
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
