"""``mxa predict``: the 14 probabilities for PNG, JPEG or DICOM files, and ROI overlays.

Every readable image is predicted; an image that cannot be read (missing extra, corrupt file) is listed
in :attr:`PredictResult.failures` instead of stopping the batch. The CSV is written to a temporary file
and renamed at the end, so it is either complete or absent, and it never replaces one of the inputs.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch

from ._optional import MissingExtraError
from .data.io import collect_images, load_xray, output_names
from .data.labels import CHEXPERT_LABELS
from .data.transforms import build_transforms
from .models.loading import load_model
from .utils.files import atomic_path
from .utils.runtime import resolve_device

__all__ = ["PredictResult", "predict_files"]

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """Where the CSV went, how many images were predicted, and the ones that could not be read."""

    csv: Path
    n_predicted: int
    failures: list[tuple[Path, str]] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)


@torch.no_grad()
def predict_files(
    inputs: Sequence[str | Path],
    out: str | Path = "preds.csv",
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    roi_overlay: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 16,
    model: torch.nn.Module | None = None,
) -> PredictResult:
    """Write a CSV with one row per readable image (path + one probability per label); optionally overlays.

    The model comes from ``model``, a file of ours (``checkpoint``: a ``mxa train`` checkpoint or an
    exported safetensors) or a timm name (``model_name``, random weights).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = _resolve_model(model, checkpoint, model_name)
    dev = resolve_device(device)
    model = model.eval().to(dev)
    files = collect_images(inputs)
    out = Path(out)
    if out.resolve() in {f.resolve() for f in files}:
        raise ValueError(f"--out {out} is one of the input images; choose another file for the CSV")
    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    tf = build_transforms(model, train=False)
    has_rois = hasattr(model, "forward_with_rois") and bool(model.mxa_blocks())
    names = output_names(files, "_roi.png")
    result = PredictResult(out, 0)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *labels])
        for start in range(0, len(files), batch_size):
            raw, ok = _read_batch(files[start : start + batch_size], result.failures)
            if not ok:
                continue
            x = torch.stack([tf(r) for r in raw]).to(dev)
            logits, boxes = model.forward_with_rois(x) if has_rois else (model(x), {})
            probs = torch.sigmoid(logits.float()).cpu()
            for i, f in enumerate(ok):
                writer.writerow([str(f), *(f"{v:.6f}" for v in probs[i].tolist())])
                if roi_overlay:
                    result.overlays.append(
                        _overlay(raw[i], {k: v[i].cpu() for k, v in boxes.items()}, probs[i], labels,
                                 Path(roi_overlay) / names[f], f)
                    )  # fmt: skip
            result.n_predicted += len(ok)
        fh.flush()
    log.info("predictions for %d image(s): %s", result.n_predicted, out)
    return result


def _resolve_model(
    model: torch.nn.Module | None, checkpoint: str | Path | None, model_name: str | None
) -> torch.nn.Module:
    if model is not None:
        return model
    if checkpoint is not None:
        return load_model(checkpoint)
    if model_name is not None:
        if not timm.is_model(model_name):
            raise ValueError(
                f"unknown model {model_name!r}; ours are efficientvit_ml_m0 ... efficientvit_ml_m5"
            )
        return timm.create_model(model_name)
    raise ValueError("give a checkpoint or a model name")


def _read_batch(
    chunk: Sequence[Path], failures: list[tuple[Path, str]]
) -> tuple[list[torch.Tensor], list[Path]]:
    raw, ok = [], []
    for f in chunk:
        try:
            raw.append(load_xray(f))
            ok.append(f)
        except (ValueError, OSError, MissingExtraError) as e:
            failures.append((f, str(e)))
            log.warning("skipped %s: %s", f, e)
    return raw, ok


def _overlay(
    img: torch.Tensor,
    boxes: dict[str, torch.Tensor],
    probs: torch.Tensor,
    labels: list[str],
    path: Path,
    src: Path,
) -> Path:
    from .viz import display_image, plot_roi_overlay

    return plot_roi_overlay(
        display_image(img),
        boxes,
        path,
        probs=probs,
        labels=labels,
        title=f"{src.name}: MXA regions of interest",
    )
