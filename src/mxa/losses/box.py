"""Box supervision of the MXA blocks: a GIoU loss to the true boxes, and a penalty on box area.

The boxes come from :class:`mxa.models.hooks.BoxCapture` (forward hooks), so the loss works on the model
inside DDP or ``torch.compile`` without a second forward pass.
"""

from __future__ import annotations

import torch
from torchvision.ops import generalized_box_iou_loss

__all__ = ["best_match_giou_loss", "box_area"]


def best_match_giou_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over images of the GIoU loss between the predicted box and its best-matching true box.

    Args:
        pred: (B, 4) predicted normalized xyxy boxes.
        true: (B, K, 4) true boxes, NaN rows where a finding has no box.

    Returns:
        A scalar in [0, 2]: 0 for a perfect box. Images without any true box contribute nothing (the
        result stays connected to ``pred`` with a zero gradient, so every step has the same graph).

    Examples:
        >>> import torch
        >>> from mxa.losses import best_match_giou_loss
        >>> true = torch.full((1, 14, 4), float("nan"))
        >>> true[0, 3] = torch.tensor([0.1, 0.1, 0.4, 0.4])
        >>> round(float(best_match_giou_loss(torch.tensor([[0.1, 0.1, 0.4, 0.4]]), true)), 4)
        0.0
    """
    present = ~torch.isnan(true[..., 0])  # (B, K)
    safe = torch.where(present[..., None], true, torch.tensor([0.0, 0.0, 1.0, 1.0], device=true.device))
    per_pair = generalized_box_iou_loss(
        pred[:, None, :].expand_as(safe).float(), safe.float(), reduction="none"
    )
    best = per_pair.masked_fill(~present, 2.0).amin(dim=1)  # 2 is the loss's upper bound
    valid = present.any(dim=1).float()
    return (best * valid).sum() / valid.sum().clamp(min=1.0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(B, 4) normalized xyxy -> (B,) fraction of the map.

    Examples:
        >>> import torch
        >>> from mxa.losses import box_area
        >>> box_area(torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
        tensor([0.2500])
    """
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
