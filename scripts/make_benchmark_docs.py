"""Write docs/benchmarks.md (tables) and docs/img/latency_vs_params.png from benchmarks/results/*.json.

Usage: python scripts/make_benchmark_docs.py [--check]
(--check: exit 1 if the page is out of step; the tests run it)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GOALS = [
    ("m5_mxa_params_ratio", "MXA parameters on M5", "<= 1.02", lambda v: v <= 1.02),
    ("m5_mxa_flops_ratio", "MXA FLOPs on M5", "<= 1.01", lambda v: v <= 1.01),
    ("m5_mxa_latency_ratio_batch32_none", "MXA CPU latency on M5, batch 32", "<= 1.10", lambda v: v <= 1.10),
    ("m5_mxa_latency_ratio_batch1_none", "MXA CPU latency on M5, batch 1", "(report)", None),
    (
        "m5_baseline_vs_timm_latency_ratio_batch32_none",
        "our baseline vs timm efficientvit_m5, batch 32",
        "within 1.03",
        lambda v: v <= 1.03,
    ),
    (
        "roi_crop_speedup_vs_roi_align",
        "roi_crop speed-up over roi_align, fwd+bwd (32,192,14,14)",
        ">= 2",
        lambda v: v >= 2,
    ),
    (
        "kd_cached_speedup_vs_online",
        "KD step, cached vs online DenseNet-121 teacher",
        ">= 2.5",
        lambda v: v >= 2.5,
    ),
    (
        "inference_best_speedup_batch1",
        "best of BN-fused and ONNX Runtime over eager, batch 1",
        ">= 1.3",
        lambda v: v >= 1.3,
    ),
    ("inference_speedup_bn_fused_batch1", "BN-fused over eager, batch 1", "(report)", None),
    (
        "inference_speedup_onnxruntime_batch1",
        "ONNX Runtime over eager, batch 1",
        "(report)",
        None,
    ),
    ("inference_speedup_compile_batch1", "torch.compile (fused) over eager, batch 1", "(report)", None),
    ("inference_speedup_bn_fused_batch32", "BN-fused over eager, batch 32", "(report)", None),
    ("inference_speedup_onnxruntime_batch32", "ONNX Runtime over eager, batch 32", "(report)", None),
    ("inference_speedup_compile_batch32", "torch.compile (fused) over eager, batch 32", "(report)", None),
]


def model_table(rep: dict) -> list[str]:
    lines = [
        f"Device: {rep['device']}, torch {rep['torch']}, timm {rep['timm']}, {rep['threads']} threads, batch "
        f"{rep['batch_size']}, {rep['img_size']} px, autocast {rep['amp']}, {rep['repeats']} interleaved "
        "repeats.",
        "",
        "| model | variant | params (M) | GFLOPs | GMACs | latency ms, median [IQR] | images/s | train "
        "step ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rep["results"].items():
        for k, v in r["variants"].items():
            inf = v["inference"]
            tr = v.get("train_step", {}).get("median_ms")
            lines.append(
                f"| {name} | {k} | {v['params'] / 1e6:.2f} | {v['gflops']:.3f} | {v['gmacs']:.3f} | "
                f"{inf['median_ms']:.1f} [{inf['p25_ms']:.1f}–{inf['p75_ms']:.1f}] | "
                f"{inf['images_per_s']:.0f} | "
                f"{'' if tr is None else f'{tr:.0f}'} |"
            )
    lines += [
        "",
        "| model | MXA / baseline params | FLOPs | latency | train step | timm / baseline latency |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rep["results"].items():
        m = r["ratios"]["mxa_vs_baseline"]
        t = r["ratios"].get("timm_vs_baseline", {})
        lines.append(
            f"| {name} | {m['params']:.4f} | {m['flops']:.4f} | {m['latency']:.3f} | "
            f"{m.get('train_step', float('nan')):.3f} | {t.get('latency', float('nan')):.3f} |"
        )
    others = [(n, k, v) for n, r in rep["results"].items() for k, v in r["ratios"].items()
              if k not in ("mxa_vs_baseline", "timm_vs_baseline")]  # fmt: skip
    if others:
        lines += [
            "",
            "| model | other variant / baseline | latency | train step |",
            "| --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {n} | {k.replace('_vs_baseline', '')} | {v['latency']:.3f} | "
            f"{v.get('train_step', float('nan')):.3f} |"
            for n, k, v in others
        ]
    return lines


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rep in reports:
        for variant, marker in (("baseline", "o"), ("mxa", "s")):
            xs = [r["variants"][variant]["params"] / 1e6 for r in rep["results"].values()]
            ys = [r["variants"][variant]["inference"]["median_ms"] for r in rep["results"].values()]
            label = (
                f"{'+MXA' if variant == 'mxa' else 'baseline'} ({rep['device_type']}, batch "
                f"{rep['batch_size']})"
            )
            ax.plot(xs, ys, marker=marker, label=label)
            if variant == "mxa":
                for n, x, y in zip(rep["results"], xs, ys):
                    ax.annotate(
                        n.replace("efficientvit_ml_", ""),
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, -10),
                        fontsize=8,
                    )
    ax.set(
        xlabel="parameters (M)",
        ylabel="inference latency per batch (ms, median)",
        title="EfficientViT-ML M0–M5: latency vs parameters",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# Later single-purpose runs, each a raw results file: (file, title)
EXTRA_BENCH = [
    ("cpu-m5-b32-crop.json", "MXA on M5 with each ROI-crop method, batch 32 (CPU)"),
    ("cpu-m5-b1-crop.json", "MXA on M5 with each ROI-crop method, batch 1 (CPU)"),
    ("cpu-graft-b32.json", "MXA grafted into other backbones vs the plain parent, batch 32, inference (CPU)"),
]


def extra_runs() -> list[str]:
    out = []
    for name, title in EXTRA_BENCH:
        f = RESULTS / name
        if f.is_file():
            rep = json.loads(f.read_text())
            out += [f"## {title} (`{name}`)", "", *model_table(rep), ""]
    f = RESULTS / "cpu-roi-methods.json"
    if f.is_file():
        bench = json.loads(f.read_text())["benchmarks"]
        out += [
            "## roi_crop methods, forward + backward at (32, 192, 14, 14) (CPU, `cpu-roi-methods.json`)",
            "",
            "| benchmark | median ms |",
            "| --- | ---: |",
        ]
        out += [f"| `{b['name']}` | {b['stats']['median'] * 1e3:.2f} |" for b in bench]
        out.append("")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check", action="store_true", help="only check docs/benchmarks.md is in step; exit 1 if not"
    )
    args = ap.parse_args()
    # benchmark runs only: the localization study (localization.json) has its own page
    files = [
        f
        for f in sorted(RESULTS.glob("*.json"))
        if not f.name.startswith("cpu-")
        and {"goals", "mxa_bench", "pytest_benchmark"} & set(json.loads(f.read_text()))
    ]
    merged = [json.loads(f.read_text()) for f in files]
    out = [
        "# Benchmarks",
        "",
        "Every number here comes from a results file in `benchmarks/results/`, regenerated by",
        "`python scripts/make_benchmark_docs.py`. Reproduce them with `bash benchmarks/run_cpu.sh` (CPU) or",
        "`bash benchmarks/run_cuda.sh` (CUDA), or any subset with `mxa bench` and",
        "`pytest benchmarks/ --benchmark-only`. Ratios are measured side by side in one run: `mxa bench`",
        "interleaves the variants (one repeat of each in turn) and reports the median of per-repeat ratios.",
        "FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (1 multiply-add = 2 FLOPs; "
        "EfficientViT's",
        'published "522M FLOPs" for M5 are MACs). Tests never assert timings.',
        "",
    ]
    reports = []
    for f, data in zip(files, merged):
        machine = data.get("machine")
        out += [f"## {machine if isinstance(machine, str) and machine else f.stem} (`{f.name}`)", ""]
        goals = dict(data.get("goals", {}))
        pair = [goals.get(f"inference_speedup_{k}_batch1") for k in ("bn_fused", "onnxruntime")]
        if any(v is not None for v in pair):
            goals["inference_best_speedup_batch1"] = max(v for v in pair if v is not None)
        if goals:
            out += ["### Goals", "", "| goal | measured | target | met |", "| --- | ---: | --- | --- |"]
            for key, text, target, check in GOALS:
                if key in goals and goals[key] is not None:
                    v = goals[key]
                    met = "" if check is None else ("yes" if check(v) else "**no**")
                    out.append(f"| {text} | {v:.3f} | {target} | {met} |")
            out += [
                "",
                "Missed and marginal goals (and how much they move between runs) are discussed under",
                "*Goals: what was missed or is marginal* at the end of this page.",
                "",
            ]
        for rep in data.get("mxa_bench", []):
            out += [f"### `mxa bench`, batch {rep['batch_size']}", "", *model_table(rep), ""]
            if len(rep["results"]) > 1:
                reports.append(rep)
        pb = data.get("pytest_benchmark", {})
        if pb:
            out += [
                "### pytest-benchmark (median ms)",
                "",
                "| group | benchmark | median ms |",
                "| --- | --- | ---: |",
            ]
            for group, rows in pb.items():
                for name, ms in rows.items():
                    out.append(f"| {group} | `{name}` | {ms:.2f} |")
            out.append("")
    out += extra_runs()
    if reports:
        if not args.check:
            plot(reports, ROOT / "docs" / "img" / "latency_vs_params.png")
        out += ["## Latency vs parameters", "", "![latency vs parameters](img/latency_vs_params.png)", ""]
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.is_file():
        out += [notes.read_text()]
    page, text = ROOT / "docs" / "benchmarks.md", "\n".join(out) + "\n"
    if args.check:
        if page.read_text() != text:
            print(
                "docs/benchmarks.md is out of step with benchmarks/results; run python "
                "scripts/make_benchmark_docs.py"
            )
            return 1
        return 0
    page.write_text(text)
    print(f"wrote docs/benchmarks.md from {len(files)} file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
