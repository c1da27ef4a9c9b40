"""MXA building blocks."""

from mxa.layers.cbam import CBAM, ChannelAttention, SpatialAttention
from mxa.layers.mxa_block import MXABlock
from mxa.layers.roi import CROP_METHODS, DynamicROIPool, boxes_to_theta, roi_crop, roi_paste

__all__ = [
    "CBAM",
    "CROP_METHODS",
    "ChannelAttention",
    "DynamicROIPool",
    "MXABlock",
    "SpatialAttention",
    "boxes_to_theta",
    "roi_crop",
    "roi_paste",
]
