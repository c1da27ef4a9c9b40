"""One model loader for checkpoints and exported models; teachers from either; the teacher cache builder."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import timm
import torch

import mxa
from mxa.cli import main
from mxa.distill import TeacherCache, load_teacher
from mxa.files.checkpoint import TrainCheckpoint, load_checkpoint, save_checkpoint
from mxa.files.spec import ModelSpec
from mxa.train.loop import TrainConfig, train

TINY = TrainConfig(
    data="phantom", train_samples=32, val_samples=16, model="efficientvit_ml_m0", img_size=64, epochs=1,
    batch_size=16, ema_decay=0.0, warmup_epochs=0, progress=False, seed=5,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    pytest.importorskip("torchmetrics")  # training scores AUC: the metrics extra
    out = tmp_path_factory.mktemp("run")
    train(dataclasses.replace(TINY, output=str(out)))
    return out


def test_load_model_reads_checkpoints_and_exports(run: Path, tmp_path: Path) -> None:
    model = mxa.load_model(run / "best.pt")
    x = torch.randn(2, 1, 64, 64)
    path = mxa.export_safetensors(model, tmp_path / "exp" / "model.safetensors")
    for again in (mxa.load_model(path), mxa.load_model(tmp_path / "exp")):
        assert not again.training
        torch.testing.assert_close(again(x), model(x))


def test_teacher_from_exported_safetensors(run: Path, tmp_path: Path) -> None:
    # regression: load_teacher sent a .safetensors path into torch.load, which cannot read it
    model = mxa.load_model(run / "best.pt")
    path = mxa.export_safetensors(model, tmp_path / "t" / "teacher.safetensors")
    x = torch.randn(3, 1, 64, 64)
    from_export = load_teacher(str(path))(x)[0]
    from_ckpt = load_teacher(str(run / "best.pt"))(x)[0]
    torch.testing.assert_close(from_export, from_ckpt)
    torch.testing.assert_close(from_export, model(x))


def test_one_cache_builder_for_cli_and_experiments(run: Path, tmp_path: Path) -> None:
    # regression: `mxa cache-teacher` used the eval transform, the demo the 8-bit training path
    from mxa.train.experiment import Experiment, teacher_for_seed

    teacher = str(run / "best.pt")
    out = tmp_path / "cli.safetensors"
    flags = f"--teacher {teacher} --model efficientvit_ml_m0 --img-size 64 --train-samples 32 --seed 5"
    assert main(["cache-teacher", *flags.split(), "--output", str(out), "--device", "cpu"]) == 0
    exp = Experiment(dataclasses.replace(TINY, output=str(tmp_path)), tmp_path / "exp", cache_teacher=True)
    spec = teacher_for_seed(exp, teacher, 0)
    cli, demo = TeacherCache.load(out), TeacherCache.load(spec.split(":", 1)[1])
    assert cli.ids == demo.ids and len(cli) == 32
    assert torch.equal(cli.logits, demo.logits)
    assert cli.meta["img_size"] == 64 and cli.meta["transform"] == "eval"


def test_model_kwargs_pass_an_allow_list(run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["model_kwargs"] = {
        **ckpt["model_kwargs"],
        "pretrained": True,
        "pretrained_cfg_overlay": {"hf_hub_id": "x/y"},
    }
    bad = save_checkpoint(ckpt, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not allowed.*pretrained"):
        mxa.load_model(bad)
    ckpt["model_kwargs"] = {"img_size": 64}
    ckpt["model_name"] = "no_such_model"
    # regression: the message listed efficientvit_ml_m0 ... m5 only, never the grafted models
    with pytest.raises(ValueError, match="unknown model.*'no_such_model'.*densenet121_mxa"):
        mxa.load_model(save_checkpoint(ckpt, tmp_path / "unknown.pt"))


def test_model_spec_for_training() -> None:
    spec = ModelSpec.for_training("efficientvit_ml_m0", 64, mxa=False)
    assert spec.kwargs == {"img_size": 64, "mxa": False}
    assert ModelSpec.for_training("resnet18", 64).kwargs == {"img_size": 64}
    model = spec.build()
    assert ModelSpec.from_model(model).architecture == "efficientvit_ml_m0"
    assert timm.is_model(spec.architecture)


def _saved(model: torch.nn.Module, via: str, tmp_path: Path) -> Path:
    """``model`` written as ``mxa export`` (safetensors) or as ``mxa train`` (a checkpoint) writes it."""
    if via == "safetensors":
        return mxa.export_safetensors(model, tmp_path / "m" / "model.safetensors")
    spec = ModelSpec.from_model(model)
    ckpt = TrainCheckpoint(model_name=spec.architecture, model_kwargs=spec.kwargs, model=model.state_dict())
    return ckpt.save(tmp_path / "m.pt")


@pytest.mark.parametrize("per_stage", ["first", "last"])
@pytest.mark.parametrize("via", ["checkpoint", "safetensors"])
def test_mxa_per_stage_round_trips(per_stage: str, via: str, tmp_path: Path) -> None:
    spec = ModelSpec.for_training("efficientvit_ml_m0", 64, mxa_stages=[1, 2], mxa_per_stage=per_stage)
    assert spec.kwargs["mxa_per_stage"] == per_stage
    assert "mxa_per_stage" not in ModelSpec.for_training("efficientvit_ml_m0", 64).kwargs  # the default
    grafted = ModelSpec.for_training("resnet50_mxa", 64, mxa_per_stage=per_stage).kwargs
    assert grafted["mxa"] and "mxa_per_stage" not in grafted  # a grafted model has no such argument
    model = spec.build().eval()
    again = mxa.load_model(_saved(model, via, tmp_path))
    assert again.mxa_per_stage == per_stage and list(mxa.mxa_blocks(again)) == list(mxa.mxa_blocks(model))
    want = {
        "first": ["stages.1.blocks.0", "stages.2.blocks.0"],
        "last": ["stages.1.blocks.1", "stages.2.blocks.2"],
    }
    assert list(mxa.mxa_blocks(again)) == want[per_stage]  # one in each of stages 1 and 2
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(again(x), model(x))


# one non-default value per MXABlock option; a new option without one here fails this test on purpose
_MXA_VALUES = {
    "reduction": 8,
    "spatial_kernel": 3,
    "min_size": 0.1,
    "init_size": 0.9,
    "init_scale": 0.5,
    "mode": "paste",
    "crop_size": 4,
    "saliency_temperature": 0.5,
    "crop_method": "separable",
    "box_size": "saliency",
    "roi_classes": 3,
    "class_boxes": True,
    "rois": 2,
    "roi_skip": [0],
    "roi_fraction": 0.5,
    "box_grad": 0.5,
}


@pytest.mark.parametrize("key", [p for p in inspect.signature(mxa.MXABlock).parameters if p != "dim"])
@pytest.mark.parametrize("via", ["checkpoint", "safetensors"])
def test_load_model_round_trips_every_mxa_cfg_key(key: str, via: str, tmp_path: Path) -> None:
    # regression: crop_method was not in the allow-list, so such a model exported but did not load
    needs = {
        "crop_size": {"mode": "paste"},
        "class_boxes": {"roi_classes": 3},
        "rois": {"roi_classes": 3},
        "roi_skip": {"rois": 1, "roi_classes": 3},
        "roi_fraction": {"rois": 1, "roi_classes": 3},
    }.get(key, {})
    cfg = {key: _MXA_VALUES[key], **needs}
    model = timm.create_model("efficientvit_ml_m0", img_size=64, mxa_cfg=cfg).eval()
    again = mxa.load_model(_saved(model, via, tmp_path))
    assert again.mxa_cfg == cfg
    block = next(iter(mxa.mxa_blocks(again).values()))
    assert getattr(block, key, getattr(block.roi, key, None)) in (cfg[key], None)
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(again(x), model(x))
