"""Reliability diagram: do the predicted probabilities mean what they say, before and after calibration?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mxa.data.labels import CHEXPERT_LABELS

__all__ = ["plot_reliability_diagram", "reliability_bins"]


def reliability_bins(
    probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins of 1-D ``probs`` (as the ECE uses): (mean probability, observed frequency of
    positives, count) per bin; empty bins are NaN with count 0."""
    p = probs.double().numpy()
    y = targets.double().numpy()
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=n_bins) / count
        freq = np.bincount(idx, weights=y, minlength=n_bins) / count
    return conf, freq, count


def plot_reliability_diagram(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    path: str | Path,
    after: torch.Tensor | None = None,
    labels: Sequence[str] = CHEXPERT_LABELS,
    n_bins: int = 15,
    title: str = "Reliability",
) -> Path:
    """Pooled reliability curve (all scored image-label pairs) before and, with ``after``, after calibration,
    with the bin counts below, and the per-label ECE beside it.

    Args:
        probs: (N, C) probabilities before calibration.
        targets: (N, C) 0/1 targets.
        mask: (N, C) bool, the scored entries (None: all).
        after: (N, C) probabilities after calibration (None: no calibration).
    """
    from mxa.metrics.classification import expected_calibration_error
    from mxa.viz._common import DISCLAIMER, pyplot, save_figure

    plt = pyplot()
    mask = torch.ones_like(probs, dtype=torch.bool) if mask is None else mask.bool()
    series = [("before", probs, "#cc3311")] + ([("after", after, "#0077bb")] if after is not None else [])
    fig = plt.figure(figsize=(11, 5.6))
    gs = fig.add_gridspec(2, 2, height_ratios=[3, 1], width_ratios=[1.1, 1])
    ax, hist, side = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[:, 1])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    edges = np.linspace(0, 1, n_bins + 1)
    width = 1.0 / n_bins / len(series)
    for k, (name, p, color) in enumerate(series):
        pm, tm = p[mask].float(), targets[mask].float()
        conf, freq, count = reliability_bins(pm, tm, n_bins)
        ece = expected_calibration_error(pm, tm, n_bins)
        ok = count > 0
        ax.plot(conf[ok], freq[ok], "o-", color=color, ms=4, label=f"{name} (pooled ECE {ece:.3f})")
        hist.bar(edges[:-1] + k * width, count, width=width, align="edge", color=color, alpha=0.7, label=name)
        per = [
            expected_calibration_error(p[mask[:, j], j].float(), targets[mask[:, j], j].float(), n_bins)
            for j in range(len(labels))
        ]
        y = np.arange(len(labels)) + (0.2 if k == 0 else -0.2) * (len(series) > 1)
        side.barh(y, [np.nan if v is None else v for v in per], height=0.4, color=color, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency of positives", title="pooled over labels")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    hist.set(xlim=(0, 1), xlabel=f"predicted probability ({n_bins} equal-width bins)", ylabel="pairs")
    hist.set_yscale("log")
    side.set_yticks(range(len(labels)), labels, fontsize=7)
    side.invert_yaxis()
    side.set_xlabel("ECE per label (lower is better)")
    side.legend(fontsize=8)
    side.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.text(0.5, 0.01, DISCLAIMER, ha="center", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return save_figure(fig, path)
