"""Grad-CAM (pytorch-grad-cam) beside the MXA boxes: the library call, the agreement number, the commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import mxa  # noqa: F401  (registers the models)
from mxa.files.checkpoint import save_checkpoint

pytest.importorskip("pytorch_grad_cam")

from mxa.viz.cam import cam_box_agreement, gradcam, resolve_label


@pytest.mark.parametrize("with_mxa", [True, False])
def test_gradcam_with_and_without_mxa(with_mxa: bool) -> None:
    torch.manual_seed(0)
    model = timm.create_model("efficientvit_ml_m0", img_size=64, mxa=with_mxa).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cam = gradcam(model, torch.randn(2, 1, 64, 64), [0, 5], stage=0)
    assert cam.shape == (2, 64, 64) and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert bool(torch.isfinite(cam).all()) and float(cam.max()) > 0.5  # scaled to its maximum
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="stages 0..2"):
        gradcam(model, torch.randn(1, 1, 64, 64), 0, stage=5)


def test_cam_box_agreement_hand_computed() -> None:
    cam = torch.zeros(4, 4)
    cam[:2, :2] = 1.0  # all the mass in the top-left quarter
    a = cam_box_agreement(cam, torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert a == {"cam_in_box": 1.0, "box_area": 0.25}
    b = cam_box_agreement(cam, torch.tensor([0.5, 0.0, 1.0, 1.0]))
    assert b["cam_in_box"] == 0.0 and b["box_area"] == 0.5
    assert cam_box_agreement(torch.ones(4, 4), torch.tensor([0.0, 0.0, 0.5, 1.0]))["cam_in_box"] == 0.5


def test_resolve_label() -> None:
    labels = ["No Finding", "Lung Opacity", "Edema"]
    assert resolve_label("lung_opacity", labels) == 1 and resolve_label("EDEMA", labels) == 2
    assert resolve_label("top", labels, torch.tensor([0.1, 0.2, 0.7])) == 2
    with pytest.raises(ValueError, match="one of: No Finding"):
        resolve_label("Fracture", labels)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, with_mxa in (("mxa", True), ("baseline", False)):
        torch.manual_seed(0)
        m = timm.create_model("efficientvit_ml_m0", img_size=64, mxa=with_mxa)
        kw = {"img_size": 64, "mxa": with_mxa}
        path = tmp_path_factory.mktemp(name) / "m.pt"
        out[name] = save_checkpoint(
            {"model_name": "efficientvit_ml_m0", "model_kwargs": kw, "model": m.state_dict()}, path
        )
    return out


def test_cli_viz_gradcam_and_predict_heatmap(
    ckpts: dict[str, Path], tmp_path: Path, shared_cxr: Path
) -> None:
    from mxa.cli import main

    img = str(shared_cxr / "00000001_000.png")
    out = tmp_path / "viz"
    args = ["viz", img, "--checkpoint", str(ckpts["mxa"]), "--baseline", str(ckpts["baseline"])]
    assert main([*args, "--gradcam", "Cardiomegaly", "--cam-stage", "0", "--output", str(out)]) == 0
    assert (out / "00000001_000_gradcam_Cardiomegaly.png").stat().st_size > 10_000
    assert (out / "baseline" / "00000001_000_gradcam_Cardiomegaly.png").is_file()
    assert (out / "00000001_000_roi.png").is_file()  # the existing pictures are still drawn
    assert main([*args, "--gradcam", "Fracturez", "--output", str(out)]) == 2  # unknown label: one error line
    heat = tmp_path / "heat"
    csv_out = tmp_path / "p.csv"
    argv = [
        "predict",
        img,
        "--checkpoint",
        str(ckpts["baseline"]),
        "--out",
        str(csv_out),
        "--heatmap",
        str(heat),
    ]
    assert main([*argv, "--cam-stage", "0"]) == 0
    pngs = list(heat.glob("00000001_000_gradcam_*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
