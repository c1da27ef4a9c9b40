"""Differentiable ROI crop and paste, and the dynamic ROI pooling layer (docs/mxa-block.md).

``roi_crop``/``roi_paste`` are the functions, ``DynamicROIPool`` the module (torchvision ``ops`` style).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from mxa.layers._checks import check_box_values, check_boxes, check_nchw, check_size

__all__ = [
    "BOX_SIZES",
    "CROP_METHODS",
    "DynamicROIPool",
    "boxes_to_inverse_theta",
    "boxes_to_theta",
    "interpolation_matrix",
    "resolve_crop_method",
    "roi_crop",
    "roi_paste",
    "saliency_boxes",
    "scale_grad",
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


# FX leaves: torch 2.4's symbolic tracing can pass a traced size to neither torch.arange nor torch.device
torch.fx.wrap("resolve_crop_method")


@torch.fx.wrap
def _centres(n: int, like: torch.Tensor) -> torch.Tensor:
    """(n,) the centres of n equal cells of [0, 1], in ``like``'s device and dtype."""
    return (torch.arange(n, device=like.device, dtype=like.dtype) + 0.5) / n


#: How a :class:`DynamicROIPool` sizes its box. ``head``: a linear layer on pooled features (the paper's).
#: ``saliency``: from the spread of the block's own saliency distribution (``SPREAD`` x its std per axis).
BOX_SIZES = ("head", "saliency")

#: Box side per unit of saliency standard deviation: sqrt(12), so a flat blob of side s gives a box of side s.
SPREAD = math.sqrt(12.0)


def standardize(s: torch.Tensor, dim: int) -> torch.Tensor:
    """``(s - mean) / std`` along ``dim`` (unbiased std); a single element gives 0, with finite gradients."""
    centred = s - s.mean(dim, keepdim=True)
    # n - 1 as a tensor op, not max(): under torch.fx the size is a Proxy
    dof = torch.clamp(torch.ones_like(centred.narrow(dim, 0, 1)) * (s.shape[dim] - 1), min=1)
    var = centred.pow(2).sum(dim, keepdim=True) / dof
    return centred / torch.sqrt(var + 1e-12)  # sqrt(var + eps): finite gradient at var = 0 (a 1x1 map)


def saliency_boxes(prob: torch.Tensor, min_size: float, spread: float = SPREAD) -> torch.Tensor:
    """Boxes from saliency distributions: centred on their mean, sides ``spread`` x their std per axis.

    Args:
        prob: (..., H, W) distributions over the map (each sums to 1).
        min_size: smallest side, as a fraction of the map side; sides are at most 1.
        spread: side per standard deviation (default sqrt(12): exact for a uniform blob).

    Returns:
        (..., 4) normalized xyxy boxes inside [0, 1], differentiable in ``prob``.

    Examples:
        >>> import torch
        >>> from mxa.layers import saliency_boxes
        >>> p = torch.zeros(8, 8)
        >>> p[2:4, 4:8] = 1 / 8  # a flat 2 x 4 blob: rows 2-3, columns 4-7
        >>> saliency_boxes(p, min_size=0.05)
        tensor([0.5000, 0.2500, 1.0000, 0.5000])
    """
    h, w = prob.shape[-2], prob.shape[-1]
    us, vs = _centres(w, prob), _centres(h, prob)
    px, py = prob.sum(-2), prob.sum(-1)  # (..., W), (..., H) marginals
    cx, cy = (px * us).sum(-1), (py * vs).sum(-1)
    # The variance of a sample on a pixel grid, plus the pixel's own width (a single pixel has side 1/w).
    vx = (px * (us - cx[..., None]) ** 2).sum(-1) + 1 / (12 * w * w)
    vy = (py * (vs - cy[..., None]) ** 2).sum(-1) + 1 / (12 * h * h)
    bw = (spread * vx.clamp(min=1e-12).sqrt()).clamp(min_size, 1.0)
    bh = (spread * vy.clamp(min=1e-12).sqrt()).clamp(min_size, 1.0)
    zero = torch.zeros_like(bw)
    x1 = torch.minimum(torch.maximum(cx - bw / 2, zero), 1.0 - bw)
    y1 = torch.minimum(torch.maximum(cy - bh / 2, zero), 1.0 - bh)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], dim=-1)


# The faster method per device type, from benchmarks/results (docs/benchmarks.md); unmeasured: grid_sample.
_FASTER: dict[str, str] = {"cpu": "grid_sample"}


