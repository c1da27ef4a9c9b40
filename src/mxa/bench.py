"""``mxa bench``: parameters, FLOPs, latency, throughput, train-step time and memory, side by side.

For every model asked for, its variants are measured in the same run, *interleaved* (one repeat of each in
turn), so a noisy machine biases none of them: ``mxa`` (the model ``mxa train`` builds by default: label
ROIs), for our EfficientViT ``mxa-all`` or ``mxa-first`` (that block in every block of a stage, or in the
first only: the layout ``mxa train`` does not build by default), ``mxa-box`` (``timm.create_model(name,
mxa=True)``: the paper's single box), ``baseline`` (``mxa=False``) and ``timm`` (timm's own
``efficientvit_mX``, the noise control: it should time as our baseline does). For a grafted model
(``densenet121_mxa``...) the baseline is its plain timm parent. Ratios to the baseline are medians of the
per-repeat ratios. Within a repeat the calls torch runs and those ONNX Runtime runs are grouped, each group
preceded by an untimed call of its last function: without it, ONNX Runtime at batch 1 was timed into torch's
still-spinning threads in some positions of the cycle only.

Each variant runs in every *runtime* asked for (:data:`RUNTIMES`), all interleaved in the one run: ``eager``
(keys ``mxa``, ``baseline``...), ``compile`` (``torch.compile``; keys ``mxa@compile``...), ``onnx`` (exported
as :func:`mxa.export_onnx` writes it, BN fused and simplified, with a symbolic batch, run in ONNX Runtime on
the CPU with as many threads as torch; inference only), ``onnx-static`` (the same with the batch fixed to the
benchmark's) and ``deterministic`` (eager under ``torch.use_deterministic_algorithms``, as
``mxa train --deterministic`` runs). Ratios are per runtime (``mxa_vs_baseline@onnx``), and a runtime
against eager for the MXA model (``mxa@deterministic_vs_mxa``).

The structure of each variant comes with its numbers: ``operators_per_block`` (what each MXA block
dispatches in eager inference, :func:`block_operators`), ``onnx_nodes`` (graph nodes as exported and as ONNX
Runtime runs them) and, in the ratios, ``onnx_nodes_per_block`` (nodes the MXA blocks add, per block).
FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mxa.data.labels import CHEXPERT_LABELS
from mxa.utils.runtime import autocast, determinism, resolve_device

# a batch of more input pixels than this would need tens of GB for M5's activations
_MAX_PIXELS = 256 * 512 * 512

log = logging.getLogger(__name__)

__all__ = ["RUNTIMES", "BenchReport", "block_operators", "count_flops", "measure", "run_bench"]

#: How a model can be run: eager, torch.compile, ONNX Runtime (CPU) with a symbolic batch and with the batch
#: fixed (``mxa export --static-batch N``), eager with deterministic algorithms.
RUNTIMES = ("eager", "compile", "onnx", "onnx-static", "deterministic")
ONNX_RUNTIMES = ("onnx", "onnx-static")


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
    fns: dict[str, Callable[..., Any]],
    device: torch.device,
    warmup: int = 3,
    repeats: int = 10,
    group: Callable[[str], str] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved: repeat r runs every function once, in turn.

    With ``group`` (key -> name), the functions of one group run next to each other in every repeat, and
    before a group's first timed call its last one runs once untimed: the runtime that ran before (torch's
    OpenMP threads spinning after a call, say) must not be timed into the next one's calls, and no function
    is timed straight after an untimed call of itself (unless it is its group's only one).
    """
    keys = sorted(fns, key=group) if group else list(fns)  # stable: the given order within a group
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = keys if r % 2 == 0 else keys[::-1]  # no fixed position in the cycle
        last = None
        for k in order:
            if group and group(k) != last:
                last = group(k)
                fns[[j for j in order if group(j) == last][-1]]()  # the group's last: settles its engine
                _sync(device)
            times[k].append(_timer(fns[k], device))
    return times


def _engine(key: str) -> str:
    """Which library runs a variant's calls: ONNX Runtime or torch (eager, compiled, deterministic)."""
    return "onnxruntime" if any(key.endswith(f"@{rt}") for rt in ONNX_RUNTIMES) else "torch"


