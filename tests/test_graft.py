"""MXA grafted into other backbones: mxa.add_mxa, the registered *_mxa models, forward_with_rois."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer
from torch import nn

import mxa
from mxa.files.spec import ModelSpec
from mxa.models import GRAFTED_MODEL_NAMES
from mxa.models.graft import known_blocks

IMG = 64


def _tiny_swin() -> nn.Module:
    return SwinTransformer(
        img_size=IMG, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1, 1), num_heads=(1, 1, 1),
        in_chans=1, num_classes=14,
    )  # fmt: skip


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, in_chans=1, num_classes=14, **kw)


def _xrv_densenet() -> nn.Module:
    xrv = pytest.importorskip("torchxrayvision")
    return xrv.models.DenseNet(weights=None)


# family -> (factory, expected number of grafted blocks with the default `where`)
FAMILIES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "resnet_basic": (_timm("resnet18"), 4),
    "resnet_bottleneck": (_timm("resnet26"), 4),
    "densenet": (_timm("densenet121"), 4),
    "convnext": (_timm("convnext_atto"), 4),
    "efficientnet": (_timm("efficientnet_b0"), 5),
    "mobilenetv3": (_timm("mobilenetv3_small_050"), 4),
    "vit": (
        _timm("deit_tiny_patch16_224", img_size=IMG, depth=3),
        2,
    ),  # the last block cannot reach the cls token
    "swin": (_tiny_swin, 3),
    "efficientvit_mit": (_timm("efficientvit_b0"), 4),
    "efficientvit_msra": (_timm("efficientvit_m0", img_size=IMG), 6),
    "efficientvit_ml": (lambda: timm.create_model("efficientvit_ml_m0", img_size=IMG, mxa=False), 6),
    "xrv_densenet": (_xrv_densenet, 4),
}


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(3)  # same dropout / drop-path draws for both models
    return model(x)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_graft_family(family: str) -> None:
    """Grafts; exact zero-init equality (train and eval); one step reaches MXA; boxes; parent weights load."""
    factory, n_blocks = FAMILIES[family]
    torch.manual_seed(0)
    original = factory()
    model = mxa.add_mxa(copy.deepcopy(original))
    x = torch.randn(2, 1, IMG, IMG)
    for train in (True, False):
        original.train(train)
        model.train(train)
        assert torch.equal(_outputs(original, x), _outputs(model, x)), f"{family} train={train}"

    missing, unexpected = model.load_state_dict(original.state_dict(), strict=False)
    assert not unexpected and missing and all(".mxa." in k for k in missing)
    assert set(missing) == {k for k in model.state_dict() if ".mxa." in k}
    assert set(original.state_dict()) <= set(model.state_dict())  # names unchanged

    model.train()
    logits, boxes = mxa.forward_with_rois(model, x)
    assert set(boxes) == set(model.mxa_blocks()) and len(boxes) == n_blocks
    for b in boxes.values():
        assert b.shape == (2, 4) and bool(((b >= 0) & (b <= 1)).all())
        assert bool((b[:, 2:] > b[:, :2]).all())
    target = torch.randint(0, 2, logits.shape).float()
    F.binary_cross_entropy_with_logits(logits, target).backward()
    mxa_params = {n: p for n, p in model.named_parameters() if ".mxa." in n}
    # A box on a 1x1 map (MSRA's last stage at 64 px) crops the same pixel wherever it is: no box gradient.
    assert all(p.grad is not None for n, p in mxa_params.items() if ".roi." not in n)
    assert any(p.grad is not None for n, p in mxa_params.items() if ".roi." in n)
    assert all(bool(torch.isfinite(p.grad).all()) for p in mxa_params.values() if p.grad is not None)
    scales = [p.grad for n, p in mxa_params.items() if n.endswith("mxa.scale")]
    assert len(scales) == n_blocks and all(float(g.abs().sum()) > 0 for g in scales)
    # the method bound on the model gives the same boxes as the function
    model.eval()
    with torch.no_grad():
        _, b1 = model.forward_with_rois(x)
        _, b2 = mxa.forward_with_rois(model, x)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)


def test_where_selects_blocks_by_stage_pattern_and_all() -> None:
    make = _timm("resnet18")
    assert list(mxa.add_mxa(make(), where="all").mxa_blocks()) == [
        f"layer{i}.{j}" for i in (1, 2, 3, 4) for j in (0, 1)
    ]
    assert list(mxa.add_mxa(make(), where=3).mxa_blocks()) == ["layer4.1"]  # a stage: its default blocks
    assert list(mxa.add_mxa(make(), where=["layer2.*", 0]).mxa_blocks()) == [
        "layer1.1",
        "layer2.0",
        "layer2.1",
    ]
    model = mxa.add_mxa(make(), where="layer3.0", reduction=4)
    assert model.mxa_stages == (2,) and model.mxa_cfg == {"reduction": 4}
    assert model.layer3[0].downsample.mxa.cbam.channel.fc1.out_channels == 256 // 4
    with pytest.raises(ValueError, match="matches no block"):
        mxa.add_mxa(make(), where="blocks.*")
    with pytest.raises(ValueError, match="no stage 7"):
        mxa.add_mxa(make(), where=7)


def test_unknown_model_and_double_graft_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"knows no block of Sequential.*resnet.*register_block"):
        mxa.add_mxa(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU()))
    model = mxa.add_mxa(_timm("resnet18")())
    with pytest.raises(ValueError, match="already has an MXA block"):
        mxa.add_mxa(model)
    with pytest.raises(ValueError, match="already has an MXA block"):
        mxa.add_mxa(timm.create_model("efficientvit_ml_m0", img_size=IMG))
    assert "resnet" in known_blocks() and "vit" in known_blocks()


class MyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def test_register_block_teaches_a_new_block_type() -> None:
    mxa.register_block(MyBlock, "residual", family="mine", stage_pattern=r"^(\d+)")
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), MyBlock(8), MyBlock(8))
    ref = copy.deepcopy(net)
    mxa.add_mxa(net)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(net(x), ref(x)) and list(net.mxa_blocks()) == ["1", "2"]
    with pytest.raises(ValueError, match="graft must be"):
        mxa.register_block(MyBlock, "nope", family="mine")


def test_torchxrayvision_resnet_from_a_local_weights_file(tmp_path: Path, monkeypatch) -> None:
    """The teacher as a student: xrv's ResNet (offline, its weights from a local file) fine-tunes with MXA."""
    xrv = pytest.importorskip("torchxrayvision")
    import torchvision

    tv = torchvision.models.resnet50(num_classes=18, weights=None)
    tv.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    torch.save(tv.state_dict(), tmp_path / "resnet50.pt")
    monkeypatch.setattr(xrv.models, "get_weights", lambda *a, **k: str(tmp_path / "resnet50.pt"))
    model = xrv.models.ResNet(weights="resnet50-res512-all")
    del model.input_resolution  # run at 64 px in the test (it would resize to 512)
    model.op_threshs = None  # raw logits
    ref = copy.deepcopy(model)
    mxa.add_mxa(model)
    x = torch.randn(2, 1, IMG, IMG)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    assert list(model.mxa_blocks()) == [
        "model.layer1.2",
        "model.layer2.3",
        "model.layer3.5",
        "model.layer4.2",
    ]
    logits, boxes = model.train().forward_with_rois(x)
    logits.sum().backward()
    assert len(boxes) == 4 and all(p.grad is not None for n, p in model.named_parameters() if ".mxa." in n)


