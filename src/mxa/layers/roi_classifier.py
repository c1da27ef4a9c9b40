"""Image labels from inside and outside a box: the ROI objective that needs no box labels.

A linear classifier gives every position of the map label logits. Inside a soft box mask they are averaged
and must predict the image's labels; outside it they are pooled towards their maximum (log-mean-exp) and
must predict none (docs/localization.md). Background inside the box dilutes the average, so tight boxes
pay; a single positive-looking position left outside costs, so boxes must hold all of a finding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mxa.layers._checks import check_boxes, check_nchw
from mxa.layers.roi import outside_autocast, saliency_boxes, scale_grad, standardize

__all__ = ["ROIClassifier", "inside_outside_logits", "soft_box_mask"]


def soft_box_mask(boxes: torch.Tensor, size: tuple[int, int], sharpness: float = 2.0) -> torch.Tensor:
    """A box drawn softly on the pixel grid: about 1 inside, about 0 outside, smooth across the edges.

    Args:
        boxes: (..., 4) normalized xyxy boxes.
        size: (H, W) of the map.
        sharpness: edge steepness in 1/pixel (the sigmoid's slope); 2 falls from 0.88 to 0.12 over a pixel.

    Returns:
        (..., H, W) in (0, 1): the product of one sigmoid step per edge at each pixel centre,
        differentiable in ``boxes`` everywhere (not only where the box edge crosses a pixel).

    Examples:
        >>> import torch
        >>> from mxa.layers.roi_classifier import soft_box_mask
        >>> m = soft_box_mask(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), (4, 4), sharpness=20.0)
        >>> m[0].round()
        tensor([[1., 1., 0., 0.],
                [1., 1., 0., 0.],
                [0., 0., 0., 0.],
                [0., 0., 0., 0.]])
    """
    h, w = size[0], size[1]  # not int(): under torch.fx they are Proxies
    us = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) / w
    vs = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) / h
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    kx, ky = sharpness * w, sharpness * h  # slope per unit of the normalized axis
    mx = torch.sigmoid(kx * (us - x1)) * torch.sigmoid(kx * (x2 - us))  # (..., W)
    my = torch.sigmoid(ky * (vs - y1)) * torch.sigmoid(ky * (y2 - vs))  # (..., H)
    return my[..., :, None] * mx[..., None, :]


# An FX leaf: a Proxy's dtype cannot be compared
@torch.fx.wrap
def _as_dtype(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` in ``like``'s dtype, without an operator when it already is."""
    return x if x.dtype == like.dtype else x.to(like.dtype)


def inside_outside_logits(z: torch.Tensor, inside: torch.Tensor, outside_sharpness: float) -> torch.Tensor:
    """Label logits pooled inside a region (their mean) and outside it (a soft maximum, log-mean-exp).

    Args:
        z: (B, K, P) every position's label logits.
        inside: (B, K, P) or (B, 1, P) weights in [0, 1]: how much each position lies inside the region.
        outside_sharpness: r of the outside pooling ``log(sum m e^(r z) / sum m) / r`` (m = 1 - inside; 0
            would be the mean, large r the maximum).

    Returns:
        (B, 2, K): ``[:, 0]`` inside, ``[:, 1]`` outside (log space throughout). A position fully inside still
        weighs 1e-6 in the outside pooling (the log of its weight must stay finite, with its gradient), so a
        label scored more than ``log(1e6) / outside_sharpness`` (3.5 logits at 4) above everything outside
        raises the outside logit too: the pooling caps how far a finding may stand out.
    """
    z_in = (inside * z).sum(2) / inside.sum(2).clamp(min=1e-6)
    r = outside_sharpness
    log_m = torch.log1p(-inside.clamp(max=1 - 1e-6))
    lme = torch.logsumexp(r * z + log_m, dim=2) - torch.logsumexp(log_m, dim=2)
    return torch.stack([z_in, lme / r], dim=1)


