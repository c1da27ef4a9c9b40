"""``mxa predict``: the 14 probabilities for PNG, JPEG or DICOM files, decisions, ROI overlays, Grad-CAM.

When the model carries a decision rule (``mxa eval --calibrate/--thresholds --save-model``), the
probabilities are calibrated and the CSV has a ``<label> decision`` column per label (``positive``,
``negative``, or empty for a label without a threshold) after the probability columns. A constant image
(an empty or failed read) is predicted but warned about, by name.

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

from mxa._optional import MissingExtraError
from mxa.data.io import collect_images, load_xray, output_names
from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.sanity import suppress_input_checks
from mxa.data.transforms import build_transforms
from mxa.decision.rule import DecisionRule, get_decision_rule
from mxa.files.load import load_model
from mxa.models import check_model_name
from mxa.models.hooks import forward_with_rois
from mxa.utils.files import atomic_path
from mxa.utils.outputs import check_output
from mxa.utils.runtime import resolve_device

__all__ = ["PredictResult", "predict_files"]

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """Where the CSV went, how many images were predicted, and the ones that could not be read."""

    csv: Path
    n_predicted: int
    failures: list[tuple[Path, str]] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)
    heatmaps: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    #: the model's decision rule (None: raw sigmoid probabilities, no decisions)
    decision_rule: DecisionRule | None = None
    #: per image: (file, probabilities, decisions: "positive" / "negative" / "" per label)
    rows: list[tuple[Path, list[float], list[str]]] = field(default_factory=list)
    #: images whose pixels are all equal
    constant_images: list[Path] = field(default_factory=list)


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
    heatmap: str | Path | None = None,
    heatmap_label: str = "top",
    cam_stage: int = 1,
    overwrite: bool = False,
) -> PredictResult:
    """Write a CSV with one row per readable image (path + one probability per label, + one decision per
    label when the model has thresholds); optionally ROI overlays and Grad-CAM heatmaps.

    The model comes from ``model``, a file of ours (``checkpoint``: a ``mxa train`` checkpoint or an
    exported safetensors) or a timm name (``model_name``, random weights).

    Args:
        heatmap: folder for one ``<image>_gradcam_<label>.png`` per image (Grad-CAM beside the MXA boxes).
        heatmap_label: the label the heatmap explains: a name, or ``top`` (the most probable per image).
        cam_stage: the EfficientViT stage Grad-CAM looks at (see :mod:`mxa.viz.cam`).
        overwrite: replace existing outputs (the CSV, overlays, heatmaps); an input is never replaced.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = _resolve_model(model, checkpoint, model_name)
    dev = resolve_device(device)
    model = model.eval().to(dev)
    files = collect_images(inputs)
    out = Path(out)
    check_output(out, files, what="--out", overwrite=overwrite)
    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    rule = get_decision_rule(model)
    if rule is not None:
        rule.check_labels(labels, "the model's decision rule")
    if heatmap is not None and heatmap_label.strip().lower() != "top":
        from mxa.viz.cam import resolve_label

        resolve_label(heatmap_label, labels)  # an unknown label fails before any image is read
    with_decisions = rule is not None and rule.thresholds is not None
    tf = build_transforms(model, train=False)
    names = output_names(files, "_roi.png")
    if roi_overlay:  # every generated name is checked before any work
        for f in files:
            check_output(Path(roi_overlay) / names[f], files, what="ROI overlay", overwrite=overwrite)
    result = PredictResult(out, 0, labels=labels, decision_rule=rule)
    if rule is not None and rule.calibration:
        log.info("probabilities are calibrated (%s scaling stored with the model)", rule.calibration)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *labels, *([f"{n} decision" for n in labels] if with_decisions else [])])
        for start in range(0, len(files), batch_size):
            raw, ok = _read_batch(files[start : start + batch_size], result.failures)
            if not ok:
                continue
            _warn_constant(raw, ok, result.constant_images)
            x = torch.stack([tf(r) for r in raw]).to(dev)
            with suppress_input_checks():  # the images were prepared here; constant ones are named above
                logits, boxes = forward_with_rois(model, x)
            probs = (rule.probabilities(logits) if rule else torch.sigmoid(logits.float())).cpu()
            decisions = _decisions(rule, probs) if with_decisions and rule else [[""] * len(labels)] * len(ok)
            for i, f in enumerate(ok):
                result.rows.append((f, probs[i].tolist(), decisions[i]))
                writer.writerow(
                    [
                        str(f),
                        *(f"{v:.6f}" for v in probs[i].tolist()),
                        *(decisions[i] if with_decisions else []),
                    ]
                )
                if heatmap is not None:
                    result.heatmaps.append(
                        _heatmap(
                            model,
                            x[i : i + 1],
                            raw[i],
                            {k: v[i].cpu() for k, v in boxes.items()},
                            probs[i],
                            decisions[i],
                            labels,
                            heatmap_label,
                            cam_stage,
                            Path(heatmap),
                            names[f],
                            f,
                            files,
                            overwrite,
                        )
                    )
                if roi_overlay:
                    result.overlays.append(
                        _overlay(
                            raw[i],
                            {k: v[i].cpu() for k, v in boxes.items()},
                            probs[i],
                            labels,
                            Path(roi_overlay) / names[f],
                            f,
                        )
                    )
            result.n_predicted += len(ok)
        fh.flush()
    log.debug("predictions for %d image(s): %s", result.n_predicted, out)  # the CLI prints the summary
    return result


