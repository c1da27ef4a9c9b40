"""``mxa eval --thresholds/--calibrate/--save-model/--reliability``: operating points and calibration."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mxa.cli._common import eval_figure
from mxa.utils.format import fmt

__all__ = [
    "add_eval_arguments",
    "check_args",
    "eval_decisions",
    "print_decisions",
    "reliability_figure",
    "save_model",
]

log = logging.getLogger(__name__)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decisions and calibration (see docs/decisions.md)")
    g.add_argument(
        "--thresholds",
        default=None,
        metavar="METHOD",
        help="choose a threshold per label on this data: youden, f1, sensitivity:X, specificity:X, a number "
        "(every label) or a {label: value} .json; reports sensitivity, specificity, PPV, NPV with CIs "
        "(default: the model's stored thresholds, if any)",
    )
    g.add_argument(
        "--calibrate",
        choices=["temperature", "platt"],
        default=None,
        help="fit per-label temperature or Platt scaling on this data; ECE and Brier before and after",
    )
    g.add_argument(
        "--save-model",
        default=None,
        metavar="PATH",
        help="write a copy of the model carrying the thresholds/calibration (a .pt for a checkpoint, a "
        ".safetensors in another folder for an export), for `mxa predict` and `mxa export`",
    )
    g.add_argument(
        "--reliability",
        default=None,
        help="reliability-diagram PNG (default OUTPUT/reliability.png)",
    )


def check_args(ns: argparse.Namespace) -> None:
    """Refuse bad decision flags before the (long) evaluation starts."""
    from mxa.decision.thresholds import parse_threshold_spec

    if ns.save_model and not (ns.thresholds or ns.calibrate):
        raise ValueError("--save-model stores what --thresholds and/or --calibrate compute; give one of them")
    if ns.save_model and Path(ns.save_model).resolve() == Path(ns.checkpoint).resolve():
        raise ValueError(f"--save-model {ns.save_model} is the model being evaluated; choose another file")
    if ns.thresholds:
        parse_threshold_spec(ns.thresholds)


def eval_decisions(ns: argparse.Namespace, model: Any, metrics: dict[str, Any], preds: dict[str, Any]) -> Any:
    """Add calibration and operating points to ``metrics``; returns (rule to save or None, probs for the
    reliability diagram)."""
    from mxa.data.labels import CHEXPERT_LABELS
    from mxa.decision.report import decision_report
    from mxa.decision.rule import get_decision_rule

    labels = list(getattr(model, "label_names", None) or CHEXPERT_LABELS)
    found, rule, probs = decision_report(
        preds["logits"],
        preds["targets"],
        preds["mask"],
        labels,
        ns.thresholds,
        ns.calibrate,
        get_decision_rule(model),
        n_bootstrap=ns.bootstrap,
        seed=0,
    )
    metrics.setdefault("ci", {}).update(found.pop("ci", {}))
    metrics.update(found)
    return rule, probs


def print_decisions(metrics: dict[str, Any]) -> None:
    ece, brier = metrics.get("ece"), metrics.get("brier")
    if isinstance(ece, dict) and isinstance(brier, dict):
        cal = metrics.get("calibration") or {}
        print(f"\ncalibration ({cal.get('method', '?')} scaling): before -> after")
        print(f"  ECE (15 bins, mean over labels)   {fmt(ece['before'])} -> {fmt(ece['after'])}")
        print(f"  Brier score (mean over labels)    {fmt(brier['before'])} -> {fmt(brier['after'])}")
    elif ece is not None or brier is not None:
        print(f"\ncalibration: ECE (15 bins, mean over labels) {fmt(ece)}, Brier score {fmt(brier)}")
    th = metrics.get("thresholds")
    if not th:
        return
    ci = metrics.get("ci", {})
    print(f"\noperating points ({metrics.get('threshold_method')}), 95% CI in brackets")
    head = f"{'label':<28} {'threshold':>9}  {'sensitivity':<21} {'specificity':<21} {'PPV':<21} {'NPV':<21}"
    print(head + "\n" + "-" * len(head))
    for name, t in th.items():
        cells = [
            fmt(metrics[k][name], ci.get(f"{k}/{name}"), 3)
            for k in ("sensitivity", "specificity", "ppv", "npv")
        ]
        print((f"{name:<28} {fmt(t, digits=3):>9}  " + " ".join(f"{c:<21}" for c in cells)).rstrip())
    for name, why in (metrics.get("undefined_thresholds") or {}).items():
        print(f"no threshold: {name} ({why})")


def save_model(ns: argparse.Namespace, rule: Any) -> None:
    if not ns.save_model or rule is None:
        return
    from mxa.files.export import save_with_decision

    print(f"model with thresholds/calibration: {save_with_decision(ns.checkpoint, ns.save_model, rule)}")


def reliability_figure(
    ns: argparse.Namespace, preds: dict[str, Any], probs: dict[str, Any], labels: Any
) -> None:
    from mxa.viz.calibration import plot_reliability_diagram

    title = f"Reliability: {Path(ns.checkpoint).parent.name}"
    eval_figure(
        ns,
        "--reliability",
        lambda p: plot_reliability_diagram(
            probs["before"],
            preds["targets"],
            preds["mask"],
            p,
            after=probs.get("after"),
            labels=labels,
            title=title,
        ),
    )
