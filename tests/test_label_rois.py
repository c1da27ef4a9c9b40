"""Label ROIs: the MXA block crops where its label maps peak (mxa.layers.label_roi), with oracle tests."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mxa
from mxa.data.phantom import SMALL_FINDINGS, SMALL_SIDES, PhantomCXR
from mxa.layers import CBAM, LabelROIPool, MXABlock, box_coverage, peak_boxes
from mxa.layers.label_roi import PEAK_FRACTION, PRIOR, _label_rois
from mxa.losses import guided_mil_loss, true_box_map_loss


# --- the box read-out ---------------------------------------------------------------------------------
@pytest.mark.parametrize("refine", [1, 2, 4])
@pytest.mark.parametrize(("r0", "c0", "bh", "bw"), [(0, 0, 1, 1), (2, 3, 2, 4), (5, 0, 3, 8), (0, 0, 8, 8)])
def test_a_plateau_gives_exactly_its_box(refine: int, r0: int, c0: int, bh: int, bw: int) -> None:
    m = torch.full((1, 1, 8, 8), -3.0)
    m[0, 0, r0 : r0 + bh, c0 : c0 + bw] = 2.0
    box = peak_boxes(m, refine=1)[0, 0]
    torch.testing.assert_close(box, torch.tensor([c0, r0, c0 + bw, r0 + bh]) / 8.0)
    if refine > 1:  # upsampled, the edges move by less than a cell
        fine = peak_boxes(m, refine=refine)[0, 0]
        assert float((fine - box).abs().max()) <= 1 / 8 + 1e-6


def test_the_box_follows_the_fraction_and_always_holds_the_peak() -> None:
    u = (torch.arange(16.0) + 0.5) / 16
    blob = torch.exp(-(((u[None, :] - 0.3) ** 2 + (u[:, None] - 0.6) ** 2) / (2 * 0.08**2)))[None, None]
    sides = [
        float(peak_boxes(blob, 4, f)[0, 0, 2] - peak_boxes(blob, 4, f)[0, 0, 0]) for f in (0.2, 0.5, 0.8)
    ]
    assert sides[0] > sides[1] > sides[2]  # a higher threshold, a tighter box
    # half maximum of a Gaussian: FWHM = 2.355 sigma, within a fine cell
    assert abs(sides[1] - 2.355 * 0.08) < 1 / 64 + 0.02
    flats = [torch.zeros(1, 1, 1, 1)] + [torch.full((1, 1, 7, 7), v) for v in (0.3, -3.7, 1e5, 1e-30)]
    for flat in flats:  # no peak: the whole map
        torch.testing.assert_close(peak_boxes(flat, 4, 0.7)[0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 4]),
    st.floats(0.0, 0.95), st.integers(0, 2**16),
)  # fmt: skip
def test_the_fast_path_equals_its_oracles(
    b: int, k: int, h: int, w: int, refine: int, f: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k + 1, h, w, generator=g, dtype=torch.float64)
    never = torch.zeros(k + 1, dtype=torch.float64)
    never[0] = -math.inf
    rois = min(2, k)
    coverage, boxes, labels, weights = _label_rois(z, never, rois, refine, f)
    top, want = (z.amax((2, 3)) + never).topk(rois, dim=1)
    assert torch.equal(labels, want) and bool((labels != 0).all())
    chosen = z.gather(1, want[..., None, None].expand(-1, -1, h, w))
    want_boxes = peak_boxes(chosen, refine, f)
    torch.testing.assert_close(boxes, want_boxes, atol=1e-12, rtol=0)  # the same fine cells
    torch.testing.assert_close(coverage, box_coverage(want_boxes, (h, w)), atol=1e-12, rtol=0)
    torch.testing.assert_close(weights, torch.sigmoid(top))
    assert bool((boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4), st.integers(1, 9), st.integers(1, 9))
def test_box_coverage_is_the_area_inside_each_cell(c: list[float], h: int, w: int) -> None:
    x1, x2 = sorted(c[:2])
    y1, y2 = sorted(c[2:])
    box = torch.tensor([x1, y1, x2, y2], dtype=torch.float64)
    cov = box_coverage(box, (h, w))
    assert bool((cov >= 0).all() and (cov <= 1 + 1e-12).all())
    # the covered cells add up to the box's area, in cells
    torch.testing.assert_close(cov.sum(), torch.tensor((x2 - x1) * (y2 - y1) * h * w, dtype=torch.float64))


# --- the pool -------------------------------------------------------------------------------------------
def test_label_roi_pool_shapes_prior_skip_and_no_gradient() -> None:
    pool = LabelROIPool(16, num_classes=5, rois=2, skip=(0,))
    torch.testing.assert_close(pool.classifier.fc.bias, torch.full((5,), math.log(PRIOR / (1 - PRIOR))))
    x = torch.randn(3, 16, 7, 7, requires_grad=True)
    coverage, boxes, labels, weights = pool(x)
    assert (coverage.shape, boxes.shape, labels.shape, weights.shape) == (
        (3, 2, 7, 7),
        (3, 2, 4),
        (3, 2),
        (3, 2),
    )
    assert bool((labels != 0).all())  # a skipped label is never cropped
    assert not coverage.requires_grad and not boxes.requires_grad and not weights.requires_grad
    with pytest.raises(ValueError, match="rois must be between 1 and the 4 labels"):
        LabelROIPool(16, num_classes=5, rois=5, skip=(0,))
    with pytest.raises(ValueError, match="outside 0..4"):
        LabelROIPool(16, num_classes=5, skip=(5,))


def test_the_roi_classifier_runs_in_training_and_when_asked() -> None:
    pool = LabelROIPool(8, num_classes=3, rois=1)
    seen: list[tuple] = []
    pool.classifier.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 8, 5, 5)
    pool.eval()(x)
    assert not seen  # inference: the maps only
    pool.train()(x)
    logits, label_boxes = seen[-1]
    assert logits.shape == (2, 2, 3) and label_boxes.shape == (2, 3, 4)
    logits.sum().backward()
    assert pool.classifier.fc.weight.grad is not None  # the ROI objective trains the maps


def _cbam_per_region(cbam: CBAM, x: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """The slow, obvious CBAM of R regions (B, R, C, H, W): each region masked out of x, gated on its own."""
    m = coverage.unsqueeze(2)  # (B, R, 1, H, W)
    crop = x.unsqueeze(1) * m
    mean = crop.sum((3, 4)) / m.sum((3, 4))
    peak = torch.where(m > 0, x.unsqueeze(1), float("-inf")).amax((3, 4))
    # timm's two-pass channel MLP, as its convolutions
    avg = cbam.channel.fc2(cbam.channel.act(cbam.channel.fc1(mean.flatten(0, 1)[..., None, None])))
    top = cbam.channel.fc2(cbam.channel.act(cbam.channel.fc1(peak.flatten(0, 1)[..., None, None])))
    gated = crop.flatten(0, 1) * torch.sigmoid(avg + top)  # (B * R, C, H, W)
    return (gated * cbam.spatial.gate(gated)).view_as(crop)


def test_cbam_of_a_cell_aligned_roi_equals_cbam_of_the_crop() -> None:
    """The oracle of CBAM.forward_rois: crop the box's cells, gate them with CBAM, put them back, add up."""
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=4).double()
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    cells = [(1, 2, 4, 7), (0, 0, 9, 9)]  # (row0, col0, row1, col1) per ROI
    boxes = torch.tensor([[c0 / 9, r0 / 9, c1 / 9, r1 / 9] for r0, c0, r1, c1 in cells], dtype=torch.float64)
    coverage = box_coverage(boxes, (9, 9))[None].expand(2, -1, -1, -1)
    weights, scale = torch.rand(2, 2, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    want = torch.zeros_like(x)
    for r, (r0, c0, r1, c1) in enumerate(cells):
        pasted = torch.zeros_like(x)
        pasted[:, :, r0:r1, c0:c1] = cbam(x[:, :, r0:r1, c0:c1].contiguous())
        want += weights[:, r, None, None, None] * pasted
    torch.testing.assert_close(cbam.forward_rois(x, coverage, weights, scale), want * scale[:, None, None])
    torch.testing.assert_close(cbam.forward_rois(x, coverage, weights), want)


@pytest.mark.parametrize("size", [(7, 7), (5, 8)])
def test_cbam_of_regions_equals_each_region_gated_alone(size: tuple[int, int]) -> None:
    """Fractional coverage, any shape, values and gradients: the fast sum against the per-region oracle."""
    torch.manual_seed(1)
    cbam = CBAM(12, reduction=3).double()
    x = torch.randn(3, 12, *size, dtype=torch.float64, requires_grad=True)
    lo = torch.rand(3, 2, 2, dtype=torch.float64) * 0.6
    boxes = torch.cat([lo, lo + 0.1 + torch.rand(3, 2, 2, dtype=torch.float64) * 0.3], -1)
    coverage, weights = box_coverage(boxes, size), torch.rand(3, 2, dtype=torch.float64)
    got = cbam.forward_rois(x, coverage, weights)
    want = torch.einsum("brchw,br->bchw", _cbam_per_region(cbam, x, coverage), weights)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads = [torch.autograd.grad((y * g).sum(), [x, *cbam.parameters()]) for y in (got, want)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_a_label_roi_block_is_zero_at_init_and_every_parameter_trains() -> None:
    block = MXABlock(16, rois=2, roi_classes=4, roi_skip=(0,))
    x = torch.randn(2, 16, 7, 7)
    assert float(block(x).detach().abs().max()) == 0.0
    with torch.no_grad():
        block.scale.fill_(1.0)
    block.train()
    out = block(x)
    logits, _ = block.roi.classifier(x, None)  # the ROI objective's input
    (out.square().sum() + logits.sum()).backward()
    assert all(p.grad is not None for p in block.parameters())
    with torch.no_grad():  # inference equals training for the output
        torch.testing.assert_close(block.eval()(x), out.detach())


def test_a_label_roi_block_traces_and_compiles_whole() -> None:
    block = MXABlock(16, rois=2, roi_classes=4, roi_skip=(0,)).eval()
    with torch.no_grad():
        block.scale.fill_(0.5)
    x = torch.randn(2, 16, 7, 7)
    traced = torch.fx.symbolic_trace(block)
    torch.testing.assert_close(traced(x), block(x))
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), block(x))


