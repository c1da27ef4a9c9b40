"""Boxes without box labels: occlusion of a trained classifier (mxa.viz.cam), and training on them
(``--box-file``)."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
import torch
import torch.nn.functional as F

import mxa
from mxa.cli import main
from mxa.data.chexpert import read_box_file
from mxa.data.combine import build_datasets
from mxa.data.labels import CHEXPERT_LABELS
from mxa.train.config import ConfigError, TrainConfig
from mxa.train.loop import train
from mxa.train.setup import _use_box_file
from mxa.train.state import model_spec
from mxa.viz.cam import _plateau_centres, occlusion_boxes, occlusion_map

SQUARE = (20, 32, 36, 48)  # rows 20-31, columns 36-47 of a 64 x 64 image
SQUARE_BOX = torch.tensor([36 / 64, 20 / 64, 48 / 64, 32 / 64])


class TextureModel(torch.nn.Module):
    """Label 0's logit grows with the image's fine texture (what a blur removes), label 1's falls with it,
    label 2's ignores the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).pow(2).mean((1, 2, 3)) * 200
        return torch.stack([energy - 2, 2 - energy, torch.zeros_like(energy)], 1)


def _textured(n: int = 2) -> torch.Tensor:
    x = torch.zeros(n, 1, 64, 64)
    y0, y1, x0, x1 = SQUARE
    checks = (torch.arange(y1 - y0)[:, None] + torch.arange(x1 - x0)[None, :]) % 2
    x[:, 0, y0:y1, x0:x1] = checks.float()
    return x


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (torch.minimum(a[2:], b[2:]) - torch.maximum(a[:2], b[:2])).clamp(min=0).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def test_occlusion_map_is_high_where_the_evidence_is() -> None:
    drop = occlusion_map(TextureModel(), _textured(1), torch.tensor([0]), patch=0.125, stride=0.0625)
    y0, y1, x0, x1 = SQUARE
    assert drop.shape == (1, 64, 64)
    inside, outside = drop[0, y0:y1, x0:x1], drop[0].clone()
    outside[y0 - 8 : y1 + 8, x0 - 8 : x1 + 8] = 0  # beyond a window's reach of the square
    assert float(inside.min()) > 0.05 and float(outside.abs().max()) < 1e-4  # rounding only, away from it


def test_occlusion_map_batching_and_around_change_nothing() -> None:
    """The oracle: one window per forward pass, and every window (a reach over the whole image)."""
    model, x, labels = TextureModel(), torch.rand(2, 1, 32, 32), torch.tensor([0, 1])
    full = occlusion_map(model, x, labels, patch=0.25, stride=0.125)
    one_by_one = occlusion_map(model, x, labels, patch=0.25, stride=0.125, batch_size=1)
    everywhere = occlusion_map(
        model, x, labels, patch=0.25, stride=0.125, around=torch.full((2, 2), 0.5), reach=1.0
    )
    torch.testing.assert_close(one_by_one, full)
    torch.testing.assert_close(everywhere, full)
    near = occlusion_map(model, x, labels, patch=0.25, stride=0.125, around=torch.zeros(2, 2), reach=0.2)
    assert bool((near[:, 24:, 24:] == 0).all())  # no window ran far from the corner


def test_occlusion_boxes_fit_the_evidence_and_abstain_without_it() -> None:
    boxes = occlusion_boxes(TextureModel(), _textured(3), torch.tensor([0, 1, 2]))
    assert _iou(boxes[0], SQUARE_BOX) > 0.5
    assert bool(boxes[1:].isnan().all())  # hiding raises label 1's probability; label 2 ignores the image


def test_the_fine_look_is_centred_on_the_highest_plateau() -> None:
    """Not on its first pixel: a coarse map is constant on rectangles, and its top-left corner is up to a
    stride off the place. A second, lower plateau and a tie later in raster order do not move it."""
    maps = torch.zeros(2, 20, 40)
    maps[0, 4:10, 8:16] = 1.0  # rows 4-9, columns 8-15: centre (12, 7)
    maps[0, 12:20, 0:40] = 0.5
    maps[1, 0:2, 30:40] = 2.0  # at the top-right corner: centre (35, 1)
    maps[1, 10:12, 0:4] = 2.0  # the same height, later in raster order
    expected = torch.tensor([[12 / 40, 7 / 20], [35 / 40, 1 / 20]])
    torch.testing.assert_close(_plateau_centres(maps), expected)


