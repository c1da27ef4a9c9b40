from __future__ import annotations

import json

import pytest
import timm
import torch

from mxa._optional import MissingExtraError, require
from mxa.bench import count_flops, measure, run_bench
from mxa.cli import main

BENCH_M0 = "bench --model efficientvit_ml_m0 --img-size 64 --warmup 1".split()


def test_flops_match_published_m5_macs() -> None:
    # EfficientViT-M5 at 224: 522M MACs published (1000-class head); FlopCounterMode counts 2 FLOPs per MAC
    m = timm.create_model("efficientvit_m5")
    gmacs = count_flops(m, torch.randn(1, 3, 224, 224)) / 2e9
    assert gmacs == pytest.approx(0.522, rel=0.03)


def test_measure_runs_each_engine_together_and_settles_between_them() -> None:
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "a@onnx", "b", "b@onnx")}
    group = lambda k: k.split("@")[-1] if "@" in k else "torch"  # noqa: E731
    times = measure(fns, torch.device("cpu"), warmup=0, repeats=2, group=group)
    assert {k: len(v) for k, v in times.items()} == dict.fromkeys(fns, 2)
    # repeat 0: onnx then torch (sorted by group), repeat 1 reversed; each group starts with an untimed call
    # of its last function, so no function is timed right after an untimed call of itself
    assert calls == ["b@onnx", "a@onnx", "b@onnx", "b", "a", "b", "a", "b", "a", "a@onnx", "b@onnx", "a@onnx"]
    calls.clear()
    measure(fns, torch.device("cpu"), warmup=0, repeats=1)  # no group: the given order, nothing untimed
    assert calls == list(fns)


def test_bench_ratios_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "b.json"
    rc = main([*BENCH_M0, "--batch-size", "2", "--repeats", "3", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["device_type"] == "cpu" and rep["torch"] == torch.__version__ and rep["threads"] >= 1
    r = rep["results"]["efficientvit_ml_m0"]
    assert set(r["variants"]) == {"mxa", "mxa-first", "mxa-box", "baseline", "timm"}
    v = r["variants"]
    # the same block in the first block of each stage only: 3 of M0's 6
    assert len(v["mxa-first"]["operators_per_block"]) == 3 and len(v["mxa"]["operators_per_block"]) == 6
    assert v["baseline"]["params"] < v["mxa-first"]["params"] < v["mxa"]["params"]
    assert v["baseline"]["params"] == v["timm"]["params"] < v["mxa"]["params"]
    assert r["ratios"]["mxa_vs_baseline"]["params"] == pytest.approx(
        v["mxa"]["params"] / v["baseline"]["params"]
    )
    assert r["ratios"]["mxa_vs_baseline"]["latency"] > 0 and v["mxa"]["inference"]["images_per_s"] > 0
    assert len(v["mxa"]["train_step"]) > 0
    assert "efficientvit_ml_m0" in capsys.readouterr().out
    # inference only: no train-step column
    out = tmp_path / "b1.json"
    assert main([*BENCH_M0, "--batch-size", "1", "--repeats", "2", "--no-train", "--json", str(out)]) == 0
    assert "train_step" not in json.loads(out.read_text())["results"]["efficientvit_ml_m0"]["variants"]["mxa"]


def test_bench_no_cuda_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on a GPU machine
    with pytest.raises(ValueError, match="no CUDA device is available; use --device cpu"):
        run_bench(["efficientvit_ml_m0"], device="cuda")


def test_missing_extra_names_the_install() -> None:
    with pytest.raises(MissingExtraError, match=r'pip install "mxa-attention\[viz\]"'):
        require("matplotlib.no_such_module", "Plotting")  # a missing module of the viz extra


@pytest.mark.slow  # 5 variants x 3 runtimes: CI runs it after the suite
def test_bench_runtimes_side_by_side(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "r.json"
    argv = [*BENCH_M0, "--batch-size", "2", "--repeats", "2", "--runtime", "eager", "--runtime", "onnx"]
    assert main([*argv, "--runtime", "deterministic", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["runtimes"] == ["eager", "onnx", "deterministic"] and rep["compile"] is False
    r = rep["results"]["efficientvit_ml_m0"]
    assert set(r["variants"]) == {
        f"{v}{s}"
        for v in ("mxa", "mxa-first", "mxa-box", "baseline", "timm")
        for s in ("", "@onnx", "@deterministic")
    }
    assert "train_step" not in r["variants"]["mxa@onnx"]  # ONNX Runtime: inference only
    assert "train_step" in r["variants"]["mxa@deterministic"]
    for key in ("mxa@onnx_vs_baseline@onnx", "timm@onnx_vs_baseline@onnx", "mxa@deterministic_vs_mxa"):
        assert r["ratios"][key]["latency"] > 0, key
    assert r["ratios"]["mxa@deterministic_vs_mxa"]["train_step"] > 0


def test_bench_runtime_errors() -> None:
    with pytest.raises(
        ValueError, match="unknown runtime.*choose from eager, compile, onnx, onnx-static, deterministic"
    ):
        run_bench(["efficientvit_ml_m0"], runtimes=["tensorrt"])
    with pytest.raises(ValueError, match="CPU in float32: use --device cpu --amp none"):
        run_bench(["efficientvit_ml_m0"], runtimes=["onnx"], amp="bf16")
