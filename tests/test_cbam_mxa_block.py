from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import mxa.layers
from mxa import CBAM, MXABlock


def test_cbam_matches_formula() -> None:
    torch.manual_seed(0)
    cbam = CBAM(32, reduction=8, spatial_kernel=7).double()
    x = torch.randn(3, 32, 9, 9, dtype=torch.float64)
    w1 = cbam.channel.fc1.weight.flatten(1)  # (C/r, C)
    w2 = cbam.channel.fc2.weight.flatten(1)  # (C, C/r)

    def mlp(v):
        return F.relu(v @ w1.T) @ w2.T

    ca = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    xc = x * ca[:, :, None, None]
    desc = torch.cat([xc.amax(1, keepdim=True), xc.mean(1, keepdim=True)], 1)
    sa = torch.sigmoid(F.conv2d(desc, cbam.spatial.conv.weight, padding=3))
    torch.testing.assert_close(cbam(x), xc * sa)
    assert w1.shape == (4, 32)


def test_channel_attention_equals_timm() -> None:
    from timm.layers.cbam import ChannelAttn

    from mxa.layers.cbam import ChannelAttention

    ours = ChannelAttention(48, rd_ratio=1 / 16).double()
    ref = ChannelAttn(48, rd_ratio=1 / 16).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 48, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


def test_cbam_gradcheck() -> None:
    cbam = CBAM(8, reduction=4, spatial_kernel=3).double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(cbam, (x,))


def test_cbam_bad_input() -> None:
    with pytest.raises(ValueError, match="built for 8"):
        CBAM(8)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="odd"):
        CBAM(8, spatial_kernel=4)


def test_mxa_block_is_zero_at_init() -> None:
    blk = MXABlock(16)
    x = torch.randn(2, 16, 7, 7)
    out = blk(x)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert blk.scale.grad is not None and blk.scale.grad.abs().sum() > 0


def test_mxa_block_nonzero_scale_trains_everything() -> None:
    torch.manual_seed(0)
    blk = MXABlock(16, reduction=4, init_scale=1.0)
    x = torch.randn(4, 16, 7, 7)
    blk(x).square().mean().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mxa_block_reaches_boxes() -> None:
    blk = MXABlock(8)
    boxes = blk.roi.predict_boxes(torch.randn(3, 8, 6, 6))
    assert boxes.shape == (3, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mxa_block_dtype_device(dtype, device) -> None:
    blk = MXABlock(8, init_scale=0.5).to(device=device, dtype=dtype)
    x = torch.randn(2, 8, 7, 7, device=device, dtype=dtype)
    y = blk(x)
    assert y.dtype == dtype and y.device == x.device and torch.isfinite(y).all()


def test_mxa_block_bf16_autocast() -> None:
    blk = MXABlock(8, init_scale=0.5)
    x = torch.randn(2, 8, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = blk(x)
    ref = blk(x)
    assert y.dtype == torch.float32  # the block returns its input's dtype
    torch.testing.assert_close(y, ref, atol=5e-2, rtol=5e-2)


def test_mxa_block_compile_fullgraph() -> None:
    torch._dynamo.reset()
    blk = MXABlock(8, init_scale=0.5).eval()
    x = torch.randn(2, 8, 7, 7)
    compiled = torch.compile(blk, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), blk(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [torch.randn(8, 7, 7), torch.randn(1, 4, 7, 7)])
def test_mxa_block_bad_input(bad) -> None:
    with pytest.raises(ValueError):
        MXABlock(8)(bad)


@pytest.mark.parametrize("hw", [1, 4, 7])
def test_mxa_block_inference_path_equals_training_path(hw: int) -> None:
    torch.manual_seed(0)
    blk = MXABlock(16, reduction=4, init_scale=0.5).eval()
    x = torch.randn(3, 16, hw, hw)
    x_copy = x.clone()
    with torch.no_grad():
        fast = blk(x)  # in-place gating on the crop
    torch.testing.assert_close(x, x_copy)  # the input is untouched
    torch.testing.assert_close(fast, blk(x))  # the autograd path


def test_cbam_in_place_equals_forward() -> None:
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=4)
    x = torch.randn(2, 16, 5, 6)
    ref = cbam(x)
    mine = x.clone()
    with torch.no_grad():
        out = cbam.forward_(mine)
    assert out is mine  # gated in place, no new feature map
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="built for 16"):
        cbam.forward_(torch.randn(1, 8, 5, 5))