class GradedTextureModel(torch.nn.Module):
    """Label 0's logit grows with the image's fine texture, without saturating for a large textured square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).pow(2).mean((1, 2, 3)) * 40
        return torch.stack([energy - 2, -energy], 1)


def test_a_large_finding_is_boxed_to_its_far_edges() -> None:
    """The fine look reaches 0.2 of the side around the coarse peak: centred on the peak plateau's first
    pixel it missed the far (bottom-right) edges of findings of side 0.4 (IoU 0.48 and 0.56 here)."""
    for y0, y1, x0, x1 in ((16, 42, 30, 56), (10, 36, 10, 36)):
        x = torch.zeros(1, 1, 64, 64)
        x[0, 0, y0:y1, x0:x1] = ((torch.arange(y1 - y0)[:, None] + torch.arange(x1 - x0)) % 2).float()
        box = occlusion_boxes(GradedTextureModel(), x, torch.tensor([0]), min_drop=0.001)[0]
        assert _iou(box, torch.tensor([x0, y0, x1, y1]) / 64) > 0.6


def test_occlusion_map_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="one label per image"):
        occlusion_map(TextureModel(), torch.rand(2, 1, 16, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match="stride <= patch"):
        occlusion_map(TextureModel(), torch.rand(1, 1, 16, 16), torch.tensor([0]), patch=0.1, stride=0.2)
    with pytest.raises(ValueError, match="min_drop must be in"):
        occlusion_boxes(TextureModel(), torch.rand(1, 1, 16, 16), torch.tensor([0]), min_drop=0.0)


def _small_train_set():
    model = model_spec(TrainConfig(model="efficientvit_ml_m0", img_size=32)).build()
    return build_datasets("phantom-small", model, train_samples=12, val_samples=4, seed=0)[0]


def test_box_file_replaces_the_data_boxes(tmp_path) -> None:
    ds = _small_train_set()
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({ds.ids[3]: {"Lung Lesion": [0.1, 0.2, 0.3, 0.4]}, "elsewhere": {}}))
    _use_box_file(ds, str(path))
    col = CHEXPERT_LABELS.index("Lung Lesion")
    torch.testing.assert_close(ds[3][4][col], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert int((~ds[3][4].isnan().any(1)).sum()) == 1  # the data's own box of image 3 is gone
    assert all(bool(ds[i][4].isnan().all()) for i in range(12) if i != 3)  # none where the file has none
    path.write_text(json.dumps({"phantom-small-9-0": {"Lung Lesion": [0.1, 0.2, 0.3, 0.4]}}))
    with pytest.raises(ConfigError, match="its keys must be the images' ids"):
        _use_box_file(_small_train_set(), str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        _use_box_file(_small_train_set(), str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="box_file .* box_loss is 0"):
        TrainConfig(box_file=str(path))


def test_a_run_trains_on_a_box_file(tmp_path, caplog) -> None:
    ids = [f"phantom-small-0-{i}" for i in range(16)]
    boxes = {i: {"Lung Lesion": [0.25, 0.25, 0.5, 0.5]} for i in [*ids[::2], "phantom-small-1-0"]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    cfg = TrainConfig(
        data="phantom-small", train_samples=16, val_samples=8, model="efficientvit_ml_m0", img_size=64,
        epochs=1, batch_size=8, ema_decay=0.0, warmup_epochs=0, progress=False, mxa_rois=2, roi_mil=1.0,
        box_loss=1.0, box_file=str(tmp_path / "boxes.json"), output=str(tmp_path / "r"),
    )  # fmt: skip
    with caplog.at_level("INFO"):
        train(cfg)
    assert "box labels for 8 of 16 training images" in caplog.text  # the file's, not the data's (~13)
    assert "lists 1 image(s) that are not among the 16 images" in caplog.text
    model = mxa.load_model(tmp_path / "r" / "last.pt")
    assert all(b.rois == 2 for b in model.mxa_blocks().values())


def test_occlusion_boxes_command_boxes_the_runs_training_images(tmp_path, capsys) -> None:
    cfg = TrainConfig(
        data="phantom-small", train_samples=12, val_samples=4, model="efficientvit_ml_m0", img_size=64,
        epochs=1, batch_size=6, ema_decay=0.0, warmup_epochs=0, progress=False, mxa_rois=2, roi_mil=1.0,
        seed=3, output=str(tmp_path / "labels"),
    )  # fmt: skip
    train(cfg)
    out = tmp_path / "my boxes.json"  # a space: the printed command quotes it
    args = ["occlusion-boxes", "--checkpoint", str(tmp_path / "labels" / "last.pt"), "--output", str(out)]
    assert main([*args, "--min-drop", "1e-6"]) == 0
    printed = capsys.readouterr().out
    assert "training images ->" in printed
    command = shlex.split(printed.splitlines()[-1].removeprefix("train on them: ").removesuffix(" ..."))
    assert command[command.index("--box-file") + 1] == str(out)  # the run's images, the file, as they read
    assert command[command.index("--seed") + 1] == "3" and "None" not in command
    table = json.loads(out.read_text())
    assert table and all(k.startswith("phantom-small-3-") for k in table)  # the run's images (seed 3)
    ds = build_datasets(
        "phantom-small",
        mxa.load_model(tmp_path / "labels" / "last.pt"),
        train_samples=12,
        val_samples=1,
        seed=3,
    )[0]
    assert set(table) <= set(ds.ids)  # the run's 12 training images, not the default 2000
    boxes = read_box_file(out, ds.ids)
    boxed = ~boxes.isnan().any(2)  # (12, 14)
    has = torch.stack([(ds[i][2] > 0) & (torch.arange(14) != 0) for i in range(12)])
    assert bool(boxed.any()) and not bool((boxed & ~has).any())  # boxes only for labels the images have
    assert main(args) == 2  # an existing output is not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "not-a-checkpoint.pt").write_bytes(b"junk")
    bad = [
        "occlusion-boxes",
        "--checkpoint",
        str(tmp_path / "not-a-checkpoint.pt"),
        "--output",
        str(tmp_path / "b2.json"),
    ]
    assert main(bad) == 2
    assert "checkpoint of `mxa train`" in capsys.readouterr().err
    retrain = dataclasses.replace(cfg, box_loss=1.0, box_file=str(out), output=str(tmp_path / "boxed"))
    train(retrain)
    assert (tmp_path / "boxed" / "last.pt").is_file()
