"""What every figure shares: the pyplot backend, the atomic PNG save, the disclaimer, short block names."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mxa._optional import require

DISCLAIMER = "Research software; not a medical device. Not for clinical use."

#: The true findings' colour; no block colour is green, so a box is never mistaken for the truth.
TRUTH_COLOR = "lime"
#: One fixed colour per MXA block, in block order, the same in every figure (Paul Tol's "bright" and
#: "vibrant" schemes without their greens; readable on a grey X-ray).
BLOCK_COLORS = (
    "#4477AA",  # blue
    "#EE6677",  # red
    "#CCBB44",  # yellow
    "#66CCEE",  # cyan
    "#AA3377",  # purple
    "#EE7733",  # orange
    "#FFFFFF",  # white
    "#0077BB",  # dark blue
    "#EE3377",  # magenta
    "#BBBBBB",  # grey
)


def block_color(index: int) -> str:
    """The colour of the ``index``-th MXA block (:data:`BLOCK_COLORS`, cycled)."""
    return BLOCK_COLORS[index % len(BLOCK_COLORS)]


def pyplot():
    mpl = require("matplotlib", "Plotting")
    mpl.use("Agg")
    return require("matplotlib.pyplot", "Plotting")


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save atomically (a temporary PNG renamed into place), then close the figure."""
    from mxa.utils.files import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        pyplot().close(fig)
    return path


def short_name(block: str) -> str:
    """``stages.1.blocks.0`` -> ``s1.b0`` (timm-style names of other models are kept)."""
    return block.replace("stages.", "s").replace(".blocks.", ".b")


def display_image(image: torch.Tensor, max_side: int = 768) -> torch.Tensor:
    """A (1, H, W) image down-scaled (area) so its longer side is at most ``max_side``, for drawing.

    Boxes are relative coordinates, so they still fit the smaller picture.
    """
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(image[None].float(), size=size, mode="area")[0]


def model_views(
    files: Sequence[Path], model: torch.nn.Module
) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """Per image file: ``(file, raw (1, H, W), x (1, C, h, w) the model's input, logits (1, K), boxes)``,
    the boxes ``{name: (4,)}`` every MXA block crops (:meth:`~mxa.models.hooks.ModelROIs.for_image`; empty
    for a model without MXA)."""
    from mxa.data.io import load_xray
    from mxa.data.labels import CHEXPERT_LABELS
    from mxa.data.transforms import build_transforms
    from mxa.models.hooks import forward_rois

    tf = build_transforms(model, train=False)
    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    for f in files:
        raw = load_xray(f)
        x = tf(raw)[None]
        with torch.no_grad():
            seen = forward_rois(model, x)
        yield f, raw, x, seen.output, seen.for_image(0, labels)


def frame_rect(plt: Any, box: Any, w: int, h: int, lw: float, nest: int = 0, **kw: Any) -> Any:
    """A rectangle for a normalized xyxy box, pulled inside the image where it touches the border, so a box
    that covers the image is drawn whole (not as a stray line on the edge). The ``nest``-th box (its block's
    index) is pulled in ``nest`` line widths further: several whole-image boxes show as nested frames."""
    # in image pixels: a panel shows the image about 400 screen pixels wide, a line width is ~1.5 of those
    inset = (0.5 + lw * (0.5 + 1.2 * nest)) * max(1.0, max(w, h) / 400)
    x1, y1, x2, y2 = (torch.as_tensor(box).float() * torch.tensor([w, h, w, h])).tolist()
    x1, y1 = max(x1, inset - 0.5), max(y1, inset - 0.5)
    x2, y2 = min(x2, w - inset - 0.5), min(y2, h - inset - 0.5)
    return plt.Rectangle((x1, y1), max(x2 - x1, 1.0), max(y2 - y1, 1.0), fill=False, lw=lw, **kw)