def compiled_cpu_inference(x: torch.Tensor) -> bool:
    """True while torch.compile traces a CPU inference forward on ``x``, without autograd or autocast: where
    the MXA block's compile-only forms were measured (benchmarks/NOTES.md). Not in the TorchScript ONNX
    export; torch.export of such a forward gets them too (the same values)."""
    # torch.compiler.is_exporting is not read: under torch.compile dynamo folds it to True on torch 2.7-2.13
    return (
        torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def outside_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager[object]:
    """A region without autocast on ``x``'s device, for box maths that bf16/fp16 would move.

    FX records no context manager (and a Proxy has no device type): a symbolic_trace graph runs the region
    under whatever autocast it is called in. torch.compile does record the autocast region.
    """
    if isinstance(x, torch.fx.Proxy):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` itself in the forward pass, with its gradient multiplied by ``scale`` in the backward pass.

    Exact in the forward pass (``x.detach() + scale * 0``); ``scale`` 0 is ``x.detach()``, 1 is ``x``.

    Examples:
        >>> import torch
        >>> from mxa.layers.roi import scale_grad
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_grad(x, 0.25).sum().backward()
        >>> x.grad
        tensor([0.2500, 0.2500])
    """
    if scale == 1.0:
        return x
    if scale == 0.0 or not torch.is_grad_enabled():
        return x.detach()
    held = x.detach()
    return held + scale * (x - held)


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
    """(B, C, H, W) -> (B, C, h, w) = My @ x @ Mx^T per image, the channels folded into the matrices.

    Two batched matmuls per image batch, not B x C tiny ones: the columns of every channel and row at once
    ((B, C*H, W) @ Mx^T), then the rows of every channel and column at once (My @ (B, H, C*w)); one copy
    between them and one to return contiguous memory (CBAM after it is slower on the strided result).
    Outside autocast, like grid_sample: the crop is computed in the (at least float32) dtype it is given.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        b, c, hh, ww = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        h, w = my.shape[1], mx.shape[1]
        cols = torch.bmm(x.reshape(b, c * hh, ww), mx.transpose(1, 2))  # (B, C*H, w)
        rows_first = cols.view(b, c, hh, w).transpose(1, 2).reshape(b, hh, c * w)  # (B, H, C*w)
        return torch.bmm(my, rows_first).view(b, h, c, w).transpose(1, 2).contiguous()


def _separable_reference(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """The obvious form of :func:`_separable` (B x C small matmuls), kept as its oracle in the tests."""
    return torch.matmul(torch.matmul(my[:, None], x), mx.transpose(1, 2)[:, None])


def boxes_to_theta(boxes: torch.Tensor) -> torch.Tensor:
    """(B, 4) normalized xyxy boxes -> (B, 2, 3) ``affine_grid`` matrices (``align_corners=False``).

    Output column ``j`` of ``w`` lands on pixel ``x1 * W - 0.5 + (j + 0.5) * (x2 - x1) * W / w``, roi_align's
    (``aligned=True``) sample point.

    Examples:
        >>> import torch
        >>> from mxa.layers import boxes_to_theta
        >>> boxes_to_theta(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))  # the whole map: the identity
        tensor([[[1., 0., 0.],
                 [0., 1., 0.]]])
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

    For boxes inside [0, 1] this equals ``torchvision.ops.roi_align(x, boxes * [W, H, W, H], (h, w),
    aligned=True, sampling_ratio=1)``; outside it, edge pixels are replicated (docs/mxa-block.md).

    Args:
        x: (B, C, H, W) feature map.
        boxes: (B, 4) normalized ``x1, y1, x2, y2`` (0 and 1 are the map's outer edges); finite, with
            ``x1 < x2`` and ``y1 < y2``.
        output_size: (h, w), or an int for a square crop; default (H, W).
        method: ``grid_sample``, ``separable`` or ``auto`` (:data:`CROP_METHODS`): the same crop either way.

    Returns:
        (B, C, h, w) in ``x``'s dtype (computed in at least float32), always new memory.

    Raises:
        ValueError: a box is NaN/inf, inverted or empty (the message names the rows).

    Examples:
        >>> import torch, mxa
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> mxa.roi_crop(x, torch.tensor([[0.0, 0.0, 0.5, 0.5]]), output_size=2)
        tensor([[[[0., 1.],
                  [4., 5.]]]])
    """
    check_nchw(x)
    check_boxes(boxes, x.shape[0])
    check_box_values(boxes)
    check_size(output_size)
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
    """:func:`roi_paste` without the input checks (``method`` resolved), for callers that made the boxes.

    Outside autocast, like the crop: box coordinates in bf16 would move the box edges by 1/128 of the map.
    """
    with torch.autocast(device_type=crop.device.type, enabled=False):
        return _paste_fp32(crop, boxes, size, method)


def _paste_fp32(crop: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
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
    """Put each crop back where its box is: the inverse warp of :func:`roi_crop`, zero outside the box.

    Args:
        crop: (B, C, h, w) crops.
        boxes: (B, 4) normalized xyxy boxes the crops were taken with.
        size: (H, W) of the map to paste into.
        method: as for :func:`roi_crop`.

    Returns:
        (B, C, H, W), differentiable in ``crop`` and ``boxes``.

    Examples:
        >>> import torch
        >>> from mxa.layers import roi_paste
        >>> roi_paste(torch.ones(1, 1, 2, 2), torch.tensor([[0.0, 0.0, 0.5, 0.5]]), (4, 4))[0, 0]
        tensor([[1., 1., 0., 0.],
                [1., 1., 0., 0.],
                [0., 0., 0., 0.],
                [0., 0., 0., 0.]])
    """
    check_nchw(crop, name="crop")
    check_boxes(boxes, crop.shape[0])
    check_box_values(boxes)
    check_size(tuple(size), "size")
    return _paste(crop, boxes, size, resolve_crop_method(method, crop.device))


class PointwiseScore(nn.Conv2d):
    """A bias-free 1x1 convolution C -> 1 (the saliency map), run as one matmul.

    oneDNN spends ~70 us on a single-output 1x1 convolution of a (1, 192, 14, 14) map, a matmul ~16 us
    (about 10% more at batch 32; benchmarks/NOTES.md). Same weight and state-dict key as the convolution;
    one path on every device, so an FX-traced graph computes exactly what the module does.

    Shapes: (B, C, H, W) -> (B, 1, H, W)
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        out = torch.matmul(self.weight.view(1, -1).to(x.dtype), x.flatten(2))  # (B, 1, HW)
        return out.view(b, 1, h, w)


class DynamicROIPool(nn.Module):
    """Predict one box per image from the feature map and crop it (bilinear, to the map's size).

    The centre is the soft-argmax of a pointwise saliency map; the size (``box_size``) a linear layer on
    pooled features (``head``, the paper's), or the spread of the saliency distribution itself (``saliency``,
    :func:`saliency_boxes`). Decoding keeps every box inside the map with sides of at least ``min_size``.
    ``head`` boxes start at ``init_size``; ``saliency`` boxes follow the standardized saliency map from the
    start (its softmax at ``saliency_temperature``), while the block's zero-initialised scale keeps the
    network's function unchanged. A NaN/inf weight or input gives NaN boxes and NaN crops, never an error or a
    device sync (docs/mxa-block.md).

    Args:
        dim: channels C.
        min_size: smallest box side, as a fraction of the map side, in (0, 1).
        init_size: box side at initialisation, in (min_size, 1).
        output_size: size of the crop; default the input's (H, W).
        saliency_temperature: of the soft-argmax (below 1 sharper).
        crop_method: ``auto``, ``grid_sample`` or ``separable`` (see :func:`roi_crop`).
        box_size: ``head`` or ``saliency`` (:data:`BOX_SIZES`).
        grad_scale: the share of the box head's gradient passed back to the features, in [0, 1]: at 0 every
            loss that reaches the boxes (the task's through the crop, ``mxa train --box-loss``) trains the
            head only, not the network before it (a stop-gradient); 1 passes all of it. The boxes are the
            same either way.

    Shapes:
        (B, C, H, W) -> (pooled (B, C, H', W'), boxes (B, 4) normalized xyxy)

    Examples:
        >>> import torch, mxa
        >>> pooled, boxes = mxa.DynamicROIPool(8)(torch.randn(2, 8, 14, 14))
        >>> pooled.shape, boxes.shape
        (torch.Size([2, 8, 14, 14]), torch.Size([2, 4]))
        >>> bool(((boxes[:, 2] - boxes[:, 0]) > 0.9).all())  # ~ the identity crop at initialisation
        True
    """

    def __init__(
        self,
        dim: int,
        min_size: float = 0.25,
        init_size: float = 0.95,
        output_size: int | tuple[int, int] | None = None,
        saliency_temperature: float = 1.0,
        crop_method: str = "auto",
        box_size: str = "head",
        grad_scale: float = 1.0,
    ) -> None:
        super().__init__()
        resolve_crop_method(crop_method, "cpu")  # validates the name
        if not 0.0 <= grad_scale <= 1.0:
            raise ValueError(f"grad_scale must be in [0, 1], got {grad_scale}")
        self.grad_scale = float(grad_scale)
        if box_size not in BOX_SIZES:
            raise ValueError(f"box_size must be one of {', '.join(BOX_SIZES)}, got {box_size!r}")
        self.box_size = box_size
        check_size(output_size)
        self.crop_method = crop_method
        if not saliency_temperature > 0:
            raise ValueError(f"saliency_temperature must be > 0, got {saliency_temperature}")
        if not 0.0 < min_size < 1.0:
            raise ValueError(f"min_size must be in (0, 1), got {min_size}")
        if box_size == "head" and not min_size < init_size < 1.0:
            raise ValueError(f"init_size must be in (min_size={min_size}, 1), got {init_size}")
        self.dim = dim
        self.min_size = float(min_size)
        self.init_size = float(init_size)
        self.output_size = output_size
        self.saliency_temperature = float(saliency_temperature)
        self.saliency = PointwiseScore(dim)  # softmax ignores a bias
        # The size head exists only where it is used: a parameter without a gradient stalls DDP.
        self.fc = nn.Linear(2 * dim, 4) if box_size == "head" else None
        self.centre_gain = nn.Parameter(torch.ones(2)) if box_size == "head" else None
        self.reset_box_head()

    @torch.no_grad()
    def reset_box_head(self) -> None:
        """Initialise the size head so all boxes start with side ``init_size``."""
        nn.init.normal_(self.saliency.weight, std=0.02)
        if self.fc is None:
            return
        # Small, not zero, weights: every parameter of the head gets a gradient from the first step.
        nn.init.normal_(self.fc.weight, std=1e-3)
        frac = (self.init_size - self.min_size) / (1.0 - self.min_size)
        size_logit = math.log(frac / (1.0 - frac))
        self.fc.bias.copy_(torch.tensor([0.0, 0.0, size_logit, size_logit]))

    def decode(self, raw: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Map (B, 4) ``(b_x, b_y, a_w, a_h)`` and an optional (B, 2) centre in (0, 1) to valid xyxy boxes."""
        # Both axes at once, (B, 2) tensors: a third of the small ops of a per-coordinate form.
        pos, size = raw[:, :2], raw[:, 2:]
        if centre is not None and self.centre_gain is not None:
            pos = pos + self.centre_gain * torch.logit(centre, eps=1e-4)
        wh = self.min_size + (1.0 - self.min_size) * torch.sigmoid(size)
        lo = (1.0 - wh) * torch.sigmoid(pos)
        return torch.cat([lo, lo + wh], dim=-1)

    def saliency_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H, W): the softmax of the saliency map over all positions.

        With ``box_size="saliency"`` the map is standardized per image first (zero mean, unit std), so the
        distribution's spread, and with it the box, follows the map's shape and ``saliency_temperature``,
        not the scale of the saliency weights (which weight decay and a small learning rate keep small).
        """
        # Indexed, not unpacked: an fx.Proxy's shape cannot be unpacked.
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        s = self.saliency(x).flatten(1)
        if self.fc is None:
            s = standardize(s, dim=1)
        return torch.softmax(s / self.saliency_temperature, dim=1).view(b, h, w)

    def soft_argmax(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 2) expected (x, y) of the saliency map's softmax, pixel centres in (0, 1)."""
        h, w = x.shape[2], x.shape[3]
        prob = self.saliency_prob(x)
        us, vs = _centres(w, prob), _centres(h, prob)
        return torch.stack([prob.sum(1) @ us, prob.sum(2) @ vs], dim=1)  # marginals' means

    def predict_boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 4) normalized xyxy boxes, in the head's dtype (fp32 under autocast)."""
        check_nchw(x, self.dim)
        # Box coordinates go through sigmoids and feed a sampling grid: keep them out of bf16/fp16.
        with outside_autocast(x):
            x = x.to(self.saliency.weight.dtype)
            x = scale_grad(x, self.grad_scale)
            if self.fc is None:
                return saliency_boxes(self.saliency_prob(x), self.min_size)
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
        size = f", box_size={self.box_size}" if self.box_size != "head" else ""
        size += f", grad_scale={self.grad_scale}" if self.grad_scale != 1 else ""
        return f"dim={self.dim}, min_size={self.min_size}, init_size={self.init_size}{extra}{size}"
