"""Inference of M5 (+MXA): eager vs BN-fused vs torch.compile vs ONNX Runtime, batch 1 and 32.

Goal: >= 1.3x over eager at batch 1 on CPU for the better of BN-fused and ONNX Runtime.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.utils import reparameterize_model

import mxa
from conftest import sync

_cache: dict = {}


def _model():
    if "eager" not in _cache:
        torch.manual_seed(0)
        m = timm.create_model("efficientvit_ml_m5", mxa_cfg=dict(init_scale=0.1)).eval()
        _cache["eager"] = m
        _cache["fused"] = reparameterize_model(copy.deepcopy(m)).eval()
    return _cache["eager"], _cache["fused"]


def _onnx_session(tmp_path_factory):
    if "ort" not in _cache:
        ort = pytest.importorskip("onnxruntime")
        eager, _ = _model()
        path = tmp_path_factory.mktemp("onnx") / "m5.onnx"
        mxa.export_onnx(eager, path, opset=20)  # TorchScript exporter: quick to run
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        _cache["ort"] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _cache["ort"]


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("variant", ["eager", "bn_fused", "compile", "onnxruntime"])
def test_inference(benchmark, variant, batch, device, tmp_path_factory) -> None:
    benchmark.group = f"M5+MXA inference, batch {batch}, {device.type}"
    eager, fused = _model()
    x = torch.randn(batch, 1, 224, 224)
    if variant == "onnxruntime":
        if device.type != "cpu":
            pytest.skip("ONNX Runtime is measured on the CPU")
        sess = _onnx_session(tmp_path_factory)
        feed = {"x": x.numpy()}
        benchmark.pedantic(
            lambda: sess.run(None, feed), warmup_rounds=3, rounds=15 if batch == 1 else 5, iterations=1
        )
        return
    model = {"eager": eager, "bn_fused": fused, "compile": fused}[variant].to(device)
    if variant == "compile":
        model = torch.compile(model)
    x = x.to(device)

    def run():
        with torch.inference_mode():
            model(x)
        sync(device)

    benchmark.pedantic(run, warmup_rounds=3, rounds=15 if batch == 1 else 5, iterations=1)
