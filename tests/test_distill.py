from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mxa import DistillationLoss, SoftKDLoss
from mxa.data import CHEXPERT_LABELS
from mxa.distill import (
    ModelTeacher,
    TeacherCache,
    XRVTeacher,
    build_teacher_cache,
    class_balanced_pos_weight,
    no_finding_logit,
    xrv_to_chexpert,
)

try:  # the loss tests are core (no extra); the teacher tests need torchxrayvision (the xrv extra)
    import torchxrayvision as xrv

    CHEX = xrv.models.model_urls["densenet121-res224-chex"]["labels"]
except ImportError:
    xrv, CHEX = None, []
needs_xrv = pytest.mark.skipif(xrv is None, reason="needs the xrv extra (torchxrayvision)")


def _direct_kd(s, t, T, mask=None, dynamic=True):
    """The issue's formula, written with loops."""
    b, c = s.shape
    total, n = 0.0, 0
    for j in range(c):
        if mask is not None and not mask[j]:
            continue
        p = [1 / (1 + math.exp(-t[i, j].item() / T)) for i in range(b)]
        w = 1 - sum(p) / b if dynamic else 1.0
        bce = 0.0
        for i in range(b):
            z = s[i, j].item() / T
            bce += -(
                p[i] * math.log(1 / (1 + math.exp(-z))) + (1 - p[i]) * math.log(1 - 1 / (1 + math.exp(-z)))
            )
        total += w * bce / b
        n += 1
    return total / n * T * T


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("dynamic", [True, False])
def test_soft_kd_matches_formula(T, dynamic) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    mask = torch.tensor([True, False, True, True])
    got = SoftKDLoss(T, dynamic)(s, t, mask)
    assert got.item() == pytest.approx(_direct_kd(s, t, T, mask, dynamic), rel=1e-10)
    got_all = SoftKDLoss(T, dynamic)(s, t)
    assert got_all.item() == pytest.approx(_direct_kd(s, t, T, None, dynamic), rel=1e-10)


def test_soft_kd_element_mask_equals_label_mask_when_constant() -> None:
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    m = torch.tensor([True, True, False, True, False])
    kd = SoftKDLoss()
    torch.testing.assert_close(kd(s, t, m), kd(s, t, m.expand(6, 5)))


def test_no_gradient_to_teacher() -> None:
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    SoftKDLoss()(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_distillation_alpha_zero_is_bce() -> None:
    s, y, t = torch.randn(8, 14), torch.randint(0, 2, (8, 14)).float(), torch.randn(8, 14)
    torch.testing.assert_close(DistillationLoss(alpha=0.0)(s, y, t), F.binary_cross_entropy_with_logits(s, y))
    torch.testing.assert_close(DistillationLoss(alpha=1.0)(s, y, t), SoftKDLoss()(s, t))
    mix = DistillationLoss(alpha=0.3, temperature=2.0)(s, y, t)
    torch.testing.assert_close(
        mix, 0.7 * F.binary_cross_entropy_with_logits(s, y) + 0.3 * SoftKDLoss(2.0)(s, t)
    )


def test_distillation_masks_and_pos_weight() -> None:
    s, y = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    tm = torch.tensor([[True, False, True]] * 4)
    pw = torch.tensor([2.0, 1.0, 3.0])
    got = DistillationLoss(alpha=0.0, pos_weight=pw)(s, y, torch.zeros(4, 3), target_mask=tm)
    ref = F.binary_cross_entropy_with_logits(s, y, pos_weight=pw, reduction="none")[tm].mean()
    torch.testing.assert_close(got, ref)
    # no teacher: the BCE alone
    torch.testing.assert_close(DistillationLoss(alpha=0.5)(s, y), F.binary_cross_entropy_with_logits(s, y))


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(min_value=0.0, max_value=100.0),
    T=st.floats(min_value=0.5, max_value=8.0),
    seed=st.integers(0, 2**16),
    saturate=st.booleans(),
)
def test_losses_stable_for_large_logits(scale, T, seed, saturate) -> None:
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(6, 14, generator=g) * scale).requires_grad_(True)
    t = torch.randn(6, 14, generator=g) * scale
    if saturate:  # teacher probabilities of exactly 0 and 1
        t = torch.where(t > 0, torch.full_like(t, float("inf")), torch.full_like(t, float("-inf")))
    y = torch.randint(0, 2, (6, 14), generator=g).float()
    loss = DistillationLoss(alpha=0.5, temperature=T)(s, y, t, teacher_mask=torch.rand(14, generator=g) > 0.3)
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_class_balanced_pos_weight() -> None:
    y = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1]]).float()
    w = class_balanced_pos_weight(y, max_weight=10.0)
    torch.testing.assert_close(w, torch.tensor([3.0, 10.0, 1.0]))
    m = torch.tensor([[True, True, True], [False, True, True], [True, True, True], [True, True, True]])
    torch.testing.assert_close(class_balanced_pos_weight(y, m, max_weight=10.0)[0], torch.tensor(2.0))


