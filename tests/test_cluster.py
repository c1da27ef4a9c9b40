"""Past one machine: experiment tracking, the submitit launcher of ``mxa ablate``, multi-node torchrun.

No cluster and no network: submitit's local executor stands in for SLURM (with a simulated preemption),
two torchrun launchers on 127.0.0.1 for two nodes, offline W&B, a local TensorBoard event file and a local
MLflow file store for the trackers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mxa.cli import main
from mxa.files.checkpoint import load_checkpoint
from mxa.train.config import ConfigError, TrainConfig
from mxa.train.loop import train
from mxa.train.tracking import flatten_numbers, parse_trackers

TINY = TrainConfig(
    data="phantom",
    train_samples=32,
    val_samples=24,
    model="efficientvit_ml_m0",
    img_size=64,
    epochs=2,
    batch_size=16,
    lr=2e-3,
    warmup_epochs=0,
    cooldown_epochs=0,
    ema_decay=0.0,
    progress=False,
    seed=5,
    deterministic=True,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# --- tracking ---------------------------------------------------------------------------------------------


def test_parse_trackers_and_flatten() -> None:
    assert parse_trackers("mlflow, tensorboard") == ("tensorboard", "mlflow")
    assert parse_trackers("") == () and parse_trackers("none") == ()
    with pytest.raises(ValueError, match="unknown tracker.*comet.*subset of tensorboard, wandb, mlflow"):
        parse_trackers("tensorboard,comet")
    with pytest.raises(ConfigError, match="unknown tracker"):
        dataclasses.replace(TINY, log="tb")
    rec = {"epoch": 1, "lr": 0.1, "ok": True, "val": {"macro_auc": None, "per_label_auc": {"A": 0.5}}}
    assert flatten_numbers(rec) == {"epoch": 1.0, "lr": 0.1, "val/per_label_auc/A": 0.5}
    assert flatten_numbers({"x": float("nan")}) == {}


def test_tracking_tensorboard_mlflow_wandb_read_back(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    cfg = dataclasses.replace(TINY, output=str(out), log="tensorboard,mlflow,wandb", log_images_every=1)
    train(dataclasses.replace(cfg, stop_after_epoch=1))
    train(dataclasses.replace(cfg, resume=str(out / "last.pt")))  # the same W&B / MLflow run continues
    recs = _records(out)
    assert [r["epoch"] for r in recs] == [1, 2]
    want = [r["val"]["macro_auc"] for r in recs]

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    got = {e.step: e.value for e in acc.Scalars("val/macro_auc")}
    assert got == pytest.approx({1: want[0], 2: want[1]}, abs=1e-6)
    assert "val/per_label_auc/Cardiomegaly" in acc.Tags()["scalars"] and "lr" in acc.Tags()["scalars"]
    assert any(t.startswith("val/roi_localization/per_block/") for t in acc.Tags()["scalars"])
    assert {e.step for e in acc.Images("roi_overlay/0")} == {1, 2}

    ids = json.loads((out / "tracking.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    hist = client.get_metric_history(ids["mlflow"], "val/macro_auc")
    hist = sorted(hist, key=lambda m: m.step)
    assert [m.step for m in hist] == [1, 2] and [m.value for m in hist] == pytest.approx(want)
    run = client.get_run(ids["mlflow"])
    assert run.data.params["model"] == "efficientvit_ml_m0" and run.info.status == "FINISHED"
    artifacts = [a.path for a in client.list_artifacts(ids["mlflow"], "roi_overlay/0")]
    assert artifacts == ["roi_overlay/0/epoch001", "roi_overlay/0/epoch002"]

    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(ids["wandb"] in r.name for r in runs)  # one W&B run, resumed
    # the run log (protobuf records) holds each epoch's key and its value as JSON text
    logs = [next(r.glob("run-*.wandb")).read_bytes() for r in sorted(runs)]
    for log_bytes, value in zip(logs, want):
        assert b"val/macro_auc" in log_bytes and json.dumps(value).encode() in log_bytes
    assert len(list(sorted(runs)[-1].glob("files/media/images/roi_overlay/*.png"))) == 4


def test_missing_tracker_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    from mxa._optional import MissingExtraError

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails, as where it is not installed
    with pytest.raises(
        MissingExtraError, match=r"--log mlflow needs.*pip install \"mxa-attention\[mlflow\]\""
    ):
        train(dataclasses.replace(TINY, output=str(tmp_path / "r"), log="mlflow", epochs=1))


# --- the submitit launcher --------------------------------------------------------------------------------


def _ablate_flags(out: Path) -> list[str]:
    return [
        "ablate",
        *"--data phantom --train-samples 32 --val-samples 24 --model efficientvit_ml_m0".split(),
        *"--img-size 64 --epochs 3 --batch-size 16 --warmup-epochs 0 --cooldown-epochs 0".split(),
        *"--ema-decay 0 --no-progress".split(),
        *"--deterministic --seeds 1 --teacher-epochs 2 --variants baseline,+MXA+KD".split(),
        "--ablate-output",
        str(out),
    ]


@pytest.mark.slow  # three training jobs and a requeue: CI runs it after the suite
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the job's task in /proc (Linux)")
def test_submitit_local_ablation_with_a_preemption_equals_the_sequential_run(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    from mxa.cli.config import train_config_from_args
    from mxa.cli.train import _ablate_settings
    from mxa.train.experiment import ablation_experiment, ablation_table, select_variants
    from mxa.train.launch import collect, submit_experiment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each job runs (cpus_per_run 1): the same float reductions
    try:
        assert main([*_ablate_flags(tmp_path / "seq"), "--json", str(tmp_path / "seq.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    sequential = json.loads((tmp_path / "seq.json").read_text())

    from mxa.cli import build_parser

    ns = build_parser().parse_args(
        [
            *_ablate_flags(tmp_path / "sub"),
            "--launcher",
            "submitit",
            "--cluster",
            "local",
            "--cpus-per-run",
            "1",
        ]
    )
    cluster, variants, _ = _ablate_settings(ns)
    assert cluster.cluster == "local" and cluster.gpus_per_run == 1
    cluster = dataclasses.replace(cluster, gpus_per_run=0)  # this machine has no GPU
    exp = ablation_experiment(
        train_config_from_args(ns),
        seeds=1,
        output=tmp_path / "sub",
        teacher_epochs=2,
        variants=select_variants(variants),
    )
    sub = submit_experiment(exp, cluster)  # waits for the teacher job (the local executor: no dependencies)
    assert (tmp_path / "sub" / "teacher" / "best.pt").is_file() and len(sub.jobs) == 2
    # preempt one run once it has finished its first epoch: submitit requeues it, it continues from last.pt
    key = str(exp.output / "mxa_kd" / "seed0")
    job = sub.jobs[key]
    deadline = time.time() + 240
    while not (Path(key) / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.05)
    assert not job.done(), "the run finished before it could be preempted: give it more epochs"
    # SLURM's warning signal before a preemption or time-out (USR2), to the job's task: submitit's handler
    # calls our checkpoint hook and requeues (the local controller restarts the task)
    tasks = _children(int(job.job_id))
    assert len(tasks) == 1, tasks
    os.kill(tasks[0], signal.SIGUSR2)
    runs = collect(exp, sub, wait=True, cluster=cluster)
    assert runs is not None
    log = Path(job.paths.stdout).read_text() + Path(job.paths.stderr).read_text()
    assert "continuing the unfinished run" in log  # it was requeued and resumed
    table = ablation_table(runs, exp.output)
    assert set(table) == set(sequential) == {"baseline", "+MXA+KD"}
    for k in table:  # bit for bit (the run folders differ, nothing else)
        assert [Path(r).relative_to(exp.output) for r in table[k].pop("runs")] == [
            Path(r).relative_to(tmp_path / "seq") for r in sequential[k].pop("runs")
        ]
        assert json.dumps(table[k], sort_keys=True) == json.dumps(sequential[k], sort_keys=True)
    for v in ("baseline", "mxa_kd"):
        _assert_same_weights(tmp_path / "seq" / v / "seed0" / "last.pt", exp.output / v / "seed0" / "last.pt")
    # run again: everything is collected, nothing is submitted
    again = submit_experiment(exp, cluster)
    assert again.jobs == {} and again.teacher is None


def test_ablate_cluster_settings_from_yaml_and_flags(tmp_path: Path, capsys) -> None:
    from mxa.cli import build_parser
    from mxa.cli.train import _ablate_settings

    cfg = tmp_path / "ab.yaml"
    cfg.write_text("epochs: 1\nlauncher: submitit\npartition: gpu\ntime_min: 30\nvariants: baseline,+MXA\n")
    ns = build_parser().parse_args(["ablate", "--config", str(cfg), "--time-min", "90", "--account", "lab"])
    cluster, variants, given = _ablate_settings(ns)
    assert (cluster.launcher, cluster.partition, cluster.time_min, cluster.account) == (
        "submitit",
        "gpu",
        90,
        "lab",
    )
    assert variants == "baseline,+MXA" and set(given) == {"launcher", "partition", "time_min", "account"}
    cfg.write_text("variants: [baseline, +MXA+KD]\ntime_min: '30'\n")
    with pytest.raises(ValueError, match="time_min must be an integer >= 1, got '30'"):
        _ablate_settings(build_parser().parse_args(["ablate", "--config", str(cfg)]))
    cfg.write_text("variants: [baseline, +MXA+KD]\nmax_parallel: 0\nlauncher: submitit\n")
    with pytest.raises(ValueError, match="max_parallel must be an integer >= 1, got 0"):
        _ablate_settings(build_parser().parse_args(["ablate", "--config", str(cfg)]))
    cfg.write_text("variants: [baseline, +MXA+KD]\n")
    assert (
        _ablate_settings(build_parser().parse_args(["ablate", "--config", str(cfg)]))[1] == "baseline,+MXA+KD"
    )
    # settings without effect are named, not dropped (the runs themselves fail fast: no such variant)
    assert (
        main(
            [
                "ablate",
                "--wait",
                "--gpus-per-run",
                "2",
                "--variants",
                "+KD",
                "--ablate-output",
                str(tmp_path / "y"),
            ]
        )
        != 0
    )
    out = capsys.readouterr()
    assert "note: --gpus-per-run, --wait has no effect with --launcher none" in out.out
    assert main(["ablate", "--variants", "baseline,+KD", "--ablate-output", str(tmp_path / "x")]) != 0
    assert "unknown variant(s) +KD: choose from baseline, +MXA, +MXA+KD" in capsys.readouterr().err


def test_slurm_submission_script(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("submitit")
    from mxa.train.launch import ClusterConfig

    c = ClusterConfig(
        launcher="submitit",
        partition="gpu",
        account="lab",
        gpus_per_run=4,
        cpus_per_run=32,
        time_min=600,
        max_parallel=3,
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM here
    with pytest.raises(ValueError, match="--cluster slurm needs SLURM on this machine.*--cluster local"):
        c.executor(tmp_path, "mxa-ablate")
    srun = tmp_path / "srun"  # submitit only checks that srun exists
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    text = c.executor(tmp_path, "mxa-ablate", after="1234")._executor._make_submission_file_text("CMD", "u")
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --dependency=afterok:1234",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=600",
        "#SBATCH --signal=USR2@90",  # the warning before a time-out that lets the job requeue itself
    ]:
        assert line in text.splitlines(), line
    with pytest.raises(ValueError, match="cluster must be one of slurm, local"):
        ClusterConfig(cluster="pbs")


def test_requeued_slurm_job_takes_over_its_own_lock(tmp_path: Path, monkeypatch) -> None:
    from mxa.utils.files import RunLock, RunLockedError

    lock = tmp_path / ".lock"
    lock.write_text("node-a 4242 777_3\n")  # another node, the same array task before its requeue
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "777")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with RunLock(tmp_path):
        assert lock.read_text().split()[2] == "777_3"
    lock.write_text("node-a 4242 777_4\n")  # another task's lock is refused
    with pytest.raises(RunLockedError, match="in use by process 4242 on node-a"):
        RunLock(tmp_path).acquire()
    # the same job on this host with a live owner (two runs of one job script): refused
    lock.write_text(f"{socket.gethostname()} {os.getppid()} 777_3\n")
    with pytest.raises(RunLockedError, match=f"in use by process {os.getppid()}"):
        RunLock(tmp_path).acquire()


# --- two nodes --------------------------------------------------------------------------------------------


_TRAIN = (
    "train --data phantom --train-samples 32 --val-samples 20 --model efficientvit_ml_m0 --img-size 64 "
    "--epochs 2 --batch-size 8 --ema-decay 0 --warmup-epochs 0 --no-progress --deterministic"
).split()


def _torchrun(args: list[str], out: Path, extra: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *args,
        "-m",
        "mxa",
        *_TRAIN,
        *extra,
        "--output",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _two_nodes(out: Path, extra: list[str] = ()) -> list[subprocess.Popen]:
    port = _free_port()
    rdzv = [
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=mxa-test",
    ]
    return [_torchrun([*rdzv, f"--node_rank={i}"], out, extra) for i in range(2)]


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, text in zip(procs, logs):
        assert p.returncode == 0, text[-3000:]
    return logs


@pytest.mark.slow  # five torchrun processes: CI runs it after the suite
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker in /proc (Linux)")
def test_two_node_torchrun_equals_one_node_and_resumes_after_a_kill(tmp_path: Path) -> None:
    one = tmp_path / "one"
    _finish([_torchrun(["--nproc_per_node=2", f"--master_port={_free_port()}"], one)])

    # kill one process of a two-node run after its first epoch; the whole run resumes from last.pt
    killed = tmp_path / "killed"
    procs = _two_nodes(killed)
    deadline = time.time() + 240
    while not (killed / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.05)
    for worker in _children(procs[1].pid):  # one training process dies (not its launcher)
        os.kill(worker, signal.SIGKILL)
    for p in procs:  # the job then ends (as a scheduler ends a job whose node failed)
        try:
            p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            for worker in _children(p.pid):
                os.kill(worker, signal.SIGKILL)
            p.kill()
            p.communicate()
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    _finish(_two_nodes(killed, ["--resume", str(killed / "last.pt")]))
    # gloo, CPU, deterministic: the resumed two-node run equals the one-node run exactly
    _assert_same_weights(one / "last.pt", killed / "last.pt")
    assert len(_records(killed)) == 2  # global rank 0 alone writes
    assert load_checkpoint(killed / "last.pt")["world_size"] == 2
    assert sorted(p.name for p in killed.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]


# --- mxa report: variants x seeds and learning curves ------------------------------------------------------


def test_report_groups_an_experiment_folder_and_draws_curves(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    exp = tmp_path / "ab"
    for folder, mxa_on in (("baseline", False), ("mxa", True)):
        for s in (0, 1):
            train(
                dataclasses.replace(TINY, output=str(exp / folder / f"seed{s}"), mxa=mxa_on, seed=s, epochs=2)
            )
    (exp / "teacher").mkdir()  # an ablation's teacher folder is not a variant
    curves, out = tmp_path / "curves.png", tmp_path / "rep.json"
    assert main(["report", str(exp), "--curves", str(curves), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean [95% CI] over seeds" in text and "baseline" in text and "+MXA" in text
    rep = json.loads(out.read_text())
    assert set(rep) == {"baseline", "+MXA"} and len(rep["+MXA"]["runs"]) == 2
    assert curves.stat().st_size > 20_000
    rec = _records(exp / "mxa" / "seed0")[-1]
    per_block = rec["val"]["roi_localization"]["per_block"]
    assert len(per_block) >= 2 and all(0 < b["mean_box_area"] <= 1 for b in per_block.values())
    # one variant's seeds: the single-group report of before
    assert main(["report", str(exp / "mxa" / "seed0"), str(exp / "mxa" / "seed1")]) == 0
    assert "2 run(s): mean [95% CI]" in capsys.readouterr().out
    (tmp_path / "nothing-here").mkdir()
    assert main(["report", str(tmp_path / "nothing-here")]) != 0
    assert "no <variant>/seed<k>/metrics.jsonl" in capsys.readouterr().err


def test_corrupt_records_are_one_clear_error(tmp_path: Path) -> None:
    from mxa.train.experiment import Experiment
    from mxa.train.launch import _recorded
    from mxa.train.tracking import Tracking

    exp = Experiment(TINY, tmp_path / "ab")
    exp.output.mkdir()
    (exp.output / "jobs.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"jobs.json is not a record of mxa ablate's jobs .*move it away"):
        _recorded(exp)
    (exp.output / "jobs.json").write_text('{"a": 3}')
    with pytest.raises(ValueError, match="jobs.json is not a record"):
        _recorded(exp)
    (tmp_path / "tracking.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="tracking.json is not a record of this run's trackers"):
        Tracking(("tensorboard",), tmp_path, config={}, resume=True)
    # without --resume an earlier record is not read (a new run starts new tracker runs)
    pytest.importorskip("tensorboard")
    Tracking(("tensorboard",), tmp_path, config={}, resume=False).close()
    assert json.loads((tmp_path / "tracking.json").read_text())["tensorboard"].endswith("tensorboard")
