from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck
from torchvision.ops import roi_align

import mxa
from mxa import DynamicROIPool, MXABlock, roi_crop
from mxa.layers.roi import _crop, boxes_to_inverse_theta, boxes_to_theta


def _random_boxes(b: int, dtype=torch.float64, generator=None) -> torch.Tensor:
    lo = torch.rand(b, 2, dtype=dtype, generator=generator) * 0.5
    size = 0.1 + torch.rand(b, 2, dtype=dtype, generator=generator) * 0.4
    return torch.cat([lo, lo + size], dim=1)


@pytest.mark.parametrize("output_size", [None, (5, 7), 3])
def test_roi_crop_equals_roi_align(output_size) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 14, 12, dtype=torch.float64, generator=g)
    boxes = _random_boxes(4, generator=g)
    boxes[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # the whole map, border samples included
    out = roi_crop(x, boxes, output_size)
    h, w = (
        (14, 12)
        if output_size is None
        else ((output_size,) * 2 if isinstance(output_size, int) else output_size)
    )
    pix = boxes * torch.tensor([12, 14, 12, 14], dtype=torch.float64)
    ref = roi_align(x, [p[None] for p in pix], (h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    assert out.shape == (4, 6, h, w)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_full_box_same_size_is_identity() -> None:
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    out = roi_crop(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(out, x)


def test_border_replicates_edge() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_crop(x, torch.tensor([[-1.0, 0.0, 0.0, 1.0]]), (4, 1))
    # a box entirely left of the map reads the first column
    torch.testing.assert_close(out[0, 0, :, 0], x[0, 0, :, 0])


def test_gradcheck_features_and_boxes() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = _random_boxes(2, generator=g).requires_grad_(True)
    assert gradcheck(lambda a, b: roi_crop(a, b, (4, 3)), (x, boxes), eps=1e-6, atol=1e-5)


def test_box_gradient_is_nonzero() -> None:
    # the paper's integer crop gives zero gradient to the box; ours must not
    x = torch.randn(1, 2, 8, 8)
    boxes = torch.tensor([[0.2, 0.2, 0.7, 0.8]], requires_grad=True)
    roi_crop(x, boxes).square().sum().backward()
    assert boxes.grad is not None and boxes.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_device(dtype, device) -> None:
    x = torch.randn(2, 4, 7, 7, dtype=dtype, device=device)
    pool = DynamicROIPool(4).to(device=device, dtype=dtype)
    pooled, boxes = pool(x)
    assert pooled.shape == x.shape and pooled.dtype == dtype and pooled.device == x.device
    assert boxes.shape == (2, 4)


def test_bfloat16_autocast_head_in_fp32() -> None:
    pool = DynamicROIPool(8)
    x = torch.randn(2, 8, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled, boxes = pool(x.bfloat16())
    assert boxes.dtype == torch.float32
    assert pooled.dtype == torch.bfloat16
    assert torch.isfinite(pooled.float()).all()


def test_initial_boxes_cover_almost_everything() -> None:
    pool = DynamicROIPool(16, min_size=0.2, init_size=0.95)
    boxes = pool.predict_boxes(torch.randn(5, 16, 10, 10))
    side = boxes[:, 2:] - boxes[:, :2]
    torch.testing.assert_close(side, torch.full_like(side, 0.95), atol=2e-3, rtol=0)
    # the centre may follow the saliency, but a 0.95 box can only sit within 0.025 of the middle
    centre = (boxes[:, 2:] + boxes[:, :2]) / 2
    assert ((centre - 0.5).abs() <= 0.025 + 1e-6).all()


def test_box_centre_follows_the_salient_region() -> None:
    pool = DynamicROIPool(2, min_size=0.2, init_size=0.4)
    with torch.no_grad():
        pool.saliency.weight.copy_(torch.tensor([[[[8.0]], [[0.0]]]]))  # channel 0 is "the finding"
    x = torch.zeros(2, 2, 16, 16)
    x[0, 0, 1:4, 12:15] = 1.0  # top right
    x[1, 0, 12:15, 1:4] = 1.0  # bottom left
    boxes = pool.predict_boxes(x)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert centre[0, 0] > 0.6 and centre[0, 1] < 0.4
    assert centre[1, 0] < 0.4 and centre[1, 1] > 0.6


def test_box_predictor_parameters_get_gradient() -> None:
    pool = DynamicROIPool(8)
    x = torch.randn(3, 8, 7, 7)
    pooled, boxes = pool(x)
    (pooled.square().mean() + boxes.sum()).backward()
    for name, p in pool.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(min_value=1e-3, max_value=1e3),
    min_size=st.floats(min_value=0.05, max_value=0.9),
    seed=st.integers(0, 2**16),
)
def test_boxes_always_valid(scale: float, min_size: float, seed: int) -> None:
    torch.manual_seed(seed)
    pool = DynamicROIPool(4, min_size=min_size, init_size=min_size + (1 - min_size) / 2)
    with torch.no_grad():
        pool.fc.weight.normal_(std=scale)  # any head, however badly trained
        pool.saliency.weight.normal_(std=scale)
        pool.centre_gain.normal_(std=scale)
        boxes = pool.predict_boxes(torch.randn(6, 4, 5, 5) * scale)
    x1, y1, x2, y2 = boxes.unbind(-1)
    assert torch.isfinite(boxes).all()
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 1 + 1e-6).all() and (y2 <= 1 + 1e-6).all()
    assert (x2 - x1 >= min_size - 1e-6).all() and (y2 - y1 >= min_size - 1e-6).all()


@pytest.mark.parametrize(
    ("x", "boxes", "match"),
    [
        (torch.randn(2, 3, 4), torch.rand(2, 4), "4-D"),
        (torch.randn(2, 3, 4, 4), torch.rand(2, 5), r"\(B, 4\)"),
        (torch.randn(2, 3, 4, 4), torch.rand(3, 4), "one box per image"),
    ],
)
def test_roi_crop_bad_input(x, boxes, match) -> None:
    with pytest.raises(ValueError, match=match):
        roi_crop(x, boxes)


def test_pool_wrong_channels() -> None:
    with pytest.raises(ValueError, match="built for 8"):
        DynamicROIPool(8)(torch.randn(1, 3, 5, 5))


@pytest.mark.parametrize("kwargs", [{"min_size": 0.0}, {"min_size": 0.5, "init_size": 0.4}])
def test_pool_bad_config(kwargs) -> None:
    with pytest.raises(ValueError):
        DynamicROIPool(4, **kwargs)


def test_public_names() -> None:
    assert mxa.roi_crop is roi_crop and mxa.DynamicROIPool is DynamicROIPool


def test_one_pixel_map_matches_bilinear() -> None:
    x = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    boxes = _random_boxes(2)
    out = roi_crop(x, boxes, (3, 2))
    torch.testing.assert_close(out, x.expand(-1, -1, 3, 2))
    # the general path (a 1x1 map inside a 2x2 replicate) agrees
    big = x.expand(-1, -1, 2, 2)
    torch.testing.assert_close(roi_crop(big, boxes, (3, 2)), out)


@pytest.mark.parametrize("hw", [1, 5])
def test_roi_crop_never_aliases_its_input(hw: int) -> None:
    x = torch.randn(2, 3, hw, hw)
    out = roi_crop(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    before = x.clone()
    out.mul_(0)
    torch.testing.assert_close(x, before)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([NAN, 0.1, 0.5, 0.6], id="nan"),
        pytest.param([0.1, 0.1, INF, 0.6], id="+inf"),
        pytest.param([-INF, 0.1, 0.5, 0.6], id="-inf"),
        pytest.param([0.6, 0.1, 0.2, 0.7], id="x1>x2"),
        pytest.param([0.1, 0.7, 0.5, 0.2], id="y1>y2"),
        pytest.param([0.3, 0.1, 0.3, 0.6], id="zero-width"),
        pytest.param([0.1, 0.4, 0.5, 0.4], id="zero-height"),
    ],
)
def test_roi_crop_rejects_bad_boxes(bad: list[float]) -> None:
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], bad, [0.2, 0.2, 0.8, 0.9]])
    with pytest.raises(ValueError, match=r"row 1: .*x1 < x2 and y1 < y2") as err:
        roi_crop(torch.randn(3, 2, 5, 5), boxes)
    assert "row 0" not in str(err.value) and "row 2" not in str(err.value)