class ROIClassifier(nn.Module):
    """Label logits from the positions inside a box (their mean) and outside it (a soft maximum).

    With ``class_boxes`` every label gets its own box: the :func:`~mxa.layers.saliency_boxes` of that label's
    logit map (standardized per image, softmax at ``temperature``), and its inside/outside logits are
    pooled under its own box. Without it, all labels share the block's box.

    Args:
        dim: channels C.
        num_classes: labels K.
        class_boxes: one box per label from its own logit map.
        min_size: smallest side of a label's box (``class_boxes``).
        temperature: initial temperature of the labels' softmax maps (``class_boxes``; learned).
        sharpness: of the soft box mask (:func:`soft_box_mask`).
        outside_sharpness: r of the outside pooling ``log(sum m e^(r z) / sum m) / r`` (0 would be the mean,
            large r the maximum).
        box_grad: with ``class_boxes``, the share of the label boxes' gradient passed back to the features,
            in [0, 1] (:func:`~mxa.layers.roi.scale_grad`): at 0 losses through the boxes (the box losses,
            the ROI objective's masks) train the classifier, not the network before it; the logits pooled
            under the boxes keep their whole gradient.

    Shapes:
        forward(x (B, C, H, W), boxes (B, 4) or None with ``class_boxes``[, z (B, K, H, W) already computed
        by :meth:`label_maps`]) -> (logits (B, 2, K): ``[:, 0]`` inside, ``[:, 1]`` outside; label boxes
        (B, K, 4), or None without ``class_boxes``).

    Examples:
        >>> import torch
        >>> from mxa.layers import ROIClassifier
        >>> head = ROIClassifier(8, num_classes=3, class_boxes=True)
        >>> logits, label_boxes = head(torch.randn(2, 8, 7, 7), torch.tensor([[0.1, 0.1, 0.5, 0.6]] * 2))
        >>> logits.shape, label_boxes.shape
        (torch.Size([2, 2, 3]), torch.Size([2, 3, 4]))
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        class_boxes: bool = False,
        min_size: float = 0.05,
        temperature: float = 0.5,
        sharpness: float = 2.0,
        outside_sharpness: float = 4.0,
        box_grad: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not outside_sharpness > 0 or not temperature > 0:
            raise ValueError(
                f"outside_sharpness and temperature must be > 0, got {outside_sharpness}, {temperature}"
            )
        self.dim, self.num_classes, self.class_boxes = dim, num_classes, bool(class_boxes)
        if not 0.0 <= box_grad <= 1.0:
            raise ValueError(f"box_grad must be in [0, 1], got {box_grad}")
        self.box_grad = float(box_grad)
        self.min_size = float(min_size)
        # learned: the inside term pulls a label's box tight, the outside term makes it hold the finding,
        # and the temperature (with the map's shape) is what sets the box size between them
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.sharpness, self.outside_sharpness = float(sharpness), float(outside_sharpness)
        self.fc = nn.Linear(dim, num_classes)

    def label_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K, H, W): every position's label logits (the fc at every position), in the
        classifier's dtype."""
        w = self.fc.weight
        # a (K, C) x (C, HW) product: on the CPU a 1x1 convolution of a small map costs several times more
        z = torch.matmul(w, _as_dtype(x, w).flatten(2)) + self.fc.bias.unsqueeze(1)  # (B, K, HW)
        return z.view(-1, self.num_classes, x.shape[2], x.shape[3])  # no batch size read off a shape

    def forward(
        self, x: torch.Tensor, boxes: torch.Tensor | None, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_nchw(x, self.dim)
        if boxes is not None or not self.class_boxes:
            check_boxes(boxes, x.shape[0])  # type: ignore[arg-type]
        with outside_autocast(x):  # box maths, as in DynamicROIPool.predict_boxes
            h, w = x.shape[2], x.shape[3]
            z = (self.label_maps(x) if z is None else z).flatten(2)  # (B, K, HW): every position's logits
            label_boxes = None
            if self.class_boxes:
                zb = z  # the boxes' maps: of the features with their gradient scaled by box_grad
                if self.box_grad != 1.0 and torch.is_grad_enabled():
                    zb = self.label_maps(scale_grad(x, self.box_grad)).flatten(2)
                zs = standardize(zb, dim=2)
                t = self.log_temperature.exp()
                prob = torch.softmax(zs / t, dim=2).view(z.shape[0], z.shape[1], h, w)
                label_boxes = saliency_boxes(prob, self.min_size)  # (B, K, 4)
                inside = soft_box_mask(label_boxes, (h, w), self.sharpness).flatten(2)  # (B, K, HW)
            else:
                inside = soft_box_mask(boxes.to(z.dtype), (h, w), self.sharpness).flatten(1)[:, None]  # type: ignore[union-attr]
            return inside_outside_logits(z, inside, self.outside_sharpness), label_boxes

    def extra_repr(self) -> str:
        extra = ", class_boxes=True" if self.class_boxes else ""
        extra += f", box_grad={self.box_grad}" if self.box_grad != 1 else ""
        return f"dim={self.dim}, num_classes={self.num_classes}{extra}"
