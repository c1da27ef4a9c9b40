"""Input sanity: one clear warning per model for each common way of preparing X-rays wrongly, and none for
correctly prepared real X-rays, phantoms or random test batches."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import timm
import torch

import mxa  # noqa: F401  (registers the models)
from mxa.data import build_transforms, load_xray
from mxa.data.sanity import InputSanityWarning, input_problems, suppress_input_checks


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("efficientvit_ml_m0", img_size=64).eval()


def _caught(model: torch.nn.Module, *batches: torch.Tensor) -> list[str]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with torch.no_grad():
            for x in batches:
                model(x)
    return [str(m.message) for m in w if issubclass(m.category, InputSanityWarning)]


def _real_batch(model: torch.nn.Module, folder: Path) -> torch.Tensor:
    pytest.importorskip("pydicom")  # two of the samples are DICOM (the dicom extra)
    tf = build_transforms(model, train=False)
    files = sorted(f for f in folder.iterdir() if f.suffix in (".png", ".dcm"))
    return torch.stack([tf(load_xray(f)) for f in files])


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        (lambda g: g * 255, "0..255"),
        (lambda g: g * 2048 - 1024, "-1024, 1024"),
        (lambda g: g * 65535, "16-bit"),
        (lambda g: g, "never normalized"),
    ],
)
def test_warns_once_for_badly_scaled_input(model, scale, expected, shared_cxr) -> None:
    raw = torch.stack(
        [torch.nn.functional.interpolate(load_xray(shared_cxr / "00000001_000.png")[None], 64)[0]]
    )
    msgs = _caught(model, scale(raw), scale(raw), scale(raw))
    assert len(msgs) == 1 and expected in msgs[0] and "build_transforms" in msgs[0]


def test_constant_image_is_named(model) -> None:
    x = torch.randn(3, 1, 64, 64)
    x[1] = 0.7
    msgs = _caught(model, x)
    assert len(msgs) == 1 and "1 of 3 images are constant" in msgs[0] and "batch index 1" in msgs[0]


def test_three_repeated_channels_is_an_error_naming_the_fix(model) -> None:
    x = torch.randn(2, 1, 64, 64).repeat(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"3 identical channels.*x\[:, :1\]"):
        model(x)
    with pytest.raises(ValueError, match="3 channels"):  # different channels: the old message
        model(torch.randn(2, 3, 64, 64))


def test_no_warning_for_prepared_images(model, shared_cxr) -> None:
    from mxa.data.phantom import PhantomCXR

    real = _real_batch(model, shared_cxr)
    tf = build_transforms(model, train=False)
    ph = PhantomCXR(8, image_size=64, seed=0)
    phantoms = torch.stack(
        [tf(torch.as_tensor(ph.render(i)[0], dtype=torch.float32)[None]) for i in range(8)]
    )
    assert input_problems(real) == [] and input_problems(phantoms) == []
    assert _caught(model, real, phantoms, torch.randn(4, 1, 64, 64) * 1.5) == []


def test_training_mode_suppression_and_tracing_skip_the_check(model) -> None:
    bad = torch.rand(2, 1, 64, 64) * 255
    model.train()
    assert _caught(model, bad) == []
    model.eval()
    with suppress_input_checks():
        assert _caught(model, bad) == []
    from timm.models import GraphExtractNet, get_graph_node_names

    net = GraphExtractNet(model, [get_graph_node_names(model)[1][-1]])  # FX-traced: no data-dependent branch
    assert _caught(net, torch.randn(2, 1, 64, 64)) == []
    assert len(_caught(model, bad)) == 1


def test_predict_names_a_constant_file(model, tmp_path, caplog) -> None:
    from PIL import Image

    from mxa.predict import predict_files

    f = tmp_path / "blank.png"
    Image.new("L", (80, 80), 0).save(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputSanityWarning)  # the model-level warning is not repeated
        res = predict_files([f], tmp_path / "p.csv", model=model)
    assert res.constant_images == [f] and "blank.png: the image is constant" in caplog.text


def test_compiled_model_does_not_recompile_as_the_check_counts() -> None:
    # The check's counter changes with every eager call; a compiled model must not guard on it.
    from mxa.data.sanity import check_model_input

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pretrained_cfg = {"mean": (0.5,), "std": (0.25,)}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            check_model_input(self, x)
            return x * 2

    net = Net()
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(2, 1, 8, 8)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):  # the eager calls move the counter between the compiled ones
            compiled(x)
            net(x)
    assert net.__dict__["_mxa_input_check"]["checks"] == 4


def test_fake_cuda_inputs_are_skipped_on_any_machine() -> None:
    # shape propagation or non-strict export with fake CUDA inputs, on a machine without a GPU: no value
    # to read, and no CUDA call to make (asking whether a capture runs would need a driver)
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mxa.data.sanity import _skip

    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = torch.empty(2, 1, 8, 8, device="cuda")
    assert _skip(fake)
