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
    ("m5_mxa_latency_ratio_batch32_none", "MXA latency on M5, batch 32", "<= 1.10", lambda v: v <= 1.10),
    ("m5_mxa_latency_ratio_batch1_none", "MXA latency on M5, batch 1", "(report)", None),
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


#: Goals set for the CPU: read on another device they are reported, not judged
CPU_GOALS = {"m5_mxa_latency_ratio_batch32_none", "m5_mxa_latency_ratio_batch1_none"}


def _num(d: dict, key: str) -> str:
    """``d[key]`` to three decimals, or "-" where the run did not measure it (``--no-train``)."""
    return f"{d[key]:.3f}" if key in d else "-"


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
            f"{_num(m, 'train_step')} | {_num(t, 'latency')} |"
        )
    others = [(n, k, v) for n, r in rep["results"].items() for k, v in r["ratios"].items()
              if k not in ("mxa_vs_baseline", "timm_vs_baseline")]  # fmt: skip
    if others:
        lines += [
            "",
            "| model | other ratio | latency | train step |",
            "| --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {n} | {k.replace('_vs_', ' / ')} | {v['latency']:.3f} | {_num(v, 'train_step')} |"
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


# Issue 23: MXA / baseline in every runtime, one interleaved run per batch size: (file, batch)
RUNTIME_RUNS = [("cpu-m5-b1-runtimes.json", 1), ("cpu-m5-b32-runtimes.json", 32)]
# (runtime, batch, what) -> the goal's upper bound for MXA / baseline
RUNTIME_GOALS = {
    ("eager", 1, "latency"): 1.10,
    ("eager", 32, "latency"): 1.03,
    ("eager", 32, "train_step"): 1.08,
    ("compile", 1, "latency"): 1.05,
    ("compile", 32, "latency"): 1.05,
    ("onnx", 1, "latency"): 1.05,
    ("onnx", 32, "latency"): 1.05,
}


def _cell(ratios: dict, key: str) -> str:
    return f"{ratios[key]:.3f}" if key in ratios else "–"


def _suffix(rt: str) -> str:
    return "" if rt == "eager" else f"@{rt}"


def runtime_runs() -> list[str]:
    """The runtime table and goals of issue 23, from RUNTIME_RUNS."""
    rows, goals = [], []
    for name, batch in RUNTIME_RUNS:
        f = RESULTS / name
        if not f.is_file():
            continue
        rep = json.loads(f.read_text())
        ratios = rep["results"]["efficientvit_ml_m5"]["ratios"]
        for rt in rep["runtimes"]:
            m = ratios[f"mxa{_suffix(rt)}_vs_baseline{_suffix(rt)}"]
            t = ratios[f"timm{_suffix(rt)}_vs_baseline{_suffix(rt)}"]
            rows.append(
                f"| {rt} | {batch} | {m['latency']:.3f} | {_cell(m, 'train_step')} | "
                f"{t['latency']:.3f} | {_cell(t, 'train_step')} | `{name}` |"
            )
            for what in ("latency", "train_step"):
                bound = RUNTIME_GOALS.get((rt, batch, what))
                if bound is not None and what in m:
                    met = "yes" if m[what] <= bound else "**no**"
                    goals.append(
                        f"| {rt}, batch {batch}, {what.replace('_', ' ')} | {m[what]:.3f} | ≤ {bound} | "
                        f"{met} |"
                    )
        det = ratios.get("mxa@deterministic_vs_mxa", {})
        if "train_step" in det:
            met = "yes" if det["train_step"] <= 1.05 else "**no**"
            goals.append(
                f"| `--deterministic` train step / default, batch {batch} | {det['train_step']:.3f} | "
                f"≤ 1.05 | {met} |"
            )
    if not rows:
        return []
    return [
        "## MXA / baseline in every runtime (M5, 224 px, CPU)",
        "",
        "Each file is one `mxa bench --runtime eager --runtime compile --runtime onnx --runtime",
        "deterministic` run: every variant in every runtime, interleaved. timm's own `efficientvit_m5`",
        "against our baseline is the noise control: it should be 1.000.",
        "",
        "| runtime | batch | MXA / baseline latency | train step | timm / baseline latency | train step "
        "| file |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        "| goal (issue 23) | measured | target | met |",
        "| --- | ---: | --- | --- |",
        *goals,
        "",
    ]


# Issue 34: the deployment path, one interleaved run per batch size: (file, batch)
DEPLOY_RUNS = [("cpu-m5-b1-deploy.json", 1), ("cpu-m5-b32-deploy.json", 32)]
# (runtime, batch) -> the goal's upper bound for MXA (the block mxa train builds) / baseline latency
DEPLOY_GOALS = {("onnx", 1): 1.10, ("onnx-static", 1): 1.10, ("onnx", 32): 1.05, ("onnx-static", 32): 1.05,
                ("eager", 1): 1.12, ("compile", 1): 1.08}  # fmt: skip
MAX_OPERATORS = 40


def _operators(variant: dict) -> str:
    ops = variant.get("operators_per_block") or {}
    if not ops:
        return "–"
    every = sorted({o["operators"] for o in ops.values()})
    compute = sorted({o["compute"] for o in ops.values()})
    span = lambda v: f"{v[0]}" if len(v) == 1 else f"{v[0]}-{v[-1]}"  # noqa: E731
    return f"{span(every)} ({span(compute)})"


def deployment_runs() -> list[str]:
    """The deployment-path tables and goals of issue 34, from DEPLOY_RUNS."""
    rows, goals, ops = [], [], []
    layout = ""  # the default block in the other layout (mxa-first or mxa-all), when the runs have it
    for name, batch in DEPLOY_RUNS:
        f = RESULTS / name
        if not f.is_file():
            continue
        rep = json.loads(f.read_text())
        r = rep["results"]["efficientvit_ml_m5"]
        ratios, variants = r["ratios"], r["variants"]
        layout = next((v for v in ("mxa-first", "mxa-all") if v in variants), "")
        for rt in rep["runtimes"]:
            sx = _suffix(rt)
            shown = ["mxa", *([layout] if layout else []), "mxa-box", "timm"]
            got = [ratios[f"{v}{sx}_vs_baseline{sx}"] for v in shown]
            nodes = got[0].get("onnx_nodes_per_block")
            nodes_txt = "–" if not nodes else f"{nodes['exported']:.0f} / {nodes['optimized']:.0f}"
            cells = " | ".join(f"{g['latency']:.3f}" for g in got)
            rows.append(f"| {rt} | {batch} | {cells} | {nodes_txt} | `{name}` |")
            bound = DEPLOY_GOALS.get((rt, batch))
            for v, g in zip(shown[: 1 + bool(layout)], got, strict=False):
                if bound is not None:
                    met = "yes" if g["latency"] <= bound else "**no**"
                    goals.append(
                        f"| `{v}`: {rt}, batch {batch}, latency | {g['latency']:.3f} | ≤ {bound} | {met} |"
                    )
        if not ops:
            most = max(o["operators"] for o in variants["mxa"]["operators_per_block"].values())
            met = "yes" if most <= MAX_OPERATORS else "**no**"
            goals.append(f"| operators per MXA block, eager inference | {most} | ≤ {MAX_OPERATORS} | {met} |")
            ops = [
                f"| `{v}` | {_operators(variants[v])} | {len(variants[v].get('operators_per_block') or {})} |"
                for v in ("mxa", layout, "mxa-box")
                if v in variants
            ]
    if not rows:
        return []
    other = f" `{layout}` / baseline |" if layout else ""
    return [
        "## The deployment path (M5, 224 px, CPU)",
        "",
        "Each file is one `mxa bench --runtime eager --runtime compile --runtime onnx --runtime onnx-static`",
        "run: every variant in every runtime, interleaved. `mxa` is the model `mxa train` builds by default",
        "(label ROIs in every block), `mxa-first` the same block in the first block of each stage only",
        "(`mxa train --mxa-per-stage first`: 3 of M5's 8 blocks), `mxa-box` the one",
        "`timm.create_model(..., mxa=True)` builds (the paper's single box);",
        "timm's own `efficientvit_m5` against our baseline is the noise control (1.000). `onnx` is the file",
        "`mxa export` writes (BN fused, onnxslim, symbolic batch), `onnx-static` the same with the batch",
        "fixed (`--static-batch N`). ONNX nodes per block: the nodes the MXA blocks of `mxa` add to the",
        "baseline's graph, per block, as exported / as ONNX Runtime runs them (after its own graph",
        "optimizations).",
        "",
        f"| runtime | batch | `mxa` / baseline |{other} `mxa-box` / baseline | timm / baseline | "
        "ONNX nodes per block | file |",
        "| --- | ---: | ---: |" + (" ---: |" if layout else "") + " ---: | ---: | ---: | --- |",
        *rows,
        "",
        "Operators one MXA block dispatches in eager inference (a `TorchDispatchMode` count; in brackets",
        "those that are not views, each a kernel launch on a GPU), over the model's blocks:",
        "",
        "| variant | operators per block (not views) | MXA blocks |",
        "| --- | --- | ---: |",
        *ops,
        "",
        "| goal (issue 34) | measured | target | met |",
        "| --- | ---: | --- | --- |",
        *goals,
        "",
    ]


def tracking_cost() -> list[str]:
    """``mxa train --log`` at the demo's size (issue 24), from cpu-tracking.json."""
    f = RESULTS / "cpu-tracking.json"
    if not f.is_file():
        return []
    r = json.loads(f.read_text())
    rows = [
        f"| {e['epoch']} | {e['epoch_s']:.1f} | {e['scalars_s'] * 1e3:.0f} ({e['scalars_share']:.2%}) | "
        f"{e['images_s']:.2f} ({e['images_share']:.2%}) |"
        for e in r["epochs"]
    ]
    met = "met" if r["met_at_default"] else "**missed**"
    return [
        "## What live tracking costs (`cpu-tracking.json`, `benchmarks/tracking_cost.py`)",
        "",
        f"{r['setting'][0].upper() + r['setting'][1:]}. Start and close of the trackers, once per run: "
        f"{r['start_and_close_s']:.1f} s.",
        "",
        "| epoch | epoch s | numbers ms (share) | images s (share) |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        f"At the default `--log-images-every 5`: {r['share_at_default_images_every_5']:.2%} of an epoch "
        f"(goal {r['goal']}: {met}); with images every epoch "
        f"{r['max_scalars_share'] + r['max_images_share']:.2%}. The images (a forward pass and four figures "
        "rendered and sent to each tracker) are the cost; the numbers are a tenth of a percent.",
        "",
    ]


def how_long() -> list[str]:
    """The "How long things take" table, from cpu-timings.json (benchmarks/timings.py)."""
    f = RESULTS / "cpu-timings.json"
    if not f.is_file():
        return []
    t = json.loads(f.read_text())
    rows = []
    if "help_s" in t:
        h = t["help_s"]
        slow = max(h["each"], key=h["each"].get)
        rows.append(
            f"| `mxa --help`, `mxa COMMAND --help` ({len(h['each'])} texts) | median {h['median']:.2f} s, "
            f"slowest {h['max']:.2f} s (`{slow or '--help'}`); goal < 1 s: "
            f"{'met' if h['max'] < 1 else '**missed**'} |"
        )
    if "quick_demo_s" in t:
        rows.append(f"| `mxa demo --quick` | {t['quick_demo_s'] / 60:.1f} min |")
    if t.get("demo_minutes") is not None:
        rows.append(
            f"| `mxa demo` (the README's table; `docs/results/demo.json`) | {t['demo_minutes']:.1f} min |"
        )
    if "bench_s" in t:
        rows.append(f"| `mxa bench` (M5, batch 32, 10 repeats, train step) | {t['bench_s'] / 60:.1f} min |")
    if "tests_s" in t:
        rows.append(
            "| `python -m pytest -q` (the default run: in parallel on the cores, slow tests left out) | "
            f"{t['tests_s'] / 60:.1f} min |"
        )
    if "slow_tests_s" in t:
        rows.append(
            '| `python -m pytest -q -n 0 -m "slow and not walkthrough"` (multi-process runs and the '
            f"side-by-side benchmark, after the suite in CI) | {t['slow_tests_s'] / 60:.1f} min |"
        )
    if "walkthrough_s" in t:
        rows.append(
            "| `python -m pytest -m walkthrough tests/test_walkthrough.py` (the README and quick start "
            f"verbatim in a fresh venv, after the suite in CI) | {t['walkthrough_s'] / 60:.1f} min |"
        )
    return [
        "## How long things take",
        "",
        f"Wall clock on this machine ({t['machine']}, Python {t['python']}, {t['date']}), each run as a user "
        "runs it, from `cpu-timings.json` (`python benchmarks/timings.py`). A GPU shortens the demo and the "
        "tests' training runs.",
        "",
        "| what | time |",
        "| --- | ---: |",
        *rows,
        "",
    ]


def gpu_launch() -> list[str]:
    """MXA / baseline with a GPU's kernel launches taken out (benchmarks/cuda_launch.py), per device."""
    out = []
    for f in sorted(RESULTS.glob("*-launch*.json")):
        r = json.loads(f.read_text())
        out += [
            f"## MXA on a GPU with the launches taken out ({r['device']}, `{f.name}`)",
            "",
            f"{r['model']}, 224 px, fp32, torch {r['torch']}, {r['repeats']} interleaved repeats "
            f"(`benchmarks/cuda_launch.py`): eager; `graph`, the eager forward captured as a CUDA graph "
            "and replayed; `compile`, torch.compile; `compile-graph`, the compiled forward replayed as a "
            "CUDA graph. "
            f"MXA's {r['mxa_blocks']} blocks dispatch {r['operators_per_block']:.0f} operators each in eager "
            f"inference ({r['compute_operators_per_block']:.0f} not views).",
            "",
            "| batch | runtime | MXA ms | baseline ms | MXA / baseline | MXA's extra us per block | "
            "MXA / its eager |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for b in r["batches"]:
            ms = b["median_ms"]
            for rt, ratio in b["mxa_vs_baseline"].items():
                if ratio is None:
                    continue
                vs = b["vs_eager"].get(f"mxa@{rt}")
                out.append(
                    f"| {b['batch_size']} | {rt} | {ms[f'mxa@{rt}']:.2f} | {ms[f'baseline@{rt}']:.2f} | "
                    f"x{ratio:.3f} | {b['mxa_extra_us_per_block'][rt]:.0f} | "
                    f"{'-' if vs is None else f'x{vs:.3f}'} |"
                )
        errors = [
            f"- `{k}` at batch {b['batch_size']} did not run: {v.splitlines()[0]}"
            for b in r["batches"]
            for k, v in b.get("errors", {}).items()
        ]
        out += ["", *errors] + ([""] if errors else [])
    return out


def extra_runs() -> list[str]:
    out = how_long() + deployment_runs() + runtime_runs() + tracking_cost() + gpu_launch()
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
            devices = {rep.get("device_type", "cpu") for rep in data.get("mxa_bench", [])}
            for key, text, target, check in GOALS:
                if key in goals and goals[key] is not None:
                    v = goals[key]
                    if key in CPU_GOALS:
                        on_cpu = not devices or "cpu" in devices
                        text += " (CPU)" if on_cpu else f" ({', '.join(sorted(devices))})"
                        target, check = (target, check) if on_cpu else ("(report; a CPU goal)", None)
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
