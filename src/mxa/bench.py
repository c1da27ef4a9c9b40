"""``mxa bench``: parameters, FLOPs, latency, throughput, train-step time and memory, side by side.

For every model asked for, three variants are measured in the same run, *interleaved* (one repeat of each
in turn), so a noisy machine biases none of them: ours with MXA, ours without (``mxa=False``), and timm's
own ``efficientvit_mX`` (the noise control: it should time as our baseline does). For a grafted model
(``densenet121_mxa``...) the baseline, ``mxa=False``, is its plain timm parent. Ratios to the baseline are
medians of the per-repeat ratios.

Each variant runs in every *runtime* asked for (:data:`RUNTIMES`), all interleaved in the one run: ``eager``
(keys ``mxa``, ``baseline``...), ``compile`` (``torch.compile``; keys ``mxa@compile``...), ``onnx`` (exported
with BN fused by :func:`mxa.export_onnx`, run in ONNX Runtime on the CPU with as many threads as torch;
inference only) and ``deterministic`` (eager under ``torch.use_deterministic_algorithms``, as
``mxa train --deterministic`` runs). Ratios are per runtime (``mxa_vs_baseline@onnx``), and a runtime
against eager for the MXA model (``mxa@deterministic_vs_mxa``).
FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from mxa.data.labels import CHEXPERT_LABELS
from mxa.utils.runtime import autocast, determinism, resolve_device

# a batch of more input pixels than this would need tens of GB for M5's activations
_MAX_PIXELS = 256 * 512 * 512

log = logging.getLogger(__name__)

__all__ = ["RUNTIMES", "BenchReport", "count_flops", "measure", "run_bench"]

#: How a model can be run: eager, torch.compile, ONNX Runtime (CPU), eager with deterministic algorithms.
RUNTIMES = ("eager", "compile", "onnx", "deterministic")


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (multiply-add = 2 FLOPs), counted by torch's FlopCounterMode."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    fns: dict[str, Callable[..., Any]], device: torch.device, warmup: int = 3, repeats: int = 10
) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved: repeat r runs every function once, in turn."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # no fixed position in the cycle
        for k in order:
            times[k].append(_timer(fns[k], device))
    return times


def _variants(name: str, img_size: int, crop_methods: Sequence[str] = ()) -> dict[str, torch.nn.Module]:
    m = re.fullmatch(r"efficientvit_ml_m(\d)", name)
    out = {
        "mxa": timm.create_model(name, img_size=img_size, mxa=True),
        "baseline": timm.create_model(name, img_size=img_size, mxa=False),
    }
    for method in crop_methods:  # the MXA model with each ROI-crop method (ours only)
        if name.startswith("efficientvit_ml_"):
            out[f"mxa-{method}"] = timm.create_model(
                name, img_size=img_size, mxa=True, mxa_cfg=dict(crop_method=method)
            )
    if m:
        out["timm"] = timm.create_model(
            f"efficientvit_m{m.group(1)}", img_size=img_size, in_chans=1, num_classes=14
        )
    return out


def _infer_fn(
    m: Callable[..., Any],
    x: torch.Tensor,
    dev: torch.device,
    amp: str,
    mode: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Callable[[], None]:
    def run() -> None:
        with mode(), torch.inference_mode(), autocast(dev, amp):
            m(x)

    return run


def _train_fn(
    m: Callable[..., Any],
    module: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    dev: torch.device,
    amp: str,
    mode: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Callable[[], None]:
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def run() -> None:
        module.train()
        with mode():
            with autocast(dev, amp):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        module.eval()

    return run


def _stats(ts: list[float], batch: int) -> dict[str, float]:
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    med = statistics.median(ts)
    return {
        "median_ms": med * 1e3,
        "p25_ms": q[0] * 1e3,
        "p75_ms": q[2] * 1e3,
        "min_ms": min(ts) * 1e3,
        "images_per_s": batch / med,
    }


class BenchReport(TypedDict):
    """What :func:`run_bench` returns and ``mxa bench --json`` writes (``benchmarks/results/*.json``)."""

    device: str
    device_type: str
    torch: str
    timm: str
    threads: int
    batch_size: int
    img_size: int
    amp: str
    channels_last: bool
    compile: bool
    runtimes: list[str]
    repeats: int
    # model -> {"variants": {name[@runtime]: numbers}, "ratios": {name[@rt]_vs_baseline[@rt]: ratios}}
    results: dict[str, dict[str, Any]]


def _key(variant: str, runtime: str) -> str:
    return variant if runtime == "eager" else f"{variant}@{runtime}"


def _onnx_runner(model: torch.nn.Module, x: torch.Tensor, folder: str, name: str) -> Callable[[], Any]:
    """An ONNX Runtime session of ``model`` (BN fused, as ``mxa export`` writes it), run on ``x``."""
    from mxa._optional import require
    from mxa.files.export import export_onnx

    ort = require("onnxruntime", "mxa bench --runtime onnx")
    # export_onnx takes the input size from the pretrained cfg; timm's own models keep 224 there
    cfg = {**getattr(model, "pretrained_cfg", {}), "input_size": tuple(x.shape[1:])}
    model.pretrained_cfg = cfg  # type: ignore[assignment]  # a plain attribute; torch types them all
    path = export_onnx(model.cpu().eval(), f"{folder}/{name}.onnx", verify=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
    # no busy-waiting between runs: interleaved with torch, a spinning pool would steal its cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.cpu().numpy()}
    return lambda: sess.run(None, feed)


def run_bench(
    models: Sequence[str],
    device: str = "cpu",
    batch_size: int = 32,
    img_size: int = 224,
    amp: str = "none",
    channels_last: bool = False,
    compile: bool = False,
    repeats: int = 10,
    warmup: int = 3,
    train_step: bool = True,
    progress: bool = True,
    crop_methods: Sequence[str] = (),
    runtimes: Sequence[str] = (),
) -> BenchReport:
    """Benchmark ``models`` and their baselines; returns a JSON-ready dict (see module docstring).

    ``crop_methods`` adds, per method, a variant ``mxa-<method>`` of our MXA model using that ROI crop.
    ``runtimes`` (:data:`RUNTIMES`, default ``eager``; ``compile=True`` means ``("compile",)``) are all
    timed in the one interleaved run.

    Examples:
        >>> from mxa.bench import run_bench
        >>> rep = run_bench(["efficientvit_ml_m0"], batch_size=1, img_size=64, repeats=2, warmup=1,
        ...                 train_step=False, progress=False)
        >>> sorted(rep["results"]["efficientvit_ml_m0"]["ratios"])
        ['mxa_vs_baseline', 'timm_vs_baseline']
    """
    dev = resolve_device(device)  # a ValueError naming the fix when CUDA is asked for and absent
    runtimes = list(dict.fromkeys(runtimes or (["compile"] if compile else ["eager"])))
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise ValueError(f"unknown runtime(s) {', '.join(bad)}: choose from {', '.join(RUNTIMES)}")
    if "onnx" in runtimes and (dev.type != "cpu" or amp != "none"):
        raise ValueError("the onnx runtime is timed on the CPU in float32: use --device cpu --amp none")
    pixels = batch_size * img_size * img_size
    if pixels > _MAX_PIXELS:
        raise ValueError(
            f"batch {batch_size} x {img_size}x{img_size} px is {pixels / 1e6:.0f}M input pixels, beyond what "
            f"the activations fit in (at most {_MAX_PIXELS / 1e6:.0f}M): lower --batch-size or --img-size"
        )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    results: dict[str, Any] = {}
    for name in models:
        variants = _variants(name, img_size, crop_methods)
        x = torch.randn(batch_size, 1, img_size, img_size, device=dev).contiguous(memory_format=fmt)
        y = torch.randint(0, 2, (batch_size, len(CHEXPERT_LABELS)), device=dev).float()
        info: dict[str, Any] = {}
        infer: dict[str, Callable[[], Any]] = {}
        trains: dict[str, Callable[[], Any]] = {}
        with tempfile.TemporaryDirectory(prefix="mxa-bench-") as folder:
            for k, model in variants.items():
                params = sum(p.numel() for p in model.parameters())
                flops = count_flops(model, torch.randn(1, 1, img_size, img_size))
                counts = {"params": params, "gflops": flops / 1e9, "gmacs": flops / 2e9}
                if "onnx" in runtimes:  # exported before .to(dev): the export runs on the CPU
                    infer[_key(k, "onnx")] = _onnx_runner(model, x, folder, k)
                model.to(dev).to(memory_format=fmt)
                for rt in runtimes:
                    info[_key(k, rt)] = dict(counts)
                    if rt == "onnx":
                        continue
                    fwd = torch.compile(model) if rt == "compile" else model
                    mode = functools.partial(determinism, rt == "deterministic")  # a fresh one per call
                    infer[_key(k, rt)] = _infer_fn(fwd, x, dev, amp, mode)
                    if train_step:
                        trains[_key(k, rt)] = _train_fn(fwd, model, x, y, dev, amp, mode)
                model.eval()
            if progress:
                log.info("%s: %d variant(s), %d interleaved repeats...", name, len(infer), repeats)
            t_inf = measure(infer, dev, warmup, repeats)
        peak = {}
        if dev.type == "cuda":  # peak memory of each variant's inference, measured alone
            for k, fn in infer.items():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
                fn()
                _sync(dev)
                peak[k] = torch.cuda.max_memory_allocated(dev) / 2**20
        t_train = measure(trains, dev, 1, max(3, repeats // 2)) if trains else {}
        for k in info:
            info[k]["inference"] = _stats(t_inf[k], batch_size)
            if k in t_train:
                info[k]["train_step"] = _stats(t_train[k], batch_size)
            info[k]["peak_memory_mib"] = peak.get(k)
        ratios: dict[str, Any] = {}
        pairs = [(_key(v, rt), _key("baseline", rt)) for rt in runtimes for v in variants if v != "baseline"]
        pairs += [(_key("mxa", rt), "mxa") for rt in runtimes if rt != "eager" and "eager" in runtimes]
        for k, ref in pairs:
            ratios[f"{k}_vs_{ref}"] = {
                "params": info[k]["params"] / info[ref]["params"],
                "flops": info[k]["gflops"] / info[ref]["gflops"],
                "latency": statistics.median(a / b for a, b in zip(t_inf[k], t_inf[ref])),
                **(
                    {"train_step": statistics.median(a / b for a, b in zip(t_train[k], t_train[ref]))}
                    if k in t_train and ref in t_train
                    else {}
                ),
            }
        results[name] = {"variants": info, "ratios": ratios}
        del variants, infer, trains
    return {  # a BenchReport
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
        "device_type": dev.type,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "img_size": img_size,
        "amp": amp,
        "channels_last": channels_last,
        "compile": "compile" in runtimes,
        "runtimes": runtimes,
        "repeats": repeats,
        "results": results,
    }
