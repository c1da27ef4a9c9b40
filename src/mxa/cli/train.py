"""``mxa train`` and ``mxa ablate``: one model, or the paper's baseline / +MXA / +MXA+KD over seeds."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from mxa.cli._common import bounded, declare_io, print_rows
from mxa.cli.config import add_train_flags, read_yaml, train_config_from_args
from mxa.train.config import TrainConfig
from mxa.utils.format import fmt

#: the train options that name files a run reads
_TRAIN_INPUTS = ("data", "pretrained_file", "teacher", "resume", "config", "box_file")
#: train settings that ablate sets itself: each run's folder (under --ablate-output) and its resume
_NOT_ABLATE_SETTINGS = ("output", "resume")

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (baseline, +MXA or +MXA+KD)",
        description=(
            "Train a multi-label model. Settings: the defaults below, then --config FILE.yaml, then the "
            "flags "
            "given. Writes OUTPUT/last.pt (every epoch), OUTPUT/best.pt (best validation macro AUC) and "
            "OUTPUT/metrics.jsonl; a folder that already holds a run is refused unless --resume or "
            "--overwrite. "
            "Many GPUs: torchrun --nproc_per_node=N -m mxa train ..."
        ),
    )
    add_train_flags(p)
    declare_io(p, inputs=_TRAIN_INPUTS, outputs=("output",), folders=("output",), overwrite=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "ablate",
        help="baseline, +MXA, +MXA+KD with identical settings, over seeds (paper Tables 2-3)",
        description=(
            "Train the paper's three variants with the same settings (the training flags below) for each "
            "seed, "
            "in ABLATE_OUTPUT/{baseline,mxa,mxa_kd}/seed<k>, and print the mean and 95% CI of each metric "
            "(Tables 2 and 3). Without --teacher, an MXA-free teacher of the same model is trained first "
            "(ABLATE_OUTPUT/teacher) and the KD variant distils from it. Run again, it keeps the finished "
            "runs and continues the unfinished ones from their last.pt."
        ),
    )
    add_train_flags(p, skip=_NOT_ABLATE_SETTINGS)
    p.add_argument(
        "--seeds", type=bounded(int, 1), default=3, help="seeds per configuration (default 3, as the paper)"
    )
    p.add_argument(
        "--ablate-output",
        default="runs/ablation",
        help="folder for all runs of the ablation, ABLATE_OUTPUT/<variant>/seed<k> (default runs/ablation)",
    )
    p.add_argument(
        "--teacher-epochs",
        type=bounded(int, 1),
        default=None,
        help="epochs of the MXA-free teacher trained first (default: twice --epochs)",
    )
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    p.add_argument(
        "--variants",
        default=None,
        help="a comma-separated subset of baseline,+MXA,+MXA+KD to train (default all three); YAML key "
        "variants",
    )
    add_cluster_flags(p)
    declare_io(
        p,
        inputs=tuple(d for d in _TRAIN_INPUTS if d not in _NOT_ABLATE_SETTINGS),
        outputs=("ablate_output", "json"),
        folders=("ablate_output",),
        overwrite=False,
    )
    p.set_defaults(func=cmd_ablate)


def cmd_train(ns: argparse.Namespace) -> int:
    from mxa.train.loop import train

    cfg = train_config_from_args(ns)
    summary = train(cfg)
    if summary["history"] and os.environ.get("RANK", "0") == "0":  # one table under torchrun
        print_train_summary(summary)
    return 0


def print_train_summary(summary: dict[str, Any]) -> None:
    last = summary["history"][-1]
    sch = summary["schedule"]
    phases = (
        f"warm-up {sch['warmup_epochs']}, cosine {sch['cosine_epochs']}, cool-down {sch['cooldown_epochs']}"
    )
    rows = [
        ("model", f"{summary['model']} (mxa={summary['mxa']})"),
        ("distillation", summary["distillation"]),
        ("epochs", f"{summary['epochs']} ({phases}{', scaled to the run' if sch['scaled'] else ''})"),
        ("final train loss", f"{last['train_loss']:.4f}"),
        ("val macro AUC", fmt(last["val"]["macro_auc"])),
        ("val micro AUC", fmt(last["val"]["micro_auc"])),
        ("val competition AUC", fmt(last["val"]["competition_auc"])),
    ]
    if "val_ema" in last:
        rows.append(("val macro AUC (EMA)", fmt(last["val_ema"]["macro_auc"])))
    rows += [
        (
            "best macro AUC",
            fmt(summary["best_macro_auc"])
            + (
                f" (the {'EMA' if summary['best_weights'] == 'ema' else 'trained'} weights, kept in best.pt)"
                if summary["best"]
                else ""
            ),
        ),
        (
            "checkpoints",
            f"{summary['last']}" + (f", {Path(summary['best']).name}" if summary["best"] else ""),
        ),
    ]
    print_rows(rows, "training summary")


#: ``mxa ablate`` flags that are also keys of its ``--config`` YAML (beside the train settings)
CLUSTER_FLAGS = {
    "launcher": (
        str,
        "none",
        "how runs are launched: none (one after another here, the default) or submitit",
    ),
    "cluster": (
        str,
        "slurm",
        "with --launcher submitit: slurm, or local (parallel processes on this machine)",
    ),
    "partition": (str, None, "SLURM partition"),
    "account": (str, None, "SLURM account"),
    "gpus_per_run": (int, 1, "GPUs per run (one DDP process each; 0 on a CPU-only cluster)"),
    "cpus_per_run": (int, 8, "CPU cores per run (data workers; torch threads on a CPU)"),
    "time_min": (
        int,
        240,
        "time limit of each job in minutes; a job that reaches it is requeued and continues",
    ),
    "mem_gb": (int, None, "memory per run in GB (default: the cluster's)"),
    "max_parallel": (int, None, "at most this many runs at once (SLURM array parallelism)"),
}
#: every key of an ``mxa ablate`` YAML besides the train settings
ABLATE_KEYS = (*CLUSTER_FLAGS, "wait", "variants")


def add_cluster_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (mxa ablate --launcher submitit; also keys of the --config YAML)")
    for name, (kind, default, text) in CLUSTER_FLAGS.items():
        choices = {"launcher": ["none", "submitit"], "cluster": ["slurm", "local"]}.get(name)
        g.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            choices=choices,
            help=f"{text} (default {default})",
        )
    g.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="with --launcher submitit: wait for every job, then print the tables (default: submit and "
        "return; run the same command again to collect)",
    )


def _ablate_settings(ns: argparse.Namespace) -> tuple[Any, str | None, list[str]]:
    """(ClusterConfig, variants, the cluster settings given) from the defaults, the --config YAML and the
    flags given (in that order of precedence, the flags last)."""
    from mxa.train.launch import ClusterConfig

    values: dict[str, Any] = {k: d for k, (_, d, _) in CLUSTER_FLAGS.items()}
    values["wait"], variants, given = False, None, []
    if getattr(ns, "config", None):
        loaded = read_yaml(Path(ns.config))
        variants = loaded.pop("variants", None)
        if isinstance(variants, list):  # variants: [baseline, +MXA] as well as "baseline,+MXA"
            variants = ",".join(map(str, variants))
        for k in [k for k in loaded if k in values]:  # their types are checked by ClusterConfig
            values[k] = loaded[k]
            given.append(k)
    for k in values:
        if getattr(ns, k, None) is not None:
            values[k] = getattr(ns, k)
            given.append(k)
    return ClusterConfig(**values), ns.variants if ns.variants is not None else variants, given


def ablate_config(ns: argparse.Namespace) -> TrainConfig:
    """The settings every run of ``mxa ablate`` shares: the defaults, the ``--config`` YAML (its cluster
    keys aside), the flags given. A YAML ``output``/``resume`` is refused: ablate sets those per run."""
    if ns.config and (keys := sorted(set(read_yaml(Path(ns.config))) & set(_NOT_ABLATE_SETTINGS))):
        raise ValueError(
            f"{ns.config}: mxa ablate has no setting {' or '.join(keys)}: its runs go to "
            "--ablate-output/<variant>/seed<k>, and the same command run again continues unfinished runs; "
            "remove it from the file"
        )
    return train_config_from_args(ns, extra_keys=ABLATE_KEYS)


def cmd_ablate(ns: argparse.Namespace) -> int:
    from mxa.train.experiment import ablation_experiment, ablation_table, select_variants

    cfg = ablate_config(ns)
    cluster, variants, given = _ablate_settings(ns)
    unused = [k for k in given if k != "launcher"] if cluster.launcher == "none" else []
    if cluster.cluster == "local" and "max_parallel" in given:
        unused.append("max_parallel")
    if unused:  # accepted but without effect: say so instead of silently ignoring them
        where = (
            "with --launcher none (runs one after another here)"
            if cluster.launcher == "none"
            else ("with --cluster local (every run starts at once)")
        )
        print(f"note: {', '.join('--' + k.replace('_', '-') for k in unused)} has no effect {where}")
    out = Path(ns.ablate_output)
    exp = ablation_experiment(cfg, ns.seeds, out, ns.teacher_epochs, select_variants(variants))
    if cluster.launcher == "none":
        from mxa.train.experiment import run_experiment

        runs = run_experiment(exp)
    else:
        from mxa.train.launch import JobFailedError, collect, submit_experiment

        try:
            sub = submit_experiment(exp, cluster)
            if sub.teacher is not None:
                print(f"submitted the teacher {exp.teacher_dir}: job {sub.teacher.job_id}")
            for key, job in sub.jobs.items():
                print(f"submitted {key}: job {job.job_id}")
            for key in sub.running:
                print(f"still queued or running from an earlier submission: {key}")
            collected = collect(exp, sub, cluster.wait, cluster)
        except JobFailedError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if collected is None:
            print(f"jobs are in {out / 'submitit'}; run the same command again to collect, or add --wait")
            return 0
        runs = collected
    print_ablation(ablation_table(runs, out, ns.json))
    return 0


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
                cells = [fmt(m[k]["mean"], m[k]["ci"]) if k in m else "undefined" for k, _ in cols]
                print(f"{n:<12}" + "".join(f"{c:>30}" for c in cells))
