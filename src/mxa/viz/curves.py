"""ROC curves per label (with AUC in the legend), and the learning curves of runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from mxa.data.labels import CHEXPERT_LABELS
from mxa.metrics.classification import auroc, roc_points
from mxa.viz._common import pyplot, save_figure

__all__ = ["plot_learning_curves", "plot_roc_curves"]


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
    cmap = plt.get_cmap("tab10")  # 10 distinct colours; labels 11-20 repeat them dashed
    for j, name in enumerate(labels):
        m = mask[:, j]
        t = targets[m, j].long()
        if t.numel() == 0 or t.min() == t.max():
            continue
        fpr, tpr, _ = roc_points(probs[m, j].float().numpy(), t.numpy())
        auc = auroc(probs[m, j].float(), t)
        ax.plot(fpr, tpr, color=cmap(j % 10), ls="-" if j < 10 else "--", lw=1.4, label=f"{name} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title
    )
    ax.legend(fontsize=7, loc="lower right", title="label (AUC)", title_fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_learning_curves(
    groups: Mapping[str, Sequence[Path]], path: str | Path, use_ema: bool = True
) -> Path:
    """Training loss, validation macro AUC and (for MXA runs) each block's mean box area over epochs.

    One colour per group (a variant), one line style per run in it (a seed), read from each run's
    ``metrics.jsonl``: one picture says whether MXA's boxes moved.

    Args:
        groups: {name: run folders}.
        path: the PNG to write.
        use_ema: the EMA's validation AUC where a run kept one (as ``mxa report``).
    """
    from mxa.metrics.report import read_records

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    blocks_seen = False
    for g, (name, runs) in enumerate(groups.items()):
        for r, run in enumerate(runs):
            recs = read_records(Path(run))
            ep = [x["epoch"] for x in recs]
            kw = dict(color=colors(g % 10), ls=styles[r % len(styles)], lw=1.4)
            label = f"{name}, {Path(run).name}"
            axes[0].plot(ep, [x["train_loss"] for x in recs], label=label, **kw)
            val = [(x.get("val_ema", x["val"]) if use_ema else x["val"])["macro_auc"] for x in recs]
            axes[1].plot(ep, [float("nan") if v is None else v for v in val], label=label, **kw)
            per_block = [x["val"].get("roi_localization", {}).get("per_block", {}) for x in recs]
            for b, block in enumerate(sorted(per_block[-1]) if per_block else []):
                areas = [pb.get(block, {}).get("mean_box_area", float("nan")) for pb in per_block]
                axes[2].plot(
                    ep, areas, label=f"{label}, {block}" if r == 0 else None, alpha=0.5 + 0.5 / (b + 1), **kw
                )
                blocks_seen = True
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="macro AUC (EMA where kept)", title="validation macro AUC")
    axes[2].set(
        xlabel="epoch",
        ylabel="mean box area (share of the map)",
        ylim=(0, 1.02),
        title="MXA box area per block" if blocks_seen else "MXA box area (no MXA run)",
    )
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes[1].legend(fontsize=7, loc="lower right")
    if blocks_seen:  # below the panel: the lines it names stay visible
        axes[2].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
