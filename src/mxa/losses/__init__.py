"""Losses: masked multi-label BCE, soft knowledge distillation, and the box terms (box loss, ROI MIL)."""

from mxa.losses.box import (
    best_match_giou_loss,
    box_area,
    guided_mil_loss,
    per_label_giou_loss,
    roi_mil_loss,
    true_box_map_loss,
)
from mxa.losses.distillation import DistillationLoss, SoftKDLoss
from mxa.losses.multilabel import DEFAULT_MAX_POS_WEIGHT, class_balanced_pos_weight, masked_bce_with_logits

__all__ = [
    "DEFAULT_MAX_POS_WEIGHT",
    "DistillationLoss",
    "SoftKDLoss",
    "best_match_giou_loss",
    "box_area",
    "class_balanced_pos_weight",
    "guided_mil_loss",
    "masked_bce_with_logits",
    "per_label_giou_loss",
    "roi_mil_loss",
    "true_box_map_loss",
]
