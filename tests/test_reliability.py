"""Nothing silently wrong, nothing lost, nothing run that the user did not choose.

Each case here failed on 0.1.0 (a traceback, a wrong number, a destroyed file or an unchosen action);
every command now ends with one clear ``error:`` line, a warning, or a refusal that names the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
from pathlib import Path

import pytest
import torch

from mxa.cli import main
from mxa.files.checkpoint import load_checkpoint
from mxa.train.loop import NonFiniteLossError, TrainConfig, schedule_phases, train

TINY = TrainConfig(
    data="phantom", train_samples=32, val_samples=16, model="efficientvit_ml_m0", img_size=64, epochs=1,
    batch_size=16, ema_decay=0.0, warmup_epochs=0, cooldown_epochs=0, progress=False, seed=2,
)  # fmt: skip
TINY_FLAGS = (
    "--data phantom --train-samples 32 --val-samples 16 --model efficientvit_ml_m0 --img-size 64 --epochs 1 "
    "--batch-size 16 --ema-decay 0 --warmup-epochs 0 --cooldown-epochs 0 --no-progress --seed 2"
).split()


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished one-epoch run."""
    out = tmp_path_factory.mktemp("done")
    train(dataclasses.replace(TINY, output=str(out)))
    return out


def _flip(src: Path, dst: Path, offset_fraction: float = 0.5, n: int = 4096) -> Path:
    data = bytearray(src.read_bytes())
    start = int(len(data) * offset_fraction)
    for i in range(start, min(len(data), start + n)):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


