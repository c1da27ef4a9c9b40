"""Where does a trained model find a small finding? Occlusion, Grad-CAM and the label maps, side by side.

    python benchmarks/localization_evidence.py --runs runs/localization-study-v4   # ~1 min a run, 2 cores

A post-hoc analysis of the runs ``benchmarks/localization_study.py`` trains (docs/localization.md, issue 31):
nothing is chosen, so everything is measured on the study's test split, over its images with exactly one
finding.

- ``occlusion``: the model's probability of the finding's label on the image as drawn, with the finding
  blurred away (its box grown 1.5x about its centre, filled with the image under a Gaussian blur of sigma
  8 px) and, the control, with the same box mirrored left-right blurred instead (all three over the images
  where the two grown boxes do not overlap). If the probability falls for the finding and not for the
  control, the prediction depends on the finding's region.
- ``gradcam``: per stage, the share of images whose Grad-CAM heatmap of the finding's label
  (:func:`mxa.viz.cam.gradcam`) peaks inside the finding's box (the pointing game; an all-zero heatmap is a
  miss, ``flat`` their share).
- ``maps``: per MXA block, the share of images whose label map of the finding's label (the ROI classifier's,
  which the block crops from) peaks at a cell that touches the box; ``chance``, the share of cells that
  touch it; ``offset``, the peak cell's centre minus the box's centre in cells (y, x), over the images whose
  peak lies within 2 cells of it (``near``, their share).

Writes ``benchmarks/results/localization-evidence.json``; scripts/make_localization_docs.py tables it.
``--figure docs/img/localization_evidence_peaks.png`` draws where the maps peak on the first test images
(seed 0 of ``labels`` and ``labels+box-loss`` on phantom-small).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

import mxa
from localization_study import SIZE_BINS, TEST, analyse_runs
from mxa.data.combine import build_eval_dataset
from mxa.layers import box_coverage
from mxa.viz.cam import gradcam

#: The occluding blur (pixels at 224 px) and how much the finding's box is grown before it is blurred.
BLUR_SIGMA, GROW = 8.0, 1.5
#: Size strata reported for the occlusion test (the study's, less the overlapping "side <= 0.15").
BINS = {k: v for k, v in SIZE_BINS.items() if k != "side <= 0.15"}


def one_finding_images(model: torch.nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The test split's images with exactly one finding: (N, 1, H, W) model input, (N,) label, (N, 4) box."""
    ds = build_eval_dataset(kind, model, samples=TEST["samples"], seed=TEST["seed"])
    xs, labels, boxes = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        present = ~torch.isnan(item[4][:, 0])
        if int(present.sum()) == 1:
            k = int(present.nonzero()[0, 0])
            xs.append(item[1])
            labels.append(k)
            boxes.append(item[4][k])
    return torch.stack(xs), torch.tensor(labels), torch.stack(boxes)


def grown(boxes: torch.Tensor, grow: float) -> torch.Tensor:
    """(N, 4) normalized xyxy boxes scaled by ``grow`` about their centres."""
    c, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * grow
    return torch.cat([c - half, c + half], 1)


