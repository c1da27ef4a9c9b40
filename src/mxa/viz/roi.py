"""ROI overlays (the paper's Figure F.1), the phantom grid, and ``mxa viz``'s per-image drawing."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mxa.data.labels import CHEXPERT_LABELS
from mxa.models.hooks import has_rois
from mxa.utils.outputs import check_output
from mxa.viz._common import (
    DISCLAIMER,
    TRUTH_COLOR,
    block_color,
    display_image,
    frame_rect,
    model_views,
    pyplot,
    save_figure,
    short_name,
)
from mxa.viz.attention import plot_attention_comparison

__all__ = ["draw_images", "plot_crop_examples", "plot_phantom_grid", "plot_roi_overlay"]


def plot_roi_overlay(
    image: torch.Tensor | np.ndarray,
    boxes: dict[str, torch.Tensor],
    path: str | Path,
    probs: torch.Tensor | None = None,
    labels: Sequence[str] = CHEXPERT_LABELS,
    true_boxes: torch.Tensor | None = None,
    title: str = "MXA regions of interest",
    top_k: int = 5,
    targets: torch.Tensor | None = None,
) -> Path:
    """The X-ray with the box of every MXA block drawn (paper Figure F.1), the top predictions beside it.

    Each block has its own colour and a legend entry per box with its share of the image; boxes that touch
    the border are drawn inside the frame. True boxes are dashed, labelled with their finding.

    Args:
        image: (H, W) or (1, H, W) in [0, 1] (or normalized: it is rescaled for display).
        boxes: {name: (4,) normalized xyxy}: a block's box by the block's name, a label ROI as
            ``"<block>: <label>"`` (:meth:`~mxa.models.hooks.ModelROIs.for_image`), in the block's colour.
        probs: (C,) probabilities, listed beside the image.
        true_boxes: (C, 4) true boxes (NaN rows: absent), drawn dashed.
        targets: (C,) 0/1 labels: the true positives among the listed predictions are marked.
    """
    plt = pyplot()
    img = torch.as_tensor(image).detach().float().squeeze().numpy()
    lo, hi = np.percentile(img, 0.5), np.percentile(img, 99.5)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    h, w = img.shape
    fig, (ax, side) = plt.subplots(1, 2, figsize=(10, 5.4), gridspec_kw={"width_ratios": [3, 2]})
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    handles = []
    order: dict[str, int] = {}  # block -> its colour index (a block's label ROIs share it)
    for name, box in boxes.items():
        block, _, label = name.partition(": ")
        i = order.setdefault(block, len(order))
        b = torch.as_tensor(box).detach().float()
        area = float((b[2] - b[0]).clamp(0, 1) * (b[3] - b[1]).clamp(0, 1))
        rect = frame_rect(
            plt,
            b,
            w,
            h,
            lw=1.8,
            nest=i,
            color=block_color(i),
            label=f"{short_name(block)}{': ' + label if label else ''} ({area:.0%} of image)",
        )
        handles.append(ax.add_patch(rect))
    if true_boxes is not None:
        for j, b in enumerate(torch.as_tensor(true_boxes)):
            if torch.isnan(b[0]):
                continue
            ax.add_patch(frame_rect(plt, b, w, h, lw=1.2, ls="--", color=TRUTH_COLOR))
            x1, y1 = float(b[0]) * w, float(b[1]) * h
            ax.text(
                x1 + 2,
                y1 + 2,
                labels[j],
                color=TRUTH_COLOR,
                fontsize=7,
                va="top",
                bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0),
            )
    ax.set_axis_off()
    if handles:
        ax.legend(
            handles=handles,
            title="MXA block (box area)",
            fontsize=7,
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    fig.suptitle(title, fontsize=10)
    side.set_axis_off()
    if probs is not None:
        _prediction_bars(side, torch.as_tensor(probs).detach().float(), labels, targets, top_k)
    fig.text(0.5, 0.01, DISCLAIMER, ha="center", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return save_figure(fig, path)


def plot_crop_examples(
    dataset: Any,
    preds: dict[str, Any],
    block: str,
    path: str | Path,
    n: int = 8,
    title: str = "What the MXA block crops",
    cols: int = 4,
) -> Path:
    """What one MXA block crops on the first ``n`` images of ``dataset`` with exactly one finding, in the
    set's order (hits and misses as they come): the finding dashed, the block's boxes solid, each label ROI
    named, and the IoU of the box of the finding's label (a miss where that label was not cropped).

    Args:
        dataset: an :class:`~mxa.data.combine.IndexedDataset` of phantoms (``dataset.base.render``).
        preds: :func:`mxa.evaluate.predict`'s output on ``dataset`` (``rois``, ``roi_labels``,
            ``true_boxes``).
        block: the block whose boxes are drawn.
    """
    from mxa.metrics.localization import overlaps

    plt = pyplot()
    true = preds["true_boxes"]
    present = ~torch.isnan(true[..., 0])
    rows_one = torch.nonzero(present.sum(1) == 1).flatten()[:n].tolist()
    boxes, which = preds["rois"][block], preds.get("roi_labels", {}).get(block)
    nrows = max(1, (len(rows_one) + cols - 1) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.1 * cols, 3.4 * nrows))
    for ax in np.atleast_1d(axes).flat:
        ax.set_axis_off()
    hits = 0
    for ax, row in zip(np.atleast_1d(axes).flat, rows_one):
        img = dataset.base.render(int(preds["index"][row]))[0]
        h, w = img.shape
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        j = int(torch.nonzero(present[row]).flatten()[0])
        ax.add_patch(frame_rect(plt, true[row, j], w, h, lw=1.3, ls="--", color=TRUTH_COLOR))
        rois = boxes[row] if boxes.ndim == 3 else boxes[row][None]
        names = [CHEXPERT_LABELS[int(k)] for k in which[row]] if which is not None else [""] * len(rois)
        mine = None
        for r, (b, name) in enumerate(zip(rois, names)):
            ax.add_patch(frame_rect(plt, b, w, h, lw=1.6, nest=r, color=block_color(r)))
            ax.text(float(b[0]) * w + 2, float(b[3]) * h - 2, name, color=block_color(r), fontsize=6)
            if name == CHEXPERT_LABELS[j] or which is None:
                mine = b
        iou = (
            float(overlaps(mine[None].float(), true[row, j][None, None].float())[0])
            if mine is not None
            else 0.0
        )
        hits += iou >= 0.3
        verdict = f"IoU {iou:.2f}" if mine is not None else "its label not cropped"
        ax.set_title(f"{CHEXPERT_LABELS[j]}: {verdict}", fontsize=8)
    fig.suptitle(
        f"{title}\n{len(rows_one)} test images with one finding, in order: {hits} at IoU >= 0.3 "
        "(dashed: the finding; solid: the crops)",
        fontsize=9,
    )
    fig.text(0.5, 0.01, DISCLAIMER, ha="center", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 0.93))
    return save_figure(fig, path)


def _prediction_bars(side: Any, p: torch.Tensor, labels: Sequence[str], targets: Any, top_k: int) -> None:
    order = p.argsort(descending=True)[:top_k].tolist()
    true = [bool(targets[i] >= 0.5) for i in order] if targets is not None else [False] * len(order)
    colors = ["#ee7733" if t else "#4477aa" for t in true]
    side.barh(range(len(order))[::-1], [float(p[i]) for i in order], color=colors)
    side.set_axis_on()
    names = [f"{labels[i]}  (true)" if t else labels[i] for i, t in zip(order, true)]
    side.set_yticks(range(len(order))[::-1], names, fontsize=8)
    side.set_xlim(0, 1)
    side.set_xlabel("predicted probability", fontsize=8)
    title = f"top {len(order)} predictions"
    if any(true):  # the key only where an orange bar is shown
        title += "\n(orange: a true finding)"
    elif targets is not None:
        title += "\n(no true finding among them)"
    side.set_title(title, fontsize=9)


def plot_phantom_grid(
    path: str | Path, n: int = 12, image_size: int = 224, seed: int = 0, cols: int = 4
) -> Path:
    """A grid of phantoms with their positive labels and planted boxes (uncertain ones in yellow)."""
    from mxa.data.phantom import PhantomCXR

    plt = pyplot()
    ds = PhantomCXR(n, image_size=image_size, seed=seed)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.25 * rows))
    for i, ax in enumerate(np.atleast_1d(axes).flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img, boxes = ds.render(i)
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        raw = ds.raw_labels[i]
        for j in range(len(CHEXPERT_LABELS)):
            if np.isnan(boxes[j, 0]):
                continue
            x1, y1, x2, y2 = boxes[j] * image_size
            color = "red" if raw[j] == 1 else "yellow"
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1, color=color))
        pos = [CHEXPERT_LABELS[j] for j in range(len(CHEXPERT_LABELS)) if raw[j] == 1]
        unc = [CHEXPERT_LABELS[j] for j in range(len(CHEXPERT_LABELS)) if raw[j] == -1]
        text = ", ".join(pos) or "(no positive label)"
        if unc:
            text += "\nuncertain: " + ", ".join(unc)
        # each line wrapped on its own: long label lists fit the panel, "uncertain:" keeps its line
        ax.set_title("\n".join(textwrap.fill(line, 38) for line in text.split("\n")), fontsize=6.5)
    fig.suptitle("PhantomCXR: planted findings (red: positive, yellow: uncertain)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_images(
    files: Sequence[Path],
    model: torch.nn.Module,
    output: str | Path,
    baseline: torch.nn.Module | None = None,
    stage: int = 1,
    overwrite: bool = False,
) -> list[Path]:
    """ROI overlays of ``model`` for each image and, with ``baseline``, the attention comparison.

    Output names are unique per input (see :func:`mxa.data.io.output_names`).
    """
    from mxa.data.io import output_names

    if not has_rois(model):
        raise ValueError("ROI overlays need an MXA model (an efficientvit_ml_* checkpoint)")
    out = Path(output)
    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    names = output_names(list(files), "_roi.png")
    # every generated name is checked before any work (never an input, never silently replaced)
    for f in files:
        check_output(out / names[f], files, what="ROI overlay", overwrite=overwrite)
        if baseline is not None:
            attention = names[f].replace("_roi.png", "_attention.png")
            check_output(out / attention, files, what="attention map", overwrite=overwrite)
    paths = []
    for f, raw, x, logits, boxes in model_views(files, model):
        title = f"{f.name}: MXA regions of interest"
        probs = torch.sigmoid(logits[0]).float()
        paths.append(
            plot_roi_overlay(
                display_image(raw),
                boxes,
                out / names[f],
                probs,
                labels,
                title=title,
            )
        )
        if baseline is not None:
            name = names[f].replace("_roi.png", "_attention.png")
            title = f"{f.name}: what the models attend to"
            paths.append(plot_attention_comparison(x, baseline, model, out / name, stage=stage, title=title))
    return paths
