"""Differentiable region-of-interest cropping and the dynamic ROI pooling layer.

``roi_crop`` is the function, ``DynamicROIPool`` the module that predicts the box and crops with it
(torchvision ``ops`` style). The crop is bilinear through ``affine_grid`` + ``grid_sample``, so the loss
reaches the box coordinates; the paper's public code truncated boxes to integers, which gave the box
predictor no gradient at all.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from mxa.layers._checks import check_box_values, check_boxes, check_nchw

__all__ = [
    "CROP_METHODS",
    "DynamicROIPool",
    "boxes_to_inverse_theta",
    "boxes_to_theta",
    "interpolation_matrix",
    "resolve_crop_method",
    "roi_crop",
    "roi_paste",
]

#: ``grid_sample``: ``affine_grid`` + ``grid_sample`` (the reference). ``separable``: two 1-D bilinear
#: interpolations as batched matmuls (deterministic forward and backward; ONNX MatMul from opset 13).
#: ``auto``: ``separable`` when deterministic algorithms are on, else the faster of the two on the device.
CROP_METHODS = ("auto", "grid_sample", "separable")


def resolve_crop_method(method: str, device: torch.device | str) -> str:
    """``auto`` -> ``separable`` under ``torch.use_deterministic_algorithms(True)`` (grid_sample's CUDA
    backward uses atomic adds), else the method measured faster on that device type (benchmarks/)."""
    if method not in CROP_METHODS:
        raise ValueError(f"crop method must be one of {', '.join(CROP_METHODS)}, got {method!r}")
    if method != "auto":
        return method
    if torch.are_deterministic_algorithms_enabled():
        return "separable"
    return _FASTER.get(torch.device(device).type, "grid_sample")


# The faster method per device type, from benchmarks/results (docs/benchmarks.md); unmeasured: grid_sample.
_FASTER: dict[str, str] = {"cpu": "grid_sample"}


def interpolation_matrix(
    start: torch.Tensor, length: torch.Tensor, n_out: int, n_in: int, padding: str = "border"
) -> torch.Tensor:
    """Bilinear interpolation weights of ``n_out`` samples spread over ``[start, start + length]``.

    Args:
        start: (B,) left (top) edge of the sampled span, in units of the ``n_in``-pixel axis (0 to 1).
        length: (B,) its length in the same units.
        n_out: samples; sample ``j`` sits at pixel coordinate
            ``p_j = start * n_in - 0.5 + (j + 0.5) * length * n_in / n_out`` (``grid_sample``'s
            ``align_corners=False`` convention, roi_align's ``aligned=True`` sample point).
        n_in: pixels of the axis.
        padding: ``border`` (coordinates clamped to the edge pixels, zero gradient where clamped) or
            ``zeros`` (neighbours outside the axis contribute nothing).

    Returns:
        (B, n_out, n_in) with at most two non-zeros per row (``1 - f`` and ``f``), differentiable in
        ``start`` and ``length``.
    """
    j = torch.arange(n_out, device=start.device, dtype=start.dtype) + 0.5
    p = start[:, None] * n_in - 0.5 + j[None] * (length[:, None] * (n_in / n_out))
    if padding == "border":
        p = p.clamp(0, n_in - 1)
    i0 = p.detach().floor()
    frac = p - i0
    i0 = i0.long()
    cols = torch.arange(n_in, device=start.device)
    lo = (cols == i0[..., None]).to(p.dtype)  # (B, n_out, n_in), zero when i0 is outside the axis
    hi = (cols == (i0 + 1)[..., None]).to(p.dtype)
    return (1 - frac)[..., None] * lo + frac[..., None] * hi


def _separable(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w) = My @ x @ Mx^T per image, the channels batched.

    Outside autocast, like grid_sample: the crop is computed in the (at least float32) dtype it is given.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.matmul(torch.matmul(my[:, None], x), mx.transpose(1, 2)[:, None])


def boxes_to_theta(boxes: torch.Tensor) -> torch.Tensor:
    """Affine matrices that map ``affine_grid``'s output grid onto the boxes.

    Args:
        boxes: (B, 4) normalized ``x1, y1, x2, y2`` in [0, 1] relative to the map.

    Returns:
        (B, 2, 3) matrices for ``F.affine_grid(..., align_corners=False)``.

    With ``align_corners=False`` output column ``j`` of ``w`` sits at ``u_j = (2j + 1) / w - 1``;
    ``a * u_j + t`` with ``a = x2 - x1`` and ``t = x1 + x2 - 1`` lands on pixel
    ``x1 * W - 0.5 + (j + 0.5) * (x2 - x1) * W / w``: exactly roi_align's (aligned=True) sample point.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    zero = torch.zeros_like(x1)
    row0 = torch.stack([x2 - x1, zero, x1 + x2 - 1], dim=-1)
    row1 = torch.stack([zero, y2 - y1, y1 + y2 - 1], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def roi_crop(
    x: torch.Tensor,
    boxes: torch.Tensor,
    output_size: int | tuple[int, int] | None = None,
    method: str = "auto",
) -> torch.Tensor:
    """Crop one box per image with bilinear sampling, differentiable in ``x`` and in ``boxes``.

    Args:
        x: (B, C, H, W) feature map.
        boxes: (B, 4) normalized ``x1, y1, x2, y2``, in [0, 1] relative to the map (0 is the left/top
            edge of the first pixel, 1 the right/bottom edge of the last); finite, with ``x1 < x2`` and
            ``y1 < y2``.
        output_size: (h, w) or an int for a square output; default (H, W).
        method: ``grid_sample``, ``separable`` or ``auto`` (see :data:`CROP_METHODS`); both compute the
            same crop (tested to 1e-5 in float32, 1e-10 in float64, values and both gradients).

    Returns:
        (B, C, h, w) crops, in ``x``'s dtype (computed in at least float32); always new memory, never a
        view of ``x`` (:class:`MXABlock` gates it in place during inference).

    Raises:
        ValueError: a box is NaN/inf, inverted or of zero size (``x2 <= x1`` or ``y2 <= y1``); the message
            names the rows. ``grid_sample`` would read edge pixels for them (a silently wrong crop, and its
            CPU backward crashes on NaN grids). The check is one small reduction over the boxes, but on
            CUDA reading its answer syncs with the device, and under ``torch.compile`` it is a graph
            break; :class:`DynamicROIPool` skips it (its boxes are valid by construction).

    For boxes inside [0, 1] the result equals torchvision's
    ``roi_align(x, boxes * [W, H, W, H], (h, w), aligned=True, sampling_ratio=1)``.

    Border: sample points closer than half a pixel to the edge read the edge pixel (``grid_sample``'s
    ``padding_mode='border'``), as roi_align does. A box that reaches outside [0, 1] keeps reading the
    edge pixel (replicate padding), whereas roi_align returns zeros beyond one pixel outside; the box
    gradient of such clamped sample points is zero. ``DynamicROIPool`` never produces such boxes.
    """
    check_nchw(x)
    check_boxes(boxes, x.shape[0])
    check_box_values(boxes)
    return _crop(x, boxes, output_size, resolve_crop_method(method, x.device))


# An FX leaf: torch.fx.symbolic_trace records one call instead of tracing the size-dependent branch below.
@torch.fx.wrap
def _crop(
    x: torch.Tensor,
    boxes: torch.Tensor,
    output_size: int | tuple[int, int] | None,
    method: str = "grid_sample",
) -> torch.Tensor:
    """:func:`roi_crop` without the input checks (``method`` resolved), for callers that made the boxes."""
    if output_size is None:
        h, w = x.shape[-2:]
    elif isinstance(output_size, int):
        h = w = output_size
    else:
        h, w = output_size
    if x.shape[-2:] == (1, 1):
        # Every border-padded bilinear sample of a 1x1 map reads its only pixel, whatever the box.
        # clone, not contiguous(): expanding 1x1 to 1x1 is a view of x, and callers may write the result.
        return x.expand(-1, -1, h, w).clone(memory_format=torch.contiguous_format)
    # Grid and sampling in at least fp32: bf16 coordinates are off by up to 1/128 of the map and
    # CPU affine_grid has no bf16 kernel. Under CUDA autocast grid_sample runs in fp32 anyway.
    dtype = torch.promote_types(x.dtype, torch.float32)
    if method == "separable":
        b = boxes.to(dtype)
        mx = interpolation_matrix(b[:, 0], b[:, 2] - b[:, 0], w, x.shape[-1])
        my = interpolation_matrix(b[:, 1], b[:, 3] - b[:, 1], h, x.shape[-2])
        return _separable(x.to(dtype), my, mx).to(x.dtype)
    theta = boxes_to_theta(boxes.to(dtype))
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


def boxes_to_inverse_theta(boxes: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`boxes_to_theta`: (B, 4) boxes -> (B, 2, 3) matrices mapping the full map's
    ``affine_grid`` onto crop coordinates (outside the box they fall outside [-1, 1])."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    a, b = x2 - x1, y2 - y1
    zero = torch.zeros_like(x1)
    row0 = torch.stack([1 / a, zero, -(x1 + x2 - 1) / a], dim=-1)
    row1 = torch.stack([zero, 1 / b, -(y1 + y2 - 1) / b], dim=-1)
    return torch.stack([row0, row1], dim=-2)


@torch.fx.wrap
def _paste(
    crop: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], method: str = "grid_sample"
) -> torch.Tensor:
    """:func:`roi_paste` without the input checks (``method`` resolved), for callers that made the boxes."""
    dtype = torch.promote_types(crop.dtype, torch.float32)
    if method == "separable":  # the map's pixel centres in crop coordinates, zero outside the crop
        b = boxes.to(dtype)
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        mx = interpolation_matrix(-b[:, 0] / bw, 1 / bw, int(size[1]), crop.shape[-1], padding="zeros")
        my = interpolation_matrix(-b[:, 1] / bh, 1 / bh, int(size[0]), crop.shape[-2], padding="zeros")
        return _separable(crop.to(dtype), my, mx).to(crop.dtype)
    theta = boxes_to_inverse_theta(boxes.to(dtype))
    grid = F.affine_grid(
        theta, [crop.shape[0], crop.shape[1], int(size[0]), int(size[1])], align_corners=False
    )
    out = F.grid_sample(crop.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(crop.dtype)


def roi_paste(
    crop: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], method: str = "auto"
) -> torch.Tensor:
    """Put each crop back where its box is: the inverse of :func:`roi_crop`, zero outside the box.

    Args:
        crop: (B, C, h, w) crops, e.g. ``roi_crop(x, boxes)`` after some processing.
        boxes: (B, 4) normalized ``x1, y1, x2, y2`` (the boxes the crops were taken with).
        size: (H, W) of the map to paste into.
        method: ``grid_sample``, ``separable`` or ``auto``, as for :func:`roi_crop`.

    Returns:
        (B, C, H, W): bilinear resampling of each crop into its box (sample points are the map's pixel
        centres; a pixel outside the box, by more than half a crop pixel, is 0). Differentiable in
        ``crop`` and ``boxes``. ``roi_paste(roi_crop(x, b), b, x.shape[-2:])`` is ``x`` inside the box,
        up to the resampling of the two bilinear steps.
    """
    check_nchw(crop, name="crop")
    check_boxes(boxes, crop.shape[0])
    check_box_values(boxes)
    return _paste(crop, boxes, size, resolve_crop_method(method, crop.device))


class DynamicROIPool(nn.Module):
    """Predict one box per image from the feature map and crop it back to the map's size.

    The predictor is light (``9 C + 6`` parameters, pointwise ops and pooling only; the paper's code spends
    a full 3x3 C -> C/2 convolution, 4M parameters on M5) and knows *where* to look:

    * the **centre** follows a spatial soft-argmax: a pointwise conv (C -> 1) gives a saliency map, its
      softmax over positions gives expected coordinates ``(c_x, c_y)`` in (0, 1);
    * the **size** (and a centre offset) come from one linear layer on global average and max pooling.

    Decoding keeps every box valid: side ``w = min_size + (1 - min_size) * sigmoid(a_w)``, left edge
    ``x1 = (1 - w) * sigmoid(b_x + g_x * logit(c_x))``, ``x2 = x1 + w`` (same for y), with a learnable gain
    ``g`` (1 at start: the centre is the soft-argmax, pulled inside the map). So ``0 <= x1 < x2 <= 1`` and
    ``x2 - x1 >= min_size`` always hold. At initialisation every box covers ``init_size`` of each side, so
    training starts from (almost) the identity crop.

    That holds while the head's weights and ``x`` are finite, so the boxes skip :func:`roi_crop`'s
    validation (no device sync). If a weight or the input is NaN/inf (a diverged run), the affected boxes
    are NaN: their crops come out all NaN, in forward, without an error or a sync, so the NaN reaches the
    block output, the logits and the loss, and the trainer's non-finite-loss guard stops before any
    backward pass. The sampling grid is built from a NaN-free copy of the boxes, so even a backward pass
    through such a crop gives NaN gradients rather than a crash.

    Works with ``torch.fx.symbolic_trace`` (the crop is one leaf call, shapes are read at run time) and
    ``torch.compile(fullgraph=True)``. An FX graph has no autocast region: called under autocast it runs
    the head in the autocast dtype.

    Args:
        dim: channels C of the input.
        min_size: smallest box side, as a fraction of the map side, in (0, 1).
        init_size: box side at initialisation, in (min_size, 1).
        output_size: size of the crop; default the input's (H, W).
        saliency_temperature: divides the saliency logits before the softmax; below 1 the soft-argmax
            is sharper (closer to the arg-max), above 1 smoother.
        crop_method: ``auto``, ``grid_sample`` or ``separable`` (see :func:`roi_crop`); resolved on every
            call, so ``auto`` follows the device and ``torch.use_deterministic_algorithms``.

    Shapes:
        forward(x: (B, C, H, W)) -> (pooled (B, C, H, W), boxes (B, 4) normalized xyxy)
    """

    def __init__(
        self,
        dim: int,
        min_size: float = 0.25,
        init_size: float = 0.95,
        output_size: int | tuple[int, int] | None = None,
        saliency_temperature: float = 1.0,
        crop_method: str = "auto",
    ) -> None:
        super().__init__()
        resolve_crop_method(crop_method, "cpu")  # validates the name
        self.crop_method = crop_method
        if not saliency_temperature > 0:
            raise ValueError(f"saliency_temperature must be > 0, got {saliency_temperature}")
        if not 0.0 < min_size < 1.0:
            raise ValueError(f"min_size must be in (0, 1), got {min_size}")
        if not min_size < init_size < 1.0:
            raise ValueError(f"init_size must be in (min_size={min_size}, 1), got {init_size}")
        self.dim = dim
        self.min_size = float(min_size)
        self.init_size = float(init_size)
        self.output_size = output_size
        self.saliency_temperature = float(saliency_temperature)
        self.saliency = nn.Conv2d(dim, 1, 1, bias=False)  # softmax ignores a bias
        self.fc = nn.Linear(2 * dim, 4)
        self.centre_gain = nn.Parameter(torch.ones(2))
        self.reset_box_head()

    @torch.no_grad()
    def reset_box_head(self) -> None:
        """Initialise the size head so all boxes start with side ``init_size``."""
        # Small, not zero, weights: every parameter of the head gets a gradient from the first step.
        nn.init.normal_(self.fc.weight, std=1e-3)
        frac = (self.init_size - self.min_size) / (1.0 - self.min_size)
        size_logit = math.log(frac / (1.0 - frac))
        self.fc.bias.copy_(torch.tensor([0.0, 0.0, size_logit, size_logit]))
        nn.init.normal_(self.saliency.weight, std=0.02)

    def decode(self, raw: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Map (B, 4) ``(b_x, b_y, a_w, a_h)`` and an optional (B, 2) centre in (0, 1) to valid xyxy boxes."""
        bx, by, aw, ah = raw.unbind(-1)
        if centre is not None:
            c = centre.clamp(1e-4, 1 - 1e-4)
            shift = self.centre_gain * torch.log(c / (1 - c))
            bx, by = bx + shift[:, 0], by + shift[:, 1]
        w = self.min_size + (1.0 - self.min_size) * torch.sigmoid(aw)
        h = self.min_size + (1.0 - self.min_size) * torch.sigmoid(ah)
        x1 = (1.0 - w) * torch.sigmoid(bx)
        y1 = (1.0 - h) * torch.sigmoid(by)
        return torch.stack([x1, y1, x1 + w, y1 + h], dim=-1)

    def soft_argmax(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 2) expected (x, y) of the saliency map's softmax, pixel centres in (0, 1)."""
        # Indexed, not unpacked: an fx.Proxy's shape cannot be unpacked.
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        prob = torch.softmax(self.saliency(x).flatten(1) / self.saliency_temperature, dim=1).view(b, h, w)
        us = (torch.arange(w, device=x.device, dtype=prob.dtype) + 0.5) / w
        vs = (torch.arange(h, device=x.device, dtype=prob.dtype) + 0.5) / h
        return torch.stack([(prob.sum(1) * us).sum(1), (prob.sum(2) * vs).sum(1)], dim=1)

    def predict_boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 4) normalized xyxy boxes, in the head's dtype (fp32 under autocast)."""
        check_nchw(x, self.dim)
        # Box coordinates go through sigmoids and feed a sampling grid: keep them out of bf16/fp16.
        # FX records no context manager (and a Proxy has no device type): a symbolic_trace graph runs the
        # head under whatever autocast it is called in. torch.compile does record the autocast region.
        no_autocast = (
            contextlib.nullcontext()
            if isinstance(x, torch.fx.Proxy)
            else torch.autocast(device_type=x.device.type, enabled=False)
        )
        with no_autocast:
            x = x.to(self.fc.weight.dtype)
            pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
            return self.decode(self.fc(pooled), self.soft_argmax(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = self.predict_boxes(x)  # checks x; the boxes are valid by construction, or NaN (see class doc)
        # Without a sync: the sampling grid never sees a NaN (CPU grid_sample's backward crashes on one)
        # and a NaN box turns its image's crop into NaN instead of silently reading edge pixels.
        # For finite boxes both leave every value unchanged (+0); the NaN marker carries no gradient.
        method = resolve_crop_method(self.crop_method, x.device)
        pooled = _crop(x, boxes.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0), self.output_size, method)
        nan_if_bad = boxes.detach().sum(dim=1).mul(0.0).to(pooled.dtype)  # (B,): 0, or NaN for a bad box
        return pooled.add_(nan_if_bad[:, None, None, None]), boxes

    def extra_repr(self) -> str:
        extra = (
            f", saliency_temperature={self.saliency_temperature}" if self.saliency_temperature != 1 else ""
        )
        return f"dim={self.dim}, min_size={self.min_size}, init_size={self.init_size}{extra}"