def _variants(name: str, img_size: int, crop_methods: Sequence[str] = ()) -> dict[str, torch.nn.Module]:
    """``mxa``: the model ``mxa train`` builds by default (label ROIs); for our EfficientViT, ``mxa-all`` or
    ``mxa-first``: the same block in the other layout (``--mxa-per-stage``); ``mxa-box``: the one
    ``timm.create_model(name, mxa=True)`` builds (the paper's single box); ``baseline``; ``timm``."""
    from mxa.train.config import TrainConfig
    from mxa.train.state import model_spec

    m = re.fullmatch(r"efficientvit_ml_m(\d)", name)
    default = TrainConfig(model=name, img_size=img_size)
    out = {"mxa": model_spec(default).build()}
    if name.startswith("efficientvit_ml_"):  # the block in every block of a stage, or in the first only
        other = "all" if default.mxa_per_stage != "all" else "first"
        out[f"mxa-{other}"] = model_spec(dataclasses.replace(default, mxa_per_stage=other)).build()
    out["mxa-box"] = timm.create_model(name, img_size=img_size, mxa=True)
    out["baseline"] = timm.create_model(name, img_size=img_size, mxa=False)
    for method in crop_methods:  # the single-box MXA model with each ROI-crop method (ours only)
        if name.startswith("efficientvit_ml_"):
            out[f"mxa-{method}"] = timm.create_model(
                name, img_size=img_size, mxa=True, mxa_cfg=dict(crop_method=method)
            )
    if m:
        out["timm"] = timm.create_model(
            f"efficientvit_m{m.group(1)}", img_size=img_size, in_chans=1, num_classes=14
        )
    return out


class _OpCount(TorchDispatchMode):
    """Counts the operators dispatched inside it: all, and those that are not views (no data moved)."""

    def __init__(self) -> None:
        super().__init__()
        self.operators = self.compute = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.operators += 1
        self.compute += not func.is_view
        return func(*args, **(kwargs or {}))


def block_operators(model: torch.nn.Module, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """Operators each MXA block of ``model`` dispatches in one inference forward on ``x`` (B, C, H, W).

    Counted with a ``TorchDispatchMode`` on the block alone, fed the input it gets in the model: on a GPU,
    each non-view operator is a kernel launch. Views (``view``, ``unsqueeze``, ``select``...) move no data.

    Returns:
        block name -> ``{"operators": all, "compute": not views}``; empty for a model without MXA blocks.

    Examples:
        >>> import timm, torch
        >>> from mxa.bench import block_operators
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64)
        >>> ops = block_operators(model, torch.randn(1, 1, 64, 64))
        >>> sorted(ops)[0], sorted(ops["stages.0.blocks.0"])
        ('stages.0.blocks.0', ['compute', 'operators'])
    """
    blocks = dict(getattr(model, "mxa_blocks", dict)())
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        b.register_forward_pre_hook(lambda _m, a, k=k: inputs.__setitem__(k, a[0])) for k, b in blocks.items()
    ]
    try:
        with torch.inference_mode():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    with torch.inference_mode():
        for k, b in blocks.items():
            with _OpCount() as count:
                b(inputs[k])
            out[k] = {"operators": count.operators, "compute": count.compute}
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


