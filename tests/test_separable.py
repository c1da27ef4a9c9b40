"""The separable crop (two batched matmuls) against the grid_sample reference, and deterministic training."""

from __future__ import annotations

import pytest
import torch

import mxa
from mxa.files.checkpoint import load_checkpoint
from mxa.layers.roi import interpolation_matrix, resolve_crop_method, roi_crop, roi_paste
from mxa.train.loop import TrainConfig, train


def _boxes(n: int, g: torch.Generator, dtype: torch.dtype, outside: bool) -> torch.Tensor:
    """Random boxes (sample points almost surely off the pixel knots, where bilinear has no derivative)."""
    lo, span = (-0.4, 1.8) if outside else (0.0, 1.0)
    a = torch.rand(n, 2, generator=g, dtype=torch.float64) * span + lo
    b = torch.rand(n, 2, generator=g, dtype=torch.float64) * span + lo
    x1, x2 = torch.minimum(a[:, 0], b[:, 0]), torch.maximum(a[:, 0], b[:, 0]) + 0.05
    y1, y2 = torch.minimum(a[:, 1], b[:, 1]), torch.maximum(a[:, 1], b[:, 1]) + 0.05
    return torch.stack([x1, y1, x2, y2], 1).to(dtype)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("outside", [False, True], ids=["inside", "outside"])
@pytest.mark.parametrize("size", [None, (5, 7), 3])
def test_separable_equals_grid_sample(dtype, tol, outside, size) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 9, 11, generator=g, dtype=dtype)
    boxes = _boxes(4, g, dtype, outside)
    outs, grads = {}, {}
    for method in ("grid_sample", "separable"):
        xi, bi = x.clone().requires_grad_(), boxes.clone().requires_grad_()
        out = roi_crop(xi, bi, size, method=method)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        grads[method] = torch.autograd.grad((out * w).sum(), (xi, bi))
        outs[method] = out.detach()
    torch.testing.assert_close(outs["separable"], outs["grid_sample"], atol=tol, rtol=0)
    # box gradients are sums over many sample points: a relative tolerance in float32
    for a, b in zip(grads["separable"], grads["grid_sample"]):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol * 10)


def test_separable_paste_equals_grid_sample() -> None:
    g = torch.Generator().manual_seed(3)
    crop = torch.randn(4, 2, 5, 6, generator=g, dtype=torch.float64)
    boxes = _boxes(4, g, torch.float64, outside=False).clamp(0, 1)
    a = roi_paste(crop, boxes, (9, 11), method="grid_sample")
    b = roi_paste(crop, boxes, (9, 11), method="separable")
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_separable_gradcheck() -> None:
    x = torch.randn(2, 2, 5, 6, dtype=torch.double, requires_grad=True)
    boxes = torch.tensor(
        [[0.13, 0.21, 0.71, 0.83], [-0.17, 0.07, 1.09, 0.61]], dtype=torch.double, requires_grad=True
    )
    assert torch.autograd.gradcheck(lambda a, b: roi_crop(a, b, (4, 3), method="separable"), (x, boxes))
    crop = torch.randn(2, 2, 4, 4, dtype=torch.double, requires_grad=True)
    inside = boxes.detach().clamp(0.05, 0.95).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, b: roi_paste(c, b, (5, 6), method="separable"), (crop, inside))


def test_interpolation_matrix_rows() -> None:
    m = interpolation_matrix(torch.tensor([0.1]), torch.tensor([0.5]), 4, 10)
    assert m.shape == (1, 4, 10)
    assert bool(((m != 0).sum(-1) <= 2).all())
    torch.testing.assert_close(m.sum(-1), torch.ones(1, 4))  # border padding: weights sum to 1


def test_auto_follows_determinism_and_device() -> None:
    assert resolve_crop_method("auto", "cpu") in ("grid_sample", "separable")
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert resolve_crop_method("auto", "cpu") == "separable"
        assert resolve_crop_method("grid_sample", "cpu") == "grid_sample"  # an explicit choice is kept
    finally:
        torch.use_deterministic_algorithms(old)
    with pytest.raises(ValueError, match="crop method"):
        resolve_crop_method("bicubic", "cpu")


def test_bf16_autocast_as_before() -> None:
    x = torch.randn(2, 8, 7, 7)
    boxes = torch.tensor([[0.1, 0.2, 0.8, 0.9], [0.0, 0.0, 1.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = roi_crop(x.bfloat16(), boxes, method="grid_sample")
        b = roi_crop(x.bfloat16(), boxes, method="separable")
    assert a.dtype == b.dtype == torch.bfloat16
    ref = roi_crop(x.bfloat16().float(), boxes, method="grid_sample")
    for out in (a, b):  # each within bf16 rounding of the float32 crop (values up to about 4)
        torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=0)


def test_block_methods_agree() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    a = mxa.MXABlock(16, init_scale=0.5, crop_method="grid_sample")
    b = mxa.MXABlock(16, init_scale=0.5, crop_method="separable")
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)


def test_deterministic_training_twice_is_bit_identical(tmp_path) -> None:
    cfg = dict(
        data="phantom", train_samples=32, val_samples=16, model="efficientvit_ml_m0", img_size=64, epochs=1,
        batch_size=16, ema_decay=0.0, warmup_epochs=0, progress=False, deterministic=True,
    )  # fmt: skip
    train(TrainConfig(**cfg, output=str(tmp_path / "a")))
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    train(TrainConfig(**cfg, output=str(tmp_path / "b")))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["config"]["deterministic"] is True
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
