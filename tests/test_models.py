from __future__ import annotations

import copy

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.utils import reparameterize_model

import mxa
from mxa.data import CHEXPERT_LABELS
from mxa.models import MODEL_NAMES, MultiLabelEfficientViT

SMALL = 64  # stage maps 4/2/1: fast, and still exercises every block


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registered_in_timm() -> None:
    names = timm.list_models("efficientvit_ml_*")
    assert names == list(MODEL_NAMES)
    assert set(timm.list_models("efficientvit_ml_*", pretrained=True)) == {
        f"{n}.r224_in1k" for n in MODEL_NAMES
    }


@pytest.mark.parametrize("size", range(6))
def test_all_sizes_forward_backward_and_match_timm(size: int) -> None:
    torch.manual_seed(size)
    base = timm.create_model(f"efficientvit_ml_m{size}", mxa=False, img_size=SMALL)
    ref = timm.create_model(f"efficientvit_m{size}", in_chans=1, num_classes=14, img_size=SMALL)
    assert _count(base) == _count(ref)
    assert {k: v.shape for k, v in base.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }

    model = timm.create_model(f"efficientvit_ml_m{size}", img_size=SMALL)
    assert 0 < _count(model) - _count(base) <= 0.02 * _count(base)
    x = torch.randn(2, 1, SMALL, SMALL)
    y = model(x)
    assert y.shape == (2, 14)
    y.sum().backward()
    # every parameter gets a gradient, except the MXA parts behind their zero-initialised scale
    for name, p in model.named_parameters():
        if ".mxa." in name and not name.endswith(".scale"):
            continue
        assert p.grad is not None, name


def test_defaults_and_pretrained_cfg() -> None:
    m = timm.create_model("efficientvit_ml_m0")
    cfg = m.pretrained_cfg
    assert m.in_chans == 1 and m.num_classes == 14 and m.input_hw == (224, 224)
    assert cfg["input_size"] == (1, 224, 224)
    assert tuple(cfg["label_names"]) == CHEXPERT_LABELS
    assert len(cfg["mean"]) == len(cfg["std"]) == 1
    assert m.get_submodule(cfg["first_conv"]).in_channels == 1
    assert m.get_submodule(cfg["classifier"]).out_features == 14
    assert m.label_names == CHEXPERT_LABELS


def test_logits_not_probabilities() -> None:
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL)
    with torch.no_grad():
        m.head.linear.weight.mul_(100)
    y = m.eval()(torch.randn(4, 1, SMALL, SMALL))
    assert (y < 0).any() or (y > 1).any()


def test_zero_init_equals_baseline() -> None:
    torch.manual_seed(0)
    base = timm.create_model("efficientvit_ml_m1", mxa=False, img_size=SMALL)
    model = timm.create_model("efficientvit_ml_m1", img_size=SMALL)
    missing = model.load_state_dict(base.state_dict(), strict=False)
    assert missing.unexpected_keys == []
    assert missing.missing_keys and all(".mxa." in k for k in missing.missing_keys)
    x = torch.randn(3, 1, SMALL, SMALL)
    base.eval(), model.eval()
    torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)


def test_attention_runs_once_per_block() -> None:
    model = timm.create_model("efficientvit_ml_m0", img_size=SMALL)
    calls = []
    for blk in model.mxa_blocks():
        attn = model.get_submodule(blk).mixer.m.attn
        attn.register_forward_hook(lambda *a: calls.append(1))
    model(torch.randn(2, 1, SMALL, SMALL))
    # one call per window group per block: with 1 window per map, exactly one per block
    assert len(calls) == len(model.mxa_blocks())


def test_mxa_stages_selection() -> None:
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_stages=[2])
    assert all(k.startswith("stages.2.") for k in m.mxa_blocks())
    assert len(m.mxa_blocks()) == 3
    assert timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa=False).mxa_blocks() == {}
    with pytest.raises(ValueError, match="out of range"):
        timm.create_model("efficientvit_ml_m0", mxa_stages=[3])


