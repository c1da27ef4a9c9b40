"""``mxa ablate --launcher submitit``: an experiment's runs as cluster jobs, through submitit.

The teacher (when one is trained) is its own job; every (variant, seed) is a task of one job array that
depends on it (SLURM ``afterok``; submitit's local executor, which has no dependencies, waits for the
teacher first). A job with several GPUs runs DDP over its tasks (submitit's multi-task set-up: rank,
local rank and world size from SLURM). A preempted or timed-out job is requeued by submitit's checkpoint
hook and continues from its ``last.pt`` exactly (:func:`~mxa.train.experiment.train_or_continue`).

``jobs.json`` in the experiment folder records what was submitted. Running the same ``mxa ablate`` again
collects: finished runs are read, runs whose job is still queued or running are reported, the others
(failed, cancelled) are submitted again; ``--wait`` blocks until every job has ended.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxa._optional import require
from mxa.train.config import TrainConfig
from mxa.train.experiment import (
    Experiment,
    Variant,
    check_same_settings,
    run_finished,
    teacher_for_seed,
    teacher_spec,
    train_or_continue,
)
from mxa.train.loop import CONTINUE_HINT
from mxa.utils.files import atomic_write_text

__all__ = [
    "CLUSTERS",
    "LAUNCHERS",
    "ClusterConfig",
    "JobFailedError",
    "Submission",
    "TrainJob",
    "collect",
    "submit_experiment",
]

log = logging.getLogger(__name__)

LAUNCHERS = ("none", "submitit")
CLUSTERS = ("slurm", "local")
#: submitit job states of a job that has not ended (SLURM's, and the local executor's)
_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}
#: seconds between two looks at a job that this process did not submit (``--wait`` on a re-run)
_POLL_S = {"local": 2.0, "slurm": 30.0}


class JobFailedError(RuntimeError):
    """A job of the experiment ended without finishing its run (the message names its log)."""


#: SLURM's own character set for partition and account names (a partition list: names joined by commas).
_SLURM_CHARS = "letters, digits, '_', '-' and '.'"
_SLURM_NAME = {
    "partition": re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*"),
    "account": re.compile(r"[A-Za-z0-9_.-]+"),
}


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how ``mxa ablate`` runs its jobs (the ``--launcher``/``--cluster`` and resource flags).

    Attributes:
        launcher: ``none`` (one after another in this process) or ``submitit``.
        cluster: ``slurm``, or ``local`` (submitit's local executor: parallel processes on this machine).
        partition: SLURM's ``--partition``.
        account: SLURM's ``--account``.
        gpus_per_run: GPUs of each run (one DDP process per GPU); 0 on a CPU-only cluster.
        cpus_per_run: CPU cores of each run (its data workers and, on a CPU, its torch threads).
        time_min: each job's time limit; a job that reaches it is requeued and continues.
        mem_gb: memory of each run (None: the cluster's default).
        max_parallel: at most this many array tasks at once (None: no limit).
        wait: block until every job has ended, then print the summary.
    """

    launcher: str = "none"
    cluster: str = "slurm"
    partition: str | None = None
    account: str | None = None
    gpus_per_run: int = 1
    cpus_per_run: int = 8
    time_min: int = 240
    mem_gb: int | None = None
    max_parallel: int | None = None
    wait: bool = False

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.cluster not in CLUSTERS:
            raise ValueError(f"cluster must be one of {', '.join(CLUSTERS)}, got {self.cluster!r}")
        for name in ("gpus_per_run", "cpus_per_run", "time_min", "mem_gb", "max_parallel"):
            value, low = getattr(self, name), 0 if name == "gpus_per_run" else 1
            if value is None and name in ("mem_gb", "max_parallel"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _SLURM_NAME[name].fullmatch(value)):
                # these reach the generated sbatch script: a newline or a shell character would be a command
                several = ", several joined by commas" if name == "partition" else ""
                raise ValueError(f"{name} must be a SLURM name ({_SLURM_CHARS}{several}), got {value!r}")
        if not isinstance(self.wait, bool):
            raise ValueError(f"wait must be true or false, got {self.wait!r}")

    def executor(self, folder: Path, name: str, after: str | None = None) -> Any:
        """A submitit executor for one kind of job (``after``: a SLURM job id it must wait for)."""
        for what, text in (("the experiment folder", str(folder)), ("the job name", name)):
            if any(ord(c) < 32 or c == "\x7f" for c in text):  # it is written into the sbatch script
                raise ValueError(f"{what} {text!r} holds a control character (a newline?): choose another")
        submitit = require("submitit", "mxa ablate --launcher submitit")
        try:
            ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.cluster)
        except RuntimeError as e:  # no srun: not on a SLURM machine
            raise ValueError(
                f"--cluster slurm needs SLURM on this machine ({e}): run mxa ablate on the cluster's login "
                "node, or use --cluster local"
            ) from None
        tasks = max(1, self.gpus_per_run)
        params: dict[str, Any] = dict(
            name=name,
            timeout_min=self.time_min,
            tasks_per_node=tasks,
            nodes=1,
            cpus_per_task=max(1, self.cpus_per_run // tasks),
        )
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        extra: dict[str, Any] = {}
        if after is not None:  # and cancelled by SLURM if the teacher fails (then a re-run resubmits it)
            extra["dependency"] = f"afterok:{after}"
            extra["kill-on-invalid-dep"] = "yes"
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            extra["account"] = self.account
        if self.max_parallel:
            params["slurm_array_parallelism"] = self.max_parallel
        if extra:
            params["slurm_additional_parameters"] = extra
        ex.update_parameters(**params)
        return ex


class TrainJob:
    """One run of an experiment, as a submitit job: the teacher (``variant=None``) or a (variant, seed).

    submitit calls :meth:`checkpoint` on preemption or time-out and requeues the returned call: the run
    then continues from its ``last.pt``.
    """

    def __init__(self, exp: Experiment, variant: Variant | None, seed_index: int, threads: int) -> None:
        self.exp, self.variant, self.seed_index, self.threads = exp, variant, seed_index, threads

    def __call__(self) -> str:
        import torch

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        env = require("submitit", "mxa ablate --launcher submitit").JobEnvironment()
        if env.num_tasks > 1:  # one DDP process per task: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*
            require("submitit", "").helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False
            )
        if not torch.cuda.is_available():
            torch.set_num_threads(self.threads)  # the cores SLURM gave this task, not the node's
        if self.variant is None:
            cfg = self.exp.teacher_config()
        else:
            spec = teacher_for_seed(self.exp, _teacher(self.exp), self.seed_index)
            cfg = self.exp.run_config(self.variant, self.seed_index, spec)
        CONTINUE_HINT.set(f"the same {self.exp.command} command again")  # this job's process only
        train_or_continue(cfg)
        return cfg.output

    def checkpoint(self) -> Any:
        """submitit's requeue hook: the same call again (it resumes from ``last.pt``)."""
        return require("submitit", "").helpers.DelayedSubmission(self)


