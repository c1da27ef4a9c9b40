from __future__ import annotations

import json

import pytest
import timm
import torch

import mxa
from mxa.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=64, mxa_cfg=dict(init_scale=0.3))
    m.train()
    for _ in range(2):  # non-trivial BN statistics, so fusion matters
        m(torch.randn(4, 1, 64, 64))
    return m.eval()


def test_onnx_dynamo_opset18_dynamic_batch_with_rois(model, tmp_path) -> None:
    path = mxa.export_onnx(model, tmp_path / "m.onnx", opset=18, with_rois=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "rois"]
    x = torch.randn(5, 1, 64, 64)
    logits, rois = sess.run(None, {"x": x.numpy()})
    ref, boxes = model.forward_with_rois(x)
    assert logits.shape == (5, 14) and rois.shape == (5, len(boxes), 4)
    torch.testing.assert_close(torch.from_numpy(logits), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        torch.from_numpy(rois), torch.stack(list(boxes.values()), 1), atol=1e-5, rtol=0
    )


def test_onnx_of_a_label_roi_model_gives_its_boxes_and_labels(tmp_path) -> None:
    """The block `mxa train` builds: logits, every block's R boxes and their labels, as the eager model."""
    torch.manual_seed(0)
    model = timm.create_model(
        "efficientvit_ml_m0", img_size=64, mxa_cfg=dict(rois=2, roi_classes=14, roi_skip=[0], init_scale=0.3)
    ).eval()
    path = mxa.export_onnx(model, tmp_path / "r.onnx", opset=18, with_rois=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "rois", "roi_labels"]
    x = torch.randn(3, 1, 64, 64)
    logits, rois, labels = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    seen = mxa.forward_rois(model, x)
    ref = model(x)
    torch.testing.assert_close(torch.from_numpy(logits), ref, atol=1e-4, rtol=0)
    names = list(model.mxa_blocks())
    want_boxes = torch.cat([seen.boxes[k] for k in names], 1)  # (B, blocks * R, 4)
    want_labels = torch.cat([seen.labels[k] for k in names], 1)
    assert rois.shape == tuple(want_boxes.shape) and labels.shape == tuple(want_labels.shape)
    torch.testing.assert_close(torch.from_numpy(rois), want_boxes, atol=1e-5, rtol=0)
    assert torch.equal(torch.from_numpy(labels).long(), want_labels.long())


def test_onnx_torchscript_opset20(model, tmp_path, caplog) -> None:
    with caplog.at_level("INFO", logger="mxa"):
        path = mxa.export_onnx(model, tmp_path / "t.onnx", opset=20)
    assert "max |diff|" in caplog.text  # the library logs; the CLI shows the log
    from mxa.files.export import verify_onnx

    assert verify_onnx(path, model, batch_sizes=(1, 7)) <= 1e-4


def test_onnx_bad_opsets(tmp_path) -> None:
    # blocks fixed to the grid_sample crop need ONNX GridSample (opset >= 16), and the error says so
    fixed = timm.create_model(
        "efficientvit_ml_m0", img_size=64, mxa_cfg=dict(crop_method="grid_sample")
    ).eval()
    with pytest.raises(ValueError, match="opset 13 has no GridSample.*crop_method='separable'"):
        mxa.export_onnx(fixed, tmp_path / "x.onnx", opset=13)
    with pytest.raises(ValueError, match="below opset 20"):
        mxa.export_onnx(fixed, tmp_path / "x.onnx", opset=18, exporter="torchscript")
    with pytest.raises(ValueError, match="opset >= 13"):
        mxa.export_onnx(fixed, tmp_path / "x.onnx", opset=12)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_separable_crop_low_opsets_parity(model, tmp_path, opset: int) -> None:
    onnx = pytest.importorskip("onnx")
    path = mxa.export_onnx(model, tmp_path / f"s{opset}.onnx", opset=opset, with_rois=True)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GridSample" not in ops and "MatMul" in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 64, 64)
    logits, rois = sess.run(None, {"x": x.numpy()})
    ref, boxes = model.forward_with_rois(x)  # the eager model crops with grid_sample on the CPU
    torch.testing.assert_close(torch.from_numpy(logits), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        torch.from_numpy(rois), torch.stack(list(boxes.values()), 1), atol=1e-5, rtol=0
    )


def test_safetensors_roundtrip_through_timm(model, tmp_path) -> None:
    path = mxa.export_safetensors(model, tmp_path / "w" / "model.safetensors")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert cfg["architecture"] == "efficientvit_ml_m0" and cfg["model_kwargs"]["img_size"] == 64
    again = mxa.load_exported(path)
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(again(x), model(x))
    # the plain timm route works too
    same = timm.create_model(
        cfg["architecture"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        **cfg["model_kwargs"],
    )
    torch.testing.assert_close(same.eval()(x), model(x))


def _export_m0(*args: str) -> int:
    return main(["export", "--model", "efficientvit_ml_m0", "--img-size", "64", *args])


def test_cli_export(tmp_path) -> None:
    out = tmp_path / "m.safetensors"
    assert _export_m0("--format", "safetensors", "--output", str(out)) == 0
    assert out.is_file()
    out = tmp_path / "m.onnx"
    assert _export_m0("--opset", "20", "--output", str(out)) == 0
    assert out.stat().st_size > 1_000_000