@pytest.mark.parametrize(
    ("per_stage", "want"),
    [
        ("first", ["stages.0.blocks.0", "stages.1.blocks.0", "stages.2.blocks.0"]),
        ("last", ["stages.0.blocks.0", "stages.1.blocks.1", "stages.2.blocks.2"]),
    ],
)
def test_mxa_per_stage_picks_one_block_per_stage(per_stage: str, want: list[str]) -> None:
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_per_stage=per_stage)
    assert list(m.mxa_blocks()) == want and m.mxa_per_stage == per_stage
    # with a subset of stages: one block of each of those
    some = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_stages=[2], mxa_per_stage=per_stage)
    assert list(some.mxa_blocks()) == want[2:]
    with pytest.raises(ValueError, match="mxa_per_stage must be one of"):
        timm.create_model("efficientvit_ml_m0", mxa_per_stage="middle")


def test_forward_with_rois() -> None:
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL).eval()
    x = torch.randn(3, 1, SMALL, SMALL)
    logits, boxes = m.forward_with_rois(x)
    torch.testing.assert_close(logits, m(x))
    assert set(boxes) == set(m.mxa_blocks())
    for b in boxes.values():
        assert b.shape == (3, 4)
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 1).all() and (b[:, 2:] > b[:, :2]).all()
    # hooks are removed afterwards
    assert all(not blk.roi._forward_hooks for blk in m.mxa_blocks().values())


def _timm_weights(tmp_path, size=0, img_size=224):
    torch.manual_seed(123)
    src = timm.create_model(f"efficientvit_m{size}", img_size=img_size)  # ImageNet-shaped: 3 ch, 1000 classes
    with torch.no_grad():
        for p in src.parameters():
            p.normal_(std=0.05)
    path = tmp_path / "in1k.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    return src, path


def test_pretrained_from_local_file(tmp_path) -> None:
    src, path = _timm_weights(tmp_path)
    overlay = dict(file=str(path))
    model = timm.create_model("efficientvit_ml_m0", pretrained=True, pretrained_cfg_overlay=overlay)
    base = timm.create_model("efficientvit_ml_m0", pretrained=True, mxa=False, pretrained_cfg_overlay=overlay)
    sd, ssd = model.state_dict(), src.state_dict()
    # backbone copied, first conv summed over RGB, head fresh
    key = "stages.1.blocks.0.mixer.m.attn.qkvs.0.conv.weight"
    torch.testing.assert_close(sd[key], ssd[key])
    conv = "patch_embed.conv1.conv.weight"
    torch.testing.assert_close(sd[conv], ssd[conv].sum(1, keepdim=True))
    assert sd["head.linear.weight"].shape == (14, 192)
    # with MXA at zero, the pretrained MXA model computes exactly what the pretrained baseline computes
    with torch.no_grad():
        base.head.load_state_dict(model.head.state_dict())
    x = torch.randn(2, 1, 224, 224)
    torch.testing.assert_close(model.eval()(x), base.eval()(x), rtol=0, atol=0)


def test_pretrained_own_checkpoint_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL)
    path = tmp_path / "ml.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    m2 = timm.create_model(
        "efficientvit_ml_m0", img_size=SMALL, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    )
    for k, v in m.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v, msg=k)


def test_timm_model_api() -> None:
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL)
    x = torch.randn(2, 1, SMALL, SMALL)
    feats = m.forward_features(x)
    assert feats.shape == (2, 192, 1, 1)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 192)
    assert m.forward_head(feats).shape == (2, 14)
    assert m.get_classifier().out_features == 14
    m.reset_classifier(5)
    assert m(x).shape == (2, 5) and m.label_names is None
    m.reset_classifier(0)
    assert m(x).shape == (2, 192)
    final, inter = m.forward_intermediates(x)
    assert [t.shape[1] for t in inter] == [64, 128, 192] and final.shape == feats.shape
    assert all("attention_biases" in k for k in m.no_weight_decay())
    assert "stem" in m.group_matcher() and "blocks" in m.group_matcher()
    m.set_grad_checkpointing(True)
    m.train()
    m(x).sum().backward()


def test_features_only() -> None:
    fm = timm.create_model("efficientvit_ml_m0", features_only=True, img_size=128)
    outs = fm(torch.randn(2, 1, 128, 128))
    assert [o.shape[-1] for o in outs] == [8, 4, 2]
    assert fm.feature_info.reduction() == [16, 32, 64]


@pytest.mark.parametrize("img_size", [256, 320, 384, 512])
def test_other_image_sizes(img_size: int) -> None:
    m = timm.create_model("efficientvit_ml_m0", img_size=img_size)
    assert m(torch.randn(1, 1, img_size, img_size)).shape == (1, 14)