@needs_xrv
def test_mapping_by_name_against_torchxrayvision() -> None:
    logits = torch.arange(18.0).view(1, 18) - 9
    out, mask = xrv_to_chexpert(logits, CHEX)
    for j, name in enumerate(CHEXPERT_LABELS):
        src = "Effusion" if name == "Pleural Effusion" else name
        if name == "No Finding":
            assert mask[j]
        elif src in CHEX:
            assert mask[j] and out[0, j] == logits[0, CHEX.index(src)], name
        else:
            assert not mask[j], name  # Pleural Other, Support Devices: masked, never a fake zero target
    assert set(xrv.datasets.default_pathologies) >= {n for n in CHEX if n}
    # the mapping follows names, not positions
    perm = torch.randperm(18)
    out2, mask2 = xrv_to_chexpert(logits[:, perm], [CHEX[i] for i in perm])
    torch.testing.assert_close(out2, out)
    assert torch.equal(mask2, mask)


@needs_xrv
def test_no_finding_is_product_of_trained_findings() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 18, generator=g, dtype=torch.float64)
    out, _ = xrv_to_chexpert(logits, CHEX)
    trained = [i for i, n in enumerate(CHEX) if n]
    q = torch.prod(1 - torch.sigmoid(logits[:, trained]), dim=1)
    torch.testing.assert_close(out[:, 0], torch.log(q) - torch.log1p(-q))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1000.0, -1000.0, 0.0])
def test_no_finding_finite_for_saturated_findings(value) -> None:
    nf = no_finding_logit(torch.full((2, 11), value))
    assert torch.isfinite(nf).all()
    if value < -50:
        assert (nf > 50).all()  # nothing present: "No Finding" is certain
    if value > 50:
        assert (nf < -50).all()


@needs_xrv
def test_xrv_teacher_random_weights_end_to_end() -> None:
    torch.manual_seed(0)
    teacher = XRVTeacher(weights=None)
    assert teacher.model.op_threshs is None
    images = torch.randn(2, 1, 96, 96)
    x = teacher.to_xrv_input(images)
    assert x.shape == (2, 1, 224, 224) and x.abs().max() <= 1024
    logits, mask = teacher(images)
    assert logits.shape == (2, 14) and mask.sum() == 12
    ref18 = teacher.model.classifier(teacher.model.features2(x))
    torch.testing.assert_close(
        logits[:, CHEXPERT_LABELS.index("Cardiomegaly")], ref18[:, CHEX.index("Cardiomegaly")]
    )
    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())


@needs_xrv
def test_xrv_teacher_local_weights_file(tmp_path) -> None:
    torch.manual_seed(1)
    src = XRVTeacher(weights=None)
    path = tmp_path / "chex.pt"
    torch.save(src.model.state_dict(), path)
    loaded = XRVTeacher(weights="densenet121-res224-chex", weights_file=path)
    x = torch.randn(2, 1, 224, 224)
    torch.testing.assert_close(loaded(x)[0], src(x)[0])
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        XRVTeacher(weights_file=tmp_path / "missing.pt")


@needs_xrv
def test_xrv_normalization_conversion() -> None:
    teacher = XRVTeacher(weights=None, student_mean=(0.5,), student_std=(0.25,))
    white = torch.full((1, 1, 224, 224), 2.0)  # (1 - 0.5) / 0.25: a white pixel for the student
    black = torch.full((1, 1, 224, 224), -2.0)
    assert teacher.to_xrv_input(white).unique().item() == pytest.approx(1024)
    assert teacher.to_xrv_input(black).unique().item() == pytest.approx(-1024)


def test_model_teacher_from_our_model() -> None:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("efficientvit_ml_m0", img_size=64, mxa=False).eval()
    teacher = ModelTeacher(net)
    x = torch.randn(2, 1, 64, 64)
    logits, mask = teacher(x)
    torch.testing.assert_close(logits, net(x))
    assert mask.all()


@needs_xrv
def test_teacher_cache_roundtrip(tmp_path) -> None:
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    teacher = XRVTeacher(weights=None)
    images = torch.randn(5, 1, 64, 64)
    ds = TensorDataset(images, torch.zeros(5, 14))
    ids = [f"img{i}" for i in range(5)]
    cache = build_teacher_cache(teacher, ds, ids, batch_size=2, progress=False, meta={"teacher": "random"})
    path = cache.save(tmp_path / "t.safetensors")
    again = TeacherCache.load(path)
    assert again.ids == ids and again.meta == {"teacher": "random"}
    logits, mask = again.lookup(["img3", "img1"])
    ref, ref_mask = teacher(images[[3, 1]])
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask, ref_mask)
    with pytest.raises(KeyError, match="nope"):
        again.lookup(["nope"])