def _teacher(exp: Experiment) -> str:
    return str(exp.teacher_dir / "best.pt") if exp.teacher == "train" else exp.teacher


def _run_cfg(exp: Experiment, v: Variant, s: int) -> TrainConfig:
    return exp.run_config(v, s, teacher_spec(exp, _teacher(exp), s))


@dataclass
class Submission:
    """What :func:`submit_experiment` did: the jobs by run folder (finished runs have none)."""

    jobs: dict[str, Any] = dataclasses.field(default_factory=dict)
    running: list[str] = dataclasses.field(default_factory=list)  # submitted earlier, not ended yet
    teacher: Any = None


def _jobs_file(exp: Experiment) -> Path:
    return exp.output / "jobs.json"


def _recorded(exp: Experiment) -> dict[str, str]:
    """``jobs.json``: {run folder: job id} of earlier submissions ({} when there is none)."""
    path = _jobs_file(exp)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not a record of mxa ablate's jobs ({e}); move it away to submit anew"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(
            f"{path} is not a record of mxa ablate's jobs ({{run folder: job id}}); move it away"
        )
    return data


def _active(cluster: ClusterConfig, folder: Path, job_id: str) -> bool:
    """Whether an earlier submission's job is still queued or running."""
    if cluster.cluster == "local":  # the local executor's job id is the process id
        try:
            os.kill(int(job_id), 0)
        except (OSError, ValueError):
            return False
        return True
    submitit = require("submitit", "mxa ablate --launcher submitit")
    try:
        state = str(submitit.SlurmJob(folder=str(folder / "%j"), job_id=job_id).state)
    except Exception:  # sacct unavailable: do not submit the run twice
        return True
    return state in _ACTIVE


