"""Multi-label soft knowledge distillation (paper Sections 3.1, 3.3, Appendix E), done correctly.

The teacher's *logits* are turned into soft targets with one sigmoid, ``p = sigmoid(t / T)``. The paper's
code applied a second sigmoid to torchxrayvision outputs that were already (calibrated) probabilities;
here the teacher always hands over raw logits (see :mod:`mxa.distill.teacher`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mxa.losses.multilabel import check_pair, expand_mask, masked_bce_with_logits

__all__ = ["DistillationLoss", "SoftKDLoss"]


class SoftKDLoss(nn.Module):
    """Soft knowledge distillation for multi-label outputs with per-label dynamic weights.

    ``p = sigmoid(teacher / T)``; ``w_j = 1 - mean_b p_bj`` (no gradient; 1 when ``dynamic_weights=False``);
    ``loss = T^2 / |M| * sum_{j in M} w_j * mean_b BCEWithLogits(student_bj / T, p_bj)``.

    ``M`` is the set of labels selected by ``mask``: a (C,) mask selects labels; a (B, C) mask selects
    elements, the batch means (of ``p`` and of the BCE) then run over the selected elements of each
    label and ``M`` holds the labels with at least one. No gradient reaches the teacher.

    Shapes: student_logits, teacher_logits (B, C); mask (C,) or (B, C) bool. Returns a scalar.

    Examples:
        >>> import torch, mxa
        >>> kd = mxa.SoftKDLoss(temperature=2.0, dynamic_weights=False)
        >>> round(float(kd(torch.zeros(2, 14), torch.zeros(2, 14))), 4)  # T^2 * BCE(0.5, 0.5) = 4 log 2
        2.7726
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
        check_pair(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
        t = self.temperature
        dtype = torch.promote_types(student_logits.dtype, torch.float32)  # never reduce in half precision
        s = student_logits.to(dtype) / t
        p = torch.sigmoid(teacher_logits.detach().to(dtype) / t)
        bce = F.binary_cross_entropy_with_logits(s, p, reduction="none")  # (B, C), stable for any logit
        m = expand_mask(mask, s, "mask")
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

    Examples:
        >>> import torch, mxa
        >>> crit = mxa.DistillationLoss(alpha=0.5, temperature=1.0)
        >>> logits, teacher = torch.randn(4, 14), torch.randn(4, 14)
        >>> targets = torch.randint(0, 2, (4, 14)).float()
        >>> crit(logits, targets, teacher).shape
        torch.Size([])
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
        pos_weight: torch.Tensor | None = self.pos_weight  # type: ignore[assignment]  # (a buffer or None)
        bce = masked_bce_with_logits(student_logits.float(), targets, target_mask, pos_weight)
        if teacher_logits is None:
            return bce
        kd = self.kd(student_logits, teacher_logits, teacher_mask)
        return (1.0 - self.alpha) * bce + self.alpha * kd

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, class_balanced={self.pos_weight is not None}"