def _onnx_runner(
    model: torch.nn.Module, x: torch.Tensor, folder: str, name: str, static: bool
) -> tuple[Callable[[], Any], dict[str, int]]:
    """An ONNX Runtime session of ``model`` exported as ``mxa export`` writes it (BN fused, onnxslim), with
    a symbolic batch or, ``static``, the batch of ``x``; and its graph nodes, as exported and as ONNX Runtime
    runs them (after its own optimizations)."""
    import onnx

    from mxa._optional import require
    from mxa.files.export import export_onnx

    ort = require("onnxruntime", "mxa bench --runtime onnx")
    # export_onnx takes the input size from the pretrained cfg; timm's own models keep 224 there
    cfg = {**getattr(model, "pretrained_cfg", {}), "input_size": tuple(x.shape[1:])}
    model.pretrained_cfg = cfg  # type: ignore[assignment]  # a plain attribute; torch types them all
    batch: bool | int = len(x) if static else True
    path = export_onnx(model.cpu().eval(), f"{folder}/{name}.onnx", dynamic_batch=batch, verify=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
    # no busy-waiting between runs: interleaved with torch, a spinning pool would steal its cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.optimized_model_filepath = f"{folder}/{name}.ort.onnx"
    opts.log_severity_level = 3  # its note that the saved optimized graph is specific to this machine
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    nodes = {
        "exported": len(onnx.load(str(path)).graph.node),
        "optimized": len(onnx.load(opts.optimized_model_filepath).graph.node),
    }
    feed = {sess.get_inputs()[0].name: x.cpu().numpy()}
    return (lambda: sess.run(None, feed)), nodes


@dataclasses.dataclass
class _Plan:
    """What one model's run times: functions per key (``variant[@runtime]``) and what is known of each."""

    info: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    infer: dict[str, Callable[[], Any]] = dataclasses.field(default_factory=dict)
    trains: dict[str, Callable[[], Any]] = dataclasses.field(default_factory=dict)
    blocks: dict[str, int] = dataclasses.field(default_factory=dict)  # variant -> MXA blocks


def _plan_variant(
    plan: _Plan, k: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]
) -> None:
    """Add one variant in every runtime to ``plan``: counts, ONNX sessions, eager/compiled functions."""
    dev, amp, runtimes, folder = opts["device"], opts["amp"], opts["runtimes"], opts["folder"]
    x1 = torch.randn(1, *x.shape[1:])
    counts: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": count_flops(model, x1) / 1e9,
    }
    counts["gmacs"] = counts["gflops"] / 2
    ops = block_operators(model, x1)
    plan.blocks[k] = len(ops)
    if ops:
        counts["operators_per_block"] = ops
    for rt in runtimes:  # exported before .to(dev): the export runs on the CPU
        if rt in ONNX_RUNTIMES:
            plan.infer[_key(k, rt)], nodes = _onnx_runner(model, x, folder, _key(k, rt), rt == "onnx-static")
            plan.info[_key(k, rt)] = {**counts, "onnx_nodes": nodes}
    model.to(dev).to(memory_format=opts["fmt"])
    for rt in runtimes:
        if rt in ONNX_RUNTIMES:
            continue
        plan.info[_key(k, rt)] = dict(counts)
        fwd = torch.compile(model) if rt == "compile" else model
        mode = functools.partial(determinism, rt == "deterministic")  # a fresh one per call
        plan.infer[_key(k, rt)] = _infer_fn(fwd, x, dev, amp, mode)
        if opts["train_step"]:
            plan.trains[_key(k, rt)] = _train_fn(fwd, model, x, y, dev, amp, mode)
    model.eval()


def _peak_memory(infer: dict[str, Callable[[], Any]], dev: torch.device) -> dict[str, float]:
    """Peak CUDA memory (MiB) of each function's inference, measured alone; nothing on the CPU."""
    peak = {}
    if dev.type == "cuda":
        for k, fn in infer.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            fn()
            _sync(dev)
            peak[k] = torch.cuda.max_memory_allocated(dev) / 2**20
    return peak


def _ratios(
    plan: _Plan, t_inf: dict[str, list[float]], t_train: dict[str, list[float]], runtimes: list[str]
) -> dict[str, Any]:
    """Per-repeat median ratios of every variant to the baseline in the same runtime, and of the MXA model
    in each runtime to eager; with ONNX, the graph nodes each MXA block adds."""
    variants = [k for k in plan.blocks if k != "baseline"]
    pairs = [(_key(v, rt), _key("baseline", rt)) for rt in runtimes for v in variants]
    pairs += [(_key("mxa", rt), "mxa") for rt in runtimes if rt != "eager" and "eager" in runtimes]
    ratios: dict[str, Any] = {}
    for k, ref in pairs:
        a, b = plan.info[k], plan.info[ref]
        r = {
            "params": a["params"] / b["params"],
            "flops": a["gflops"] / b["gflops"],
            "latency": statistics.median(p / q for p, q in zip(t_inf[k], t_inf[ref])),
        }
        if k in t_train and ref in t_train:
            r["train_step"] = statistics.median(p / q for p, q in zip(t_train[k], t_train[ref]))
        blocks = plan.blocks[k.split("@")[0]]
        if "onnx_nodes" in a and "onnx_nodes" in b and blocks and ref != "mxa":
            r["onnx_nodes_per_block"] = {
                s: (a["onnx_nodes"][s] - b["onnx_nodes"][s]) / blocks for s in ("exported", "optimized")
            }
        ratios[f"{k}_vs_{ref}"] = r
    return ratios