def submit_experiment(exp: Experiment, cluster: ClusterConfig) -> Submission:
    """Submit the experiment's unfinished runs (the teacher first); see the module docstring."""
    folder = exp.output / "submitit"
    for cfg in [exp.teacher_config()] if exp.teacher == "train" else []:
        check_same_settings(cfg)
    for s in range(exp.seeds):  # every run of other settings is refused here, before anything is submitted
        for v in exp.variants:
            check_same_settings(_run_cfg(exp, v, s))
    exp.output.mkdir(parents=True, exist_ok=True)
    recorded = _recorded(exp)
    sub = Submission()
    threads = max(1, cluster.cpus_per_run // max(1, cluster.gpus_per_run))
    needs_teacher = exp.teacher == "train" and any(v.distill for v in exp.variants)
    after = None
    if needs_teacher and not run_finished(exp.teacher_config()):
        key = str(exp.teacher_dir)
        if key in recorded and _active(cluster, folder, recorded[key]):
            sub.running.append(key)
            after = recorded[key]
        else:
            ex = cluster.executor(folder, "mxa-teacher")
            sub.teacher = ex.submit(TrainJob(exp, None, 0, threads))
            after = sub.teacher.job_id
            recorded[key] = after
            atomic_write_text(_jobs_file(exp), json.dumps(recorded, indent=2))  # kept if we are stopped
            log.info("submitted the teacher: job %s", after)
        if cluster.cluster == "local":  # no dependencies on the local executor: the teacher first
            if sub.teacher is not None:
                _wait_for(sub.teacher, key)
            else:
                _wait_until_ended(cluster, folder, recorded[key])
            if not run_finished(exp.teacher_config()):
                raise JobFailedError(
                    f"the teacher's job {recorded[key]} ended without finishing {key}: see its log in "
                    f"{folder / recorded[key]}; run the same command again to resubmit it"
                )
            after = None
    todo = []
    for s in range(exp.seeds):
        for v in exp.variants:
            key = str(exp.run_dir(v, s))
            if run_finished(_run_cfg(exp, v, s)):
                continue
            if key in recorded and _active(cluster, folder, recorded[key]):
                sub.running.append(key)
                continue
            todo.append((key, v, s))
    if todo:
        ex = cluster.executor(folder, "mxa-ablate", after=after)
        with ex.batch():  # one job array
            jobs = [(key, ex.submit(TrainJob(exp, v, s, threads))) for key, v, s in todo]
        for key, job in jobs:
            sub.jobs[key] = job
            recorded[key] = job.job_id
        log.info("submitted %d run(s) as a job array: %s", len(jobs), ", ".join(j.job_id for _, j in jobs))
    atomic_write_text(_jobs_file(exp), json.dumps(recorded, indent=2))
    return sub


def _wait_for(job: Any, what: str) -> None:
    try:
        job.results()  # one result per task: a job of several GPUs (DDP) has several
    except Exception as e:  # submitit re-raises the job's error with its log's tail
        raise JobFailedError(
            f"the job of {what} failed; its log is in {job.paths.stderr}; run the same command again to "
            f"resubmit it:\n{e}"
        ) from None


def _wait_until_ended(cluster: ClusterConfig, folder: Path, job_id: str) -> None:
    """Block until a job this process did not submit (an earlier ``mxa ablate``'s) is no longer active."""
    while _active(cluster, folder, job_id):
        time.sleep(_POLL_S[cluster.cluster])


def collect(
    exp: Experiment, sub: Submission, wait: bool, cluster: ClusterConfig
) -> dict[str, list[Path]] | None:
    """{variant name: run folders} once every run has finished (waiting for the jobs when ``wait``); None
    while some are still queued or running (then it says how many and how to collect later).

    Raises:
        JobFailedError: with ``wait``, a job failed (every job is waited for first).
    """
    if wait:
        failed = []
        for key, job in sub.jobs.items():
            try:
                _wait_for(job, key)
            except JobFailedError as e:
                failed.append(str(e))
        recorded = _recorded(exp)
        for key in sub.running:  # submitted by an earlier mxa ablate: polled (SLURM: sacct)
            _wait_until_ended(cluster, exp.output / "submitit", recorded[key])
        if failed:
            raise JobFailedError(f"{len(failed)} job(s) failed:\n" + "\n".join(failed))
    runs: dict[str, list[Path]] = {v.name: [] for v in exp.variants}
    pending = []
    for s in range(exp.seeds):
        for v in exp.variants:
            d = exp.run_dir(v, s)
            if run_finished(_run_cfg(exp, v, s)):
                runs[v.name].append(d)
            else:
                pending.append(str(d))
    if pending:
        log.warning(
            "%d run(s) not finished yet (%s); run the same mxa ablate command again to collect them, or add "
            "--wait",
            len(pending),
            ", ".join(pending[:4]) + (" ..." if len(pending) > 4 else ""),
        )
        return None
    return runs
