"""Pictures: ROC curves, ROI overlays, attention maps, Grad-CAM, reliability diagrams (the ``viz`` extra).

Every figure is a PNG with a title, label names, colour bars and the research-use disclaimer.
"""

from mxa.viz._common import DISCLAIMER, display_image
from mxa.viz.attention import attention_map, plot_attention_comparison
from mxa.viz.curves import plot_roc_curves
from mxa.viz.roi import draw_images, plot_crop_examples, plot_phantom_grid, plot_roi_overlay

__all__ = [
    "DISCLAIMER",
    "attention_map",
    "display_image",
    "draw_images",
    "plot_attention_comparison",
    "plot_crop_examples",
    "plot_phantom_grid",
    "plot_roc_curves",
    "plot_roi_overlay",
]