def _bench_model(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Every variant of ``name`` in every runtime, interleaved: ``{"variants": ..., "ratios": ...}``."""
    dev, batch_size, img_size = opts["device"], opts["batch_size"], opts["img_size"]
    variants = _variants(name, img_size, opts["crop_methods"])
    x = torch.randn(batch_size, 1, img_size, img_size, device=dev).contiguous(memory_format=opts["fmt"])
    y = torch.randint(0, 2, (batch_size, len(CHEXPERT_LABELS)), device=dev).float()
    plan = _Plan()
    with tempfile.TemporaryDirectory(prefix="mxa-bench-") as folder:
        for k, model in variants.items():
            _plan_variant(plan, k, model, x, y, {**opts, "folder": folder})
        if opts["progress"]:
            log.info("%s: %d variant(s), %d interleaved repeats...", name, len(plan.infer), opts["repeats"])
        t_inf = measure(plan.infer, dev, opts["warmup"], opts["repeats"], group=_engine)
    peak = _peak_memory(plan.infer, dev)
    t_train = measure(plan.trains, dev, 1, max(3, opts["repeats"] // 2)) if plan.trains else {}
    for k, info in plan.info.items():
        info["inference"] = _stats(t_inf[k], batch_size)
        if k in t_train:
            info["train_step"] = _stats(t_train[k], batch_size)
        info["peak_memory_mib"] = peak.get(k)
    return {"variants": plan.info, "ratios": _ratios(plan, t_inf, t_train, opts["runtimes"])}


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

    ``crop_methods`` adds, per method, a variant ``mxa-<method>`` of the single-box MXA model using that
    ROI crop. ``runtimes`` (:data:`RUNTIMES`, default ``eager``; ``compile=True`` means ``("compile",)``)
    are all timed in the one interleaved run.

    Examples:
        >>> from mxa.bench import run_bench
        >>> rep = run_bench(["efficientvit_ml_m0"], batch_size=1, img_size=64, repeats=2, warmup=1,
        ...                 train_step=False, progress=False)
        >>> sorted(rep["results"]["efficientvit_ml_m0"]["ratios"])
        ['mxa-box_vs_baseline', 'mxa-first_vs_baseline', 'mxa_vs_baseline', 'timm_vs_baseline']
    """
    dev = resolve_device(device)  # a ValueError naming the fix when CUDA is asked for and absent
    runtimes = list(dict.fromkeys(runtimes or (["compile"] if compile else ["eager"])))
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise ValueError(f"unknown runtime(s) {', '.join(bad)}: choose from {', '.join(RUNTIMES)}")
    if set(runtimes) & set(ONNX_RUNTIMES) and (dev.type != "cpu" or amp != "none"):
        raise ValueError("the onnx runtimes are timed on the CPU in float32: use --device cpu --amp none")
    pixels = batch_size * img_size * img_size
    if pixels > _MAX_PIXELS:
        raise ValueError(
            f"batch {batch_size} x {img_size}x{img_size} px is {pixels / 1e6:.0f}M input pixels, beyond what "
            f"the activations fit in (at most {_MAX_PIXELS / 1e6:.0f}M): lower --batch-size or --img-size"
        )
    opts = {
        "device": dev, "batch_size": batch_size, "img_size": img_size, "amp": amp, "runtimes": runtimes,
        "fmt": torch.channels_last if channels_last else torch.contiguous_format, "repeats": repeats,
        "warmup": warmup, "train_step": train_step, "progress": progress, "crop_methods": crop_methods,
    }  # fmt: skip
    results = {name: _bench_model(name, opts) for name in models}
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
