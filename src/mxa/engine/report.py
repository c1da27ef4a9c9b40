"""Aggregating runs over seeds (mean and 95% CI), and the baseline / +MXA / +MXA+KD ablation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import SCALAR_METRICS

__all__ = ["aggregate_runs", "mean_ci", "print_report", "read_run", "run_ablation"]


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t confidence interval of the mean (the paper's protocol over seeds)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "ci": None, "n": 0, "std": None}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "ci": None, "n": 1, "std": None}
    sd = float(v.std(ddof=1))
    try:
        from scipy.stats import t

        q = float(t.ppf((1 + level) / 2, n - 1))
    except ImportError:  # normal approximation
        q = 1.959963984540054
    half = q * sd / math.sqrt(n)
    return {"mean": mean, "ci": [mean - half, mean + half], "n": n, "std": sd}


def read_run(run_dir: Path, use_ema: bool = True) -> dict[str, Any]:
    """The validation metrics of a run's best epoch (by macro AUC), from its metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a folder written by `mxa train`?")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{path} is empty: the run has not finished an epoch")

    def val(r: dict) -> dict:
        return r["val_ema"] if use_ema and "val_ema" in r else r["val"]

    best = max(records, key=lambda r: val(r)["macro_auc"] if val(r)["macro_auc"] is not None else -1)
    out = {k: val(best).get(k) for k in SCALAR_METRICS}
    out["per_label_auc"] = val(best).get("per_label_auc", {})
    out["epoch"] = best["epoch"]
    loc = val(best).get("roi_localization")
    if loc:
        out["roi_hit_rate"], out["roi_random_hit_rate"] = loc["hit_rate"], loc["random_hit_rate"]
    return out


def aggregate_runs(run_dirs: list[Path], use_ema: bool = True) -> dict[str, Any]:
    runs = [read_run(d, use_ema) for d in run_dirs]
    keys = [*SCALAR_METRICS, "roi_hit_rate", "roi_random_hit_rate"]
    agg = {k: mean_ci([r.get(k) for r in runs]) for k in keys if any(r.get(k) is not None for r in runs)}
    labels = list(runs[0]["per_label_auc"]) if runs else []
    per_label = {n: mean_ci([r["per_label_auc"].get(n) for r in runs]) for n in labels}
    return {"runs": [str(d) for d in run_dirs], "metrics": agg, "per_label_auc": per_label}


def _fmt(m: dict[str, Any]) -> str:
    if m["mean"] is None:
        return "undefined"
    if m["ci"] is None:
        return f"{m['mean']:.4f}"
    return f"{m['mean']:.4f} [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}]"


def print_report(rep: dict[str, Any]) -> None:
    print(f"\n{len(rep['runs'])} run(s): mean [95% CI]")
    print("-" * 56)
    for k, m in rep["metrics"].items():
        print(f"{k:<22} {_fmt(m)}")
    print("-" * 56)
    for n, m in rep["per_label_auc"].items():
        print(f"AUC {n:<26} {_fmt(m)}")


def run_ablation(
    cfg: Any, seeds: int, output: Path, teacher_epochs: int | None = None, json_path: str | None = None
) -> dict[str, Any]:
    """Train baseline, +MXA and +MXA+KD with identical settings over ``seeds`` seeds; print the tables.

    ``cfg.teacher`` decides the KD teacher; ``train`` trains an MXA-free teacher of the same model
    first (``teacher_epochs``, default 2x the epochs) and distils from its cached logits.
    """
    from .train import train

    output.mkdir(parents=True, exist_ok=True)
    teacher = cfg.teacher if cfg.teacher != "none" else "train"
    if teacher == "train":
        tcfg = dataclasses.replace(
            cfg,
            mxa=False,
            teacher="none",
            epochs=teacher_epochs or 2 * cfg.epochs,
            output=str(output / "teacher"),
            seed=cfg.seed + 1000,
        )
        train(tcfg)
        teacher = str(output / "teacher" / "best.pt")
    variants = {
        "baseline": dict(mxa=False, teacher="none"),
        "+MXA": dict(mxa=True, teacher="none"),
        "+MXA+KD": dict(mxa=True, teacher=teacher),
    }
    table: dict[str, Any] = {}
    for name, change in variants.items():
        dirs = []
        for s in range(seeds):
            out = output / name.replace("+", "plus_") / f"seed{s}"
            train(dataclasses.replace(cfg, seed=cfg.seed + s, output=str(out), **change))
            dirs.append(out)
        table[name] = aggregate_runs(dirs)
    print_ablation(table)
    if json_path:
        Path(json_path).write_text(json.dumps(table, indent=2))
    (output / "ablation.json").write_text(json.dumps(table, indent=2))
    return table


def print_ablation(table: dict[str, Any]) -> None:
    """The paper's Table 2 (baseline vs +MXA) and Table 3 (+KD) layout, with our numbers."""
    cols = [("macro_auc", "macro AUC"), ("micro_auc", "micro AUC"), ("competition_auc", "comp. AUC")]
    head = f"{'model':<12}" + "".join(f"{c[1]:>30}" for c in cols)
    for title, names in (
        ("Table 2: MXA", ["baseline", "+MXA"]),
        ("Table 3: distillation", ["+MXA", "+MXA+KD"]),
    ):
        print(f"\n{title} (mean [95% CI] over seeds)\n{head}\n" + "-" * len(head))
        for n in names:
            if n in table:
                m = table[n]["metrics"]
                print(f"{n:<12}" + "".join(f"{_fmt(m[k]) if k in m else 'undefined':>30}" for k, _ in cols))
