"""MXA building blocks."""

from mxa.layers.cbam import CBAM, ChannelAttention, SpatialAttention
from mxa.layers.label_roi import LabelROIPool, box_coverage, peak_boxes
from mxa.layers.mxa_block import MXABlock
from mxa.layers.roi import (
    BOX_SIZES,
    CROP_METHODS,
    DynamicROIPool,
    boxes_to_theta,
    roi_crop,
    roi_paste,
    saliency_boxes,
)
from mxa.layers.roi_classifier import ROIClassifier, soft_box_mask

__all__ = [
    "BOX_SIZES",
    "CBAM",
    "CROP_METHODS",
    "ChannelAttention",
    "DynamicROIPool",
    "LabelROIPool",
    "MXABlock",
    "ROIClassifier",
    "SpatialAttention",
    "box_coverage",
    "boxes_to_theta",
    "peak_boxes",
    "roi_crop",
    "roi_paste",
    "saliency_boxes",
    "soft_box_mask",
]
