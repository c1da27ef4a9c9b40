"""Masked multi-label BCE and class-balanced positive weights (labels a set does not provide are masked)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_MAX_POS_WEIGHT", "class_balanced_pos_weight", "masked_bce_with_logits"]


def check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.ndim != 2:
        raise ValueError(f"{names[0]} must be (B, C), got shape {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same shape"
        )


def expand_mask(mask: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """A (C,) or (B, C) bool mask as (B, C) bool on ``like``'s device, or None."""
    if mask is None:
        return None
    mask = mask.to(device=like.device, dtype=torch.bool)
    if mask.shape == like.shape[1:]:
        return mask.unsqueeze(0).expand_as(like)
    if mask.shape == like.shape:
        return mask
    raise ValueError(
        f"{name} must have shape (C,)={tuple(like.shape[1:])} or (B, C)={tuple(like.shape)}, got "
        f"{tuple(mask.shape)}"
    )


def masked_bce_with_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean binary cross-entropy over the elements where ``mask`` is true (all when None).

    Shapes: logits, targets (B, C); mask (C,) or (B, C) bool; pos_weight (C,). Returns a scalar;
    0 (with gradient) when nothing is selected.

    Examples:
        >>> import torch
        >>> from mxa.losses import masked_bce_with_logits
        >>> logits, targets = torch.zeros(2, 3), torch.ones(2, 3)
        >>> mask = torch.tensor([True, False, True])  # label 1 is not provided: left out, not a negative
        >>> round(float(masked_bce_with_logits(logits, targets, mask)), 4)
        0.6931
    """
    check_pair(logits, targets, ("logits", "targets"))
    if pos_weight is not None:
        pos_weight = pos_weight.to(device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none"
    )
    m = expand_mask(mask, logits, "target_mask")
    if m is None:
        return loss.mean()
    return (loss * m).sum() / m.sum().clamp_min(1)


#: The cap of class-balanced ``pos_weight`` (``mxa train --max-pos-weight``): rare labels get at most 10x.
DEFAULT_MAX_POS_WEIGHT = 10.0


def class_balanced_pos_weight(
    labels: torch.Tensor, mask: torch.Tensor | None = None, max_weight: float = DEFAULT_MAX_POS_WEIGHT
) -> torch.Tensor:
    """Class-balance weights for ``BCEWithLogits(pos_weight=...)``: negatives / positives per label.

    Args:
        labels: (N, C) targets in {0, 1}.
        mask: optional (N, C) bool, False for ignored entries.
        max_weight: cap, also used for labels without positives.

    Returns:
        (C,) float32 weights in [min(1, ...), max_weight].

    Examples:
        >>> import torch
        >>> from mxa.losses import class_balanced_pos_weight
        >>> class_balanced_pos_weight(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        tensor([ 2., 10.])
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, C), got {tuple(labels.shape)}")
    labels = labels.float()
    valid = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    pos = ((labels > 0.5) & valid).sum(0).float()
    neg = ((labels <= 0.5) & valid).sum(0).float()
    w = torch.where(pos > 0, neg / pos.clamp_min(1), torch.full_like(pos, max_weight))
    return w.clamp(max=max_weight).to(torch.float32)
