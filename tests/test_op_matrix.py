"""One op test matrix (torchvision's ``RoIOpTester`` style) for every MXA building block.

Each op is checked against its own float64, contiguous, eager result (the oracle) under every way a user
runs it: float32 and bfloat16, a non-contiguous input, channels_last, CPU autocast, deterministic
algorithms, ``torch.fx.symbolic_trace`` and ``torch.compile(fullgraph=True)``; values and, where the op is
trained, input gradients. On the CPU here, on CUDA too when the machine has one (conftest's ``device``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import mxa
from mxa.layers import ROIClassifier, roi_paste

B, C, H, W = 2, 16, 9, 11  # odd, unequal sides catch transposed axes
BOXES = ((0.1, 0.2, 0.7, 0.9), (0.0, 0.05, 1.0, 0.6))


class _Fn(nn.Module):
    """A function op as a module, so FX and compile see the same thing for every op."""

    def __init__(self, fn: Callable[..., torch.Tensor], **kw: object) -> None:
        super().__init__()
        self.fn, self.kw = fn, kw

    def forward(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.fn(x, boxes, **self.kw)


@dataclass(frozen=True)
class Op:
    name: str
    make: Callable[[], nn.Module]
    takes_boxes: bool = False
    # bf16 has ~3 significant digits; gated ops multiply a few of them
    bf16_atol: float = 0.05

    def inputs(self, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        if not self.takes_boxes:
            return (x,)
        return x, torch.tensor(BOXES, dtype=torch.float64).to(device=device, dtype=dtype)


def _module(op: Op, dtype: torch.dtype, device: str) -> nn.Module:
    torch.manual_seed(0)
    return op.make().to(device=device, dtype=dtype).eval()


OPS = [
    Op("roi_crop", lambda: _Fn(mxa.roi_crop, output_size=(5, 7)), takes_boxes=True),
    Op(
        "roi_crop_separable",
        lambda: _Fn(mxa.roi_crop, output_size=(5, 7), method="separable"),
        takes_boxes=True,
    ),
    Op("roi_paste", lambda: _Fn(roi_paste, size=(H, W)), takes_boxes=True),
    # in bf16 the box head itself runs in bf16: box edges move by ~1/128 of the map, a crop value by ~0.1
    Op("DynamicROIPool", lambda: mxa.DynamicROIPool(C), bf16_atol=0.15),
    Op(
        "DynamicROIPool_saliency",
        lambda: mxa.DynamicROIPool(C, min_size=0.05, box_size="saliency"),
        bf16_atol=0.15,
    ),
    Op("ROIClassifier", lambda: ROIClassifier(C, 3, class_boxes=True), takes_boxes=True, bf16_atol=0.15),
    Op("CBAM", lambda: mxa.CBAM(C, reduction=4, spatial_kernel=3)),
    Op("MXABlock", lambda: mxa.MXABlock(C, reduction=4, init_scale=1.0)),
    Op("MXABlock_paste", lambda: mxa.MXABlock(C, reduction=4, init_scale=1.0, mode="paste", crop_size=5)),
    # the label-ROI block (mxa train's default): its regions from label maps, CBAM of each summed
    Op("MXABlock_labels", lambda: mxa.MXABlock(C, reduction=4, init_scale=1.0, rois=2, roi_classes=4)),
]


def _out(y: object) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, tuple) else (y,)  # type: ignore[arg-type]


def _run(m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return _out(m(*args))


def _oracle(op: Op, device: str, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """The op in float64 on the very values (inputs, weights) a ``dtype`` run sees, rounded to ``dtype``."""
    m = _module(op, dtype, device).double()
    return _run(m, tuple(a.double() for a in op.inputs(dtype, device)))


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _close(
    got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...], atol: float, rtol: float = 1e-4
) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g.double().cpu(), w.double().cpu(), atol=atol, rtol=rtol)


def _variant(op: Op, variant: str, device: str) -> tuple[torch.Tensor, ...]:
    dtype = {"float64": torch.float64, "bfloat16": torch.bfloat16}.get(variant, torch.float32)
    m = _module(op, dtype, device)
    args = op.inputs(dtype, device)
    x, rest = args[0], args[1:]
    if variant == "non_contiguous":
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not x.is_contiguous()
    elif variant == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    args = (x, *rest)
    if variant == "autocast":
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return _run(m, args)
    if variant == "deterministic":
        with _deterministic():
            return _run(m, args)
    if variant == "fx":
        # ROIClassifier's optional precomputed label maps: traced as absent, as a caller without them calls it
        concrete = {"z": None} if isinstance(m, ROIClassifier) else None
        return _run(torch.fx.symbolic_trace(m, concrete_args=concrete), args)
    if variant == "compile":
        # the function ops check their boxes, a data-dependent branch: a graph break by design (the modules,
        # whose boxes are valid by construction, compile to one graph)
        torch._dynamo.reset()
        return _run(torch.compile(m, fullgraph=not isinstance(m, _Fn)), args)
    return _run(m, args)


VARIANTS = [
    "float64",
    "float32",
    "bfloat16",
    "non_contiguous",
    "channels_last",
    "autocast",
    "deterministic",
    "fx",
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_op_matches_its_float64_oracle(op: Op, variant: str, device: str) -> None:
    got = _variant(op, variant, device)
    if variant in ("bfloat16", "autocast"):
        dtype = torch.bfloat16 if variant == "bfloat16" else torch.float32
        _close(got, _oracle(op, device, dtype), atol=op.bf16_atol, rtol=0.05)
        if variant == "bfloat16":  # the op keeps its input's dtype
            assert got[0].dtype == torch.bfloat16
    else:
        _close(got, _oracle(op, device), atol=1e-5)
        if variant != "float64":
            assert got[0].dtype == torch.float32


@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_op_compiles_and_matches(op: Op) -> None:
    _close(_variant(op, "compile", "cpu"), _oracle(op, "cpu"), atol=1e-5)


@pytest.mark.parametrize("layout", ["non_contiguous", "channels_last"])
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_op_gradients_do_not_depend_on_the_layout(op: Op, layout: str, device: str) -> None:
    def grads(variant: str) -> torch.Tensor:
        m = _module(op, torch.float64, device)
        x, *rest = op.inputs(torch.float64, device)
        if variant == "non_contiguous":
            x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif variant == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        out = _out(m.train()(x, *rest))
        sum(o.float().pow(2).sum() for o in out if o.is_floating_point()).backward()
        assert x.grad is not None
        return x.grad

    torch.testing.assert_close(grads(layout), grads("contiguous"), atol=1e-10, rtol=1e-8)


def _cuda_graph(
    m: nn.Module, args: tuple[torch.Tensor, ...]
) -> tuple[Callable[[], Any], tuple[torch.Tensor, ...]]:
    """``m(*args)`` captured as a CUDA graph (inference): its replay and the outputs each replay rewrites."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (lazy caches, cuDNN's choices) off the default stream
        for _ in range(3):
            _run(m, args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = _out(m(*args))
    return graph.replay, out


def _replays_like_eager(m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """A replay on new values in the captured inputs equals the eager forward on them: no host sync, no
    shape- or value-dependent host decision, no tensor made on the host in the forward."""
    replay, got = _cuda_graph(m, args)
    args[0].copy_(torch.randn_like(args[0]))
    replay()
    _close(got, _run(m, args), atol=1e-5)


MODULE_OPS = [o for o in OPS if not isinstance(o.make(), _Fn)]  # function ops check boxes: a host sync


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("op", MODULE_OPS, ids=lambda o: o.name)
def test_op_replays_as_a_cuda_graph(op: Op) -> None:
    _replays_like_eager(_module(op, torch.float32, "cuda"), op.inputs(torch.float32, "cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_default_model_replays_as_a_cuda_graph() -> None:
    from mxa.train.config import TrainConfig
    from mxa.train.state import model_spec

    torch.manual_seed(0)
    model = model_spec(TrainConfig(model="efficientvit_ml_m0", img_size=64)).build().cuda().eval()
    _replays_like_eager(model, (torch.randn(2, 1, 64, 64, device="cuda"),))
