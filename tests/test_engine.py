from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mxa.cli import main
from mxa.files.checkpoint import load_checkpoint
from mxa.train.loop import NonFiniteLossError, TrainConfig, train

TINY = TrainConfig(
    data="phantom",
    train_samples=48,
    val_samples=32,
    model="efficientvit_ml_m0",
    img_size=64,
    epochs=2,
    batch_size=16,
    lr=2e-3,
    warmup_epochs=1,
    cooldown_epochs=0,
    ema_decay=0.9,
    agc=0.02,
    progress=False,
    rand_augment="rand-m5-mstd0.2-inc2",
    seed=3,
)


# a tiny phantom run on the command line (without --val-samples and --batch-size)
TINY_FLAGS = (
    "--data phantom --train-samples 32 --model efficientvit_ml_m0 --img-size 64 --epochs 1 "
    "--ema-decay 0 --warmup-epochs 0 --no-progress"
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ea, eb = load_checkpoint(a)["ema"], load_checkpoint(b)["ema"]
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    train(dataclasses.replace(TINY, output=str(out)))
    return out


def test_outputs_of_a_run(straight_run: Path) -> None:
    for name in ("last.pt", "best.pt", "metrics.jsonl"):
        assert (straight_run / name).is_file()
    lines = [json.loads(x) for x in (straight_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"macro_auc", "micro_auc", "competition_auc"} <= set(lines[-1]["val"])
    assert "val_ema" in lines[-1]
    ckpt = load_checkpoint(straight_run / "last.pt")  # weights_only=True
    assert ckpt["epoch"] == 2 and ckpt["model_name"] == "efficientvit_ml_m0"


def test_same_run_twice_is_identical(straight_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    train(dataclasses.replace(TINY, output=str(out)))
    _assert_same_weights(straight_run / "last.pt", out / "last.pt")


def test_one_epoch_then_resume(straight_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    cfg = dataclasses.replace(TINY, output=str(out))
    train(dataclasses.replace(cfg, stop_after_epoch=1))
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    train(dataclasses.replace(cfg, resume=str(out / "last.pt")))
    _assert_same_weights(straight_run / "last.pt", out / "last.pt")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(straight_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctrlc"
    cfg = dataclasses.replace(TINY, output=str(out))
    _sigint_while_loading(cfg, epoch=1, batch=1)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 2  # the batch being loaded was finished first
    train(dataclasses.replace(cfg, resume=str(out / "last.pt")))
    _assert_same_weights(straight_run / "last.pt", out / "last.pt")


def _sigint_while_loading(cfg: TrainConfig, epoch: int, batch: int) -> None:
    """Send ourselves SIGINT (Ctrl-C) while batch ``batch`` of epoch ``epoch`` (0-based) is being loaded."""
    import signal

    from mxa.data import combine as data_mod

    per_epoch = cfg.train_samples // cfg.batch_size
    target = (epoch * per_epoch + batch) * cfg.batch_size + 3  # the 4th image of that batch
    seen = {"n": 0}
    orig = data_mod.IndexedDataset.__getitem__

    def getitem(self, index):
        if self.ids and self.ids[0].startswith(f"phantom-{cfg.seed}-"):  # the training set
            if seen["n"] == target:
                os.kill(os.getpid(), signal.SIGINT)
            seen["n"] += 1
        return orig(self, index)

    data_mod.IndexedDataset.__getitem__ = getitem
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    finally:
        data_mod.IndexedDataset.__getitem__ = orig


def test_nan_guard_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "nan"
    cfg = dataclasses.replace(TINY, output=str(out))
    from mxa.losses import distillation as losses

    orig = losses.DistillationLoss.forward
    calls = {"n": 0}
    steps = cfg.train_samples // cfg.batch_size

    def forward(self, *a, **k):
        calls["n"] += 1
        loss = orig(self, *a, **k)
        return loss * float("nan") if calls["n"] > steps + 1 else loss  # breaks in epoch 2

    monkeypatch.setattr(losses.DistillationLoss, "forward", forward)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_cli_train_with_yaml_config(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: efficientvit_ml_m0\nimg_size: 64\nepochs: 5\nbatch_size: 16\ntrain_samples: "
        "32\nval_samples: 16\nema_decay: 0.0\n"
    )
    rc = main(
        [
            "train",
            "--config",
            str(cfg),
            "--epochs",
            "1",
            "--output",
            str(tmp_path / "r"),
            "--no-progress",
            "--no-mxa",
        ]
    )
    assert rc == 0
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert (
        ckpt["config"]["epochs"] == 1 and ckpt["config"]["img_size"] == 64 and ckpt["config"]["mxa"] is False
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1.0\n")
    # the CLI contract: a bad input is one error: line and exit status 2 (0.2 raised SystemExit(1))
    capsys.readouterr()
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "unknown setting 'learning_rate'" in err[0]


def test_cli_help_mentions_every_flag(capsys) -> None:
    for cmd in ("train", "eval", "report", "ablate", "predict", "demo", "cache-teacher", "make-phantom"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--data",
        "--train-samples",
        "--val-samples",
        "--model",
        "--img-size",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--output",
        "--resume",
        "--teacher",
        "--alpha",
        "--tau",
        "--policy",
        "--config",
        "--checkpoint",
        "--json",
        "--roi-overlay",
        "--quick",
        "--seeds",
    ):
        assert flag in out, flag


def test_cli_eval_report_predict(straight_run: Path, tmp_path: Path, shared_cxr: Path) -> None:
    js = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(straight_run / "best.pt"),
                "--data",
                "phantom",
                "--val-samples",
                "40",
                "--bootstrap",
                "20",
                "--json",
                str(js),
                "--roc",
                str(tmp_path / "roc.png"),
                "--no-progress",
            ]
        )
        == 0
    )
    m = json.loads(js.read_text())
    for key in (
        "macro_auc",
        "micro_auc",
        "competition_auc",
        "per_label_auc",
        "f1_micro",
        "f1_macro",
        "accuracy",
    ):
        assert key in m
    assert set(m["per_label_auc"]) == set(m["n_positive"])
    assert "roi_localization" in m and (tmp_path / "roc.png").stat().st_size > 10_000
    rep = tmp_path / "rep.json"
    # one run given twice counts once (0.2 reported it as n = 2 with a CI of zero width)
    assert main(["report", str(straight_run), str(straight_run), "--json", str(rep)]) == 0
    assert json.loads(rep.read_text())["metrics"]["macro_auc"]["n"] == 1
    pytest.importorskip("pydicom")
    out = tmp_path / "preds.csv"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(straight_run / "best.pt"),
                str(shared_cxr),
                "--out",
                str(out),
                "--roi-overlay",
                str(tmp_path / "ov"),
            ]
        )
        == 0
    )
    rows = out.read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("path,No Finding")
    assert len(list((tmp_path / "ov").glob("*_roi.png"))) == 4


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--data", "mnist", "--output", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--data must be" in capsys.readouterr().err


