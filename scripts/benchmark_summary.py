"""Merge `mxa bench` JSON files and a pytest-benchmark JSON into one results file, with the goal ratios.

Usage: python scripts/benchmark_summary.py BENCH.json [...] PYTEST_BENCHMARK.json --output results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _pytest_groups(data: dict) -> dict[str, dict[str, float]]:
    groups: dict[str, dict[str, float]] = {}
    for b in data.get("benchmarks", []):
        groups.setdefault(b["group"] or "", {})[b["name"]] = b["stats"]["median"]
    return groups


def _ratio(group: dict[str, float], slow: str, fast: str) -> float | None:
    a = [v for k, v in group.items() if slow in k]
    b = [v for k, v in group.items() if fast in k]
    return a[0] / b[0] if a and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--output", required=True)
    ns = ap.parse_args()
    out: dict = {"mxa_bench": [], "pytest_benchmark": {}, "goals": {}}
    for p in ns.inputs:
        path = Path(p)
        if not path.is_file():
            continue
        try:  # a step cut off by its time budget can leave an empty or partial file (benchmarks/run_cuda.sh)
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"skipped {path}: not a complete JSON file (a step cut off before it finished?)")
            continue
        if "benchmarks" in data:
            out["pytest_benchmark"] = {
                g: {k: v * 1e3 for k, v in d.items()} for g, d in _pytest_groups(data).items()
            }
            out["machine"] = data.get("machine_info", {}).get("cpu", {}).get("brand_raw")
        else:
            out["mxa_bench"].append(data)
    goals = out["goals"]
    for rep in out["mxa_bench"]:
        m5 = rep["results"].get("efficientvit_ml_m5")
        if not m5:
            continue
        tag = f"batch{rep['batch_size']}_{rep['amp']}{'_compile' if rep['compile'] else ''}"
        r = m5["ratios"]["mxa_vs_baseline"]
        goals["m5_mxa_params_ratio"] = r["params"]
        goals["m5_mxa_flops_ratio"] = r["flops"]
        goals[f"m5_mxa_latency_ratio_{tag}"] = r["latency"]
        if "timm_vs_baseline" in m5["ratios"]:
            goals[f"m5_baseline_vs_timm_latency_ratio_{tag}"] = (
                1.0 / m5["ratios"]["timm_vs_baseline"]["latency"]
            )
    g = out["pytest_benchmark"]
    for name, group in g.items():
        if name.startswith("roi fwd+bwd"):
            goals["roi_crop_speedup_vs_roi_align"] = _ratio(group, "roi_align", "roi_crop")
        if name.startswith("KD train step"):
            goals["kd_cached_speedup_vs_online"] = _ratio(group, "online", "cached")
        if name.startswith("M5+MXA inference") and "cpu" in name:
            b = name.split("batch ")[1].split(",")[0]
            eager = [v for k, v in group.items() if "eager" in k]
            for other in ("bn_fused", "compile", "onnxruntime"):
                o = [v for k, v in group.items() if other in k]
                if eager and o:
                    goals[f"inference_speedup_{other}_batch{b}"] = eager[0] / o[0]
    Path(ns.output).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.output).write_text(json.dumps(out, indent=2))
    print(json.dumps(goals, indent=2))


if __name__ == "__main__":
    main()
