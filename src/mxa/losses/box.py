"""Box objectives of the MXA blocks: a GIoU loss to true boxes, a penalty on box area, and the ROI
objective that needs image labels only (:func:`roi_mil_loss`).

The boxes come from :class:`mxa.models.hooks.BoxCapture` (forward hooks), so the loss works on the model
inside DDP or ``torch.compile`` without a second forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

__all__ = ["best_match_giou_loss", "box_area", "per_label_giou_loss", "roi_mil_loss"]


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


def per_label_giou_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean GIoU loss of each label's predicted box against that label's true box, where it has one.

    Args:
        pred: (B, K, 4) predicted normalized xyxy boxes, one per label.
        true: (B, K, 4) true boxes, NaN rows where a finding has no box.

    Returns:
        A scalar in [0, 2] over the (image, label) pairs with a true box (0 for none, still connected).

    Examples:
        >>> import torch
        >>> from mxa.losses import per_label_giou_loss
        >>> true = torch.full((1, 2, 4), float("nan"))
        >>> true[0, 1] = torch.tensor([0.1, 0.1, 0.4, 0.4])
        >>> pred = torch.tensor([[[0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4]]])  # label 0 has no box
        >>> round(float(per_label_giou_loss(pred, true)), 4)
        0.0
    """
    present = ~torch.isnan(true[..., 0])
    safe = torch.where(present[..., None], true, torch.tensor([0.0, 0.0, 1.0, 1.0], device=true.device))
    flat_pred, flat_true = pred.float().reshape(-1, 4), safe.float().reshape(-1, 4)
    loss = generalized_box_iou_loss(flat_pred, flat_true, reduction="none")
    w = present.reshape(-1).float()
    return (loss * w).sum() / w.sum().clamp(min=1.0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(B, 4) normalized xyxy -> (B,) fraction of the map.

    Examples:
        >>> import torch
        >>> from mxa.losses import box_area
        >>> box_area(torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
        tensor([0.2500])
    """
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def roi_mil_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    findings: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inside the box the image's labels, outside it none: BCE on :class:`mxa.layers.ROIClassifier` logits.

    Args:
        logits: (B, 2, K) label logits of the features inside (``[:, 0]``) and outside (``[:, 1]``) the box.
        targets: (B, K) image labels in {0, 1}.
        mask: (B, K) 1 where a label is known (uncertain or missing labels count for nothing); default all.
        findings: (K,) bool, the labels that are findings with a place (default all). For the others
            ("No Finding") only the inside term counts: the outside of a normal image is normal too.

    Returns:
        A scalar: the mean BCE over the known (image, label) pairs of both terms, 0 for a perfect split.

    Examples:
        >>> import torch
        >>> from mxa.losses import roi_mil_loss
        >>> y = torch.tensor([[1.0, 0.0]])
        >>> right = torch.tensor([[[20.0, -20.0], [-20.0, -20.0]]])  # finding inside, nothing outside
        >>> wrong = torch.tensor([[[-20.0, -20.0], [20.0, -20.0]]])  # the finding left outside the box
        >>> float(roi_mil_loss(right, y)) < 1e-6 < float(roi_mil_loss(wrong, y))
        True
    """
    logits = logits.float()
    t = targets.float()
    known = torch.ones_like(t) if mask is None else mask.float()
    inside = F.binary_cross_entropy_with_logits(logits[:, 0], t, reduction="none") * known
    out_w = known if findings is None else known * findings.to(known)[None]
    outside = F.binary_cross_entropy_with_logits(logits[:, 1], torch.zeros_like(t), reduction="none") * out_w
    return (inside.sum() + outside.sum()) / (known.sum() + out_w.sum()).clamp(min=1.0)
