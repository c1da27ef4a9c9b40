"""``mxa predict``: the 14 probabilities for PNG, JPEG or DICOM files, and ROI overlays."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import timm
import torch

from .data.io import IMAGE_SUFFIXES, load_xray
from .data.labels import CHEXPERT_LABELS
from .data.transforms import build_transforms

__all__ = ["collect_images", "predict_files"]


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the images inside folders (recursively, sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not out:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {list(map(str, inputs))}")
    return out


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
) -> Path:
    """Write a CSV with one row per image (path + one probability per label); optionally overlays.

    Returns the CSV path.
    """
    if model is None:
        if checkpoint is not None:
            from .engine.checkpoint import load_model_from_checkpoint

            model = load_model_from_checkpoint(checkpoint)
        elif model_name is not None:
            model = timm.create_model(model_name)
        else:
            raise ValueError("give a checkpoint or a model name")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = model.eval().to(dev)
    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    tf = build_transforms(model, train=False)
    files = collect_images(inputs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    has_rois = hasattr(model, "forward_with_rois") and bool(model.mxa_blocks())
    if roi_overlay:
        from .viz import plot_roi_overlay

        Path(roi_overlay).mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *labels])
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            raw = [load_xray(f) for f in chunk]
            x = torch.stack([tf(r) for r in raw]).to(dev)
            if has_rois:
                logits, boxes = model.forward_with_rois(x)
            else:
                logits, boxes = model(x), {}
            probs = torch.sigmoid(logits.float()).cpu()
            for i, f in enumerate(chunk):
                writer.writerow([str(f), *(f"{v:.6f}" for v in probs[i].tolist())])
                if roi_overlay:
                    img = raw[i]
                    if max(img.shape[-2:]) > 768:  # display size; boxes are relative, so they still fit
                        img = torch.nn.functional.interpolate(img[None], size=(768, 768), mode="area")[0]
                    plot_roi_overlay(
                        img,
                        {k: v[i].cpu() for k, v in boxes.items()},
                        Path(roi_overlay) / f"{f.stem}_roi.png",
                        probs=probs[i],
                        labels=labels,
                        title=f"{f.name}: MXA regions of interest",
                    )
    print(
        f"predictions for {len(files)} image(s): {out}"
        + (f"; overlays in {roi_overlay}" if roi_overlay else "")
    )
    return out