def test_a_label_roi_block_compiled_before_any_eager_call_does_not_recompile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The box read-out's constants are cached for eager calls only: a cache filled while dynamo traced would
    be a guard on its contents, and the next call a recompilation (as it was before the constants were built
    in the compiled graph)."""
    from mxa.layers import label_roi

    monkeypatch.setattr(label_roi, "_GRID", {})  # as in a fresh process
    block = MXABlock(16, rois=2, roi_classes=4, roi_skip=(0,)).eval()
    with torch.no_grad():
        block.scale.fill_(0.5)  # the block's output is zero at init (scale 0): compare something
    x = torch.randn(2, 16, 7, 7)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    torch._dynamo.reset()
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            got = compiled(x)
        torch.testing.assert_close(got, block(x))  # the eager call fills the cache; compiled calls ignore it
        assert label_roi._GRID
        torch.testing.assert_close(compiled(x), got)


@pytest.mark.parametrize("refine", [1, 2, 4])
def test_compiled_the_label_maps_are_upsampled_as_planes_with_the_same_values(
    refine: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled layout (R one-channel images) gives the eager path's regions bit for bit, any shape."""
    from mxa.layers import label_roi

    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 5, 5, 8, generator=g)
    never = torch.tensor([-math.inf, 0, 0, 0, 0])
    want = _label_rois(z, never, 2, refine, 0.7)
    monkeypatch.setattr(label_roi, "compiled_cpu_inference", lambda _: True)
    got = _label_rois(z, never, 2, refine, 0.7)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("grad", [False, True])
