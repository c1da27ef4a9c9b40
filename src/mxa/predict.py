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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch

from mxa._optional import MissingExtraError, require
from mxa.data.io import collect_images, load_xray, output_names
from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.sanity import image_notes, suppress_input_checks
from mxa.data.transforms import build_transforms
from mxa.decision.rule import DecisionRule, get_decision_rule
from mxa.files.hub import is_hub_source
from mxa.files.load import load_model
from mxa.models import check_model_name
from mxa.models.hooks import forward_rois
from mxa.utils.files import atomic_path
from mxa.utils.outputs import check_output
from mxa.utils.runtime import resolve_device

__all__ = ["ImagePrediction", "PredictResult", "Predictor", "predict_files"]

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
    #: per image with something to know about it (MONOCHROME1, lateral, small...): its notes
    notes: dict[Path, list[str]] = field(default_factory=dict)


@dataclass
class ImagePrediction:
    """One file's prediction: what ``mxa predict`` writes in a row of its CSV, and what its figures show."""

    path: Path
    #: (1, H, W) in [0, 1], as read from the file
    image: torch.Tensor
    #: (1, C, h, w) the model's input
    x: torch.Tensor
    #: one per label, calibrated when the model carries a calibration
    probabilities: list[float]
    #: "positive" / "negative" per label, "" where the model has no threshold for it
    decisions: list[str]
    #: the regions the MXA blocks crop in this image (``ModelROIs.for_image``), on the CPU
    rois: dict[str, torch.Tensor]
    #: what a reader should know about the file (:func:`mxa.data.sanity.image_notes`)
    notes: list[str]


