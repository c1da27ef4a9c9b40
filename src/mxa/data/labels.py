"""CheXpert label names and uncertainty policies."""

from __future__ import annotations

import torch

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "POLICIES",
    "apply_policy",
]

#: The 14 CheXpert observations, in the order of the official CSV columns.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The 5 labels of the CheXpert competition.
COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: Uncertainty policies: what an uncertain (-1) label becomes.
POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore", "mixed")

# The common CheXpert practice (Irvin et al. 2019): U-Ones where it helped, U-Zeros elsewhere.
_MIXED_ONES = frozenset({"Atelectasis", "Edema"})


def apply_policy(
    raw: torch.Tensor, policy: str = "ones", labels: tuple[str, ...] = CHEXPERT_LABELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn raw CheXpert values into targets and a loss mask.

    Args:
        raw: (N, L) float with 1 (positive), 0 (negative), -1 (uncertain) or NaN (blank).
        policy: ``ones`` (U-1, the paper's), ``zeros``, ``ignore`` (uncertain masked out) or ``mixed``
            (ones for Atelectasis and Edema, zeros for the rest).
        labels: the L label names of ``raw``'s columns.

    Returns:
        targets (N, L) float in {0, 1}, mask (N, L) bool (False where the label is ignored).
        A blank is a negative (0) and is never masked, under every policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown uncertainty policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if raw.ndim != 2 or raw.shape[1] != len(labels):
        raise ValueError(f"raw labels must be (N, {len(labels)}), got {tuple(raw.shape)}")
    raw = raw.float()
    uncertain = raw == -1
    targets = torch.where(torch.isnan(raw), torch.zeros_like(raw), raw).clamp_min(0)
    mask = torch.ones_like(raw, dtype=torch.bool)
    if policy == "ones":
        targets[uncertain] = 1.0
    elif policy == "ignore":
        mask = ~uncertain
    elif policy == "mixed":
        ones_cols = torch.tensor([name in _MIXED_ONES for name in labels])
        targets = torch.where(uncertain & ones_cols, torch.ones_like(targets), targets)
    # 'zeros': uncertain already clamped to 0
    return targets, mask