def test_roi_crop_names_every_bad_row() -> None:
    boxes = torch.tensor([[NAN, 0, 1, 1], [0, 0, 1, 1], [0.5, 0, 0.4, 1]] + [[0, 0, 1, 1]] * 2)
    with pytest.raises(ValueError, match=r"^2 invalid box\(es\) \(row 0: .*, row 2: "):
        roi_crop(torch.randn(5, 1, 4, 4), boxes)


def test_roi_crop_checks_boxes_before_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args, **kwargs):
        raise AssertionError("grid_sample ran on a NaN box")

    monkeypatch.setattr(torch.nn.functional, "grid_sample", must_not_run)
    boxes = torch.tensor([[0.1, 0.1, 0.9, NAN]], requires_grad=True)
    with pytest.raises(ValueError, match="row 0"):
        roi_crop(torch.randn(1, 2, 6, 6, requires_grad=True), boxes)


_coord = st.floats(min_value=-2.0, max_value=3.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_coord, _coord, _coord, _coord), min_size=1, max_size=6))
def test_valid_boxes_are_never_rejected(corners: list[tuple[float, float, float, float]]) -> None:
    # any finite, ordered box is valid, also beyond [0, 1] (the border reads the edge pixel)
    assume(all(a != c and b != d for a, b, c, d in corners))
    boxes = torch.tensor([[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in corners])
    out = roi_crop(torch.randn(len(corners), 2, 5, 4), boxes, (3, 3))
    assert out.shape == (len(corners), 2, 3, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("where", ["fc.weight", "saliency.weight", "centre_gain"])
def test_nan_head_weight_gives_nan_crop_not_an_error(where: str) -> None:
    # The head's boxes skip roi_crop's check: a NaN weight must surface as NaN, not as an edge-pixel crop.
    pool = DynamicROIPool(4)
    with torch.no_grad():
        pool.get_parameter(where).view(-1)[0] = NAN
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    pooled, boxes = pool(x)
    assert boxes.isnan().any(dim=1).all()
    assert pooled.isnan().all()
    # the sampling grid stayed finite, so even a backward pass gives NaN gradients instead of a crash
    pooled.sum().backward()
    assert x.grad is not None


def test_nan_input_poisons_only_its_image() -> None:
    pool = DynamicROIPool(4)
    x = torch.randn(3, 4, 6, 6)
    x[1, 2, 3, 3] = NAN
    pooled, boxes = pool(x)
    assert boxes[1].isnan().any() and pooled[1].isnan().all()
    assert torch.isfinite(boxes[[0, 2]]).all() and torch.isfinite(pooled[[0, 2]]).all()
    torch.testing.assert_close(pooled[[0, 2]], pool(x[[0, 2]])[0])


@pytest.mark.parametrize("hw", [(8, 8), (1, 1)])
def test_pool_fx_symbolic_trace(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    pool = DynamicROIPool(16, init_size=0.6).eval()
    graph = torch.fx.symbolic_trace(pool)
    # _crop is one leaf call, so the graph keeps both of its branches (1x1 and general)
    assert [n.target for n in graph.graph.nodes if n.op == "call_function"].count(_crop) == 1
    x = torch.randn(2, 16, *hw)
    (pooled, boxes), (ref_pooled, ref_boxes) = graph(x), pool(x)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=0)
    torch.testing.assert_close(boxes, ref_boxes, rtol=0, atol=0)
    # shapes are read at run time, not baked in
    x = torch.randn(3, 16, 5, 7)
    torch.testing.assert_close(graph(x)[0], pool(x)[0], rtol=0, atol=0)


def test_roi_crop_fx_symbolic_trace() -> None:
    def crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return roi_crop(x, boxes, (3, 4))

    graph = torch.fx.symbolic_trace(crop)
    x, boxes = torch.randn(2, 3, 6, 6), _random_boxes(2, dtype=torch.float32)
    torch.testing.assert_close(graph(x, boxes), crop(x, boxes), rtol=0, atol=0)


def test_pool_compile_fullgraph() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    pool = DynamicROIPool(16, init_size=0.6)
    x = torch.randn(2, 16, 8, 8)
    compiled = torch.compile(pool, fullgraph=True, backend="aot_eager")
    (pooled, boxes), (ref_pooled, ref_boxes) = compiled(x), pool(x)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(boxes, ref_boxes, atol=1e-5, rtol=1e-5)


# --- the folded separable crop against its obvious form -------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 5, 9, 11), (1, 1, 4, 4), (2, 192, 14, 14)])
@pytest.mark.parametrize("out", [(5, 7), (14, 14), (1, 3)])
def test_folded_separable_equals_its_reference(dtype, shape, out) -> None:
    from mxa.layers.roi import _separable, _separable_reference, interpolation_matrix

    g = torch.Generator().manual_seed(sum(shape))
    b, _, hh, ww = shape
    x = torch.randn(*shape, generator=g, dtype=dtype)
    lo = torch.rand(b, 2, generator=g, dtype=dtype) * 0.5
    box = torch.cat([lo, lo + 0.1 + torch.rand(b, 2, generator=g, dtype=dtype) * 0.4], 1)
    mx = interpolation_matrix(box[:, 0], box[:, 2] - box[:, 0], out[1], ww)
    my = interpolation_matrix(box[:, 1], box[:, 3] - box[:, 1], out[0], hh)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ms = [(my.clone().requires_grad_(True), mx.clone().requires_grad_(True)) for _ in range(2)]
    got, want = _separable(xs[0], *ms[0]), _separable_reference(xs[1], *ms[1])
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, want, **tol)
    assert got.is_contiguous()
    w = torch.randn(got.shape, generator=g, dtype=dtype)
    (got * w).sum().backward()
    (want * w).sum().backward()
    # the matrices' gradients sum C*H products in another order: fp32 rounding grows with C
    gtol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else tol
    for a, r in ((xs[0], xs[1]), (ms[0][0], ms[1][0]), (ms[0][1], ms[1][1])):
        torch.testing.assert_close(a.grad, r.grad, **gtol)


def test_folded_separable_gradcheck() -> None:
    from mxa.layers.roi import _separable

    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    my = torch.rand(2, 4, 5, dtype=torch.float64, requires_grad=True)
    mx = torch.rand(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_separable, (x, my, mx))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b", [1, 5])
def test_pointwise_score_equals_the_convolution(dtype, b) -> None:
    from mxa.layers.roi import PointwiseScore

    torch.manual_seed(b)
    m = PointwiseScore(24).to(dtype)
    x = torch.randn(b, 24, 7, 9, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, want = m(x1), torch.nn.functional.conv2d(x2, m.weight)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, want, **tol)
    g = torch.randn(got.shape, dtype=dtype)
    (got * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    cl = m(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, want.detach(), **tol)


def test_nan_image_in_mxa_block_poisons_only_its_image() -> None:
    torch.manual_seed(0)
    blk = MXABlock(4, init_scale=0.5)
    x = torch.randn(3, 4, 6, 6)
    x[1, 2, 3, 3] = NAN
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out = blk(x)
        assert out[1].isnan().all()
        torch.testing.assert_close(out[[0, 2]], blk(x[[0, 2]]))


def _decode_reference(pool: DynamicROIPool, raw: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """The per-coordinate form of DynamicROIPool.decode, the oracle of its (B, 2) form."""
    bx, by, aw, ah = raw.unbind(-1)
    c = centre.clamp(1e-4, 1 - 1e-4)
    assert pool.centre_gain is not None
    shift = pool.centre_gain * torch.log(c / (1 - c))
    bx, by = bx + shift[:, 0], by + shift[:, 1]
    w = pool.min_size + (1.0 - pool.min_size) * torch.sigmoid(aw)
    h = pool.min_size + (1.0 - pool.min_size) * torch.sigmoid(ah)
    x1, y1 = (1.0 - w) * torch.sigmoid(bx), (1.0 - h) * torch.sigmoid(by)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_and_theta_match_their_per_coordinate_oracles(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    pool = DynamicROIPool(4, min_size=0.1).to(dtype)
    with torch.no_grad():
        pool.centre_gain.copy_(torch.tensor([0.7, 1.3]))  # type: ignore[union-attr]
    raw = (3 * torch.randn(64, 4, dtype=dtype)).requires_grad_()
    centre = torch.rand(64, 2, dtype=dtype).clamp(1e-6, 1 - 1e-6)
    centre[0] = torch.tensor([0.0, 1.0])  # the clamped ends (no gradient there, in both forms)
    centre.requires_grad_()
    got, ref = pool.decode(raw, centre), _decode_reference(pool, raw, centre)
    torch.testing.assert_close(got, ref, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    w = torch.randn_like(got)
    g = torch.autograd.grad((got * w).sum(), (raw, centre))
    r = torch.autograd.grad((ref * w).sum(), (raw, centre))
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b)
    # theta and its inverse (the exported form), against the matrices written out entry by entry
    b = got.detach()
    x1, y1, x2, y2 = b.unbind(-1)
    zero = torch.zeros_like(x1)
    theta = torch.stack(
        [torch.stack([x2 - x1, zero, x1 + x2 - 1], -1), torch.stack([zero, y2 - y1, y1 + y2 - 1], -1)], -2
    )
    inv = torch.stack(
        [
            torch.stack([1 / (x2 - x1), zero, -(x1 + x2 - 1) / (x2 - x1)], -1),
            torch.stack([zero, 1 / (y2 - y1), -(y1 + y2 - 1) / (y2 - y1)], -1),
        ],
        -2,
    )
    torch.testing.assert_close(boxes_to_theta(b), theta, rtol=0, atol=0)
    torch.testing.assert_close(boxes_to_inverse_theta(b), inv, rtol=0, atol=0)