def test_three_channel_input() -> None:
    m = timm.create_model("efficientvit_ml_m0", in_chans=3, img_size=SMALL)
    assert m(torch.randn(2, 3, SMALL, SMALL)).shape == (2, 14)


def test_batch_size_one_trains() -> None:
    # 128 px: the last stage map is 2x2 (at 64 px it is 1x1, where any BatchNorm2d needs a batch of 2)
    m = timm.create_model("efficientvit_ml_m0", img_size=128).train()
    m(torch.randn(1, 1, 128, 128)).sum().backward()
    # timm's own head raises here
    ref = timm.create_model("efficientvit_m0", in_chans=1, num_classes=14, img_size=128).train()
    with pytest.raises(ValueError, match="more than 1 value"):
        ref(torch.randn(1, 1, 128, 128))


def test_reparameterize_keeps_outputs() -> None:
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_cfg=dict(init_scale=0.3))
    m.train()
    for _ in range(2):  # non-trivial BN running stats
        m(torch.randn(4, 1, SMALL, SMALL))
    m.eval()
    x = torch.randn(3, 1, SMALL, SMALL)
    fused = reparameterize_model(m)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fused.modules())
    torch.testing.assert_close(fused(x), m(x), atol=1e-4, rtol=1e-4)


def test_channels_last_and_bf16_autocast() -> None:
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_cfg=dict(init_scale=0.3)).eval()
    x = torch.randn(2, 1, SMALL, SMALL)
    ref = m(x)
    m_cl = m.to(memory_format=torch.channels_last)
    torch.testing.assert_close(m_cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-4, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, atol=0.15, rtol=0.1)


def test_torch_compile() -> None:
    torch._dynamo.reset()
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_cfg=dict(init_scale=0.3)).eval()
    x = torch.randn(2, 1, SMALL, SMALL)  # stage maps 4/2/1: the 1x1 crop path is compiled too
    compiled = torch.compile(m, backend="aot_eager")
    torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_fx_trace() -> None:
    from timm.models import GraphExtractNet, get_graph_node_names

    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL).eval()
    _, eval_nodes = get_graph_node_names(m)
    assert eval_nodes[-1] in ("head", "head.linear")
    net = GraphExtractNet(m, [eval_nodes[-1]])
    x = torch.randn(2, 1, SMALL, SMALL)
    out = net(x)
    torch.testing.assert_close(out[0] if isinstance(out, (list, tuple)) else out, m(x))


def test_no_stale_attention_biases() -> None:
    torch.manual_seed(0)
    model = timm.create_model("efficientvit_ml_m0", img_size=SMALL)
    with torch.no_grad():  # the attention output starts at zero (BN weight 0): make the biases matter
        for n, p in model.named_parameters():
            if "attn.proj" in n and n.endswith("bn.weight"):
                p.fill_(1.0)
    ema = copy.deepcopy(model).eval()  # an EMA copy lives in eval mode
    x = torch.randn(2, 1, SMALL, SMALL)
    before = ema(x)
    with torch.no_grad():  # what an EMA update does: change weights in place, stay in eval mode
        for n, p in ema.named_parameters():
            if "attention_biases" in n:
                p.add_(torch.randn_like(p))
    after = ema(x)
    fresh = copy.deepcopy(ema)
    fresh.train().eval()  # timm clears its cache on train(); a fresh evaluation is the truth
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh(x))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 3, SMALL, SMALL), "1-channel"),
        ((2, 1, 96, 96), "built for 64x64"),
        ((1, SMALL, SMALL), "image batch"),
    ],
)
def test_bad_input(shape, match) -> None:
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(*shape))


def test_public_class() -> None:
    assert mxa.MultiLabelEfficientViT is MultiLabelEfficientViT
    assert isinstance(timm.create_model("efficientvit_ml_m0", img_size=SMALL), MultiLabelEfficientViT)


def test_no_grad_inference_equals_autograd_path() -> None:
    # inference gates the MXA crop in place; at 64 px the last stage's maps are 1x1 (the crop shortcut)
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=SMALL, mxa_cfg=dict(init_scale=0.5)).eval()
    x = torch.randn(2, 1, SMALL, SMALL)
    with torch.no_grad():
        fast = m(x)
    torch.testing.assert_close(fast, m(x))
