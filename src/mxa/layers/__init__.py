"""MXA building blocks."""

from mxa.layers.cbam import CBAM, ChannelAttention, SpatialAttention
from mxa.layers.mxa_block import MXABlock
from mxa.layers.roi import DynamicROIPool, boxes_to_theta, roi_crop

__all__ = [
    "CBAM",
    "ChannelAttention",
    "DynamicROIPool",
    "MXABlock",
    "SpatialAttention",
    "boxes_to_theta",
    "roi_crop",
]