def test_compiled_cpu_inference_takes_the_compile_forms(grad: bool) -> None:
    """torch.compile really traces the compile-only forms for CPU inference (no convolution: CBAM's spatial
    convolution is a window sum), and the convolution under autograd; the values are the eager block's."""
    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    block = MXABlock(16, rois=2, roi_classes=4, roi_skip=(0,)).eval()
    with torch.no_grad():
        block.scale.fill_(0.5)  # the block's output is zero at init (scale 0): compare something
    x = torch.randn(2, 16, 7, 7)
    torch._dynamo.reset()
    compiled = torch.compile(block, backend=record, fullgraph=True)
    with torch.set_grad_enabled(grad):
        got, want = compiled(x), block(x)
    assert ("unfold" in graphs[-1].code) != grad  # the window sum, or else the convolution
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.7, 0.8])
def test_the_threshold_written_out_for_onnx_equals_lerp(
    fraction: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mxa.layers.label_roi import _threshold

    g = torch.Generator().manual_seed(5)
    mean, peak = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g) + 2
    want = _threshold(mean, peak, fraction)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(_threshold(mean, peak, fraction), want, rtol=2e-7, atol=1e-7)


def test_label_roi_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="roi_classes > 0"):
        MXABlock(8, rois=2)
    with pytest.raises(ValueError, match="class_boxes and crop_size are for the single-box block"):
        MXABlock(8, rois=2, roi_classes=3, class_boxes=True)


