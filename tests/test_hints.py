"""Every hint the CLI prints works as printed.

The commands it suggests (``continue with: mxa train --resume ...``, ``--overwrite``, another ``--output``,
``--no-pretrained``, ``--pretrained-file``, the CPU recipe, ``--ema-decay``) are taken from the printed text
and run exactly as printed; the flags, recipes and extras any message of ours names exist.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest
import torch

from mxa.cli import build_parser, main
from mxa.files.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "--data phantom --train-samples 32 --val-samples 16 --model efficientvit_ml_m0 --img-size 64 --epochs 2 "
    "--batch-size 16 --ema-decay 0 --warmup-epochs 0 --cooldown-epochs 0 --no-progress --seed 3"
).split()
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _printed(text: str, pattern: str) -> list[str]:
    """The command a hint printed (``pattern``'s first group), as argv without the leading ``mxa``."""
    found = re.search(pattern, text)
    assert found, f"no hint matching {pattern!r} in:\n{text}"
    argv = shlex.split(found.group(1))
    assert argv[0] == "mxa", argv
    return argv[1:]


def _records(run: Path) -> int:
    return len((run / "metrics.jsonl").read_text().splitlines())


# --- what messages name exists ----------------------------------------------------------------------------


def _our_strings() -> list[tuple[str, str]]:
    """Every string constant in src/mxa (messages, help texts, docstrings), with where it is."""
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append((node.value, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def test_every_flag_a_message_names_is_a_flag_of_the_cli() -> None:
    parser = build_parser()
    known = set(FLAG.findall(parser.format_help()))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in sub.choices.values():
        known |= set(FLAG.findall(command.format_help()))
    placeholders = {"--flag", "--name-with-dashes"}  # the generic names of helper docstrings
    unknown = [
        f"{flag} ({where})"
        for text, where in _our_strings()
        for flag in FLAG.findall(text)
        if flag not in known | placeholders
    ]
    assert unknown == []


def test_every_recipe_and_extra_a_message_names_exists() -> None:
    from mxa._optional import _EXTRA_OF

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    recipes = {r for text, _ in _our_strings() for r in re.findall(r"recipes/[\w.-]+\.yaml", text)}
    assert recipes and all((ROOT / r).is_file() for r in recipes), recipes
    named = {e for text, _ in _our_strings() for e in re.findall(r"mxa-attention\[(\w+)\]", text)}
    assert set(_EXTRA_OF.values()) | named <= extras


# --- resume, overwrite, another output --------------------------------------------------------------------


def test_the_stop_hint_resumes_as_printed(capsys) -> None:
    assert main(["train", *TINY, "--output", "r", "--stop-after-epoch", "1"]) == 0
    out = capsys.readouterr().out
    assert "(the trained weights, kept in best.pt)" in out  # no EMA: best.pt holds the trained weights
    argv = _printed(out, r"continue with: (mxa train --resume \S+)")
    assert main(argv) == 0  # exactly what was printed, no other flag
    assert _records(Path("r")) == 2
    # a flag given explicitly is compared with the run; one a run may not change is refused
    assert main([*argv, "--lr", "0.5"]) == 2
    assert "other settings: lr" in capsys.readouterr().err


def test_the_ctrl_c_hint_resumes_as_printed(capsys, monkeypatch) -> None:
    import os
    import signal

    from mxa.data import combine

    orig, seen = combine.IndexedDataset.__getitem__, {"n": 0}

    def getitem(self, index):  # Ctrl-C while the 2nd batch of epoch 1 is loaded
        seen["n"] += 1
        if seen["n"] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, index)

    monkeypatch.setattr(combine.IndexedDataset, "__getitem__", getitem)
    assert main(["train", *TINY, "--output", "c"]) == 130
    monkeypatch.setattr(combine.IndexedDataset, "__getitem__", orig)
    cap = capsys.readouterr()
    argv = _printed(cap.out + cap.err, r"continue with: (mxa train --resume \S+)")
    assert load_checkpoint(Path(argv[-1]))["batch_in_epoch"] > 0  # saved mid-epoch
    assert main(argv) == 0 and _records(Path("c")) == 2


def test_the_hints_for_a_folder_that_holds_a_run_work_as_printed(capsys) -> None:
    first = ["train", *TINY, "--output", "r", "--stop-after-epoch", "1"]
    assert main(first) == 0
    capsys.readouterr()
    assert main(first) == 2  # the same command again: refused, with three ways on
    err = capsys.readouterr().err
    assert "replace it with --overwrite" in err and "or choose another --output" in err
    assert main(_printed(err, r"continue it with `(mxa train --resume [^`]+)`")) == 0
    assert _records(Path("r")) == 2
    assert main([*first, "--overwrite"]) == 0 and _records(Path("r")) == 1  # a new run replaced it
    assert main([*first[:-4], "--output", "other"]) == 0 and _records(Path("other")) == 2


def test_an_existing_output_file_hint_works_as_printed(capsys) -> None:
    assert main(["train", *TINY, "--epochs", "1", "--output", "r"]) == 0
    Path("m.json").write_text("earlier results\n")
    argv = ["eval", "--checkpoint", "r/best.pt", "--val-samples", "8", "--bootstrap", "0", "--json", "m.json"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--json m.json already exists: pass --overwrite to replace it, or choose another path" in err
    assert Path("m.json").read_text() == "earlier results\n"
    assert main([*argv, "--overwrite", "--no-progress"]) == 0 and Path("m.json").read_text().startswith("{")


def test_the_changed_settings_hint_starts_a_new_run_from_the_weights(capsys) -> None:
    from mxa.cli import train_config_from_args
    from mxa.train.setup import _build_model

    assert main(["train", *TINY, "--output", "r", "--stop-after-epoch", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "r/last.pt", "--lr", "0.002"]) == 2
    err = capsys.readouterr().err
    assert "resume with its settings, or start a new run from its weights with --pretrained-file" in err
    new = ["train", *TINY, "--lr", "0.002", "--pretrained-file", "r/last.pt", "--output", "new"]
    cfg = train_config_from_args(build_parser().parse_args(new))
    model = _build_model(cfg, torch.device("cpu"))
    weights = load_checkpoint(Path("r/last.pt"))["model"]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # its weights, all of them
    assert main(new) == 0 and _records(Path("new")) == 2


# --- defaults that do not fit -------------------------------------------------------------------------------


def test_the_offline_hub_hints_work_as_printed(capsys, monkeypatch) -> None:
    import huggingface_hub.constants
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(Path("hub-cache").resolve()))
    run = ["train", *TINY, "--epochs", "1", "--pretrained", "--output", "p"]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "offline, pass --pretrained-file with a local copy, or train with --no-pretrained" in err
    assert main([*run, "--no-pretrained"]) == 0
    # a local copy of the ImageNet weights (timm's parent model, as its hub file holds them)
    from safetensors.torch import save_file

    save_file(timm.create_model("efficientvit_m0").state_dict(), "m0.safetensors")
    assert main([*run[:-2], "--pretrained-file", "m0.safetensors", "--output", "local"]) == 0


def test_the_cpu_recipe_the_size_warning_names_is_cpu_sized(caplog, monkeypatch) -> None:
    from mxa.cli import train_config_from_args
    from mxa.train.config import TrainConfig
    from mxa.train.setup import _warn_about_sizes

    def flags_of_the_warning(cwd: Path) -> list[str]:
        monkeypatch.chdir(cwd)
        caplog.clear()
        with caplog.at_level("WARNING", logger="mxa"):
            _warn_about_sizes(TrainConfig(), torch.device("cpu"), steps=4)  # the defaults: the GPU recipe
        found = re.search(r"for a CPU-sized run use (.+?), or lower", caplog.text)
        assert found, caplog.text
        assert "averages over about 25000 updates" in caplog.text  # and the EMA that cannot follow them
        return shlex.split(found.group(1))

    for cwd in (ROOT, Path("/")):  # in the clone (a relative path) and elsewhere (an absolute one)
        flags = flags_of_the_warning(cwd)
        cfg = train_config_from_args(build_parser().parse_args(["train", *flags]))
        caplog.clear()
        with caplog.at_level("WARNING", logger="mxa"):
            _warn_about_sizes(cfg, torch.device("cpu"), steps=cfg.train_samples // cfg.batch_size)
        assert caplog.text == ""  # CPU-sized, and its EMA can follow the run
    # without a clone (a wheel), the same settings as flags
    import mxa.train.setup as setup

    monkeypatch.setattr(setup, "__file__", "/nowhere/a/b/c/setup.py")
    fallback = train_config_from_args(build_parser().parse_args(["train", *flags_of_the_warning(ROOT)]))
    for key in ("model", "img_size", "batch_size", "epochs", "ema_decay"):
        assert getattr(fallback, key) == getattr(cfg, key), key


def test_the_ema_hint_silences_the_warning(caplog, capsys) -> None:
    from mxa.cli import train_config_from_args
    from mxa.train.setup import _warn_about_sizes

    cfg = train_config_from_args(build_parser().parse_args(["train", *TINY, "--ema-decay", "0.9998"]))
    with caplog.at_level("WARNING", logger="mxa"):
        _warn_about_sizes(cfg, torch.device("cpu"), steps=2)
    assert "turn it off with --ema-decay 0" in caplog.text
    for value in ("0", "0.5"):  # off, or low enough for the run's 4 updates
        cfg = train_config_from_args(build_parser().parse_args(["train", *TINY, "--ema-decay", value]))
        caplog.clear()
        with caplog.at_level("WARNING", logger="mxa"):
            _warn_about_sizes(cfg, torch.device("cpu"), steps=2)
        assert caplog.text == ""
    # the summary says which weights best.pt was chosen on
    assert main(["train", *TINY, "--ema-decay", "0.5", "--output", "e"]) == 0
    assert "(the EMA weights, kept in best.pt)" in capsys.readouterr().out


# --- ablate has no --output/--resume of its own -------------------------------------------------------


def test_ablate_refuses_a_run_folder_setting_it_does_not_use(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ablate", "--output", "x"])  # its folder is --ablate-output
    Path("a.yaml").write_text("epochs: 1\noutput: runs/x\n")
    assert main(["ablate", "--config", "a.yaml", "--ablate-output", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err
    assert "mxa ablate has no setting output" in err and not (tmp_path / "ab").exists()


def test_an_experiment_folder_of_other_settings_names_the_experiment_fixes(capsys) -> None:
    argv = ["ablate", *TINY, "--epochs", "1", "--seeds", "1", "--variants", "baseline"]
    argv += ["--ablate-output", "ab"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--lr", "0.002"]) == 2  # the same folder, another setting
    err = capsys.readouterr().err
    assert "holds a run of other settings (lr)" in err and "mxa train" not in err and "--output" not in err
    assert "run the same command with --overwrite" in err
    assert main([*argv, "--lr", "0.002", "--overwrite"]) == 0
    assert load_checkpoint(Path("ab/baseline/seed0/last.pt"))["config"]["lr"] == 0.002
