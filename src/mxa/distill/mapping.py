"""Map torchxrayvision's 18 outputs onto the 14 CheXpert labels, by name."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mxa.data.labels import CHEXPERT_LABELS

__all__ = ["XRV_SYNONYMS", "no_finding_logit", "xrv_to_chexpert"]

#: CheXpert name -> torchxrayvision name where they differ.
XRV_SYNONYMS = {"Pleural Effusion": "Effusion"}

# Beyond this, sigmoid is exactly 0 or 1 in float32: a finite stand-in for +-inf.
_LOGIT_BOUND = 100.0


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(a > -0.6931471805599453, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def no_finding_logit(finding_logits: torch.Tensor) -> torch.Tensor:
    """Logit of ``prod_i (1 - sigmoid(l_i))``: the probability that none of the findings is present.

    Computed in log space, in float64: ``log q = sum_i logsigmoid(-l_i)``, ``logit = log q - log(1 - q)``.
    Finite for any input, ``+-inf`` included (the result is clamped to +-100, where a sigmoid is 0 or 1).

    Shapes: (B, K) -> (B,)
    """
    lq = F.logsigmoid(-finding_logits.double()).sum(-1)
    logit = lq - _log1mexp(lq.clamp(max=0.0))
    logit = torch.nan_to_num(logit, nan=0.0, posinf=_LOGIT_BOUND, neginf=-_LOGIT_BOUND)
    return logit.clamp(-_LOGIT_BOUND, _LOGIT_BOUND).to(finding_logits.dtype)


def xrv_to_chexpert(
    teacher_logits: torch.Tensor, teacher_labels: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map torchxrayvision logits onto the 14 CheXpert labels (``CHEXPERT_LABELS`` order), by name.

    Args:
        teacher_logits: (B, K) raw logits (never the calibrated probabilities of ``op_threshs``).
        teacher_labels: the K output names; ``''`` marks an untrained output (ignored).

    Returns:
        logits14 (B, 14) and mask14 (14,) bool. "No Finding" is synthesised from every trained output
        (see :func:`no_finding_logit`); labels the teacher does not predict are masked out (their
        logits are 0 and must not be used).
    """
    if teacher_logits.ndim != 2 or teacher_logits.shape[1] != len(teacher_labels):
        raise ValueError(
            f"teacher_logits must be (B, {len(teacher_labels)}) to match teacher_labels, got "
            f"{tuple(teacher_logits.shape)}"
        )
    index = {name: i for i, name in enumerate(teacher_labels) if name}
    b = teacher_logits.shape[0]
    out = teacher_logits.new_zeros(b, len(CHEXPERT_LABELS))
    mask = torch.zeros(len(CHEXPERT_LABELS), dtype=torch.bool, device=teacher_logits.device)
    for j, name in enumerate(CHEXPERT_LABELS):
        src = XRV_SYNONYMS.get(name, name)
        if src in index:
            out[:, j] = teacher_logits[:, index[src]]
            mask[j] = True
    if index and "No Finding" not in index:
        findings = teacher_logits[:, sorted(index.values())]
        out[:, CHEXPERT_LABELS.index("No Finding")] = no_finding_logit(findings)
        mask[CHEXPERT_LABELS.index("No Finding")] = True
    return out, mask