def test_family_features_keep_working() -> None:
    """Gradient checkpointing, channels_last, bf16 autocast, forward_intermediates, BN fusion (MSRA)."""
    x = torch.randn(2, 1, IMG, IMG)
    model = mxa.add_mxa(_timm("resnet18")(), where="all", init_scale=0.5)
    model.set_grad_checkpointing(True)
    model.train()
    model(x).sum().backward()  # the recomputation runs in the same (train) mode
    model.eval()
    with torch.no_grad():
        ref = model(x)
    assert all(p.grad is not None for n, p in model.named_parameters() if ".mxa." in n)
    with torch.no_grad():
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert bool(torch.isfinite(model(x)).all())

    vit = mxa.add_mxa(_timm("deit_tiny_patch16_224", img_size=IMG, depth=2)()).eval()
    with torch.no_grad():
        final, inter = vit.forward_intermediates(x)
    assert len(inter) == 2 and inter[0].shape[-2:] == (IMG // 16, IMG // 16)

    msra = mxa.add_mxa(_timm("efficientvit_m0", img_size=IMG)(), init_scale=0.5).eval()
    with torch.no_grad():
        fused = timm.utils.reparameterize_model(copy.deepcopy(msra))
        torch.testing.assert_close(fused(x), msra(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", GRAFTED_MODEL_NAMES)
def test_registered_grafted_models_contract(name: str) -> None:
    """timm's contract: forward, features_only, pretrained cfg; mxa=False is the plain parent."""
    model = timm.create_model(name, img_size=IMG).eval()
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and cfg["num_classes"] == 14 and cfg["input_size"] == (1, 224, 224)
    assert cfg["hf_hub_id"].startswith("timm/") and model.get_submodule(cfg["first_conv"]).in_channels == 1
    assert model.get_submodule(cfg["classifier"]).out_features == 14 and len(model.label_names) == 14
    x = torch.randn(2, 1, IMG, IMG)
    with torch.no_grad():
        logits, boxes = mxa.forward_with_rois(model, x)
    assert logits.shape == (2, 14) and len(boxes) == len(model.mxa_blocks()) >= 3
    parent = timm.create_model(name, img_size=IMG, mxa=False)
    assert not hasattr(parent, "forward_with_rois")
    n_model = sum(p.numel() for p in model.parameters())
    n_parent = sum(p.numel() for p in parent.parameters())
    assert 1.0 < n_model / n_parent <= 1.03  # the +3% parameter goal
    spec = ModelSpec.for_training(name, IMG, mxa=False)
    assert spec.kwargs["mxa"] is False
    assert ModelSpec.from_model(model).kwargs["mxa_stages"] == list(model.mxa_stages)


def test_registered_features_and_local_pretrained_file(tmp_path: Path) -> None:
    feats = timm.create_model("densenet121_mxa", features_only=True)
    with torch.no_grad():
        out = feats(torch.randn(1, 1, IMG, IMG))
    assert [o.shape[1] for o in out] == [64, 256, 512, 1024, 1024] and len(mxa.mxa_blocks(feats)) == 4
    # the parent's ImageNet checkpoint (3 channels, 1000 classes), offline through timm's machinery
    parent = timm.create_model("densenet121")
    torch.save(parent.state_dict(), tmp_path / "densenet121.pth")
    model = timm.create_model(
        "densenet121_mxa",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "densenet121.pth")),
    )
    sd, psd = model.state_dict(), parent.state_dict()
    torch.testing.assert_close(sd["features.conv0.weight"], psd["features.conv0.weight"].sum(1, keepdim=True))
    assert torch.equal(
        sd["features.denseblock4.denselayer16.conv2.weight"],
        psd["features.denseblock4.denselayer16.conv2.weight"],
    )
    assert sd["classifier.weight"].shape == (14, 1024)


def test_ablate_runs_for_a_grafted_model(tmp_path: Path) -> None:
    from mxa.cli import main
    from mxa.files.checkpoint import load_checkpoint

    flags = (
        "ablate --data phantom --train-samples 8 --val-samples 8 --model densenet121_mxa --img-size 32 "
        "--epochs 1 --ema-decay 0 --warmup-epochs 0 --no-progress --batch-size 8 --seeds 1 --teacher-epochs 1"
    ).split()
    assert main([*flags, "--ablate-output", str(tmp_path / "ab"), "--json", str(tmp_path / "ab.json")]) == 0
    base = load_checkpoint(tmp_path / "ab" / "baseline" / "seed0" / "last.pt")
    with_mxa = load_checkpoint(tmp_path / "ab" / "mxa" / "seed0" / "last.pt")
    assert base["model_kwargs"]["mxa"] is False and with_mxa["model_kwargs"]["mxa"] is True
    assert not any(".mxa." in k for k in base["model"]) and any(".mxa." in k for k in with_mxa["model"])
    model = mxa.load_model(tmp_path / "ab" / "mxa" / "seed0" / "last.pt")
    assert len(model.mxa_blocks()) == 4


@pytest.mark.parametrize("name", ["resnet18"])  # one family keeps the suite fast; others checked by hand
def test_grafted_model_exports_to_onnx_and_compiles(name: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    model = timm.create_model(name, num_classes=14, in_chans=1)
    mxa.add_mxa(model)
    for blk in model.mxa_blocks().values():
        torch.nn.init.constant_(blk.scale, 0.3)  # MXA contributes, so parity tests it
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (1, 64, 64)}
    model.eval()
    mxa.export_onnx(model, tmp_path / "g.onnx", opset=17)  # verified against PyTorch inside (1e-4)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), atol=1e-5, rtol=0)