def test_mxa_block_path_follows_grad_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    blk = MXABlock(8, init_scale=0.5).eval()
    calls: list[str] = []
    forward_ = blk.cbam.forward_
    monkeypatch.setattr(blk.cbam, "forward_", lambda x: calls.append("in place") or forward_(x))
    x = torch.randn(2, 8, 5, 5)
    blk(x)  # grad enabled: the autograd path, even though x needs no grad
    assert calls == []
    with torch.inference_mode():
        blk(x)
    assert calls == ["in place"]


@pytest.mark.parametrize("grad", [True, False])
def test_mxa_block_fx_symbolic_trace(grad: bool) -> None:
    torch.manual_seed(0)
    blk = MXABlock(16, reduction=4, init_scale=0.5).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.set_grad_enabled(grad):
        graph = torch.fx.symbolic_trace(blk)  # plain torch.fx, no custom tracer or leaf modules
        torch.testing.assert_close(graph(x), blk(x), rtol=0, atol=0)
    assert (".mul_(" in graph.code) is not grad  # the graph keeps the path of the mode it was traced in


def test_cbam_fx_symbolic_trace() -> None:
    cbam = CBAM(16, reduction=4)
    graph = torch.fx.symbolic_trace(cbam)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(graph(x), cbam(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(14, 14), (7, 7), (4, 4), (5, 8), (1, 1), (2, 3)])
@pytest.mark.parametrize("kernel", [3, 7])
def test_the_compiled_spatial_convolution_equals_the_convolution(
    size: tuple[int, int], kernel: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled for CPU inference the spatial convolution is a sum over the padded map's windows: its oracle
    is the convolution itself (float64). Under autograd or autocast the convolution runs."""
    torch.manual_seed(0)
    spatial = mxa.layers.SpatialAttention(kernel).double()
    desc = torch.randn(3, 2, *size, dtype=torch.float64)
    want = spatial.conv(desc)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.no_grad():
        assert mxa.layers.roi.compiled_cpu_inference(desc)  # the window sum is what runs here
        got = spatial.logits(desc)
        single = mxa.layers.SpatialAttention(kernel)  # autocast casts float32, not float64
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = single.logits(desc.float())
            want_cast = single.conv(desc.float())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert cast.dtype == torch.bfloat16 and torch.equal(cast, want_cast)  # autocast: the convolution
    graph = spatial.logits(desc.requires_grad_())
    assert "Convolution" in type(graph.grad_fn).__name__  # autograd: the convolution


def test_cbam_compile_fullgraph() -> None:
    torch._dynamo.reset()
    cbam = CBAM(16, reduction=4)
    x = torch.randn(2, 16, 8, 8)
    compiled = torch.compile(cbam, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), cbam(x), atol=1e-5, rtol=1e-5)


def test_mxa_block_compile_fullgraph_inference() -> None:
    torch._dynamo.reset()
    blk = MXABlock(16, reduction=4, init_scale=0.5).eval()
    x = torch.randn(2, 16, 8, 8)
    compiled = torch.compile(blk, fullgraph=True, backend="aot_eager")
    with torch.no_grad():  # the in-place path
        torch.testing.assert_close(compiled(x), blk(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "where", ["roi.fc.weight", "roi.saliency.weight", "roi.centre_gain", "cbam.channel.fc1.weight"]
)
@pytest.mark.parametrize("grad", [True, False])
def test_mxa_block_nan_weight_gives_nan_output(where: str, grad: bool) -> None:
    # A diverged weight must reach the logits as NaN (the trainer's loss guard), not raise or crash,
    # even at init_scale 0 (NaN * 0 is NaN).
    blk = MXABlock(8)
    with torch.no_grad():
        blk.get_parameter(where).view(-1)[0] = float("nan")
    with torch.set_grad_enabled(grad):
        out = blk(torch.randn(2, 8, 6, 6))
    assert out.isnan().all()


def test_channel_attention_is_exported() -> None:
    from mxa.layers.cbam import ChannelAttention

    assert mxa.layers.ChannelAttention is ChannelAttention
    assert "ChannelAttention" in mxa.layers.__all__
