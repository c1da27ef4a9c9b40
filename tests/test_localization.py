"""Localization: the benchmark that big boxes cannot fool, the paste mode, and box supervision."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

import mxa
from mxa.layers.roi import roi_crop, roi_paste
from mxa.losses.box import best_match_giou_loss
from mxa.metrics.localization import _pairwise_iou, roi_localization
from mxa.train.loop import TrainConfig, train
from mxa.train.state import model_spec


def _box(draw: st.DrawFn) -> list[float]:
    x1, y1 = draw(st.floats(0, 0.7)), draw(st.floats(0, 0.7))
    return [x1, y1, x1 + draw(st.floats(0.05, 1 - x1)), y1 + draw(st.floats(0.05, 1 - y1))]


boxes_st = st.composite(_box)


# --- the benchmark ------------------------------------------------------------------------------------
def _true_boxes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    true = torch.full((n, 14, 4), float("nan"))
    for i in range(n):
        for j in torch.randperm(14, generator=g)[:2].tolist():
            c, half = torch.rand(2, generator=g) * 0.6 + 0.2, torch.rand(2, generator=g) * 0.1 + 0.05
            true[i, j] = torch.cat([c - half, c + half])
    return true


def test_big_boxes_score_chance_and_true_boxes_score_high() -> None:
    true = _true_boxes(60)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(60, 1)
    first = torch.stack([t[~torch.isnan(t[:, 0])][0] for t in true])  # a perfect box for one finding
    centres = (first[:, :2] + first[:, 2:]) / 2
    loc = roi_localization(
        {"full": full, "perfect": first}, true, points={"full": torch.zeros(60, 2), "perfect": centres}
    )
    f, p = loc["full"], loc["perfect"]
    assert f["hit_rate"] == f["random_hit_rate"] == 1.0  # a whole-map box "hits" exactly as often as chance
    assert f["mean_iou"] == pytest.approx(f["random_iou"], abs=1e-6) and f["mean_box_area"] == 1.0
    assert p["hit_rate"] == 1.0 and p["random_hit_rate"] < 0.6 and p["mean_iou"] == pytest.approx(1.0)
    assert p["mean_iou"] > p["random_iou"] + 0.5
    assert p["pointing_game"] == 1.0 and f["pointing_game"] == 0.0 and 0 < p["pointing_chance"] < 0.2
    assert set(p["per_label"]) <= set(mxa.data.CHEXPERT_LABELS) and p["per_label"]
    assert sum(v["n_images"] for v in p["per_label"].values()) == int((~torch.isnan(true[..., 0])).sum())


@settings(max_examples=30, deadline=None)
@given(st.lists(boxes_st(), min_size=1, max_size=5), boxes_st())
def test_vectorized_iou_matches_torchvision(truths: list[list[float]], pred: list[float]) -> None:
    true = torch.full((1, 6, 4), float("nan"))
    true[0, : len(truths)] = torch.tensor(truths)
    got = _pairwise_iou(torch.tensor([pred]), true)[0, : len(truths)]
    torch.testing.assert_close(got, box_iou(torch.tensor([pred]), torch.tensor(truths))[0], atol=1e-6, rtol=0)
    assert bool((_pairwise_iou(torch.tensor([pred]), true)[0, len(truths) :] == 0).all())


# --- box supervision -----------------------------------------------------------------------------------
def test_box_loss_zero_for_a_perfect_box_and_ignores_images_without_boxes() -> None:
    true = _true_boxes(8, seed=1)
    true[3] = float("nan")  # an image without boxes
    best = torch.tensor([[0.0, 0.0, 0.5, 0.5]]).repeat(8, 1)  # image 3: anything
    for i in (0, 1, 2, 4, 5, 6, 7):
        best[i] = true[i][~torch.isnan(true[i, :, 0])][-1]  # one of its findings, exactly
    assert float(best_match_giou_loss(best, true)) == pytest.approx(0.0, abs=1e-5)  # float32 GIoU
    nothing = torch.full((2, 14, 4), float("nan"))
    pred = torch.rand(2, 4).sort(dim=1).values.requires_grad_()
    loss = best_match_giou_loss(pred, nothing)
    loss.backward()
    assert float(loss.detach()) == 0.0 and bool((pred.grad == 0).all())


def _roi_box(raw: torch.Tensor) -> torch.Tensor:
    """(4,) logits -> (1, 4) xyxy box, parametrised like DynamicROIPool: always a valid box."""
    x1, y1, w, h = raw.sigmoid().unbind()
    return torch.stack([x1 * (1 - w), y1 * (1 - h), x1 * (1 - w) + w, y1 * (1 - h) + h])[None]


def _one_finding(target: list[float]) -> torch.Tensor:
    true = torch.full((1, 14, 4), float("nan"))
    true[0, 5] = torch.tensor(target)
    return true


def _logits(pred: list[float]) -> torch.Tensor:
    return torch.tensor([pred[0], pred[1], pred[2] - pred[0], pred[3] - pred[1]]).clamp(0.02, 0.98).logit()


@settings(max_examples=40, deadline=None)
@given(boxes_st(), boxes_st())
def test_a_small_step_against_the_box_loss_gradient_lowers_it(pred: list[float], target: list[float]) -> None:
    true = _one_finding(target).double()  # float64: a small step's change is far above rounding
    raw = _logits(pred).double().requires_grad_()
    loss = best_match_giou_loss(_roi_box(raw), true)
    (grad,) = torch.autograd.grad(loss, raw)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
    if float(grad.norm()) > 1e-6:  # -grad is a descent direction (first order)
        step = raw.detach() - 1e-6 * grad / grad.norm()
        assert float(best_match_giou_loss(_roi_box(step), true)) < float(loss.detach())


@pytest.mark.parametrize(
    ("pred", "target"),
    [
        ([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.25, 0.125]),  # saturated start: needs the steps
        ([0.25, 0.375, 1.0, 0.875], [0.0, 0.625, 0.125, 0.6875]),  # far apart: ditto
        ([0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]),  # touching corners
    ],
)
def test_box_loss_descent_moves_a_wrong_box_onto_the_finding(pred: list[float], target: list[float]) -> None:
    true = _one_finding(target)
    raw = _logits(pred).requires_grad_()
    opt = torch.optim.Adam([raw], lr=0.1)  # scale-free steps: saturated sigmoids still move
    first = float(best_match_giou_loss(_roi_box(raw), true))
    for _ in range(300):
        loss = best_match_giou_loss(_roi_box(raw), true)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(best_match_giou_loss(_roi_box(raw), true)) < 0.9 * first


# --- the paste mode --------------------------------------------------------------------------------------
def test_paste_inverts_crop_inside_the_box_and_is_zero_outside() -> None:
    x = torch.randn(2, 3, 16, 16)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(2, 1)
    torch.testing.assert_close(roi_paste(roi_crop(x, full), full, (16, 16)), x, atol=1e-5, rtol=0)
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]]).repeat(2, 1)
    pasted = roi_paste(torch.ones(2, 3, 8, 8), box, (16, 16))
    assert float(pasted[..., :3, :].abs().max()) == 0.0 and float(pasted[..., 13:, :].abs().max()) == 0.0
    torch.testing.assert_close(pasted[..., 5:11, 5:11], torch.ones(2, 3, 6, 6))


def test_roi_paste_gradcheck() -> None:
    crop = torch.randn(1, 2, 4, 4, dtype=torch.double, requires_grad=True)
    box = torch.tensor([[0.13, 0.21, 0.71, 0.83]], dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, b: roi_paste(c, b, (5, 6)), (crop, box))


def test_paste_block_starts_at_zero_and_agrees_in_inference() -> None:
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert float(mxa.MXABlock(16, mode="paste")(x).abs().max()) == 0.0
    blk = mxa.MXABlock(16, mode="paste", init_scale=0.5, crop_size=4)
    with torch.no_grad():
        fast = blk(x)
    torch.testing.assert_close(fast, blk(x))
    with pytest.raises(ValueError, match="mode"):
        mxa.MXABlock(16, mode="warp")


@pytest.mark.parametrize(
    "change",
    [
        dict(mxa_mode="zoom", roi_mil=0.0),  # the paper's
        dict(mxa_mode="paste"),
        dict(box_loss=1.0),
        dict(box_area_penalty=0.5),
        dict(mxa_mode="paste", box_loss=1.0),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_each_single_box_option_trains(change: dict, tmp_path) -> None:
    cfg = TrainConfig(
        data="phantom", train_samples=32, val_samples=16, model="efficientvit_ml_m0", img_size=64, epochs=1,
        batch_size=16, ema_decay=0.0, warmup_epochs=0, progress=False, output=str(tmp_path / "r"),
        mxa_rois=0, **change,
    )  # fmt: skip
    summary = train(cfg)
    assert summary["history"][-1]["train_loss"] > 0
    model = mxa.load_model(tmp_path / "r" / "last.pt")
    modes = {b.mode for b in model.mxa_blocks().values()}
    assert modes == {change.get("mxa_mode", cfg.mxa_mode)}
    moved = [b.roi.fc.bias.detach() for b in model.mxa_blocks().values()]
    init = mxa.MXABlock(8, min_size=cfg.mxa_min_size).roi.fc.bias.detach()
    assert any(not torch.allclose(m, init) for m in moved)  # the box head trained


@pytest.mark.parametrize(
    "change", [dict(), dict(box_loss=1.0), dict(box_loss=1.0, box_fraction=0.5), dict(roi_guide=0.0)], ids=str
)
def test_label_rois_train_from_the_roi_objective(change: dict, tmp_path) -> None:
    cfg = TrainConfig(
        data="phantom", train_samples=32, val_samples=16, model="efficientvit_ml_m0", img_size=64, epochs=1,
        batch_size=16, ema_decay=0.0, warmup_epochs=0, progress=False, output=str(tmp_path / "r"), **change,
    )  # fmt: skip
    train(cfg)
    model = mxa.load_model(tmp_path / "r" / "last.pt")
    fresh = model_spec(cfg).build()
    for name, blk in model.mxa_blocks().items():
        assert blk.rois == 2
        old = fresh.mxa_blocks()[name].roi.classifier.fc.weight
        assert not torch.allclose(blk.roi.classifier.fc.weight, old)  # the label maps trained
    seen = mxa.forward_rois(model, torch.randn(2, 1, 64, 64))
    assert all(b.shape == (2, 2, 4) for b in seen.boxes.values())
    assert all(bool((lab != 0).all()) for lab in seen.labels.values())  # No Finding is never cropped


def test_box_loss_needs_mxa(tmp_path) -> None:
    cfg = TrainConfig(
        data="phantom", train_samples=32, val_samples=16, model="efficientvit_ml_m0", img_size=64, epochs=1,
        batch_size=16, mxa=False, box_loss=1.0, progress=False, output=str(tmp_path / "r"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="need a model with MXA blocks"):
        train(cfg)


def test_box_fraction_keeps_the_boxes_of_that_share_of_the_training_images() -> None:
    from mxa.data.combine import build_datasets

    model = model_spec(TrainConfig(model="efficientvit_ml_m0", img_size=32)).build()
    train_ds, _ = build_datasets("phantom-small", model, train_samples=40, val_samples=4, seed=0)
    boxed = [not bool(train_ds[i][4].isnan().all()) for i in range(40)]  # every small phantom with a finding
    assert train_ds.keep_boxes(0.25, seed=3) == 10
    kept = [not bool(train_ds[i][4].isnan().all()) for i in range(40)]
    assert sum(kept) <= 10 and all(b for b, k in zip(boxed, kept) if k)  # only boxes it had, none invented
    assert torch.equal(
        train_ds[5][2], build_datasets("phantom-small", model, train_samples=40, val_samples=4)[0][5][2]
    )
    again = train_ds.box_kept.clone()
    train_ds.keep_boxes(0.25, seed=3)
    assert torch.equal(train_ds.box_kept, again)  # the seed decides
    train_ds.keep_boxes(0.25, seed=4)
    assert not torch.equal(train_ds.box_kept, again)
    with pytest.raises(ValueError, match="box_fraction .* box_loss is 0"):
        TrainConfig(box_fraction=0.5)


def test_mxa_per_stage_is_for_our_efficientvit() -> None:
    from mxa.cli import build_parser, train_config_from_args

    ns = build_parser().parse_args(["train", "--mxa-per-stage", "first", "--img-size", "64"])
    cfg = train_config_from_args(ns)
    assert cfg.mxa_per_stage == "first" and TrainConfig().mxa_per_stage == "all"
    assert list(model_spec(cfg).build().mxa_blocks()) == [f"stages.{i}.blocks.0" for i in range(3)]
    with pytest.raises(SystemExit):  # argparse refuses a layout it does not know
        build_parser().parse_args(["train", "--mxa-per-stage", "middle"])
    with pytest.raises(ValueError, match="mxa_per_stage 'last' picks blocks .* resnet50_mxa is not one"):
        TrainConfig(model="resnet50_mxa", mxa_per_stage="last")
    TrainConfig(model="resnet50_mxa")  # the default layout is fine for any model
    TrainConfig(model="resnet50_mxa", mxa=False, mxa_per_stage="last")  # no MXA: nothing to pick
