"""torch.compile of M5 with and without the MXA block's compile-only forms, in one interleaved run.

The forms (src/mxa/layers/label_roi.py, cbam.py): the chosen label maps upsampled as one-channel images,
CBAM's spatial convolution as a sum over windows, the box read-out's constants built in the graph. ``old`` is
the same compiled model with the eager forms and the constants read from their cache (the code before issue
34's compile step); ``base`` is the model without MXA. Writes the medians and paired ratios to a JSON file.

Usage:
    python benchmarks/compile_forms.py --batch-size 1 --repeats 60 \
        --json benchmarks/results/cpu-m5-compile-forms-b1.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import mxa.layers.cbam as cbam
import mxa.layers.label_roi as label_roi
from mxa.bench import _variants


def _cached_grid(
    h: int, w: int, refine: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    key = (h, w, refine, str(device), dtype)
    if key not in label_roi._GRID:
        label_roi._GRID[key] = label_roi._make_grid(h, w, refine, device, dtype)
    return label_roi._GRID[key]


def _timed(fns: dict[str, Any], times: dict[str, list[float]], repeats: int) -> None:
    for r in range(repeats):
        for k, f in fns.items() if r % 2 == 0 else reversed(fns.items()):
            f()  # settles this variant's caches and threads; the next call is timed
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--json", type=Path, required=True, help="output file (refused if it exists)")
    args = ap.parse_args()
    if args.json.exists():
        raise SystemExit(f"error: {args.json} exists; give another --json")
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 1, 224, 224)
    forms = {
        "new": (label_roi.compiled_cpu_inference, cbam.compiled_cpu_inference, label_roi._grid),
        "old": (lambda t: False, lambda t: False, _cached_grid),
    }

    def use(name: str) -> None:
        label_roi.compiled_cpu_inference, cbam.compiled_cpu_inference, label_roi._grid = forms[name]

    models = _variants("efficientvit_ml_m5", 224)
    mxa_model, base = models["mxa"].eval(), models["baseline"].eval()
    with torch.inference_mode():
        mxa_model(x)  # fills the eager cache, which the old compiled forms read
    compiled, compiled_base = torch.compile(mxa_model), torch.compile(base)
    fns: dict[str, Any] = {
        "base": lambda: compiled_base(x),
        "old": lambda: (use("old"), compiled(x)),
        "new": lambda: (use("new"), compiled(x)),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():  # compiles (each variant its own graph, guarded on the forms), then warms up
            for _ in range(3):
                f()
        with torch._dynamo.config.patch(error_on_recompile=True):  # the timed calls reuse those graphs
            _timed(fns, times, args.repeats)

    def ratio(a: str, b: str) -> float:
        return statistics.median(p / q for p, q in zip(times[a], times[b], strict=True))

    out = {
        "model": "efficientvit_ml_m5",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        "ratios": {
            "old_vs_base": ratio("old", "base"),
            "new_vs_base": ratio("new", "base"),
            "new_vs_old": ratio("new", "old"),
        },
    }
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["ratios"]), "->", args.json)


if __name__ == "__main__":
    main()