class Predictor:
    """A model ready for files: the one path from an image file to probabilities, decisions and boxes that
    ``mxa predict`` and ``mxa serve`` share. Loaded once; :meth:`predict` runs batches of files.

    Args:
        model: the model (its label names, decision rule and input size are read off it).
        device: ``auto``, ``cpu``, ``cuda``...

    Examples:
        >>> import timm
        >>> from mxa.predict import Predictor
        >>> p = Predictor(timm.create_model("efficientvit_ml_m0", img_size=64), device="cpu")
        >>> p.columns()[:2], len(p.labels)
        (['path', 'No Finding'], 14)
    """

    def __init__(self, model: torch.nn.Module, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.labels = _output_names(model)
        self.rule = get_decision_rule(model)
        if self.rule is not None:
            self.rule.check_labels(self.labels, "the model's decision rule")
        self.with_decisions = self.rule is not None and self.rule.thresholds is not None
        self.transform = build_transforms(model, train=False)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = getattr(model, "input_hw", None) or cfg.get("input_size", (1, 224, 224))[-2:]
        self.input_hw = (int(size[0]), int(size[1]))

    def columns(self) -> list[str]:
        """The CSV header: path, one probability per label, one decision per label when it has thresholds."""
        return [
            "path",
            *self.labels,
            *([f"{n} decision" for n in self.labels] if self.with_decisions else []),
        ]

    def row(self, p: ImagePrediction) -> list[str]:
        """One CSV row (probabilities to 6 decimals), in :meth:`columns`' order."""
        return [
            str(p.path),
            *(f"{v:.6f}" for v in p.probabilities),
            *(p.decisions if self.with_decisions else []),
        ]

    def threshold(self, label: str) -> float | None:
        """The model's decision threshold for ``label`` (None: no rule, or none for this label)."""
        return self.rule.threshold(label) if self.rule is not None and self.rule.thresholds else None

    @torch.no_grad()
    def predict(
        self, files: Sequence[Path], failures: list[tuple[Path, str]], batch_size: int = 16
    ) -> Iterator[ImagePrediction]:
        """Predict ``files`` in batches, in order; a file that cannot be read goes to ``failures``
        (path, why) and is skipped."""
        for start in range(0, len(files), batch_size):
            raw, ok = _read_batch(files[start : start + batch_size], failures)
            if not ok:
                continue
            x = torch.stack([self.transform(r) for r in raw]).to(self.device)
            with suppress_input_checks():  # the images were prepared here; image_notes name what is odd
                seen = forward_rois(self.model, x)
            logits = seen.output
            if logits.shape[-1] != len(self.labels):  # never values under the wrong columns
                raise ValueError(
                    f"the model gives {logits.shape[-1]} outputs per image but names {len(self.labels)} "
                    "labels: they cannot be written as a table of its labels; check the model"
                )
            rule = self.rule
            probs = (rule.probabilities(logits) if rule else torch.sigmoid(logits.float())).cpu()
            blank = [""] * len(self.labels)
            decisions = _decisions(rule, probs) if self.with_decisions and rule else [blank] * len(ok)
            for i, f in enumerate(ok):
                notes = image_notes(f, raw[i], self.input_hw)
                for note in notes:
                    log.warning("%s: %s", f, note)
                rois = {k: v.cpu() for k, v in seen.for_image(i, self.labels).items()}
                yield ImagePrediction(f, raw[i], x[i : i + 1], probs[i].tolist(), decisions[i], rois, notes)


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
    predictor = Predictor(resolve_model(model, checkpoint, model_name), device)
    files = collect_images(inputs)
    dicoms = [f for f in files if f.suffix.lower() in (".dcm", ".dicom")]
    if dicoms:  # a missing extra fails before any work, not file by file
        require("pydicom", f"Reading DICOM inputs ({dicoms[0]}{' ...' if len(dicoms) > 1 else ''})")
    out = Path(out)
    check_output(out, files, what="--out", overwrite=overwrite)
    if heatmap is not None and heatmap_label.strip().lower() != "top":
        from mxa.viz.cam import resolve_label

        resolve_label(heatmap_label, predictor.labels)  # an unknown label fails before any image is read
    warn_if_synthetic(predictor.model, "images")
    names = output_names(files, "_roi.png")
    if roi_overlay:  # every generated name is checked before any work
        for f in files:
            check_output(Path(roi_overlay) / names[f], files, what="ROI overlay", overwrite=overwrite)
    rule = predictor.rule
    result = PredictResult(out, 0, labels=predictor.labels, decision_rule=rule)
    if rule is not None and rule.calibration:
        log.info("probabilities are calibrated (%s scaling stored with the model)", rule.calibration)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(predictor.columns())
        for p in predictor.predict(files, result.failures, batch_size):
            writer.writerow(predictor.row(p))
            _record(result, p)
            if heatmap is not None:
                cam = Path(heatmap) / heatmap_name(names[p.path], p, predictor, heatmap_label)
                check_output(cam, files, what="heatmap", overwrite=overwrite)
                result.heatmaps.append(draw_heatmap(predictor, p, heatmap_label, cam_stage, cam))
            if roi_overlay:
                result.overlays.append(draw_overlay(predictor, p, Path(roi_overlay) / names[p.path]))
        fh.flush()
    log.debug("predictions for %d image(s): %s", result.n_predicted, out)  # the CLI prints the summary
    return result


def _record(result: PredictResult, p: ImagePrediction) -> None:
    result.rows.append((p.path, p.probabilities, p.decisions))
    result.n_predicted += 1
    if p.notes:
        result.notes[p.path] = p.notes
    if p.image.numel() and float(p.image.max() - p.image.min()) == 0.0:
        result.constant_images.append(p.path)


def draw_overlay(
    predictor: Predictor, p: ImagePrediction, path: Path, findings: Sequence[str] | None = None
) -> Path:
    """The image with the MXA regions drawn on it (``mxa viz``'s colours), written to ``path``.
    ``findings``: draw only the per-label boxes of these labels (None: every box)."""
    from mxa.viz import display_image, plot_roi_overlay

    rois = p.rois if findings is None else _only(p.rois, findings)
    return plot_roi_overlay(
        display_image(p.image),
        rois,
        path,
        probs=torch.tensor(p.probabilities),
        labels=predictor.labels,
        title=f"{p.path.name}: MXA regions of interest",
    )


def _only(rois: dict[str, torch.Tensor], findings: Sequence[str]) -> dict[str, torch.Tensor]:
    """The boxes of ``rois`` whose label is one of ``findings`` (keys ``"<block>: <label>"``), and every box
    that belongs to no label (a single-box block's crop, keyed by its block alone)."""
    keep = set(findings)
    return {k: v for k, v in rois.items() if ": " not in k or k.split(": ", 1)[1] in keep}


def box_findings(p: ImagePrediction) -> list[str]:
    """The labels that have a box in ``p`` (the label ROIs the MXA blocks cropped), in first-seen order."""
    return list(dict.fromkeys(k.split(": ", 1)[1] for k in p.rois if ": " in k))


def heatmap_name(overlay_name: str, p: ImagePrediction, predictor: Predictor, wanted: str) -> str:
    """``<image>_gradcam_<label>.png`` for the label ``wanted`` (a name or ``top``) explains in ``p``."""
    from mxa.viz.cam import resolve_label

    j = resolve_label(wanted, predictor.labels, torch.tensor(p.probabilities))
    return overlay_name.removesuffix("_roi.png") + f"_gradcam_{predictor.labels[j].replace(' ', '_')}.png"


def draw_heatmap(predictor: Predictor, p: ImagePrediction, wanted: str, stage: int, path: Path) -> Path:
    """Grad-CAM of the label ``wanted`` (a name or ``top``) beside the MXA boxes, written to ``path``."""
    from mxa.viz import display_image
    from mxa.viz.cam import gradcam, plot_gradcam_overlay, resolve_label

    probs = torch.tensor(p.probabilities)
    j = resolve_label(wanted, predictor.labels, probs)
    with suppress_input_checks():
        cam = gradcam(predictor.model, p.x, j, stage)[0]
    label = predictor.labels[j]
    return plot_gradcam_overlay(
        display_image(p.image),
        cam,
        path,
        p.rois,
        label,
        float(probs[j]),
        p.decisions[j] or None,
        title=f"{p.path.name}: Grad-CAM of {label} (stage {stage})",
        threshold=predictor.threshold(label),
    )


def synthetic_note(model: torch.nn.Module, data: str) -> str | None:
    """What to say when a model trained on the built-in phantoms meets real images (``data``: a ``--data``
    spec, or ``"images"`` for files): its outputs there mean nothing. None otherwise."""
    trained_on = str(getattr(model, "trained_on", None) or "")
    if trained_on.startswith("phantom") and not data.startswith("phantom"):
        return (
            f"this model was trained on synthetic phantom X-rays (--data {trained_on}): on real radiographs "
            "its outputs are meaningless; use a model trained on real data"
        )
    return None


def warn_if_synthetic(model: torch.nn.Module, data: str) -> None:
    """Log :func:`synthetic_note` when there is one."""
    note = synthetic_note(model, data)
    if note:
        log.warning(note)


def _output_names(model: torch.nn.Module) -> list[str]:
    """The CSV columns of the model's outputs: its label names, CheXpert's for 14 unnamed outputs, else
    ``output_0``... (a model not trained by us: e.g. timm's ImageNet classifiers), said once."""
    names = getattr(model, "label_names", None)
    n = int(getattr(model, "num_classes", 0) or 0)
    if names:
        return list(names)
    if n in (0, len(CHEXPERT_LABELS)):
        return list(CHEXPERT_LABELS)
    log.warning(
        "the model has %d outputs and no label names: the columns are output_0 ... output_%d", n, n - 1
    )
    return [f"output_{i}" for i in range(n)]


def _decisions(rule: DecisionRule, probs: torch.Tensor) -> list[list[str]]:
    pos, defined = rule.decide(probs)
    word = {(True, True): "positive", (False, True): "negative"}
    return [[word.get((bool(p), bool(d)), "") for p, d in zip(pr, de)] for pr, de in zip(pos, defined)]


def resolve_model(
    model: torch.nn.Module | None, checkpoint: str | Path | None, model_name: str | None
) -> torch.nn.Module:
    """``model`` itself, else a file of ours or a shared model (``checkpoint``: what :func:`mxa.load_model`
    reads), else a model name (``hf-hub:``/``local-dir:`` ids load; a timm name gets random weights)."""
    if model is not None:
        return model
    if checkpoint is not None:
        return load_model(checkpoint)
    if model_name is not None:
        if is_hub_source(model_name):  # a shared model: hf-hub:ORG/NAME or local-dir:DIR
            return load_model(model_name)
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
