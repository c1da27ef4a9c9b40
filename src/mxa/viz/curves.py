"""ROC curves per label (with AUC in the legend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mxa.data.labels import CHEXPERT_LABELS
from mxa.metrics.classification import auroc, roc_points
from mxa.viz._common import pyplot, save_figure

__all__ = ["plot_roc_curves"]


def plot_roc_curves(
    probs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None,
    path: str | Path,
    labels: Sequence[str] = CHEXPERT_LABELS,
    title: str = "ROC curves",
) -> Path:
    """One ROC curve per label with both classes (AUC in the legend), on a single PNG."""
    plt = pyplot()
    mask = torch.ones_like(probs, dtype=torch.bool) if mask is None else mask.bool()
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    cmap = plt.get_cmap("tab20")
    for j, name in enumerate(labels):
        m = mask[:, j]
        t = targets[m, j].long()
        if t.numel() == 0 or t.min() == t.max():
            continue
        fpr, tpr, _ = roc_points(probs[m, j].float().numpy(), t.numpy())
        auc = auroc(probs[m, j].float(), t)
        ax.plot(fpr, tpr, color=cmap(j % 20), lw=1.4, label=f"{name} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title
    )
    ax.legend(fontsize=7, loc="lower right", title="label (AUC)", title_fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
