"""Multi-label soft knowledge distillation (paper Sections 3.1, 3.3, Appendix E), done correctly.

The teacher's *logits* are turned into soft targets with one sigmoid, ``p = sigmoid(t / T)``. The paper's
code applied a second sigmoid to torchxrayvision outputs that were already (calibrated) probabilities;
here the teacher always hands over raw logits (see :mod:`mxa.distill.teacher`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_MAX_POS_WEIGHT",
    "DistillationLoss",
    "SoftKDLoss",
    "class_balanced_pos_weight",
    "masked_bce_with_logits",
]


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.ndim != 2:
        raise ValueError(f"{names[0]} must be (B, C), got shape {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same shape"
        )


def _expand_mask(mask: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """A (C,) or (B, C) bool mask as (B, C) bool on ``like``'s device, or None."""
    if mask is None:
        return None
    mask = mask.to(device=like.device, dtype=torch.bool)
    if mask.shape == like.shape[1:]:
        return mask.unsqueeze(0).expand_as(like)
    if mask.shape == like.shape:
        return mask
    raise ValueError(
        f"{name} must have shape (C,)={tuple(like.shape[1:])} or (B, C)={tuple(like.shape)}, got {tuple(mask.shape)}"
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
    """
    _check_pair(logits, targets, ("logits", "targets"))
    if pos_weight is not None:
        pos_weight = pos_weight.to(device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none"
    )
    m = _expand_mask(mask, logits, "target_mask")
    if m is None:
        return loss.mean()
    return (loss * m).sum() / m.sum().clamp_min(1)


class SoftKDLoss(nn.Module):
    """Soft knowledge distillation for multi-label outputs with per-label dynamic weights.

    ``p = sigmoid(teacher / T)``; ``w_j = 1 - mean_b p_bj`` (no gradient; 1 when ``dynamic_weights=False``);
    ``loss = T^2 / |M| * sum_{j in M} w_j * mean_b BCEWithLogits(student_bj / T, p_bj)``.

    ``M`` is the set of labels selected by ``mask``: a (C,) mask selects labels; a (B, C) mask selects
    elements, the batch means (of ``p`` and of the BCE) then run over the selected elements of each
    label and ``M`` holds the labels with at least one. No gradient reaches the teacher.

    Shapes: student_logits, teacher_logits (B, C); mask (C,) or (B, C) bool. Returns a scalar.
    """

    def __init__(self, temperature: float = 1.0, dynamic_weights: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.dynamic_weights = dynamic_weights

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pair(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
        t = self.temperature
        dtype = torch.promote_types(student_logits.dtype, torch.float32)  # never reduce in half precision
        s = student_logits.to(dtype) / t
        p = torch.sigmoid(teacher_logits.detach().to(dtype) / t)
        bce = F.binary_cross_entropy_with_logits(s, p, reduction="none")  # (B, C), stable for any logit
        m = _expand_mask(mask, s, "mask")
        m = torch.ones_like(s, dtype=torch.bool) if m is None else m
        mf = m.to(dtype)
        count = mf.sum(0)  # (C,)
        present = count > 0
        denom = count.clamp_min(1)
        per_label = (bce * mf).sum(0) / denom
        if self.dynamic_weights:
            w = 1.0 - (p * mf).sum(0) / denom
        else:
            w = torch.ones_like(per_label)
        n_labels = present.sum()
        if n_labels == 0:
            return (s * 0).sum()
        return (w * per_label * present).sum() / n_labels * (t * t)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, dynamic_weights={self.dynamic_weights}"


class DistillationLoss(nn.Module):
    """``(1 - alpha) * BCE(student, targets) + alpha * SoftKD(student, teacher)``.

    The BCE is the mean over batch and labels, with an optional class-balance ``pos_weight`` (C,) and an
    optional ``target_mask`` ((C,) or (B, C) bool) for ignored labels (uncertainty policy ``ignore``).
    With ``teacher_logits=None`` it is the (unweighted by alpha) BCE alone: the no-distillation baseline.

    Shapes: student_logits, targets, teacher_logits (B, C). Returns a scalar.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        temperature: float = 1.0,
        pos_weight: torch.Tensor | None = None,
        dynamic_weights: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.kd = SoftKDLoss(temperature, dynamic_weights)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )

    def forward(
        self,
        student_logits: torch.Tensor,
        targets: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        bce = masked_bce_with_logits(student_logits.float(), targets, target_mask, self.pos_weight)
        if teacher_logits is None:
            return bce
        kd = self.kd(student_logits, teacher_logits, teacher_mask)
        return (1.0 - self.alpha) * bce + self.alpha * kd

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, class_balanced={self.pos_weight is not None}"


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
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, C), got {tuple(labels.shape)}")
    labels = labels.float()
    valid = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    pos = ((labels > 0.5) & valid).sum(0).float()
    neg = ((labels <= 0.5) & valid).sum(0).float()
    w = torch.where(pos > 0, neg / pos.clamp_min(1), torch.full_like(pos, max_weight))
    return w.clamp(max=max_weight).to(torch.float32)