def test_models_give_their_label_rois_with_labels() -> None:
    import timm

    model = timm.create_model(
        "efficientvit_ml_m0", img_size=64, mxa_cfg=dict(rois=2, roi_classes=14, roi_skip=[0])
    )
    seen = mxa.forward_rois(model.eval(), torch.randn(2, 1, 64, 64))
    assert set(seen.boxes) == set(seen.labels) == set(model.mxa_blocks())
    named = seen.for_image(1, model.label_names)
    assert len(named) == 2 * len(seen.boxes) and all(": " in n for n in named)
    _, boxes = mxa.forward_with_rois(model, torch.randn(2, 1, 64, 64))
    assert all(b.shape == (2, 2, 4) for b in boxes.values())


# --- the losses -----------------------------------------------------------------------------------------
def test_the_guide_rewards_a_fine_map_that_fires_inside_the_coarse_box_only() -> None:
    guide = torch.full((2, 1, 4, 4), -2.0)
    guide[:, 0, 0, 0] = 5.0  # the deeper block: the finding is top-left
    y = torch.tensor([[1.0], [0.0]])
    inside = torch.full((2, 1, 8, 8), -3.0)
    inside[0, 0, 0, 1] = 3.0  # positive image: fires once inside the coarse box
    outside = inside.clone()
    outside[0, 0, 7, 7] = 3.0  # also fires far away
    elsewhere = inside.roll(4, dims=-1)  # fires only outside the coarse box
    loss = [float(guided_mil_loss(z, guide, y)) for z in (inside, outside, elsewhere)]
    assert loss[0] < loss[1] < loss[2]


def test_the_box_loss_of_label_maps_is_zero_only_for_a_map_high_inside_its_box() -> None:
    true = torch.full((1, 2, 4), float("nan"))
    true[0, 0] = torch.tensor([0.25, 0.25, 0.75, 0.75])
    z = torch.full((1, 2, 8, 8), -20.0)
    z[0, 0, 2:6, 2:6] = 20.0
    assert float(true_box_map_loss(z, true)) < 1e-6
    shifted = z.roll(2, dims=-1)
    assert float(true_box_map_loss(shifted, true)) > 1.0
    assert float(true_box_map_loss(z, torch.full((1, 2, 4), float("nan")))) == 0.0  # no box: nothing


