from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck
from torchvision.ops import roi_align

import mxa
from mxa import DynamicROIPool, roi_crop


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
