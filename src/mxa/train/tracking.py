"""Live experiment tracking for ``mxa train --log tensorboard,wandb,mlflow`` (any subset).

``metrics.jsonl`` stays the source of truth: every tracker gets the same per-epoch record, flattened to
``"val/macro_auc"``-style keys (loss terms, learning rate, macro/micro and per-label AUC, localization per
block), the run's settings as hyper-parameters once, and every ``images_every`` epochs a few validation
images with their MXA boxes (the renderer of ``mxa viz``). Only global rank 0 logs. A resumed run continues
the same W&B / MLflow run (their ids are kept in ``OUTPUT/tracking.json``).

Where each writes: TensorBoard ``OUTPUT/tensorboard``; MLflow ``$MLFLOW_TRACKING_URI``, else a file store
in ``OUTPUT/mlruns``; W&B its usual service (``WANDB_MODE=offline``: ``OUTPUT/wandb``; project
``$WANDB_PROJECT``, default ``mxa``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mxa._optional import require
from mxa.utils.files import atomic_write_text

__all__ = ["TRACKERS", "Tracking", "flatten_numbers", "log_roi_overlays", "parse_trackers"]

log = logging.getLogger(__name__)

#: The trackers ``--log`` accepts.
TRACKERS = ("tensorboard", "wandb", "mlflow")


def parse_trackers(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` (or a list) -> the names, in :data:`TRACKERS` order; ``""`` -> none.

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names = {p.strip().lower() for p in parts if p.strip() and p.strip().lower() != "none"}
    bad = sorted(names - set(TRACKERS))
    if bad:
        raise ValueError(
            f"unknown tracker(s) {', '.join(bad)} in --log: use a comma-separated subset of "
            f"{', '.join(TRACKERS)}"
        )
    return tuple(t for t in TRACKERS if t in names)


def flatten_numbers(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested record, keyed by their ``/``-joined path (booleans and None left out).

    Examples:
        >>> from mxa.train.tracking import flatten_numbers
        >>> flatten_numbers({"train_loss": 0.5, "val": {"macro_auc": 0.8, "per_label_auc": {"A": None}}})
        {'train_loss': 0.5, 'val/macro_auc': 0.8}
    """
    out: dict[str, float] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_numbers(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def _params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, default=str) if not isinstance(v, str) else v for k, v in config.items()}