def _decisions(rule: DecisionRule, probs: torch.Tensor) -> list[list[str]]:
    pos, defined = rule.decide(probs)
    word = {(True, True): "positive", (False, True): "negative"}
    return [[word.get((bool(p), bool(d)), "") for p, d in zip(pr, de)] for pr, de in zip(pos, defined)]


def _warn_constant(raw: list[torch.Tensor], files: list[Path], found: list[Path]) -> None:
    for img, f in zip(raw, files):
        if img.numel() and float(img.max() - img.min()) == 0.0:
            found.append(f)
            log.warning(
                "%s is constant (every pixel %.4g): an empty image, a failed export or a wrong window; it "
                "gets "
                "the same scores as any other blank image. Check the file",
                f,
                float(img.flatten()[0]),
            )


def _heatmap(
    model: torch.nn.Module,
    x: torch.Tensor,
    raw: torch.Tensor,
    boxes: dict[str, torch.Tensor],
    probs: torch.Tensor,
    decisions: list[str],
    labels: list[str],
    wanted: str,
    stage: int,
    folder: Path,
    stem: str,
    src: Path,
    inputs: Sequence[Path],
    overwrite: bool,
) -> Path:
    from mxa.viz import display_image
    from mxa.viz.cam import gradcam, plot_gradcam_overlay, resolve_label

    j = resolve_label(wanted, labels, probs)
    with suppress_input_checks():
        cam = gradcam(model, x, j, stage)[0]
    name = stem.removesuffix("_roi.png") + f"_gradcam_{labels[j].replace(' ', '_')}.png"
    rule = get_decision_rule(model)
    return plot_gradcam_overlay(
        display_image(raw),
        cam,
        check_output(folder / name, inputs, what="heatmap", overwrite=overwrite),
        boxes,
        labels[j],
        float(probs[j]),
        decisions[j] or None,
        title=f"{src.name}: Grad-CAM of {labels[j]} (stage {stage})",
        threshold=rule.threshold(labels[j]) if rule is not None else None,
    )


def _resolve_model(
    model: torch.nn.Module | None, checkpoint: str | Path | None, model_name: str | None
) -> torch.nn.Module:
    if model is not None:
        return model
    if checkpoint is not None:
        return load_model(checkpoint)
    if model_name is not None:
        check_model_name(model_name, "model")
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
    from mxa.viz import display_image, plot_roi_overlay

    return plot_roi_overlay(
        display_image(img),
        boxes,
        path,
        probs=probs,
        labels=labels,
        title=f"{src.name}: MXA regions of interest",
    )