@pytest.mark.slow  # two processes: CI runs it after the suite
def test_ddp_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "mxa",
        *f"train {TINY_FLAGS} --val-samples 20 --batch-size 8".split(),
        "--output",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # one writer
    rec = json.loads(lines[0])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    # validation gathered over both ranks, DistributedSampler's padding removed: each image once
    assert rec["val"]["n_images"] == 20
    assert rec["val"]["macro_auc"] is not None


def test_demo_quick(tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    import mxa.demo
    from mxa.demo import run_demo

    real = mxa.demo.demo_experiment

    def smaller(*args, **kwargs):  # --quick's pipeline on fewer, smaller images: the suite's time
        exp = real(*args, **kwargs)
        assert exp.command == "mxa demo --quick"
        base = dataclasses.replace(exp.base, img_size=64, train_samples=96, val_samples=64, epochs=1)
        return dataclasses.replace(exp, base=base, teacher_epochs=1)

    monkeypatch.setattr(mxa.demo, "demo_experiment", smaller)
    summary = run_demo(tmp_path / "demo", quick=True, progress=False)  # its time is reported, never asserted
    res = summary["results"]
    assert set(res) == {"teacher", "baseline", "+MXA", "+MXA+KD"}
    assert all(r["macro_auc"] is not None and 0.0 <= r["macro_auc"] <= 1.0 for r in res.values())
    assert (tmp_path / "demo" / "summary.json").is_file()
    assert (tmp_path / "demo" / "roi_overlay_0.png").stat().st_size > 10_000
    assert "roi_localization" in res["+MXA"] and "roi_localization" not in res["baseline"]


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "recipes").glob("paper_*.yaml")))
def test_recipes_are_valid_configs(recipe: Path) -> None:
    import argparse

    from mxa.cli import train_config_from_args

    cfg = train_config_from_args(argparse.Namespace(config=str(recipe)))
    assert cfg.model == "efficientvit_ml_m5" and cfg.epochs == 50 and cfg.batch_size == 512
    assert cfg.lr == 1e-3 and cfg.weight_decay == 0.025 and cfg.ema_decay == 0.99996 and cfg.agc == 0.02
    assert cfg.warmup_epochs == 5 and cfg.cooldown_epochs == 10 and cfg.min_lr == 1e-5
    assert cfg.rand_augment == "rand-m5-mstd0.2-inc2" and cfg.policy == "ones"
    assert cfg.alpha == 0.5 and cfg.tau == 1.0


def test_cli_ablate_prints_paper_tables(tmp_path: Path, capsys) -> None:
    flags = f"ablate {TINY_FLAGS} --val-samples 24 --batch-size 16 --seeds 1 --teacher-epochs 1".split()
    rc = main([*flags, "--ablate-output", str(tmp_path / "ab"), "--json", str(tmp_path / "ab.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Table 2: MXA" in out and "Table 3: distillation" in out
    table = json.loads((tmp_path / "ab.json").read_text())
    assert set(table) == {"baseline", "+MXA", "+MXA+KD"}
    kd_cfg = load_checkpoint(tmp_path / "ab" / "mxa_kd" / "seed0" / "last.pt")["config"]
    assert kd_cfg["teacher"].endswith("teacher/best.pt") and kd_cfg["mxa"] is True
    base_cfg = load_checkpoint(tmp_path / "ab" / "baseline" / "seed0" / "last.pt")["config"]
    same = {k for k in base_cfg if k not in ("mxa", "teacher", "output")}
    assert all(base_cfg[k] == kd_cfg[k] for k in same)  # identical settings but the variable under study