class _TensorBoard:
    def __init__(self, out_dir: Path, run_name: str, config: Mapping[str, Any], ids: dict[str, str]) -> None:
        require("tensorboard", "--log tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        if "tensorboard" not in ids:  # the settings once per run, not again on resume
            table = "\n".join(f"| {k} | `{v}` |" for k, v in _params(config).items())
            self.writer.add_text("config", "| setting | value |\n| --- | --- |\n" + table, 0)
            ids["tensorboard"] = str(out_dir / "tensorboard")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def image(self, tag: str, png: Path, step: int) -> None:
        from torchvision.io import decode_png, read_file  # our own rendered figure, not a dataset image

        self.writer.add_image(tag, decode_png(read_file(str(png)))[:3], step, dataformats="CHW")

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, out_dir: Path, run_name: str, config: Mapping[str, Any], ids: dict[str, str]) -> None:
        # MLflow 3 reports usage to its telemetry host by default: no command of ours touches the network
        # unless a remote service is asked for (MLFLOW_DISABLE_TELEMETRY=false turns it back on)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow = require("mlflow", "--log mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a file store in the run folder: MLflow 3 keeps it (maintenance mode) only when asked
            uri = (out_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        self._metric, self._param = mlflow.entities.Metric, mlflow.entities.Param
        if "mlflow" in ids and self._exists(ids["mlflow"]):
            self.run_id = ids["mlflow"]
            return
        if "mlflow" in ids:  # tracking.json names a run the store no longer has (deleted, or another store)
            log.warning(
                "MLflow run %s of this run folder is gone from %s: the resumed run logs to a new MLflow run",
                ids["mlflow"],
                uri,
            )
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "mxa")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        ids["mlflow"] = self.run_id
        params = [self._param(k, v[:6000]) for k, v in _params(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except Exception:  # MlflowException (RESOURCE_DOES_NOT_EXIST), or a corrupt store entry
            return False
        return True

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [self._metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def image(self, tag: str, png: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(png), artifact_path=f"{tag}/epoch{step:03d}")

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class _WandB:
    def __init__(self, out_dir: Path, run_name: str, config: Mapping[str, Any], ids: dict[str, str]) -> None:
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no crash reports to W&B's Sentry
        wandb = require("wandb", "--log wandb")
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mxa"),
            name=run_name,
            dir=str(out_dir),
            config=dict(config),
            id=ids.get("wandb"),
            resume="allow",
            settings=wandb.Settings(console="off", silent=True),
        )
        ids["wandb"] = self.run.id

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def image(self, tag: str, png: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(png))}, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_Backend = _TensorBoard | _WandB | _MLflow
_BACKENDS: dict[str, type[_Backend]] = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Tracking:
    """The trackers of one run; a no-op where ``names`` is empty or on ranks other than 0.

    Args:
        names: from :func:`parse_trackers`.
        out_dir: the run folder.
        config: the run's settings (logged once as hyper-parameters).
        enabled: False on ranks other than global rank 0.
        images_every: log validation images with their MXA boxes every this many epochs (0: never).
        resume: continue the W&B / MLflow runs recorded in ``OUTPUT/tracking.json`` (a resumed run);
            otherwise new ones are started and recorded there.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from mxa.train.tracking import Tracking
        >>> with Tracking((), Path(tempfile.mkdtemp()), config={}) as t:  # no tracker: nothing is written
        ...     t.log_epoch(1, {"train_loss": 0.5})
    """

    def __init__(
        self,
        names: Iterable[str],
        out_dir: Path,
        config: Mapping[str, Any],
        enabled: bool = True,
        images_every: int = 5,
        resume: bool = False,
    ) -> None:
        self.names = tuple(names) if enabled else ()
        self.images_every = images_every
        self._ids_file = out_dir / "tracking.json"
        ids: dict[str, str] = {}
        if self.names and resume and self._ids_file.is_file():
            try:
                ids = json.loads(self._ids_file.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(
                    f"{self._ids_file} is not a record of this run's trackers ({e}); move it away to start "
                    "new tracker runs"
                ) from None
            if not isinstance(ids, dict) or not all(isinstance(v, str) for v in ids.values()):
                raise ValueError(f"{self._ids_file} is not a record of this run's trackers; move it away")
        self._backends: list[_Backend] = []
        try:
            for n in self.names:
                self._backends.append(_BACKENDS[n](out_dir, out_dir.name, config, ids))
        except BaseException:
            self.close(failed=True)  # the trackers already started are not left open
            raise
        if self.names:
            atomic_write_text(self._ids_file, json.dumps(ids, indent=2))

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close(failed=kind is not None and not issubclass(kind, KeyboardInterrupt))

    def wants_images(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) logs validation images."""
        return bool(self._backends) and self.images_every > 0 and epoch % self.images_every == 0

    def log_epoch(self, epoch: int, record: Mapping[str, Any]) -> None:
        """Every finite number of ``record`` (a metrics.jsonl line) at step ``epoch``."""
        if not self._backends:
            return
        values = flatten_numbers({k: v for k, v in record.items() if k != "epoch"})
        for b in self._backends:
            b.scalars(values, epoch)

    def log_pngs(self, epoch: int, tag: str, pngs: Sequence[Path]) -> None:
        """PNG files (e.g. ROI overlays) under ``tag/<i>`` at step ``epoch``."""
        for i, png in enumerate(pngs):
            for b in self._backends:
                b.image(f"{tag}/{i}", png, epoch)

    def close(self, failed: bool = False) -> None:
        """End every tracker's run (FAILED where the training raised)."""
        for b in self._backends:
            b.close(failed)
        self._backends = []


def log_roi_overlays(tracking: Tracking, epoch: int, model: Any, images: Any, labels: Sequence[str]) -> None:
    """Validation images (B, 1, H, W) with the MXA boxes of ``model`` (rendered as ``mxa viz`` does)."""
    import torch

    from mxa.models.hooks import forward_rois
    from mxa.viz.roi import plot_roi_overlay

    was_training = model.training
    model.eval()
    with torch.no_grad():
        seen = forward_rois(model, images)
    logits = seen.output
    model.train(was_training)
    with tempfile.TemporaryDirectory(prefix="mxa-track-") as tmp:
        pngs = []
        for i in range(images.shape[0]):
            title = f"epoch {epoch}: validation image {i}, MXA regions of interest"
            path = Path(tmp) / f"roi_{i}.png"
            box = {k: v.float().cpu() for k, v in seen.for_image(i, labels).items()}
            probs = torch.sigmoid(logits[i]).float().cpu()
            pngs.append(plot_roi_overlay(images[i].float().cpu(), box, path, probs, labels, title=title))
        tracking.log_pngs(epoch, "roi_overlay", pngs)
