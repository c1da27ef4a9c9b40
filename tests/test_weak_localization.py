"""Boxes without box labels (saliency-spread size, the ROI objective, per-label boxes), boxes as small as real
lesions, and the field's localization metrics (localization accuracy, IoBB, AP, RoDeO)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

import mxa
from mxa.files.spec import ModelSpec
from mxa.layers import ROIClassifier, saliency_boxes, soft_box_mask
from mxa.losses import per_label_giou_loss, roi_mil_loss
from mxa.metrics.detection import detection_ap, detection_metrics, rodeo
from mxa.metrics.localization import overlaps, roi_localization
from mxa.models.hooks import BoxCapture, capture_label_boxes
from mxa.train.config import ConfigError, TrainConfig
from mxa.train.state import model_spec


# --- the saliency-spread box -------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10), st.integers(0, 10), st.integers(1, 6), st.integers(1, 6), st.integers(7, 16))
def test_a_flat_blob_gives_exactly_its_box(r0: int, c0: int, bh: int, bw: int, n: int) -> None:
    r0, c0 = min(r0, n - bh), min(c0, n - bw)
    p = torch.zeros(n, n, dtype=torch.float64)
    p[r0 : r0 + bh, c0 : c0 + bw] = 1.0 / (bh * bw)
    got = saliency_boxes(p, min_size=1e-3)
    want = torch.tensor([c0 / n, r0 / n, (c0 + bw) / n, (r0 + bh) / n], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_saliency_boxes_stay_inside_the_map_and_respect_min_size() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(64, 14 * 14, generator=g) * 5, 1).view(64, 14, 14)
    b = saliency_boxes(p, min_size=0.3)
    assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 1 + 1e-6).all()
    assert ((b[:, 2] - b[:, 0]) >= 0.3 - 1e-6).all() and ((b[:, 3] - b[:, 1]) >= 0.3 - 1e-6).all()


def test_saliency_boxes_gradcheck() -> None:
    logits = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: saliency_boxes(torch.softmax(z.flatten(1), 1).view_as(z), 0.05), (logits,)
    )


def test_dynamic_roi_pool_saliency_size_has_no_size_head_and_trains_its_saliency() -> None:
    pool = mxa.DynamicROIPool(8, min_size=0.05, box_size="saliency")
    assert pool.fc is None and pool.centre_gain is None
    x = torch.randn(3, 8, 14, 14)
    x[:, :, 2:5, 9:12] += 4.0  # a bright patch
    pooled, boxes = pool(x)
    assert pooled.shape == x.shape and torch.isfinite(boxes).all()
    boxes.sum().backward()
    assert pool.saliency.weight.grad is not None and pool.saliency.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="box_size must be one of"):
        mxa.DynamicROIPool(8, box_size="learned")


# --- the ROI objective ---------------------------------------------------------------------------------
def test_soft_box_mask_is_the_box_when_sharp_and_differentiable() -> None:
    b = torch.tensor([[0.25, 0.0, 0.75, 0.5]])
    hard = torch.zeros(4, 4)
    hard[0:2, 1:3] = 1
    torch.testing.assert_close(soft_box_mask(b, (4, 4), sharpness=50.0)[0], hard, atol=1e-6, rtol=0)
    assert soft_box_mask(torch.rand(2, 3, 4), (5, 6)).shape == (2, 3, 5, 6)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_box_mask(t, (5, 7)), (boxes,))


def _lesion_features(box: tuple[int, int, int, int], n: int = 12) -> torch.Tensor:
    """(1, 2, n, n): channel 0 is 1 inside the lesion (rows r0:r1, columns c0:c1), channel 1 is noise."""
    r0, r1, c0, c1 = box
    x = torch.zeros(1, 2, n, n)
    x[0, 0, r0:r1, c0:c1] = 1.0
    x[0, 1] = torch.randn(n, n, generator=torch.Generator().manual_seed(0)) * 0.1
    return x


def _detector() -> ROIClassifier:
    head = ROIClassifier(2, num_classes=1, sharpness=4.0)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[12.0, 0.0]]))
        head.fc.bias.fill_(-6.0)  # lesion positions +6, background -6
    return head


def test_the_roi_objective_scores_the_true_box_best() -> None:
    x = _lesion_features((3, 7, 4, 9))  # rows 3-6, columns 4-8 of 12
    true = torch.tensor([[4 / 12, 3 / 12, 9 / 12, 7 / 12]])
    y = torch.ones(1, 1)
    head = _detector()

    def loss(box: list[float]) -> float:
        with torch.no_grad():
            return float(roi_mil_loss(head(x, torch.tensor([box]))[0], y))

    perfect = loss(true[0].tolist())
    assert perfect < loss([0.0, 0.0, 1.0, 1.0])  # whole map: the lesion diluted by background
    assert perfect < loss([5 / 12, 4 / 12, 7 / 12, 6 / 12])  # inside the lesion: some of it left outside
    assert perfect < loss([0.0, 0.0, 4 / 12, 4 / 12])  # beside it: a miss
    assert perfect < loss([2 / 12, 1 / 12, 11 / 12, 9 / 12])  # two pixels too big on every side
    # the soft edge moves the optimum by under a pixel: the box that holds all of the lesion's soft mask
    grow = [e / 4 for e in range(-8, 9)]  # -2 .. +2 pixels on every side
    scores = [loss((true[0] + torch.tensor([-e, -e, e, e]) / 12).tolist()) for e in grow]
    assert 0 <= grow[scores.index(min(scores))] <= 1


def test_the_roi_objective_gives_finite_gradients_to_the_box() -> None:
    x = _lesion_features((3, 7, 4, 9))
    boxes = torch.tensor([[0.1, 0.1, 0.9, 0.9]], requires_grad=True)
    head = _detector()
    roi_mil_loss(head(x, boxes)[0], torch.ones(1, 1)).backward()
    assert boxes.grad is not None and torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.floats(-30, 30))
def test_roi_mil_loss_is_nonnegative_and_ignores_unknown_labels(b: int, k: int, scale: float) -> None:
    g = torch.Generator().manual_seed(b * 10 + k)
    logits = torch.randn(b, 2, k, generator=g) * scale
    y = (torch.rand(b, k, generator=g) > 0.5).float()
    assert float(roi_mil_loss(logits, y)) >= 0
    assert float(roi_mil_loss(logits, y, mask=torch.zeros(b, k))) == 0.0
    # "No Finding" (not a finding): the outside term does not count for it
    not_findings = torch.zeros(k, dtype=torch.bool)
    swapped = logits.clone()
    swapped[:, 1] = 1e3
    assert math.isclose(
        float(roi_mil_loss(swapped, y, findings=not_findings)),
        float(roi_mil_loss(logits, y, findings=not_findings)),
        rel_tol=1e-5,
        abs_tol=1e-6,
    )


def test_roi_classifier_per_label_boxes_shapes_and_gradients() -> None:
    head = ROIClassifier(8, num_classes=3, class_boxes=True, min_size=0.05)
    x = torch.randn(2, 8, 7, 9, requires_grad=True)
    logits, boxes = head(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert logits.shape == (2, 2, 3) and boxes is not None and boxes.shape == (2, 3, 4)
    roi_mil_loss(logits, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])).backward()
    assert head.log_temperature.grad is not None and torch.isfinite(head.log_temperature.grad)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert ROIClassifier(8, 3)(x.detach(), torch.rand(2, 4).sort(1).values)[1] is None


def test_mxa_block_runs_its_roi_classifier_in_training_or_when_asked() -> None:
    model = timm.create_model(
        "efficientvit_ml_m0", img_size=64, mxa_cfg={"roi_classes": 14, "class_boxes": True}
    )
    x = torch.randn(2, 1, 64, 64)
    cap = BoxCapture(model)
    model.train()
    model(x)
    assert [z.shape for z in cap.take_roi_logits()] == [(2, 2, 14)] * 6
    model.eval()
    with torch.no_grad():
        model(x)
    assert cap.take_roi_logits() == []  # inference: no ROI classifier
    with torch.no_grad(), capture_label_boxes(model) as found:
        model(x)
    assert len(found) == 6 and all(v.shape == (2, 14, 4) for v in found.values())
    assert not any(b.emit_label_boxes for b in mxa.mxa_blocks(model).values())
    cap.remove()
    with pytest.raises(ValueError, match="class_boxes needs roi_classes"):
        mxa.MXABlock(8, class_boxes=True)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_box_grad_scales_what_box_losses_pass_to_the_features(share: float) -> None:
    torch.manual_seed(0)
    block = mxa.MXABlock(8, mode="paste", roi_classes=3, class_boxes=True, min_size=0.05, box_grad=share)
    free = mxa.MXABlock(8, mode="paste", roi_classes=3, class_boxes=True, min_size=0.05)
    free.load_state_dict(block.state_dict())
    true = torch.tensor([[0.1, 0.2, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]])
    x = torch.randn(2, 8, 7, 7)
    grads = []
    for b in (block, free):
        xi = x.clone().requires_grad_(True)
        boxes = b.roi.predict_boxes(xi)
        _, label_boxes = b.roi_cls(xi, boxes)
        giou = mxa.losses.best_match_giou_loss(boxes, true[:, None]) + per_label_giou_loss(
            label_boxes, true[:, None].expand(-1, 3, -1)
        )
        giou.backward()
        grads.append(
            (boxes.detach(), label_boxes.detach(), xi.grad, b.roi.fc.weight.grad, b.roi_cls.fc.weight.grad)
        )
    (boxes, label_boxes, gx, g_fc, g_cls), (boxes0, label_boxes0, gx0, g_fc0, g_cls0) = grads
    torch.testing.assert_close(boxes, boxes0)  # the same boxes: only the gradient differs
    torch.testing.assert_close(label_boxes, label_boxes0)
    assert gx0.abs().sum() > 0
    gx = torch.zeros_like(gx0) if gx is None else gx  # a stop-gradient leaves x without one
    torch.testing.assert_close(gx, share * gx0)  # the features get the given share of the boxes' gradient
    torch.testing.assert_close(g_fc, g_fc0)  # the heads learn as without it
    torch.testing.assert_close(g_cls, g_cls0)
    with pytest.raises(ValueError, match="box_grad is for the single box"):
        mxa.MXABlock(8, roi_classes=3, rois=1, box_grad=0.0)
    with pytest.raises(ValueError, match=r"grad_scale must be in \[0, 1\]"):
        mxa.MXABlock(8, box_grad=1.5)
    with pytest.raises(ConfigError, match="mxa_box_grad"):
        TrainConfig(mxa_box_grad=0.0)  # mxa train's default block takes label ROIs
    spec = model_spec(TrainConfig(mxa_rois=0, roi_mil=1.0, mxa_class_boxes=True, mxa_box_grad=0.25))
    assert spec.kwargs["mxa_cfg"]["box_grad"] == 0.25
    blocks = mxa.mxa_blocks(spec.build()).values()
    assert all(b.box_grad == b.roi.grad_scale == b.roi_cls.box_grad == 0.25 for b in blocks)


def test_per_label_giou_loss_scores_each_label_against_its_own_box() -> None:
    true = torch.full((2, 3, 4), float("nan"))
    true[0, 1] = torch.tensor([0.1, 0.1, 0.3, 0.3])
    true[1, 2] = torch.tensor([0.5, 0.5, 0.9, 0.9])
    right = torch.nan_to_num(true, nan=0.0) + torch.tensor([0.0, 0.0, 0.5, 0.5]) * torch.isnan(true[..., :1])
    assert float(per_label_giou_loss(right, true)) == pytest.approx(0.0, abs=1e-5)
    swapped = right.clone().requires_grad_(True)
    loss = per_label_giou_loss(swapped.flip(0), true)
    assert float(loss.detach()) > 1.0
    loss.backward()
    assert swapped.grad is not None and torch.isfinite(swapped.grad).all()
    assert float(per_label_giou_loss(right, torch.full((2, 3, 4), float("nan")))) == 0.0


# --- boxes as small as real lesions: every DynamicROIPool setting from mxa train ---------------------
def test_every_roi_setting_reaches_the_model() -> None:
    cfg = TrainConfig(
        model="efficientvit_ml_m0",
        img_size=64,
        mxa_rois=0,
        mxa_mode="paste",
        mxa_min_size=0.03,
        mxa_init_size=0.8,
        mxa_crop_size=5,
        mxa_saliency_temperature=0.5,
        mxa_crop_method="separable",
        roi_mil=1.0,
        mxa_class_boxes=True,
    )
    model = model_spec(cfg).build()
    block = next(iter(mxa.mxa_blocks(model).values()))
    roi = block.roi
    assert (roi.min_size, roi.init_size, roi.output_size, roi.saliency_temperature, roi.crop_method) == (
        0.03,
        0.8,
        5,
        0.5,
        "separable",
    )
    assert block.roi_cls is not None and block.roi_cls.class_boxes and block.mode == "paste"
    again = ModelSpec("efficientvit_ml_m0", json.loads(json.dumps(model_spec(cfg).kwargs))).build()
    assert again.mxa_cfg == model.mxa_cfg  # what a checkpoint records rebuilds the same model
    default = model_spec(TrainConfig(model="efficientvit_ml_m0"))
    # mxa train's default: two ROIs from the label maps of the ROI classifier, No Finding never cropped
    assert default.kwargs["mxa_cfg"] == {"rois": 2, "roi_classes": 14, "roi_skip": [0]}
    single = model_spec(TrainConfig(model="efficientvit_ml_m0", mxa_rois=0, mxa_class_boxes=True))  # 0.3's
    assert single.kwargs["mxa_cfg"] == {
        "mode": "paste",
        "min_size": 0.05,
        "roi_classes": 14,
        "class_boxes": True,
    }
    paper = model_spec(
        TrainConfig(model="efficientvit_ml_m0", mxa_rois=0, mxa_mode="zoom", roi_mil=0.0, mxa_min_size=0.25)
    )
    assert "mxa_cfg" not in paper.kwargs  # the paper's MXA: MXABlock's own defaults


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"mxa_rois": 0, "mxa_min_size": 0.5, "mxa_init_size": 0.4}, "mxa_init_size"),
        ({"mxa_rois": 0, "mxa_crop_size": 4, "mxa_mode": "zoom"}, "paste only"),
        ({"mxa_min_size": 0.0}, "mxa_min_size must be >"),
        ({"mxa_box_size": "learned"}, "must be one of"),
        ({"mxa_mode": "zoom"}, "mxa_mode set the paper's single-box MXA block, but mxa_rois"),
        ({"mxa_crop_size": 4, "mxa_init_size": 0.5}, "mxa_init_size, mxa_crop_size set the paper's"),
        ({"roi_mil": 0.0}, "set roi_mil > 0"),
        ({"mxa_rois": 0, "roi_mil": 0.0, "mxa_class_boxes": True}, "mxa_class_boxes gives every label a box"),
        ({"mxa_class_boxes": True}, "mxa_class_boxes set the paper's single-box MXA block"),
        ({"box_area_penalty": 1.0}, "box_area_penalty needs a box with a gradient"),
    ],
)
def test_impossible_roi_settings_are_refused_with_the_setting_named(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_a_run_from_before_the_min_size_setting_resumes_with_the_old_box_floor(tmp_path: Path) -> None:
    from mxa.cli.config import train_config_from_args
    from mxa.files.checkpoint import TrainCheckpoint

    new = ("mxa_min_size", "roi_mil", "mxa_class_boxes", "mxa_rois", "roi_guide")
    old = {k: v for k, v in TrainConfig(model="efficientvit_ml_m0").to_dict().items() if k not in new}
    path = TrainCheckpoint(model_name="efficientvit_ml_m0", model_kwargs={}, model={}, config=old).save(
        tmp_path / "run" / "last.pt"
    )

    class Ns:
        resume = str(path)
        config = None

    cfg = train_config_from_args(Ns())  # type: ignore[arg-type]
    assert cfg.mxa_min_size == 0.25  # what 0.2 runs were trained with, not today's default
    assert (cfg.roi_mil, cfg.mxa_class_boxes, cfg.mxa_rois, cfg.roi_guide) == (0.0, False, 0, 0.0)


# --- the field's metrics --------------------------------------------------------------------------------
def _box(draw: st.DrawFn) -> list[float]:
    x1, y1 = draw(st.floats(0, 0.7)), draw(st.floats(0, 0.7))
    return [x1, y1, x1 + draw(st.floats(0.05, 1 - x1)), y1 + draw(st.floats(0.05, 1 - y1))]


boxes_st = st.composite(_box)


@settings(max_examples=40, deadline=None)
@given(boxes_st(), boxes_st())
def test_overlaps_match_torchvision_iou_and_the_iobb_definition(pred: list[float], true: list[float]) -> None:
    iou, iobb = overlaps(torch.tensor([pred]), torch.tensor([[true]]))
    want = box_iou(torch.tensor([pred]), torch.tensor([true]))[0, 0]
    torch.testing.assert_close(iou[0, 0], want, atol=1e-6, rtol=1e-5)
    p, t = torch.tensor(pred), torch.tensor(true)
    inter = (torch.minimum(p[2:], t[2:]) - torch.maximum(p[:2], t[:2])).clamp(min=0).prod()
    torch.testing.assert_close(iobb[0, 0], inter / (p[2:] - p[:2]).prod(), atol=1e-6, rtol=1e-5)


def test_localization_accuracy_by_hand() -> None:
    true = torch.full((4, 2, 4), float("nan"))
    true[:, 0] = torch.tensor([0.0, 0.0, 0.5, 0.5])  # area 0.25
    pred = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.5],  # IoU 1, IoBB 1
            [0.0, 0.0, 0.5, 0.25],  # IoU 0.5, IoBB 1
            [0.0, 0.0, 1.0, 1.0],  # IoU 0.25, IoBB 0.25
            [0.5, 0.5, 1.0, 1.0],  # IoU 0, IoBB 0
        ]
    )
    rec = roi_localization({"b": pred}, true, per_label=True, labels=("A", "B"))["b"]
    assert rec["loc_acc"] == {"0.1": 0.75, "0.3": 0.5, "0.5": 0.5}
    assert rec["iobb_acc"] == {"0.1": 0.75, "0.3": 0.5, "0.5": 0.5}
    assert rec["per_label"]["A"]["loc_acc"] == rec["loc_acc"] and "B" not in rec["per_label"]


def test_per_label_boxes_are_scored_against_their_own_label() -> None:
    true = torch.full((3, 2, 4), float("nan"))
    true[:, 0] = torch.tensor([0.0, 0.0, 0.3, 0.3])
    true[:, 1] = torch.tensor([0.6, 0.6, 0.9, 0.9])
    right = torch.nan_to_num(true, nan=0.0)
    swapped = right.flip(1)
    loc = roi_localization({"right": right, "swapped": swapped}, true, labels=("A", "B"))
    assert loc["right"]["mean_iou"] == pytest.approx(1.0) and loc["right"]["loc_acc"]["0.5"] == 1.0
    assert loc["swapped"]["mean_iou"] == 0.0 and loc["swapped"]["hit_rate"] == 0.0
    assert loc["right"]["mean_box_area"] == pytest.approx(0.09)


def test_detection_ap_by_hand() -> None:
    # one class, three images with one true box each; ranked by score: hit, miss, hit
    true = torch.full((3, 1, 4), float("nan"))
    true[:, 0] = torch.tensor([0.1, 0.1, 0.4, 0.4])
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4]])
    scores = torch.tensor([[0.9], [0.8], [0.7]])
    got = detection_ap(boxes, scores, true)
    # COCO's 101-point interpolated precision: 1 up to recall 1/3, then 2/3 up to recall 1 (a miss of image 2
    # is an unmatched true box, so recall never reaches 1): points 0..33 -> 1, 34..66 -> 2/3, 67..100 -> 0
    want = (34 * 1.0 + 33 * (2 / 3)) / 101
    assert got["0.3"] == pytest.approx(want, abs=1e-4) and got["0.5"] == pytest.approx(want, abs=1e-4)
    # and it is torchmetrics' number for the same detections
    from torchmetrics.detection import MeanAveragePrecision

    m = MeanAveragePrecision(iou_thresholds=[0.5])
    m.update(
        [{"boxes": boxes[i : i + 1], "scores": scores[i], "labels": torch.tensor([0])} for i in range(3)],
        [{"boxes": true[i], "labels": torch.tensor([0])} for i in range(3)],
    )
    assert got["0.5"] == pytest.approx(float(m.compute()["map"]), abs=1e-6)


def test_a_positive_finding_without_a_box_is_not_scored() -> None:
    true = torch.full((1, 2, 4), float("nan"))
    true[0, 0] = torch.tensor([0.1, 0.1, 0.4, 0.4])
    targets = torch.tensor([[1.0, 1.0]])  # label 1 is positive but has no box
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.4]])
    assert detection_ap(boxes, torch.tensor([[0.5, 0.9]]), true, targets)["0.5"] == pytest.approx(1.0)


def _one(box: list[float], cls: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [torch.tensor([box])], [torch.tensor([cls])]


def test_rodeo_by_hand() -> None:
    t_box, t_cls = _one([0.2, 0.2, 0.4, 0.6], 0)  # 0.2 wide, 0.4 high
    perfect = rodeo(t_box, t_cls, t_box, t_cls, num_classes=2)
    assert (perfect["classification"], perfect["localization"], perfect["shape"], perfect["total"]) == (
        1.0,
        1.0,
        pytest.approx(1.0),
        pytest.approx(1.0),
    )
    # the centre off by one box width: localization exp(-ln 2) = 0.5; the shape is unchanged
    shifted = rodeo(*_one([0.4, 0.2, 0.6, 0.6], 0), t_box, t_cls, num_classes=2)
    assert shifted["localization"] == pytest.approx(0.5) and shifted["shape"] == pytest.approx(1.0)
    assert shifted["total"] == pytest.approx(3 / (1 + 2 + 1))  # harmonic mean of 1, 0.5, 1
    # half as wide, same top-left corner: shape IoU 0.5
    narrow = rodeo(*_one([0.2, 0.2, 0.3, 0.6], 0), t_box, t_cls, num_classes=2)
    assert narrow["shape"] == pytest.approx(0.5)
    # one extra prediction: every score is scaled by matched / (matched + overpredicted) = 1/2
    extra = rodeo(
        [torch.tensor([[0.2, 0.2, 0.4, 0.6], [0.7, 0.7, 0.9, 0.9]])],
        [torch.tensor([0, 1])],
        t_box,
        t_cls,
        num_classes=2,
    )
    assert extra["n_overpredicted"] == 1 and extra["localization"] == pytest.approx(0.5)
    # nothing predicted: all zero, the target missed
    none = rodeo([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], t_box, t_cls, num_classes=2)
    assert none["total"] == 0.0 and none["n_missed"] == 1


def test_rodeo_classification_is_the_mcc_of_matched_pairs() -> None:
    pb = [torch.tensor([[0.1, 0.1, 0.3, 0.3]]), torch.tensor([[0.5, 0.5, 0.7, 0.7]])]
    tb = [b.clone() for b in pb]
    right = rodeo(pb, [torch.tensor([0]), torch.tensor([1])], tb, [torch.tensor([0]), torch.tensor([1])], 2)
    wrong = rodeo(pb, [torch.tensor([0]), torch.tensor([1])], tb, [torch.tensor([0]), torch.tensor([0])], 2)
    assert right["classification"] == pytest.approx(1.0) and wrong["classification"] == 0.0


def test_detection_metrics_pick_a_block_and_say_how() -> None:
    true = torch.full((5, 2, 4), float("nan"))
    true[:, 1] = torch.tensor([0.2, 0.2, 0.5, 0.5])
    good = torch.tensor([[0.2, 0.2, 0.5, 0.5]]).repeat(5, 1)
    bad = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(5, 1)
    probs = torch.tensor([[0.1, 0.9]]).repeat(5, 1)
    det = detection_metrics({"bad": bad, "good": good}, probs, true, torch.tensor([[0.0, 1.0]]).repeat(5, 1))
    assert det["block"] == "good" and det["block_chosen_by"] == "evaluated set"
    assert "best AP" in det["block_chosen_on"] and "optimistic" in det["block_chosen_on"]
    assert det["ap"] == {"0.3": pytest.approx(1.0), "0.5": pytest.approx(1.0)}
    assert det["rodeo"]["total"] == pytest.approx(1.0) and det["per_block"]["bad"]["ap"]["0.5"] == 0.0
    assert detection_metrics({"good": good}, probs, true, block="good")["block_chosen_by"] == "given"
    on_val = detection_metrics(
        {"good": good}, probs, true, block="good", chosen_by="validation", chosen_on="v"
    )
    assert (on_val["block_chosen_by"], on_val["block_chosen_on"]) == ("validation", "v")
    with pytest.raises(ValueError, match="no MXA box set"):
        detection_metrics({"good": good}, probs, true, block="nope")
    assert detection_metrics({"good": good}, probs, torch.full((5, 2, 4), float("nan"))) == {}


# --- end to end ---------------------------------------------------------------------------------------
def test_train_and_eval_with_per_label_boxes(tmp_path: Path) -> None:
    from mxa.cli import main

    run = tmp_path / "run"
    args = ["train", "--data", "phantom", "--model", "efficientvit_ml_m0", "--img-size", "64"]
    args += ["--train-samples", "16", "--val-samples", "8", "--epochs", "1", "--batch-size", "8"]
    args += ["--mxa-rois", "0", "--roi-mil", "1", "--mxa-class-boxes", "--mxa-box-size", "saliency"]
    args += ["--mxa-mode", "paste"]
    args += ["--mxa-min-size", "0.05", "--ema-decay", "0", "--output", str(run), "--no-progress"]
    args += ["--box-loss", "1"]  # with --mxa-class-boxes: every label's box against its own true box
    assert main(args) == 0
    js = tmp_path / "eval.json"
    ev = ["eval", "--checkpoint", str(run / "last.pt"), "--data", "phantom", "--val-samples", "24"]
    assert main([*ev, "--bootstrap", "0", "--json", str(js), "--no-progress"]) == 0
    m = json.loads(js.read_text())
    loc = m["roi_localization"]
    assert "stages.0.blocks.0/labels" in loc and "stages.0.blocks.0" in loc
    assert set(loc["stages.0.blocks.0"]["loc_acc"]) == {"0.1", "0.3", "0.5"}
    assert set(loc["stages.0.blocks.0"]["iobb_acc"]) == {"0.1", "0.3", "0.5"}
    assert set(m["detection"]["ap"]) == {"0.3", "0.5"}
    assert {"classification", "localization", "shape", "total"} <= set(m["detection"]["rodeo"])
    assert m["detection"]["block"] in m["detection"]["per_block"]


def test_rodeo_needs_two_classes_and_saliency_boxes_ignore_init_size() -> None:
    box, cls = [torch.tensor([[0.1, 0.1, 0.3, 0.3]])], [torch.tensor([0])]
    with pytest.raises(ValueError, match="at least 2 classes"):
        rodeo(box, cls, box, cls, num_classes=1)
    assert mxa.DynamicROIPool(8, min_size=0.96, box_size="saliency").min_size == 0.96  # no size head


@pytest.mark.parametrize("recipe", ["paper_m5_mxa.yaml", "paper_m5_mxa_kd.yaml"])
def test_the_paper_recipes_train_the_papers_mxa(recipe: str) -> None:
    import yaml

    cfg = yaml.safe_load((Path(__file__).parents[1] / "recipes" / recipe).read_text())
    assert (cfg["mxa_rois"], cfg["mxa_mode"], cfg["roi_mil"], cfg["mxa_min_size"]) == (0, "zoom", 0, 0.25)
    keys = ("model", "mxa", "mxa_rois", "mxa_mode", "roi_mil", "mxa_min_size")
    spec = model_spec(TrainConfig(**{k: cfg[k] for k in keys}))
    assert "mxa_cfg" not in spec.kwargs  # MXABlock's own (the paper's) settings


def test_a_0_2_run_without_mxa_is_kept_by_a_rerun(tmp_path: Path) -> None:
    from mxa.files.checkpoint import TrainCheckpoint
    from mxa.train.experiment import train_or_continue

    cfg = TrainConfig(model="efficientvit_ml_m0", mxa=False, epochs=1, output=str(tmp_path / "t"))
    stored = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in ("mxa_min_size", "roi_mil", "mxa_class_boxes", "mxa_rois", "roi_guide")
    }
    stored["mxa_mode"] = "zoom"  # 0.2's default, written into its configs
    TrainCheckpoint(model_name="efficientvit_ml_m0", model_kwargs={}, model={}, config=stored, epoch=1).save(
        tmp_path / "t" / "last.pt"
    )
    train_or_continue(cfg)  # kept: no training, no "other settings" refusal
    assert TrainCheckpoint.load(tmp_path / "t" / "last.pt").config == stored
