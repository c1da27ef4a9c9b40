"""Grad-CAM heatmaps drawn beside the MXA boxes: does the box go where the class evidence is?

Grad-CAM comes from the ``grad-cam`` package (pytorch-grad-cam, the ``cam`` extra); nothing here
re-implements it. The target layer is the output of one EfficientViT stage, ``model.stages[stage]``
(NCHW, no reshape needed). The default is stage 1, as for the attention maps of :mod:`mxa.viz`: at 224 px
its map is 7x7 (stride 32), while the last stage, Grad-CAM's textbook choice, is only 4x4 (stride 64;
2x2 at 128 px, 1x1 at 64 px, where Grad-CAM is meaningless) and stage 0 is 14x14 but less class-specific.
The score explained is the label's *logit*. Works the same for EfficientViT with and without MXA
(``efficientvit_ml_*``, ``--no-mxa`` included, and timm's ``efficientvit_m*``).

:func:`cam_box_agreement` puts a number on "do box and heatmap agree": the share of the heatmap's mass
inside a block's box, against the box's share of the image (what a heatmap spread evenly would give).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from mxa._optional import require
from mxa.data.labels import CHEXPERT_LABELS
from mxa.utils.outputs import check_output

__all__ = [
    "cam_box_agreement",
    "draw_gradcam",
    "gradcam",
    "occlusion_box_table",
    "occlusion_boxes",
    "occlusion_map",
    "plot_gradcam_overlay",
    "resolve_label",
]


def resolve_label(name: str, labels: Sequence[str], probs: torch.Tensor | None = None) -> int:
    """The index of label ``name`` (case, spaces and underscores ignored), or of the most probable label
    for ``top`` (``probs`` (C,) needed). Raises ``ValueError`` naming the labels."""
    if name.strip().lower() == "top":
        if probs is None:
            raise ValueError("'top' needs the predicted probabilities")
        return int(torch.as_tensor(probs).float().argmax())

    def key(s: str) -> str:
        return s.lower().replace("_", " ").replace("-", " ").strip()

    for j, n in enumerate(labels):
        if key(n) == key(name):
            return j
    raise ValueError(f"unknown label {name!r}; use 'top' or one of: {', '.join(labels)}")


def _target_layer(model: torch.nn.Module, stage: int) -> torch.nn.Module:
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ValueError(
            f"Grad-CAM here needs an EfficientViT (a model with .stages); {type(model).__name__} has none"
        )
    try:
        return stages[stage]
    except IndexError:
        raise ValueError(f"stage {stage} out of range: the model has stages 0..{len(stages) - 1}") from None


def gradcam(
    model: torch.nn.Module, x: torch.Tensor, label: int | Sequence[int], stage: int = 1
) -> torch.Tensor:
    """Grad-CAM of the logit of ``label`` (one index, or one per image) at ``model.stages[stage]``.

    Args:
        x: (B, C, H, W) normalized model input.

    Returns:
        (B, H, W) heatmaps in [0, 1] (each scaled to its maximum by pytorch-grad-cam; all zero when no
        region raises the logit).
    """
    cam_mod = require("pytorch_grad_cam", "Grad-CAM")
    targets_mod = require("pytorch_grad_cam.utils.model_targets", "Grad-CAM")
    idx = [int(label)] * x.shape[0] if isinstance(label, int) else [int(i) for i in label]
    if len(idx) != x.shape[0]:
        raise ValueError(f"{len(idx)} labels for {x.shape[0]} images")
    was_training = model.training
    try:
        with (
            torch.enable_grad(),
            cam_mod.GradCAM(model=model, target_layers=[_target_layer(model, stage)]) as cam,
        ):
            out = cam(input_tensor=x, targets=[targets_mod.ClassifierOutputTarget(i) for i in idx])
    finally:
        model.zero_grad(set_to_none=True)  # Grad-CAM's backward leaves gradients on the weights
        model.train(was_training)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def cam_box_agreement(cam: torch.Tensor, box: torch.Tensor) -> dict[str, float]:
    """Share of the (H, W) heatmap's mass inside a normalized xyxy ``box`` (pixel centres), and the box's
    share of the pixels (what an even heatmap would give). ``cam_in_box`` is NaN for an all-zero heatmap."""
    cam = torch.as_tensor(cam).float()
    h, w = cam.shape
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    x1, y1, x2, y2 = (float(v) for v in torch.as_tensor(box).float())
    inside = ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]
    total = float(cam.sum())
    return {
        "cam_in_box": float(cam[inside].sum()) / total if total > 0 else float("nan"),
        "box_area": float(inside.float().mean()),
    }


def _starts(size: int, window: int, step: int) -> list[int]:
    """Window offsets along a side of ``size`` pixels: every ``step``, the last one flush with the edge."""
    out = list(range(0, size - window + 1, step))
    return out if out[-1] == size - window else [*out, size - window]


@torch.no_grad()
def occlusion_map(
    model: torch.nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    patch: float = 0.1,
    stride: float = 0.05,
    around: torch.Tensor | None = None,
    reach: float = 0.15,
    batch_size: int = 256,
) -> torch.Tensor:
    """How much each image's label depends on each place: the occlusion sensitivity map.

    A square window of side ``patch`` (of the image's side) slides over the image every ``stride``; in each
    position the window is replaced by the image under a Gaussian blur (sigma 3.5% of the side) and the drop
    in the probability of the image's label is recorded. A pixel's value is the mean drop over the windows
    that cover it, 0 where no window ran. The model is run once per window (``batch_size`` windows at a
    time): for a 20 x 20 grid of windows, 400 forward passes per image.

    Args:
        model: a classifier of (B, C, H, W) images to (B, K) logits, in eval mode.
        x: (B, C, H, W) normalized model input.
        labels: (B,) the label index explained in each image.
        patch: the window's side, as a share of the image side.
        stride: the window's step, as a share of the image side.
        around: (B, 2) normalized (x, y) points: only the windows whose centre lies within ``reach`` of the
            image's point (in each axis) run, for a finer second look at a place a coarse map found.
        reach: see ``around``.
        batch_size: windows per forward pass.

    Returns:
        (B, H, W) drop in probability (positive where hiding the place lowers the label's probability).

    Examples:
        >>> import torch
        >>> from mxa.viz.cam import occlusion_map
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)).eval()
        >>> occlusion_map(model, torch.randn(1, 1, 32, 32), torch.tensor([1]), patch=0.25, stride=0.25).shape
        torch.Size([1, 32, 32])
    """
    b, _, h, w = x.shape
    if labels.shape != (b,):
        raise ValueError(f"labels must be (B,) = ({b},), one label per image; got {tuple(labels.shape)}")
    if not (0 < stride <= patch <= 1):
        raise ValueError(f"need 0 < stride <= patch <= 1 (shares of the image side); got {stride}, {patch}")
    labels = labels.to(x.device)
    ph, pw = max(1, round(patch * h)), max(1, round(patch * w))
    grid = [
        (y0, x0)
        for y0 in _starts(h, ph, max(1, round(stride * h)))
        for x0 in _starts(w, pw, max(1, round(stride * w)))
    ]
    side = 2 * int(3 * 0.035 * max(h, w)) + 1
    soft = TF.gaussian_blur(x, [side, side], [0.035 * max(h, w)] * 2)
    rows = torch.arange(b, device=x.device)
    base = torch.sigmoid(model(x).float())[rows, labels]
    points = around.tolist() if around is not None else None
    jobs = []  # (image, y0, x0)
    for i in range(b):
        for y0, x0 in grid:
            if points is not None:
                cx, cy = (x0 + pw / 2) / w, (y0 + ph / 2) / h
                if abs(cx - points[i][0]) > reach or abs(cy - points[i][1]) > reach:
                    continue
            jobs.append((i, y0, x0))
    total = x.new_zeros(b, h, w, dtype=torch.float32)
    count = torch.zeros_like(total)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        imgs = x[[i for i, _, _ in chunk]]  # a copy: indexing by a list gathers
        for n, (i, y0, x0) in enumerate(chunk):
            imgs[n, :, y0 : y0 + ph, x0 : x0 + pw] = soft[i, :, y0 : y0 + ph, x0 : x0 + pw]
        idx = torch.tensor([i for i, _, _ in chunk], device=x.device)
        drop = (
            base[idx]
            - torch.sigmoid(model(imgs).float())[torch.arange(len(chunk), device=x.device), labels[idx]]
        )
        for n, (i, y0, x0) in enumerate(chunk):
            total[i, y0 : y0 + ph, x0 : x0 + pw] += drop[n]
            count[i, y0 : y0 + ph, x0 : x0 + pw] += 1
    return total / count.clamp(min=1)


@torch.no_grad()
def occlusion_boxes(
    model: torch.nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    fraction: float = 0.5,
    min_drop: float = 0.05,
    batch_size: int = 256,
) -> torch.Tensor:
    """Where each image's label lies, from occlusion alone: a box per image, or NaN.

    Coarse to fine: an :func:`occlusion_map` with windows of side 0.2 every 0.1 finds the place whose hiding
    lowers the label's probability most (the centre of the map's highest plateau); a second map with windows
    of 0.1 every 0.05 whose centres lie within 0.15 of it draws the region, 0 elsewhere, and the box is that
    map's :func:`~mxa.layers.peak_boxes` box: where it exceeds ``fraction`` of the way from its mean (over
    the whole image, so near 0) to its peak, about ``fraction`` of the peak. The fine windows span at most
    0.4 of the image side, and so does a box: findings larger than that are boxed in part. About 130 forward
    passes per image at 224 px.

    Args:
        model: a classifier of (B, C, H, W) images to (B, K) logits, in eval mode.
        x: (B, C, H, W) normalized model input.
        labels: (B,) the label to box in each image (a label the image has).
        fraction: where the box's edges lie on the finer map, from its mean (0) to its peak (1).
        min_drop: the least drop in probability, at the peak, for a box (> 0): where hiding no place lowers
            the label's probability by that much, the model does not see the finding, and the box is NaN.
        batch_size: windows per forward pass.

    Returns:
        (B, 4) normalized xyxy boxes; NaN rows where the peak drop is below ``min_drop``.

    Examples:
        >>> import torch
        >>> from mxa.viz.cam import occlusion_boxes
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)).eval()
        >>> occlusion_boxes(model, torch.randn(2, 1, 40, 40), torch.tensor([0, 1])).shape
        torch.Size([2, 4])
    """
    from mxa.layers import peak_boxes

    if not 0 < min_drop <= 1:  # at 0 a map that no window lowers (all <= 0) would still get a box
        raise ValueError(f"min_drop must be in (0, 1], got {min_drop}")
    h, w = x.shape[-2:]
    coarse = occlusion_map(model, x, labels, patch=0.2, stride=0.1, batch_size=batch_size)
    centre = _plateau_centres(coarse)
    fine = occlusion_map(model, x, labels, around=centre, batch_size=batch_size)
    boxes = peak_boxes(fine[:, None], refine=1, fraction=fraction)[:, 0]
    weak = fine.flatten(1).amax(1) < min_drop
    return boxes.masked_fill(weak[:, None], float("nan"))


def _plateau_centres(maps: torch.Tensor) -> torch.Tensor:
    """(B, 2) normalized (x, y) centre of the region where each (B, H, W) map is highest.

    An occlusion map is constant on the rectangles its windows' edges cut the image into, so its maximum is
    a plateau: the one holding the first maximal pixel in raster order (its top-left corner) is followed
    right and down to its far edges (a plateau that is not a rectangle is measured along its first row and
    column). The first pixel alone would be about half a window stride above and left of the place.
    """
    h, w = maps.shape[-2:]
    peak = maps.flatten(1).argmax(1).tolist()
    centres = []
    for m, p in zip(maps, peak, strict=True):
        y0, x0 = divmod(p, w)
        top = m[y0, x0]
        width = int((m[y0, x0:] == top).int().cumprod(0).sum())  # run of the maximum to the right
        height = int((m[y0:, x0] == top).int().cumprod(0).sum())  # and down
        centres.append([(x0 + width / 2) / w, (y0 + height / 2) / h])
    return torch.tensor(centres, dtype=torch.float32, device=maps.device).reshape(-1, 2)


def occlusion_box_table(
    model: torch.nn.Module,
    dataset: Any,
    skip: Sequence[str] = ("No Finding",),
    chunk: int = 64,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, dict[str, list[float]]]:
    """Boxes of every label each image of ``dataset`` has, by :func:`occlusion_boxes` of ``model``: a box
    file's content without box labels (``{image id: {label: [x1, y1, x2, y2]}}``, ``mxa train --box-file``).

    Args:
        model: the classifier (eval mode; a BN-fused copy runs faster).
        dataset: an :class:`~mxa.data.combine.IndexedDataset` in the evaluation view (``ids``; items
            ``(index, image, target, mask, ...)``), e.g. the training images of ``build_datasets(...,
            augment=False)``.
        skip: labels never boxed (No Finding has no place).
        chunk: images read per call of :func:`occlusion_boxes` (a progress step).
        progress: a progress bar (off a terminal: none).
        kwargs: passed to :func:`occlusion_boxes` (``fraction``, ``min_drop``, ``batch_size``).

    Returns:
        The boxes of the (image, label) pairs the model sees (a pair whose peak drop is below ``min_drop``
        has none), rounded to 1e-5.
    """
    never = torch.tensor([name in skip for name in CHEXPERT_LABELS])
    device = next(model.parameters()).device
    table: dict[str, dict[str, list[float]]] = {}
    steps = range(0, len(dataset), chunk)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="occlusion boxes", unit=f"x{chunk} images", disable=None)
    for start in steps:
        items = [dataset[i] for i in range(start, min(start + chunk, len(dataset)))]  # each read once
        pairs = [  # (item, label) of every label an image has
            (n, int(k))
            for n, (_, _, target, mask, *_) in enumerate(items)
            for k in ((target > 0) & (mask > 0) & ~never).nonzero()[:, 0]
        ]
        if not pairs:
            continue
        x = torch.stack([items[n][1] for n, _ in pairs]).to(device)
        boxes = occlusion_boxes(model, x, torch.tensor([k for _, k in pairs], device=device), **kwargs)
        for (n, k), box in zip(pairs, boxes.tolist(), strict=True):
            if all(math.isfinite(v) for v in box):
                table.setdefault(dataset.ids[start + n], {})[CHEXPERT_LABELS[k]] = [round(v, 5) for v in box]
    return table


def plot_gradcam_overlay(
    image: torch.Tensor | np.ndarray,
    cam: torch.Tensor,
    path: str | Path,
    boxes: dict[str, torch.Tensor] | None = None,
    label: str = "",
    prob: float | None = None,
    decision: str | None = None,
    title: str = "Grad-CAM",
    threshold: float | None = None,
) -> Path:
    """The X-ray with the MXA boxes (left) and the Grad-CAM heatmap with the same boxes (right).

    Args:
        image: (H, W) or (1, H, W) display image (any range: rescaled for display).
        cam: (h, w) heatmap in [0, 1] over the whole image (stretched to the image).
        boxes: {block: (4,) normalized xyxy}; none for a model without MXA.
        decision: the decision rule's call for ``label`` (shown beside ``prob``).
        threshold: the threshold the decision rule compared ``prob`` with (shown beside it).
        title: the figure's title; " beside the MXA boxes" is added when there are boxes.
    """
    from mxa.viz._common import DISCLAIMER, block_color, frame_rect, pyplot, save_figure, short_name

    plt = pyplot()
    img = torch.as_tensor(image).detach().float().squeeze().numpy()
    lo, hi = np.percentile(img, 0.5), np.percentile(img, 99.5)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    h, w = img.shape
    boxes = boxes or {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    notes = []
    for k, ax in enumerate(axes):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0))
        if k == 1:
            im = ax.imshow(cam.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=(0, w, h, 0))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="Grad-CAM (relative)")
        handles = []
        for i, (name, b) in enumerate(boxes.items()):  # the same colour per block as the ROI overlay
            handles.append(
                ax.add_patch(
                    frame_rect(plt, b, w, h, lw=1.5, nest=i, color=block_color(i), label=short_name(name))
                )
            )
            if k == 1:
                a = cam_box_agreement(cam, b)
                notes.append(
                    f"{short_name(name)}: {a['cam_in_box']:.0%} of the heatmap in a box of "
                    f"{a['box_area']:.0%}"
                )
        if k == 0 and handles:
            ax.legend(
                handles=handles,
                title="MXA block",
                fontsize=6.5,
                title_fontsize=7,
                loc="lower left",
                framealpha=0.7,
            )
        ax.set_axis_off()
    axes[0].set_title("MXA boxes" if boxes else "input (model without MXA)", fontsize=9)
    what = label + (f", p = {prob:.3f}" if prob is not None else "")
    if decision:
        what += (
            f" ({'≥' if decision == 'positive' else '<'} threshold {threshold:.3f}): {decision}"
            if (threshold is not None)
            else f": {decision}"
        )
    axes[1].set_title(f"Grad-CAM: {what}", fontsize=9)
    if notes:
        axes[1].text(
            0,
            -0.01,
            "\n".join(notes),
            transform=axes[1].transAxes,
            fontsize=6.5,
            va="top",
            color="black",
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0},
        )
    fig.suptitle(
        title + (" beside the MXA boxes" if boxes else " (no MXA boxes: a model without MXA)"), fontsize=10
    )
    fig.text(0.5, 0.01, DISCLAIMER, ha="center", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03 + 0.022 * len(notes), 1, 0.93))
    return save_figure(fig, path)


def draw_gradcam(
    files: Sequence[Path],
    model: torch.nn.Module,
    output: str | Path,
    labels_wanted: Sequence[str] = ("top",),
    stage: int = 1,
    overwrite: bool = False,
) -> list[Path]:
    """For each image and each wanted label (a name or ``top``), a Grad-CAM overlay beside the MXA boxes.

    Writes ``<image>_gradcam_<label>.png`` in ``output``; probabilities and decisions use the model's
    decision rule when it has one.
    """
    from mxa.data.io import output_names
    from mxa.decision.rule import get_decision_rule
    from mxa.viz._common import display_image, model_views

    model.eval()
    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    rule = get_decision_rule(model)
    for name in labels_wanted:  # fail before any work on an unknown label
        if name.strip().lower() != "top":
            resolve_label(name, labels)
    names = output_names(list(files), "")
    paths = []
    for f, raw, x, logits, boxes in model_views(files, model):
        probs = rule.probabilities(logits)[0] if rule else torch.sigmoid(logits[0].float())
        pos, defined = rule.decide(probs[None]) if rule else (None, None)
        for wanted in labels_wanted:
            j = resolve_label(wanted, labels, probs)
            cam = gradcam(model, x, j, stage)[0]
            dec = None
            if defined is not None and bool(defined[0, j]):
                dec = "positive" if pos is not None and bool(pos[0, j]) else "negative"
            slug = labels[j].replace(" ", "_")
            paths.append(
                plot_gradcam_overlay(
                    display_image(raw),
                    cam,
                    check_output(
                        Path(output) / f"{names[f]}_gradcam_{slug}.png",
                        files,
                        what="heatmap",
                        overwrite=overwrite,
                    ),
                    boxes,
                    labels[j],
                    float(probs[j]),
                    dec,
                    title=f"{f.name}: Grad-CAM of {labels[j]} (stage {stage})",
                    threshold=rule.threshold(labels[j]) if rule is not None else None,
                )
            )
    return paths