def box_mask(boxes: torch.Tensor, h: int, w: int, grow: float = 1.0) -> torch.Tensor:
    """(N, 4) normalized xyxy boxes -> (N, h, w) bool: the cells (pixels) whose centres lie in the box."""
    b = grown(boxes, grow)
    ys, xs = (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w
    in_y = (ys >= b[:, 1:2]) & (ys <= b[:, 3:4])  # (N, h)
    in_x = (xs >= b[:, 0:1]) & (xs <= b[:, 2:3])  # (N, w)
    return in_y[:, :, None] & in_x[:, None, :]


def cells_touched(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 4) normalized xyxy boxes -> (N, h, w) bool: the cells that share some area with the box (every box
    touches at least one cell, so a map of any resolution can point at any box)."""
    return box_coverage(boxes, (h, w)) > 0


def blurred(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """(N, C, H, W) -> the images under torchvision's Gaussian blur (kernel 6 sigma + 1, reflected edges)."""
    side = 2 * int(3 * sigma) + 1
    return TF.gaussian_blur(x, [side, side], [sigma, sigma])


@torch.no_grad()
def occlusion(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> dict:
    """Mean probability of each image's label: as drawn, finding blurred, mirrored box blurred; by size, over
    the images whose grown finding and mirrored boxes do not overlap (``n``)."""
    h, w = x.shape[-2:]
    soft = blurred(x)
    mirror = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
    rows = torch.arange(len(x))

    def prob(images: torch.Tensor) -> torch.Tensor:
        out = [torch.sigmoid(model(images[i : i + 64])) for i in range(0, len(images), 64)]
        return torch.cat(out)[rows, labels]

    probs = {"original": prob(x)}
    for name, b in (("finding", boxes), ("control", mirror)):
        m = box_mask(b, h, w, GROW)[:, None].to(x.dtype)
        probs[name] = prob(x * (1 - m) + soft * m)
    # only where the control's blurred box stays off the finding's (near the midline they overlap)
    a, b = grown(boxes, GROW), grown(mirror, GROW)
    apart = (torch.minimum(a[:, 2:], b[:, 2:]) <= torch.maximum(a[:, :2], b[:, :2])).any(1)
    side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    out: dict[str, Any] = {}
    for name, (lo, hi) in {"all": (0.0, 1.01), **BINS}.items():
        sel = (side > lo) & (side <= hi) & apart
        if bool(sel.any()):
            out[name] = {"n": int(sel.sum()), **{k: float(v[sel].mean()) for k, v in probs.items()}}
    return out


def pointing(maps: torch.Tensor, boxes: torch.Tensor) -> dict[str, float]:
    """(N, h, w) maps: the share whose peak cell touches the box (a flat map counts as a miss, ``flat`` its
    share), chance (the share of cells touching it), and the peak's offset (cells) where it is near."""
    n, h, w = maps.shape
    flat = maps.flatten(1)
    peak = flat.argmax(1)
    py, px = (peak // w).to(boxes.dtype) + 0.5, (peak % w).to(boxes.dtype) + 0.5
    inside = cells_touched(boxes, h, w)
    level = flat.amax(1) == flat.amin(1)  # e.g. an all-zero Grad-CAM: no peak
    hit = inside.flatten(1)[torch.arange(n), peak] & ~level
    dy = py - (boxes[:, 1] + boxes[:, 3]) / 2 * h
    dx = px - (boxes[:, 0] + boxes[:, 2]) / 2 * w
    near = (dy.abs() <= 2) & (dx.abs() <= 2)
    return {
        "pointing": float(hit.float().mean()),
        "chance": float(inside.flatten(1).float().mean()),
        "flat": float(level.float().mean()),
        "near": float(near.float().mean()),
        "offset_y": float(dy[near].mean()) if bool(near.any()) else float("nan"),
        "offset_x": float(dx[near].mean()) if bool(near.any()) else float("nan"),
    }


@torch.no_grad()
def label_maps(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per MXA block with an ROI classifier: (N, h, w) logit map of each image's label."""
    blocks = dict(model.mxa_blocks())
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        b.register_forward_pre_hook(lambda _m, a, k=k: inputs.__setitem__(k, a[0])) for k, b in blocks.items()
    ]
    out: dict[str, list[torch.Tensor]] = {}
    try:
        for i in range(0, len(x), 64):
            model(x[i : i + 64])
            rows = torch.arange(len(x[i : i + 64]))
            for k, b in blocks.items():
                head = getattr(b.roi, "classifier", None) or b.roi_cls
                if head is not None:
                    out.setdefault(k, []).append(head.label_maps(inputs[k])[rows, labels[i : i + 64]])
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in out.items()}


def analyse(run: Path, kind: str) -> dict[str, Any]:
    model = mxa.load_model(run / "last.pt").eval()
    x, labels, boxes = one_finding_images(model, kind)
    rec: dict[str, Any] = {"n_images": len(x), "occlusion": occlusion(model, x, labels, boxes), "gradcam": {}}
    for stage in range(len(model.stages)):
        cams = [
            gradcam(model, x[i : i + 32], labels[i : i + 32].tolist(), stage) for i in range(0, len(x), 32)
        ]
        hit = pointing(torch.cat(cams), boxes)
        rec["gradcam"][str(stage)] = {k: hit[k] for k in ("pointing", "chance", "flat")}
    rec["maps"] = {k: pointing(m, boxes) for k, m in label_maps(model, x, labels).items()}
    return rec


def draw_peaks(
    runs: dict[str, Path], kind: str, path: Path, block: str = "stages.0.blocks.0", n: int = 8
) -> None:
    """One row per run (``{title: run folder}``): the first ``n`` test images with one finding, the finding's
    box (green) and the cell where ``block``'s map of its label peaks (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(len(runs), n, figsize=(1.6 * n, 1.8 * len(runs)), squeeze=False)
    for row, (title, run) in enumerate(runs.items()):
        model = mxa.load_model(run / "last.pt").eval()
        x, labels, boxes = one_finding_images(model, kind)
        maps = label_maps(model, x[:n], labels[:n])[block]
        h, w = maps.shape[-2:]
        size = x.shape[-1]
        for i, ax in enumerate(axes[row]):
            ax.imshow(x[i, 0], cmap="gray")
            x1, y1, x2, y2 = (float(v) * size for v in boxes[i])
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.2))
            peak = int(maps[i].flatten().argmax())
            cy, cx = divmod(peak, w)
            ax.add_patch(
                Rectangle((cx * size / w, cy * size / h), size / w, size / h, fill=False, color="red", lw=1.2)
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(title, fontsize=8)
    fig.suptitle(f"{kind}: finding (green) and where {block}'s map of its label peaks (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(rec: dict[str, Any]) -> str:
    occ = rec["occlusion"]["all"]
    cams = " / ".join(f"{v['pointing']:.2f}" for v in rec["gradcam"].values())
    maps = ", ".join(f"{k} {v['pointing']:.2f}" for k, v in rec["maps"].items())
    return (
        f"  p(label) {occ['original']:.3f}, finding blurred {occ['finding']:.3f}, "
        f"control {occ['control']:.3f}; Grad-CAM pointing {cams}; maps {maps}"
    )


def peaks_figure(runs: Path, path: Path) -> None:
    """The docs figure: seed 0 of ``labels`` and ``labels+box-loss`` on phantom-small, one row each."""
    rows = {"image labels": "labels", "box labels": "labels+box-loss"}
    draw_peaks({k: runs / "phantom-small" / v / "seed0" for k, v in rows.items()}, "phantom-small", path)


def main() -> int:
    header = {"test": TEST, "blur_sigma_px": BLUR_SIGMA, "grow": GROW}
    return analyse_runs(
        __doc__, "localization-evidence.json", ["labels"], analyse, describe, header, peaks_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