# --- the small-finding phantom --------------------------------------------------------------------------
def test_small_phantoms_have_at_most_one_finding_of_the_stated_sizes() -> None:
    ds = PhantomCXR(60, image_size=96, seed=4, kind="small")
    labelled = [mxa.data.labels.CHEXPERT_LABELS.index(n) for n in ("No Finding", *SMALL_FINDINGS)]
    assert torch.equal(torch.nonzero(ds.labelled).flatten(), torch.tensor(sorted(labelled)))
    assert ds.ids[0] == "phantom-small-4-0"
    sides = []
    for i in range(len(ds)):
        img, target, mask, boxes = ds[i]
        present = ~torch.isnan(boxes[:, 0])
        assert int(present.sum()) <= 1 and torch.equal(mask, ds.labelled)
        if present.any():
            assert bool(target[present].all()) and target[0] == 0
            b = boxes[present][0]
            sides.append(float(((b[2] - b[0]) * (b[3] - b[1])).sqrt()))
        else:
            assert target[0] == 1 and target.sum() == 1
    assert SMALL_SIDES[0] - 0.01 <= min(sides) and max(sides) <= SMALL_SIDES[1] + 0.01
    assert sum(s <= 0.1 for s in sides) >= len(sides) // 4  # log-uniform: many small ones


def test_phantom_small_is_a_data_spec() -> None:
    from mxa.data.spec import parse_data_spec

    assert parse_data_spec("phantom-small").phantom_kind == "small"
    assert parse_data_spec("phantom").phantom_kind == "chexpert"
    with pytest.raises(ValueError, match="kind must be one of"):
        PhantomCXR(2, kind="tiny")


def test_roi_fraction_places_the_box_edges_and_is_recorded_by_mxa_train() -> None:
    from mxa.train.config import ConfigError, TrainConfig, stored_settings
    from mxa.train.state import model_spec

    # a map with a peak of 1 on a shoulder of 0.6: the half maximum boxes both, 0.8 of the way the peak only
    z = torch.zeros(1, 1, 8, 8)
    z[0, 0, 2:6, 2:6] = 0.6
    z[0, 0, 3:5, 3:5] = 1.0
    wide, tight = peak_boxes(z, refine=1, fraction=0.5), peak_boxes(z, refine=1, fraction=0.8)
    assert torch.equal(wide, torch.tensor([[[0.25, 0.25, 0.75, 0.75]]]))
    assert torch.equal(tight, torch.tensor([[[0.375, 0.375, 0.625, 0.625]]]))
    block = MXABlock(16, rois=2, roi_classes=4, roi_fraction=0.5)
    assert isinstance(block.roi, LabelROIPool) and block.roi.fraction == 0.5
    with pytest.raises(ValueError, match="needs rois > 0"):
        MXABlock(16, roi_fraction=0.5)
    spec = model_spec(TrainConfig(model="efficientvit_ml_m0", img_size=64, mxa_roi_fraction=0.5))
    assert spec.kwargs["mxa_cfg"]["roi_fraction"] == 0.5  # recorded: a checkpoint rebuilds the same block
    assert {b.roi.fraction for b in mxa.mxa_blocks(spec.build()).values()} == {0.5}
    with pytest.raises(ConfigError, match="mxa_roi_fraction"):
        TrainConfig(mxa_rois=0, mxa_mode="paste", mxa_roi_fraction=0.9)
    # a run from before the setting was trained at 0.7, the default: its stored settings rebuild it so
    assert TrainConfig(**stored_settings({})).mxa_roi_fraction == PEAK_FRACTION == 0.7
