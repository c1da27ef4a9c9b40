"""Where the models attend: baseline vs MXA activation maps and their difference (paper Figure 4 / G.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mxa.viz._common import DISCLAIMER, pyplot, save_figure

__all__ = ["attention_map", "plot_attention_comparison"]


def attention_map(model: torch.nn.Module, image: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """Where the model attends: the channel-mean absolute activation of a stage's output.

    Args:
        model: a ``MultiLabelEfficientViT`` (any model with ``forward_intermediates``).
        image: (1, C, H, W) normalized input.
        stage: which stage (default the last).

    Returns:
        (H, W) map in [0, 1], upsampled bilinearly to the image size.
    """
    model.eval()
    with torch.no_grad():
        feats = getattr(model, "forward_intermediates")(image, intermediates_only=True)  # noqa: B009
    f = feats[stage].float().abs().mean(1, keepdim=True)
    f = torch.nn.functional.interpolate(f, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    f = f - f.min()
    return f / f.max().clamp_min(1e-12)


def plot_attention_comparison(
    image: torch.Tensor,
    baseline: torch.nn.Module,
    mxa_model: torch.nn.Module,
    path: str | Path,
    stage: int = -1,
    title: str = "What the models attend to",
) -> Path:
    """Baseline vs MXA attention over the X-ray, and their difference (paper Figure 4 / G.1).

    ``image`` is the normalized (1, C, H, W) model input.
    """
    plt = pyplot()
    a, b = attention_map(baseline, image, stage), attention_map(mxa_model, image, stage)
    gray = image[0].float().mean(0).numpy()
    gray = (gray - gray.min()) / max(float(gray.max() - gray.min()), 1e-6)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, m, name in ((axes[0], a, "baseline"), (axes[1], b, "+ MXA")):
        ax.imshow(gray, cmap="gray")
        im = ax.imshow(m.numpy(), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(name)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="relative activation")
    d = (b - a).numpy()
    lim = max(float(np.abs(d).max()), 1e-6)
    axes[2].imshow(gray, cmap="gray")
    im = axes[2].imshow(d, cmap="coolwarm", alpha=0.6, vmin=-lim, vmax=lim)
    axes[2].set_title("difference (MXA - baseline)")
    axes[2].set_axis_off()
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02, label="activation difference")
    fig.suptitle(title)
    fig.text(0.5, 0.01, DISCLAIMER, ha="center", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return save_figure(fig, path)
