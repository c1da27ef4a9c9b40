"""What MXA costs on a GPU once kernel launches are taken out: eager, replayed as a CUDA graph, compiled, and
compiled and replayed, in one interleaved run.

Runtimes, each timed per variant (``mxa``: the model ``mxa train`` builds by default; ``baseline``: ours
without MXA; see ``mxa bench --help``):

- ``eager``: ``model(x)``, every operator a kernel launch from Python;
- ``graph``: the eager forward captured once as a CUDA graph (``torch.cuda.graph``) and replayed: the same
  kernels, launched by the driver in one call, no Python;
- ``compile``: ``torch.compile(model, dynamic=False)`` (inductor's fused Triton kernels);
- ``compile-graph``: the compiled forward captured and replayed as a CUDA graph (what
  ``mode="reduce-overhead"`` automates).

Each replay, on new values copied into the captured input, is compared with the eager output on them
(``max_abs_diff``). A runtime that cannot run (a capture that fails, say) is reported with its error and left
out of the timing. Writes the medians, the paired ratios MXA / baseline per runtime and each runtime / eager
per variant, and MXA's extra time per block beside its operators per block (counted on the CPU: each one not
a view is a kernel on a GPU). The file is rewritten after each batch size, so a run cut off keeps what it
measured.

Usage (a CUDA device; from the source tree: PYTHONPATH=src):
    python benchmarks/cuda_launch.py --batch-size 1 --batch-size 32 --compile \
        --json benchmarks/results/nvidia-h200-launch.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch

from mxa.bench import _variants, block_operators, measure
from mxa.data.sanity import suppress_input_checks


def _capture(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], Any], torch.Tensor]:
    """``fn`` captured as a CUDA graph: its replay and the output tensor each replay rewrites."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph asks
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def _add_variant(
    v: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    fresh: torch.Tensor,
    compile: bool,
    fns: dict[str, Callable[[], Any]],
    report: dict[str, Any],
) -> None:
    """Add ``v``'s runtimes, fed the captured input ``x``, to ``fns``; to ``report`` its compile seconds,
    each replay's difference from eager on the new values ``fresh``, and what could not run (the others
    still run)."""
    want = model(fresh)
    fns[f"{v}@eager"] = lambda: model(x)
    forwards: dict[str, Callable[[], torch.Tensor]] = {"graph": lambda: model(x)}
    if compile:
        compiled = torch.compile(model, dynamic=False)
        start = time.perf_counter()
        try:
            compiled(x)
            torch.cuda.synchronize(x.device)
        except Exception as e:
            report["errors"][f"{v}@compile"] = f"{type(e).__name__}: {e}"
        else:
            report["compile_s"][v] = time.perf_counter() - start
            fns[f"{v}@compile"] = lambda: compiled(x)
            forwards["compile-graph"] = lambda: compiled(x)
    for rt, forward in forwards.items():
        try:
            replay, out = _capture(forward)
        except Exception as e:
            traceback.print_exc()
            report["errors"][f"{v}@{rt}"] = f"{type(e).__name__}: {e}"
            continue
        fns[f"{v}@{rt}"] = replay
        saved = x.clone()
        x.copy_(fresh)
        replay()
        report["max_abs_diff"][f"{v}@{rt}"] = (out - want).abs().max().item()
        x.copy_(saved)


def _one_batch(models: dict[str, torch.nn.Module], batch: int, repeats: int, compile: bool) -> dict[str, Any]:
    """Every variant in every runtime at ``batch``, interleaved; the numbers :func:`main` writes."""
    dev = next(next(iter(models.values())).parameters()).device
    x = torch.randn(batch, 1, 224, 224, device=dev)
    fresh = torch.randn_like(x)  # the check: a replay on values that were not captured
    fns: dict[str, Callable[[], Any]] = {}
    report: dict[str, Any] = {"batch_size": batch, "errors": {}, "max_abs_diff": {}, "compile_s": {}}
    for v, model in models.items():
        _add_variant(v, model, x, fresh, compile, fns, report)
    # the model's one-time input check (its first 32 eval calls) would be timed into the eager calls alone
    with suppress_input_checks():
        times = measure(fns, dev, warmup=3, repeats=repeats)
    report["median_ms"] = {k: statistics.median(t) * 1e3 for k, t in times.items()}

    def ratio(a: str, b: str) -> float | None:
        if a not in times or b not in times:
            return None
        return statistics.median(p / q for p, q in zip(times[a], times[b], strict=True))

    rts = dict.fromkeys(k.split("@")[1] for k in fns)
    report["mxa_vs_baseline"] = {rt: ratio(f"mxa@{rt}", f"baseline@{rt}") for rt in rts}
    report["vs_eager"] = {k: ratio(k, k.split("@")[0] + "@eager") for k in fns if not k.endswith("@eager")}
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientvit_ml_m5")
    ap.add_argument("--batch-size", type=int, action="append", help="repeatable (default 1)")
    ap.add_argument("--variant", action="append", help="repeatable (default mxa, baseline)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="also time compile and compile-graph (minutes)")
    ap.add_argument("--json", type=Path, required=True, help="output file (refused if it exists)")
    args = ap.parse_args()
    if args.json.exists():
        raise SystemExit(f"error: {args.json} exists; give another --json")
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device: this benchmark measures kernel launches on a GPU")
    torch.manual_seed(0)
    built = _variants(args.model, 224)
    names = args.variant or ["mxa", "baseline"]
    unknown = sorted(set(names) - set(built))
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}: choose from {sorted(built)}")
    ops = block_operators(built["mxa"], torch.randn(1, 1, 224, 224))
    models = {v: built[v].cuda().eval() for v in names}
    out: dict[str, Any] = {
        "model": args.model,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "repeats": args.repeats,
        "mxa_blocks": len(ops),
        "operators_per_block": statistics.mean(o["operators"] for o in ops.values()),
        "compute_operators_per_block": statistics.mean(o["compute"] for o in ops.values()),
        "batches": [],
    }
    with torch.inference_mode():
        for batch in args.batch_size or [1]:
            rep = _one_batch(models, batch, args.repeats, args.compile)
            ms = rep["median_ms"]
            rep["mxa_extra_us_per_block"] = {
                rt: (ms[f"mxa@{rt}"] - ms[f"baseline@{rt}"]) * 1e3 / len(ops)
                for rt in rep["mxa_vs_baseline"]
                if f"mxa@{rt}" in ms and f"baseline@{rt}" in ms
            }
            out["batches"].append(rep)
            args.json.write_text(json.dumps(out, indent=2) + "\n")
            print(f"batch {batch}: MXA / baseline {json.dumps(rep['mxa_vs_baseline'])}")
            print(f"  medians (ms) {json.dumps({k: round(v, 3) for k, v in ms.items()})}")
            print(f"  errors {json.dumps(rep['errors'])}")
    print("->", args.json)


if __name__ == "__main__":
    main()
