"""Aggregating runs over seeds (mean and 95% CI); the ablation's table of aggregates."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from mxa.metrics.classification import SCALAR_METRICS

log = logging.getLogger(__name__)

__all__ = [
    "aggregate_runs",
    "group_runs",
    "mean_ci",
    "read_run",
]


def mean_ci(
    values: list[float | None], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Mean and Student-t confidence interval of the mean (the paper's protocol over seeds), the interval
    clipped to ``bounds`` (an AUC's CI over two seeds can otherwise reach past 1)."""
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
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci": [lo, hi], "n": n, "std": sd}


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every epoch record of a run's metrics.jsonl, checked (a corrupt line is an error naming it)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a folder written by `mxa train`?")
    records = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}, line {n}: not a JSON record ({e.msg}); the file is corrupt: restore it, or remove "
                "that line to report the epochs before it"
            ) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("val"), dict) or "epoch" not in rec:
            raise ValueError(f"{path}, line {n}: not an epoch record of `mxa train` (no epoch/val)")
        records.append(rec)
    if not records:
        raise ValueError(f"{path} is empty: the run has not finished an epoch")
    return records


def read_run(run_dir: Path, use_ema: bool = True) -> dict[str, Any]:
    """The validation metrics of a run's best epoch (by macro AUC), from its metrics.jsonl."""
    records = read_records(run_dir)

    def val(r: dict) -> dict:
        return r["val_ema"] if use_ema and isinstance(r.get("val_ema"), dict) else r["val"]

    def score(r: dict) -> float:  # an epoch without a finite macro AUC is never the best
        v = val(r).get("macro_auc")
        return v if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf

    best = max(records, key=score)
    out = {k: val(best).get(k) for k in SCALAR_METRICS}
    out["per_label_auc"] = val(best).get("per_label_auc", {})
    out["epoch"] = best["epoch"]
    loc = val(best).get("roi_localization")
    if loc:
        out["roi_hit_rate"], out["roi_random_hit_rate"] = loc["hit_rate"], loc["random_hit_rate"]
    return out


def aggregate_runs(run_dirs: list[Path], use_ema: bool = True) -> dict[str, Any]:
    """Mean and Student-t CI over runs (seeds) of every metric of their best epochs.

    Each run counts once (a folder given twice, by another path, or a copy of it: the same epoch records),
    and all runs must have the same labels: a mean over different label sets is not a number of anything.
    Runs whose macro AUCs average different labels (a label without both classes in some run) are said so.
    """
    unique: list[Path] = []
    seen: dict[bytes, Path] = {}
    for d in map(Path, run_dirs):
        if any(d.resolve() == u.resolve() for u in unique):
            log.warning("%s was given more than once: it counts once", d)
            continue
        text = (d / "metrics.jsonl").read_bytes() if (d / "metrics.jsonl").is_file() else b""
        if text and text in seen:
            log.warning(
                "%s holds the same run as %s (identical epoch records, a copy): it counts once", d, seen[text]
            )
            continue
        seen[text] = d
        unique.append(d)
    run_dirs = unique
    runs = [read_run(d, use_ema) for d in run_dirs]
    _warn_on_different_scored_labels(runs, run_dirs)
    label_sets = {tuple(r["per_label_auc"]) for r in runs}
    if len(label_sets) > 1:
        a, b = sorted(label_sets, key=len)[:2]
        differ = sorted(set(a) ^ set(b))[:3] or "the same labels in another order"
        raise ValueError(
            f"the runs have different label sets ({len(a)} and {len(b)} labels; differing: {differ}): "
            "report the runs of one label set together"
        )
    keys = [*SCALAR_METRICS, "roi_hit_rate", "roi_random_hit_rate"]
    unit = (0.0, 1.0)  # every aggregated metric is a rate or an AUC
    agg = {
        k: mean_ci([r.get(k) for r in runs], bounds=unit)
        for k in keys
        if any(r.get(k) is not None for r in runs)
    }
    labels = list(runs[0]["per_label_auc"]) if runs else []
    per_label = {n: mean_ci([r["per_label_auc"].get(n) for r in runs], bounds=unit) for n in labels}
    return {"runs": [str(d) for d in run_dirs], "metrics": agg, "per_label_auc": per_label}


def _warn_on_different_scored_labels(runs: list[dict[str, Any]], run_dirs: list[Path]) -> None:
    scored = [frozenset(n for n, v in r["per_label_auc"].items() if v is not None) for r in runs]
    if len(set(scored)) > 1:
        common = frozenset.intersection(*scored)
        odd = {str(d): sorted(s - common) for d, s in zip(run_dirs, scored) if s - common}
        log.warning(
            "the runs' macro AUCs average different labels (scored only in some runs: %s): the mean macro "
            "AUC mixes label sets; compare the per-label AUCs",
            "; ".join(f"{d}: {', '.join(v)}" for d, v in odd.items()),
        )


def group_runs(paths: list[Path], names: dict[str, str] | None = None) -> dict[str, list[Path]]:
    """Run folders grouped by variant: a run folder counts as given, an experiment folder (``mxa ablate``,
    ``mxa demo``) by its ``<variant>/seed<k>`` runs. A run's group is its parent folder's name, or
    ``names[folder]`` (the variant's name in tables); with several experiment folders, prefixed by the
    experiment's, so that two experiments' variants of one name are not pooled.

    Raises:
        ValueError: a folder that is neither (the message says what it should hold).
    """
    names = names or {}
    experiments = [p for p in map(Path, paths) if not (p / "metrics.jsonl").is_file()]
    groups: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        if (p / "metrics.jsonl").is_file():
            runs = [p]
        else:
            runs = sorted(f.parent for f in p.glob("*/seed*/metrics.jsonl"))
            if not runs:
                raise ValueError(
                    f"{p} holds no metrics.jsonl and no <variant>/seed<k>/metrics.jsonl: give run folders of "
                    "`mxa train` or the folder of `mxa ablate` / `mxa demo`"
                )
        for r in runs:
            folder = r.parent.name if r.name.startswith("seed") else "runs"
            name = names.get(folder, folder)
            if len(experiments) > 1 and p in experiments:
                name = f"{p.name}/{name}"
            groups.setdefault(name, []).append(r)
    return groups
