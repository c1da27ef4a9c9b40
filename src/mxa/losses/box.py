"""Box objectives of the MXA blocks: a GIoU loss to true boxes, a penalty on box area, and the ROI
objective that needs image labels only (:func:`roi_mil_loss`).

The boxes come from :class:`mxa.models.hooks.BoxCapture` (forward hooks), so the loss works on the model
inside DDP or ``torch.compile`` without a second forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from mxa.layers.label_roi import box_coverage, peak_boxes

__all__ = [
    "best_match_giou_loss",
    "box_area",
    "guided_mil_loss",
    "per_label_giou_loss",
    "roi_mil_loss",
    "true_box_map_loss",
]


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
    dtype = torch.promote_types(pred.dtype, torch.float32)  # half under autocast: float32; float64 kept
    per_pair = generalized_box_iou_loss(
        pred[:, None, :].expand_as(safe).to(dtype), safe.to(dtype), reduction="none"
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


def guided_mil_loss(
    z: torch.Tensor,
    guide: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    findings: torch.Tensor | None = None,
    sharpness: float = 4.0,
) -> torch.Tensor:
    """Coarse to fine: a finding is somewhere inside the peak box of a deeper block's map, nowhere outside.

    For every label the half-maximum :func:`~mxa.layers.peak_boxes` box of the ``guide`` map (a deeper, more
    discriminative block; no gradient) is the region; ``z`` (an earlier block's finer map) is pooled towards
    its maximum inside it (log-mean-exp: it must predict the image's label) and outside it (it must predict
    none, for the labels in ``findings``). Multiple-instance learning within the region: the finer map learns
    to fire on the finding's own evidence, and is told that anatomy elsewhere is not the finding.

    Args:
        z: (B, K, H, W) label logit maps of an earlier block.
        guide: (B, K, h, w) label logit maps of a deeper block.
        targets: (B, K) image labels in {0, 1}.
        mask: (B, K) known labels (default all).
        findings: (K,) the labels with a place (default all).
        sharpness: r of both log-mean-exp poolings.

    Returns:
        A scalar >= 0 (:func:`roi_mil_loss` of the two pooled logits).

    Examples:
        >>> import torch
        >>> from mxa.losses import guided_mil_loss
        >>> guide = torch.zeros(1, 1, 4, 4); guide[0, 0, 0, 0] = 5.0  # the finding: top-left
        >>> z = torch.full((1, 1, 8, 8), -9.0); z[0, 0, 0, 0] = 9.0  # fine map fires there only
        >>> y = torch.ones(1, 1)
        >>> float(guided_mil_loss(z, guide, y)) < 0.01 < float(guided_mil_loss(z.flip(-1), guide, y))
        True
    """
    inside = box_coverage(peak_boxes(guide), (z.shape[2], z.shape[3])).flatten(2)  # (B, K, HW)
    zf = z.float().flatten(2)
    pooled = torch.stack([_pooled(zf, inside, sharpness), _pooled(zf, 1 - inside, sharpness)], 1)
    return roi_mil_loss(pooled, targets, mask, findings)


def _pooled(z: torch.Tensor, weight: torch.Tensor, r: float) -> torch.Tensor:
    """``log(sum w e^(r z) / sum w) / r`` over the last axis for weights in [0, 1] without a gradient: a
    position of weight 0 takes no part at all (unlike a clamped soft mask); where every weight is 0 (an empty
    region) the result is -30, "nothing there", with no gradient. (B, K, P) -> (B, K)."""
    empty = weight.sum(-1) <= 0
    w = torch.where(empty[..., None], torch.ones_like(weight), weight)  # finite everywhere below
    log_w = torch.log(w)  # -inf at weight 0: exp(-inf) = 0 in the sums, and a zero gradient
    pooled = (torch.logsumexp(r * z + log_w, -1) - torch.logsumexp(log_w, -1)) / r
    return torch.where(empty, torch.full_like(pooled, -30.0), pooled)


def true_box_map_loss(z: torch.Tensor, true: torch.Tensor, sharpness: float = 4.0) -> torch.Tensor:
    """Box supervision of label maps: each label's map high inside its true box, low outside it.

    The ROI objective's pooling (the mean inside, a soft maximum outside) under the true box: BCE of the
    inside towards 1 and the outside towards 0, for every (image, label) with a true box. Label-ROI boxes
    are a read-out of the maps (no gradient), so this is how ``--box-loss`` reaches them.

    Args:
        z: (B, K, H, W) label logit maps.
        true: (B, K, 4) true boxes, NaN rows where a label has no box.
        sharpness: r of the outside pooling.

    Returns:
        A scalar >= 0 over the (image, label) pairs with a true box (0, still connected, when there are none).

    Examples:
        >>> import torch
        >>> from mxa.losses import true_box_map_loss
        >>> true = torch.full((1, 2, 4), float("nan"))
        >>> true[0, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5])
        >>> z = torch.full((1, 2, 4, 4), -20.0)
        >>> z[0, 1, :2, :2] = 20.0  # label 1 high exactly inside its box
        >>> float(true_box_map_loss(z, true)) < 1e-6 < float(true_box_map_loss(-z, true))
        True
    """
    present = ~torch.isnan(true[..., 0])  # (B, K)
    safe = torch.where(present[..., None], true, torch.tensor([0.0, 0.0, 1.0, 1.0], device=true.device))
    zf = z.float().flatten(2)
    inside = box_coverage(safe.float(), (z.shape[2], z.shape[3])).flatten(2)
    z_in = (inside * zf).sum(2) / inside.sum(2).clamp(min=1e-6)  # the mean inside
    logits = torch.stack([z_in, _pooled(zf, 1 - inside, sharpness)], 1)  # (B, 2, K)
    target = torch.stack([torch.ones_like(logits[:, 0]), torch.zeros_like(logits[:, 1])], 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)  # (B, K)
    w = present.float()
    return (bce * w).sum() / w.sum().clamp(min=1.0)
