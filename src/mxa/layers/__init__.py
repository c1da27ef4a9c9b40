"""MXA building blocks."""

from .cbam import CBAM, ChannelAttention, SpatialAttention
from .mxa_block import MXABlock
from .roi import DynamicROIPool, boxes_to_theta, roi_crop

__all__ = [
    "CBAM",
    "ChannelAttention",
    "DynamicROIPool",
    "MXABlock",
    "SpatialAttention",
    "boxes_to_theta",
    "roi_crop",
]