# --- bad command-line values: argparse refuses them before anything runs -----------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],
        ["train", "--batch-size", "0"],
        ["train", "--img-size", "100000"],
        ["train", "--lr", "nan"],
        ["train", "--lr", "inf"],
        ["train", "--weight-decay", "nan"],
        ["train", "--ema-decay", "1.5"],
        ["train", "--accum-steps", "0"],
        ["train", "--mxa-stages", "-1"],
        ["predict", "x.png", "--model", "efficientvit_ml_m0", "--batch-size", "-1"],
        ["eval", "--checkpoint", "x.pt", "--bootstrap", "-1"],
        ["export", "--model", "efficientvit_ml_m0", "--output", "x.onnx", "--opset", "12"],
        ["bench", "--repeats", "0"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_impossible_values_are_refused_up_front(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


# --- errors after parsing: one line, exit 2 ----------------------------------------------------------
def _yaml(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("unknown_model", "unknown --model"),
        ("yaml_type", "epochs must be an integer"),
        ("yaml_nan", "lr must be a finite number"),
        ("yaml_list", "batch_size must be an integer"),
        ("output_is_file", "not a folder"),
        ("existing_run", "already holds a run"),
        ("resume_empty", "empty"),
        ("resume_truncated", "corrupt or truncated"),
        ("resume_flipped", "corrupt"),
        ("resume_other_model", "other settings: model"),
        ("resume_longer", "other settings: epochs"),
        ("resume_finished", "already finished"),
        ("resume_pickle", "never loaded from files we did not write"),
        ("locked", "in use by process"),
        ("cache_size", "img_size"),
    ],
)
def test_clear_errors(case: str, expect: str, done: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "run")
    flags = [*TINY_FLAGS, "--output", out]
    if case == "unknown_model":
        argv = ["train", *flags, "--model", "efficientvit_ml_m9"]
    elif case.startswith("yaml"):
        text = {"yaml_type": "epochs: ten\n", "yaml_nan": "lr: .nan\n", "yaml_list": "batch_size: [16]\n"}[
            case
        ]
        argv = ["train", "--config", _yaml(tmp_path, text), "--output", out, "--no-progress"]
    elif case == "output_is_file":
        (tmp_path / "f").write_text("x")
        argv = ["train", *TINY_FLAGS, "--output", str(tmp_path / "f")]
    elif case == "existing_run":
        argv = ["train", *TINY_FLAGS, "--output", str(done)]
    elif case.startswith("resume"):
        bad = tmp_path / "bad.pt"
        last = done / "last.pt"
        if case == "resume_empty":
            bad.write_bytes(b"")
        elif case == "resume_truncated":
            bad.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        elif case == "resume_flipped":
            _flip(last, bad)
        elif case == "resume_pickle":
            torch.save({"model": Path("x")}, bad)  # a pickled Python object, not tensors
        else:
            bad = last
        extra = {"resume_other_model": ["--model", "efficientvit_ml_m1"], "resume_longer": ["--epochs", "3"]}
        argv = ["train", *flags, "--resume", str(bad), *extra.get(case, [])]
    elif case == "locked":
        Path(out).mkdir()
        (Path(out) / ".lock").write_text(f"{os.uname().nodename} {os.getpid()}\n")
        argv = ["train", *flags]
    else:  # a teacher cache built at another image size
        cache = tmp_path / "c.safetensors"
        flags_c = (
            f"--teacher {done / 'best.pt'} --model efficientvit_ml_m0 --img-size 96 --train-samples "
            "32 --seed 2"
        )
        assert main(["cache-teacher", *flags_c.split(), "--output", str(cache), "--device", "cpu"]) == 0
        capsys.readouterr()
        argv = ["train", *flags, "--teacher", f"cache:{cache}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and expect in err, err
    assert "Traceback" not in err


def test_flipped_checkpoint_is_caught_by_eval(done: Path, tmp_path: Path, capsys) -> None:
    bad = _flip(done / "best.pt", tmp_path / "flipped.pt", offset_fraction=0.6)
    assert main(["eval", "--checkpoint", str(bad), "--val-samples", "8", "--no-progress"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_stale_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{os.uname().nodename} 999999999\n")  # no such process
    train(dataclasses.replace(TINY, output=str(out)))
    assert (out / "last.pt").is_file() and not (out / ".lock").exists()


def test_overwrite_replaces_the_run_and_its_log(done: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(done, out)
    (out / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text() * 3)
    assert main(["train", *TINY_FLAGS, "--output", str(out), "--overwrite"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


# --- non-finite training: never saved, never called good ---------------------------------------------
def _poison_after(monkeypatch, n_updates: int, value: float) -> None:
    """After ``n_updates`` optimizer updates, set every weight to ``value``."""
    from mxa.train import loop as train_mod

    orig = train_mod._backward_and_step
    count = {"n": 0}

    def step(run, loss, i):
        orig(run, loss, i)
        count["n"] += 1
        if count["n"] >= n_updates:
            with torch.no_grad():
                for p in run.model.parameters():
                    p.fill_(value)

    monkeypatch.setattr(train_mod, "_backward_and_step", step)


@pytest.mark.parametrize("value", [float("nan"), 1e30])
def test_non_finite_first_epoch_saves_nothing(value: float, tmp_path: Path, monkeypatch) -> None:
    # a one-update run: the loss was finite, but the weights (nan) or their predictions (1e30) are not
    _poison_after(monkeypatch, 1, value)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="none was saved"):
        train(dataclasses.replace(TINY, train_samples=16, output=str(out)))
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_non_finite_later_epoch_names_the_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    _poison_after(monkeypatch, 3, float("nan"))  # 2 updates per epoch: breaks in epoch 2
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=f"last good checkpoint is {out / 'last.pt'}"):
        train(dataclasses.replace(TINY, epochs=3, output=str(out)))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_non_finite_exit_code(tmp_path: Path, monkeypatch, capsys) -> None:
    _poison_after(monkeypatch, 1, float("nan"))
    argv = ["train", *TINY_FLAGS, "--train-samples", "16", "--output", str(tmp_path / "r")]
    assert main(argv) == 3
    assert "not finite" in capsys.readouterr().err


# --- schedules of short runs ---------------------------------------------------------------------------
def test_short_runs_scale_warmup_and_cooldown() -> None:
    assert schedule_phases(50, 5, 10) == (5, 35, 10, False)  # the paper's recipe is kept
    assert schedule_phases(12, 5, 10) == (1, 9, 2, True)
    assert schedule_phases(2, 1, 0) == (1, 1, 0, False)
    for epochs in range(1, 60):
        w, c, d, _ = schedule_phases(epochs, 5, 10)
        assert w + c + d == epochs and c >= 1


def test_training_summary_shows_the_phases(tmp_path: Path, capsys) -> None:
    argv = ["train", *TINY_FLAGS, "--epochs", "2", "--warmup-epochs", "5", "--cooldown-epochs", "10"]
    assert main([*argv, "--output", str(tmp_path / "r"), "--max-steps-per-epoch", "1"]) == 0
    captured = capsys.readouterr()
    assert "warm-up 0, cosine 2, cool-down 0, scaled to the run" in captured.out
    assert "scaled to 0 and 0" in captured.err


# --- outputs never destroy inputs or earlier results ----------------------------------------------------
@pytest.fixture
def images(tmp_path: Path, shared_cxr: Path) -> Path:
    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    shutil.copy(shared_cxr / "00000001_000.png", folder / "a" / "x.png")
    shutil.copy(shared_cxr / "00027426_000.png", folder / "b" / "x.png")
    return folder


def test_predict_refuses_to_write_over_an_input(images: Path, capsys) -> None:
    target = images / "a" / "x.png"
    before = target.read_bytes()
    assert main(["predict", str(images), "--model", "efficientvit_ml_m0", "--out", str(target)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert target.read_bytes() == before


def test_predict_skips_unreadable_images_and_says_so(images: Path, tmp_path: Path, capsys) -> None:
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "p.csv"
    argv = [
        "predict",
        str(images),
        "--model",
        "efficientvit_ml_m0",
        "--out",
        str(out),
        "--roi-overlay",
        str(tmp_path / "ov"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 image(s) could not be read" in err and "broken.png" in err
    assert len(out.read_text().splitlines()) == 3  # header + the two readable images
    # two inputs named x.png get two overlays
    assert sorted(p.name for p in (tmp_path / "ov").glob("*.png")) == ["a__x_png_roi.png", "b__x_png_roi.png"]


def test_predict_missing_extra_skips_dicom_keeps_pngs(
    shared_cxr: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from mxa import _optional
    from mxa.data import io

    def no_pydicom(module, feature=None):
        raise _optional.MissingExtraError(
            f"{feature} needs the package 'pydicom'; pip install \"mxa-attention[dicom]\""
        )

    monkeypatch.setattr(io, "require", no_pydicom)
    out = tmp_path / "p.csv"
    assert main(["predict", str(shared_cxr), "--model", "efficientvit_ml_m0", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 image(s) could not be read" in err and "mxa-attention[dicom]" in err and "Traceback" not in err
    assert len(out.read_text().splitlines()) == 3


def test_a_failed_predict_leaves_no_partial_csv(images: Path, tmp_path: Path, monkeypatch) -> None:
    from mxa.data import transforms

    out = tmp_path / "p.csv"
    out.write_text("earlier results\n")
    calls = {"n": 0}
    orig = transforms._EvalTransform.__call__

    def fail_second(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return orig(self, x)

    monkeypatch.setattr(transforms._EvalTransform, "__call__", fail_second)
    from mxa.predict import predict_files

    with pytest.raises(RuntimeError):
        predict_files([images], out=out, model_name="efficientvit_ml_m0", batch_size=1, overwrite=True)
    assert out.read_text() == "earlier results\n"


def test_eval_writes_json_first_and_survives_an_unwritable_figure(done: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    js = tmp_path / "m.json"
    argv = ["eval", "--checkpoint", str(done / "best.pt"), "--val-samples", "16", "--bootstrap", "0"]
    assert main([*argv, "--json", str(js), "--roc", str(tmp_path / "file" / "roc.png"), "--no-progress"]) == 0
    assert js.is_file()
    err = capsys.readouterr().err
    assert "roc.png was not written" in err and "choose another file with --roc" in err


# --- nothing unpickled that we did not write -------------------------------------------------------------
def test_xrv_weights_read_without_running_pickled_code(tmp_path: Path) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    from mxa.distill import XRVTeacher

    module = xrv.models.DenseNet(weights=None, num_classes=18)
    safe = tmp_path / "official-like.pt"
    torch.save(module, safe)  # the official files are pickled modules
    teacher = XRVTeacher(weights=None, weights_file=safe)
    x = torch.randn(1, 1, 224, 224)
    torch.testing.assert_close(teacher.model.features2(x), module.eval().features2(x))

    module.note = datetime.date(2020, 1, 1)  # a global that is not a torch/torchxrayvision module
    crafted = tmp_path / "crafted.pt"
    torch.save(module, crafted)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        XRVTeacher(weights=None, weights_file=crafted)
    XRVTeacher(weights=None, weights_file=crafted, trust_pickle=True)  # the user's explicit choice


# --- the output guard: every command, every output option pointed at every input ------------------------
def _commands() -> dict[str, argparse.ArgumentParser]:
    from mxa.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _io(p: argparse.ArgumentParser) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return p.get_default("io_inputs") or (), p.get_default("io_outputs") or ()


def _flag(p: argparse.ArgumentParser, dest: str) -> str | None:
    """The option string of ``dest`` (None for a positional)."""
    action = next(a for a in p._actions if a.dest == dest)
    return action.option_strings[0] if action.option_strings else None


#: the least each command needs to parse (required options), with placeholders for the files
_REQUIRED = {
    "eval": ["--checkpoint", "{ckpt}"],
    "predict": ["{img}", "--model", "efficientvit_ml_m0"],
    "viz": ["{img}"],
    "export": ["--model", "efficientvit_ml_m0"],
    "cache-teacher": ["--output", "{fresh}/c.safetensors"],
    "occlusion-boxes": ["--checkpoint", "{ckpt}", "--output", "{fresh}/b.json"],
    "make-phantom": ["--output", "{fresh}/ph"],
    "preresize": ["--src", "{data}", "--dst", "{fresh}/pre"],
    "report": ["{run}"],
}


def _pairs() -> list[tuple[str, str, str]]:
    out = []
    for name, p in _commands().items():
        ins, outs = _io(p)
        out += [(name, o, i) for o in outs for i in ins]
    return out


def test_every_command_declares_its_files() -> None:
    # a command that writes files without declaring them would bypass the guard
    writers = {n for n, p in _commands().items() if _io(p)[1]}
    assert writers == set(_commands()) - {"serve"}  # serve writes only to a temporary folder it removes


@pytest.mark.parametrize(("command", "out_dest", "in_dest"), _pairs())
@pytest.mark.parametrize("overwrite", [False, True])
def test_no_output_may_be_an_input(
    command: str, out_dest: str, in_dest: str, overwrite: bool, tmp_path: Path, capsys
) -> None:
    p = _commands()[command]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("Path\n")
    img = tmp_path / "x.png"
    img.write_bytes(b"not really a png")
    target = {  # the input file the output option is pointed at
        "checkpoint": tmp_path / "model.pt",
        "baseline": tmp_path / "base.pt",
        "teacher": tmp_path / "teacher.pt",
        "pretrained_file": tmp_path / "weights.pt",
        "resume": tmp_path / "last.pt",
        "config": tmp_path / "cfg.yaml",
        "thresholds": tmp_path / "th.json",
        "metrics": tmp_path / "eval.json",
        "runs": run / "metrics.jsonl",
        "inputs": img,
        "data": data / "train.csv",
        "src": data,
        "box_file": tmp_path / "boxes.json",
    }[in_dest]
    if not target.exists():
        target.write_text("precious\n")
    before = target.read_bytes() if target.is_file() else None
    value = {"runs": str(run), "inputs": str(img), "data": f"chexpert:{data}", "src": str(data)}.get(
        in_dest, str(target)
    )
    subs = {"ckpt": str(target if in_dest == "checkpoint" else tmp_path / "other.pt"), "img": str(img),
            "data": str(data), "run": str(run), "fresh": str(tmp_path / "fresh")}  # fmt: skip
    (tmp_path / "other.pt").write_text("x")
    argv = [command] + [a.format(**subs) for a in _REQUIRED.get(command, [])]
    if in_dest == "checkpoint" and "--model" in argv:  # one or the other
        del argv[argv.index("--model") : argv.index("--model") + 2]
    in_flag = _flag(p, in_dest)
    if in_flag and in_flag not in argv:
        argv += [in_flag, value]
    elif in_flag and in_flag in argv:
        argv[argv.index(in_flag) + 1] = value
    out_flag = _flag(p, out_dest)
    assert out_flag is not None
    if out_flag in argv:
        argv[argv.index(out_flag) + 1] = str(target)
    else:
        argv += [out_flag, str(target)]
    if overwrite:
        argv.append("--overwrite")
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "error:" in err and "is the input" in err, err  # the input is named first, --overwrite or not
    if before is not None:
        assert target.read_bytes() == before


def test_a_hard_link_or_symlink_to_an_input_is_the_input(done: Path, tmp_path: Path, capsys) -> None:
    ckpt = done / "best.pt"
    before = ckpt.read_bytes()
    hard, soft = tmp_path / "hard.json", tmp_path / "soft.json"
    os.link(ckpt, hard)
    soft.symlink_to(ckpt)
    for out in (hard, soft):
        assert main(["eval", "--checkpoint", str(ckpt), "--json", str(out), "--overwrite"]) == 2
        assert "is the input" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("command", ["eval", "report", "bench", "export"])
def test_existing_results_are_kept_without_overwrite(
    command: str, done: Path, tmp_path: Path, capsys
) -> None:
    old = tmp_path / "old.json"
    old.write_text("earlier results\n")
    argv = {
        "eval": ["eval", "--checkpoint", str(done / "best.pt"), "--json", str(old)],
        "report": ["report", str(done), "--json", str(old)],
        "bench": ["bench", "--model", "efficientvit_ml_m0", "--json", str(old)],
        "export": ["export", "--checkpoint", str(done / "best.pt"), "--output", str(old)],
    }[command]
    assert main(argv) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert old.read_text() == "earlier results\n"


def test_generated_overlay_names_never_replace_an_input(
    images: Path, done: Path, tmp_path: Path, capsys
) -> None:
    # an input that happens to be named like the overlay of another input
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(sorted(images.rglob("*.png"))[0], flat / "x.png")
    trap = flat / "x_roi.png"
    shutil.copy(flat / "x.png", trap)
    before = trap.read_bytes()
    argv = ["predict", str(flat), "--checkpoint", str(done / "best.pt"), "--out", str(tmp_path / "p.csv")]
    assert main([*argv, "--roi-overlay", str(flat), "--overwrite"]) == 2
    assert "ROI overlay" in capsys.readouterr().err
    assert trap.read_bytes() == before
    assert (
        main(["viz", str(flat), "--checkpoint", str(done / "best.pt"), "--output", str(flat), "--overwrite"])
        == 2
    )
    assert trap.read_bytes() == before


def test_make_phantom_keeps_an_existing_set(tmp_path: Path, capsys) -> None:
    argv = ["make-phantom", "--output", str(tmp_path), "--train", "4", "--valid", "2", "--img-size", "32"]
    assert main(argv) == 0
    csv = tmp_path / "CheXpert-v1.0-small" / "train.csv"
    before = csv.read_text()
    assert main([*argv, "--seed", "3"]) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert csv.read_text() == before
    assert main([*argv, "--seed", "3", "--overwrite"]) == 0
    assert csv.read_text() != before


# --- one validator per file format: garbage in gives a message, never a number -------------------------
def _phantom_set(tmp_path: Path, n_valid: int = 6) -> Path:
    from mxa.data.writer import write_phantom_chexpert

    return write_phantom_chexpert(tmp_path / "set", n_train=8, n_valid=n_valid, image_size=32)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ([0.6, 0.1, 0.2, 0.5], "inverted"),
        ([0.1, 0.1, float("nan"), 0.5], "not finite"),
        ([0.1, 0.1, 1.5, 0.5], "outside"),
        ([-0.3, 0.1, 0.4, 0.5], "outside"),
        ([0.2, 0.2, 0.2, 0.5], "inverted or empty"),
    ],
)
def test_bad_boxes_in_a_box_file_are_named_and_left_out(tmp_path: Path, caplog, bad: list, why: str) -> None:
    import json

    from mxa.data.chexpert import CheXpertDataset

    base = _phantom_set(tmp_path)
    path = base / "boxes_valid.json"
    table = json.loads(path.read_text())
    key = next(k for k, v in table.items() if v)
    label = next(iter(table[key]))
    table[key][label] = bad
    path.write_text(json.dumps(table))  # NaN is written as JSON's NaN
    with caplog.at_level("WARNING", logger="mxa"):
        ds = CheXpertDataset(base.parent, "valid", boxes=True)
    i = ds.ids.index(key)
    from mxa.data.labels import CHEXPERT_LABELS

    assert torch.isnan(ds.boxes(i)[CHEXPERT_LABELS.index(label)]).all()  # left out, never used as it is
    assert "boxes_valid.json" in caplog.text and why in caplog.text and "left out" in caplog.text


def test_bad_boxes_in_a_box_csv_are_named_and_left_out(caplog) -> None:
    import numpy as np

    from mxa.data.xray_sets import _box_table

    rows = [
        ("a.png", "Lung Lesion", 10.0, 10.0, 50.0, 50.0),  # good
        ("b.png", "Lung Lesion", 50.0, 10.0, 10.0, 50.0),  # inverted
        ("c.png", "Lung Lesion", 900.0, 900.0, 1500.0, 1000.0),  # outside the 1024 x 1024 image
        ("d.png", "Lung Lesion", float("inf"), 1.0, 2.0, 3.0),
        ("e.png", "Lung Lesion", 1020.0, 1000.0, 1030.0, 1024.0),  # 6 px over the edge: clipped
    ]
    with caplog.at_level("WARNING", logger="mxa"):
        out = _box_table(
            ["a.png", "b.png", "c.png", "d.png", "e.png"], rows, "BBox_List.csv", (1024.0, 1024.0)
        )
    from mxa.data.labels import CHEXPERT_LABELS

    j = CHEXPERT_LABELS.index("Lung Lesion")
    assert np.isfinite(out[0, j]).all() and np.isnan(out[1:4, j]).all()
    assert out[4, j, 2] == 1024.0
    assert "BBox_List.csv: 3 box(es) cannot be used" in caplog.text


def test_duplicated_validation_rows_count_once(tmp_path: Path, caplog) -> None:
    from mxa.data.combine import build_eval_dataset
    from mxa.files.spec import ModelSpec

    base = _phantom_set(tmp_path)
    csv = base / "valid.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, *lines[1:3]]) + "\n")  # two rows twice
    model = ModelSpec.for_training("efficientvit_ml_m0", 32, mxa=False).build()
    with caplog.at_level("WARNING", logger="mxa"):
        ds = build_eval_dataset(f"chexpert:{base.parent}", model)
    assert len(ds) == len(lines) - 1 == len(set(ds.ids))
    assert "more than once" in caplog.text


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", "is empty"),
        ("Path,Sex,Age\n", "lacks the column"),
        (None, "header and no rows"),
        ("latin1", "not UTF-8"),
    ],
)
def test_broken_label_tables_are_one_error_naming_the_file(
    text: str | None, expect: str, tmp_path: Path
) -> None:
    from mxa.data.chexpert import CSV_COLUMNS, CheXpertDataset

    root = tmp_path / "cx"
    root.mkdir()
    csv = root / "valid.csv"
    if text is None:
        csv.write_text(",".join(CSV_COLUMNS) + "\n")
    elif text == "latin1":
        csv.write_bytes((",".join(CSV_COLUMNS) + "\n").encode() + "Patiént,".encode("latin-1") + b"\n")
    else:
        csv.write_text(text)
    with pytest.raises(ValueError, match=expect) as e:
        CheXpertDataset(root, "valid")
    assert str(csv) in str(e.value)


@pytest.mark.parametrize(("value", "expect"), [("true", "got True"), ("1.7", "got 1.7"), ('"x"', "got 'x'")])
def test_threshold_files_hold_probabilities(value: str, expect: str, tmp_path: Path) -> None:
    from mxa.decision.thresholds import parse_threshold_spec

    path = tmp_path / "th.json"
    path.write_text(f'{{"Edema": {value}}}')
    with pytest.raises(ValueError, match=expect):
        parse_threshold_spec(str(path))


def _with_decision(done: Path, tmp_path: Path) -> dict:
    ckpt = load_checkpoint(done / "best.pt")
    labels = ckpt["label_names"]
    ckpt["decision"] = {
        "labels": labels,
        "thresholds": dict.fromkeys(labels, 0.5),
        "threshold_method": "fixed",
    }
    return ckpt


def test_an_edited_threshold_is_refused(done: Path, tmp_path: Path) -> None:
    import mxa
    from mxa.files.checkpoint import CorruptCheckpointError, save_checkpoint

    ckpt = _with_decision(done, tmp_path)
    ckpt["decision"]["thresholds"]["Edema"] = 1.7  # written through our writer: the digest holds
    with pytest.raises(ValueError, match="the threshold of Edema must be a number in \\[0, 1\\], got 1.7"):
        mxa.load_model(save_checkpoint(ckpt, tmp_path / "edited.pt"))
    # edited after saving (a flipped byte, a hand edit): the digest covers the rule and the config
    good = save_checkpoint(_with_decision(done, tmp_path), tmp_path / "good.pt")
    obj = torch.load(good, weights_only=True)
    obj["decision"]["thresholds"]["Edema"] = 0.25
    torch.save(obj, tmp_path / "tampered.pt")
    with pytest.raises(CorruptCheckpointError, match="do not match the digest"):
        mxa.load_model(tmp_path / "tampered.pt")
    obj = torch.load(good, weights_only=True)
    obj["config"]["epochs"] = 99
    torch.save(obj, tmp_path / "tampered2.pt")
    with pytest.raises(CorruptCheckpointError, match="do not match the digest"):
        mxa.load_model(tmp_path / "tampered2.pt")


def test_metrics_refuse_logits() -> None:
    from mxa.metrics.classification import compute_metrics

    logits = torch.randn(20, 14) * 3
    with pytest.raises(ValueError, match="look like logits; pass torch.sigmoid"):
        compute_metrics(logits, (logits > 0).float())


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ('{"epoch": 1, "val": {"macro_auc": 0.6}}\n{"epoch": 2, "va', "line 2: not a JSON record"),
        ('{"epoch": 1, "train_loss": 0.3}\n', "line 1: not an epoch record"),
        ("\n", "is empty"),
    ],
)
def test_report_names_a_broken_metrics_log(content: str, expect: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "metrics.jsonl").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and expect in err and "metrics.jsonl" in err


def test_report_refuses_to_pool_label_sets(done: Path, tmp_path: Path, capsys) -> None:
    import json

    other = tmp_path / "other"
    other.mkdir()
    rec = json.loads((done / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("val", "val_ema"):
        if isinstance(rec.get(key), dict):
            rec[key]["per_label_auc"] = {"Edema": 0.7}
    (other / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(["report", str(done), str(other)]) == 2
    assert "different label sets" in capsys.readouterr().err


def test_a_single_validation_image_names_no_best_checkpoint(tmp_path: Path, caplog) -> None:
    cfg = dataclasses.replace(TINY, output=str(tmp_path / "one"), val_samples=1)
    with caplog.at_level("WARNING", logger="mxa"):
        summary = train(cfg)
    assert summary["best"] is None and not (tmp_path / "one" / "best.pt").exists()
    assert "no best.pt" in caplog.text and (tmp_path / "one" / "last.pt").is_file()


def test_yaml_values_have_the_flags_bounds(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train_samples: 1000000000000\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "train_samples" in capsys.readouterr().err


def test_a_decompression_bomb_is_skipped_and_listed(tmp_path: Path, capsys) -> None:
    from PIL import Image

    Image.new("L", (64, 64), 100).save(tmp_path / "ok.png")
    Image.new("L", (14000, 14000), 0).save(tmp_path / "bomb.png")  # 196 MP: over twice PIL's pixel limit
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path), "--model", "efficientvit_ml_m0", "--out", str(out)]) == 1
    assert "bomb.png" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 2  # the header and the good image


@pytest.mark.parametrize("kind", ["folder", "pickle"])
def test_a_bad_pretrained_file_is_one_error_line(kind: str, tmp_path: Path, capsys) -> None:
    import pickle

    path = tmp_path / "w"
    if kind == "folder":
        path.mkdir()
    else:
        path = tmp_path / "w.pth"
        path.write_bytes(pickle.dumps({"x": object}))
    assert main(["train", *TINY_FLAGS, "--output", str(tmp_path / "r"), "--pretrained-file", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pretrained-file") and len(err.splitlines()) == 1 and err != "error:"


def test_empty_batches_and_sizes_are_refused() -> None:
    import mxa

    with pytest.raises(ValueError, match="is empty"):
        mxa.MXABlock(8)(torch.zeros(0, 8, 7, 7))
    with pytest.raises(ValueError, match="output_size must be a positive int"):
        mxa.roi_crop(torch.zeros(1, 8, 7, 7), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), output_size=0)


def test_preresize_lists_a_broken_image_and_does_the_rest(tmp_path: Path, capsys) -> None:
    from PIL import Image

    src = tmp_path / "src"
    (src / "train" / "p1").mkdir(parents=True)
    (src / "train.csv").write_text("Path\n")
    Image.new("L", (100, 80), 90).save(src / "train" / "p1" / "a.jpg")
    (src / "train" / "p1" / "b.jpg").write_bytes(b"broken")
    argv = ["preresize", "--src", str(src), "--dst", str(tmp_path / "dst"), "--size", "40", "--workers", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "b.jpg" in err and "1 of 2 image(s) could not be resized" in err
    assert (tmp_path / "dst" / "train" / "p1" / "a.jpg").is_file()


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--device", "cuda"], "no CUDA device"),
        (["--batch-size", "60000", "--img-size", "2048"], "lower --batch-size or --img-size"),
    ],
)
def test_bench_refuses_what_it_cannot_run(argv: list, expect: str, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same check on a GPU machine
    assert main(["bench", "--model", "efficientvit_ml_m0", *argv]) == 2
    assert expect in capsys.readouterr().err


def test_a_full_disk_is_one_error_naming_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    old = tmp_path / "m.json"
    old.write_text("earlier results\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    from mxa.cli._common import write_json

    with pytest.raises(
        OSError, match=f"could not write {old}: No space left on device.*earlier content is kept"
    ):
        write_json(old, {"a": 1})
    assert old.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left behind


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path: Path, caplog) -> None:
    from mxa.train.run_folder import prepare_run_folder

    run = tmp_path / "killed"
    run.mkdir()
    (run / "last.pt").write_bytes(b"the good checkpoint")
    (run / ".last.abc123.tmp.pt").write_bytes(b"x" * 1000)  # what kill -9 during a save leaves
    with caplog.at_level("WARNING", logger="mxa"):
        prepare_run_folder(run, resume=str(run / "last.pt"), overwrite=False)
    assert not list(run.glob(".last.*.tmp.pt")) and (run / "last.pt").read_bytes() == b"the good checkpoint"
    assert "interrupted save" in caplog.text


def test_eval_figures_go_to_a_folder_of_their_own_never_beside_the_checkpoint(done: Path, capsys) -> None:
    before = sorted(p.name for p in done.iterdir())
    argv = ["eval", "--checkpoint", str(done / "best.pt"), "--val-samples", "16", "--bootstrap", "0"]
    assert main([*argv, "--no-progress"]) == 0
    (first,) = Path("mxa-eval").iterdir()  # mxa-eval/<run>-best-<date>-<time>
    assert first.name.startswith(f"{done.name}-best-") and sorted(p.name for p in first.iterdir()) == [
        "reliability.png",
        "roc.png",
    ]
    assert sorted(p.name for p in done.iterdir()) == before
    # run again with another flag: a folder of its own, the first one's figures kept
    kept = (first / "roc.png").stat().st_mtime_ns
    assert main([*argv, "--no-progress", "--no-ema"]) == 0
    assert len(list(Path("mxa-eval").iterdir())) == 2 and (first / "roc.png").stat().st_mtime_ns == kept
    capsys.readouterr()
    # an --output that holds figures is refused before the evaluation starts; --overwrite replaces them
    assert main([*argv, "--no-progress", "--output", str(first)]) == 2
    cap = capsys.readouterr()
    assert f"{first}/roc.png already exists: pass --overwrite" in cap.err and "evaluation of" not in cap.out
    assert main([*argv, "--no-progress", "--output", str(first), "--overwrite"]) == 0
    assert (first / "roc.png").stat().st_mtime_ns != kept
    Path("a-file").write_text("x")  # --output must be a folder: refused before the evaluation
    assert main([*argv, "--no-progress", "--output", "a-file"]) == 2
    assert "--output a-file is a file, not a folder" in capsys.readouterr().err


def test_eval_of_a_broken_model_measures_nothing(done: Path, tmp_path: Path, capsys) -> None:
    from mxa.files.checkpoint import save_checkpoint

    ckpt = load_checkpoint(done / "best.pt")
    ckpt.pop("integrity")
    for state in (ckpt["model"], ckpt.get("ema") or {}):
        for v in state.values():
            if v.is_floating_point():
                v.fill_(float("nan"))
    bad = save_checkpoint(ckpt, tmp_path / "nan.pt")
    assert main(["eval", "--checkpoint", str(bad), "--val-samples", "16", "--bootstrap", "5"]) == 3
    err = capsys.readouterr().err
    assert "gives non-finite scores" in err and "Traceback" not in err
    assert not Path("mxa-eval").exists()  # no figure of a broken model


def test_an_experiment_run_again_keeps_finished_runs_and_continues_the_rest(tmp_path: Path, caplog) -> None:
    from mxa.train.experiment import PAPER_VARIANTS, Experiment, run_experiment

    base = dataclasses.replace(TINY, epochs=2, stop_after_epoch=1)
    exp = Experiment(base, tmp_path / "abl", seeds=1, teacher="none", variants=PAPER_VARIANTS[:1])
    run_experiment(exp)  # stops after epoch 1 of 2, like an interrupted ablation
    log = tmp_path / "abl" / "baseline" / "seed0" / "metrics.jsonl"
    assert len(log.read_text().splitlines()) == 1
    exp.base = dataclasses.replace(base, stop_after_epoch=None)
    with caplog.at_level("INFO", logger="mxa"):
        run_experiment(exp)
    assert "continuing the unfinished run" in caplog.text and len(log.read_text().splitlines()) == 2
    caplog.clear()
    with caplog.at_level("INFO", logger="mxa"):
        run_experiment(exp)  # nothing left to do
    assert "already trained with these settings, kept" in caplog.text
    assert len(log.read_text().splitlines()) == 2


def test_files_we_write_follow_the_umask(tmp_path: Path) -> None:
    from mxa.utils.files import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone made every file 0600
    assert private.stat().st_mode & 0o777 == 0o600
