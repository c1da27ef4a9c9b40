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
        ["export", "--model", "efficientvit_ml_m0", "--output", "x.onnx", "--opset", "13"],
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
    assert writers == set(_commands())


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
        "runs": run / "metrics.jsonl",
        "inputs": img,
        "data": data / "train.csv",
        "src": data,
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
    assert "error:" in err and ("is the input" in err or "already exists" in err), err
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
