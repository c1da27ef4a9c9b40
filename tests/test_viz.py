from __future__ import annotations

import pytest
import timm
import torch

pytest.importorskip("matplotlib")
from mxa.viz import (
    attention_map,
    plot_attention_comparison,
    plot_phantom_grid,
    plot_roc_curves,
    plot_roi_overlay,
)


def _png_ok(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_roc_curves(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    t = (torch.rand(100, 14, generator=g) < 0.3).float()
    t[:, 5] = 0  # a label without positives is skipped, not drawn
    p = (t * 0.3 + torch.rand(100, 14, generator=g) * 0.7).clamp(0, 1)
    _png_ok(plot_roc_curves(p, t, None, tmp_path / "roc.png"))


def test_roi_overlay_and_attention(tmp_path) -> None:
    torch.manual_seed(0)
    m = timm.create_model("efficientvit_ml_m0", img_size=64).eval()
    x = torch.randn(1, 1, 64, 64)
    logits, boxes = m.forward_with_rois(x)
    truth = torch.full((14, 4), float("nan"))
    truth[2] = torch.tensor([0.2, 0.3, 0.6, 0.7])
    _png_ok(
        plot_roi_overlay(
            torch.rand(64, 64),
            {k: v[0] for k, v in boxes.items()},
            tmp_path / "o.png",
            probs=torch.sigmoid(logits[0]),
            true_boxes=truth,
        )
    )
    a = attention_map(m, x, stage=1)
    assert a.shape == (64, 64) and a.min() == 0 and a.max() == pytest.approx(1.0)
    base = timm.create_model("efficientvit_ml_m0", img_size=64, mxa=False).eval()
    _png_ok(plot_attention_comparison(x, base, m, tmp_path / "a.png", stage=1))


def test_phantom_grid(tmp_path) -> None:
    _png_ok(plot_phantom_grid(tmp_path / "g.png", n=4, image_size=96))


def test_cli_viz(tmp_path, shared_cxr) -> None:
    import dataclasses

    from mxa.cli import main
    from mxa.train.loop import TrainConfig, train

    cfg = TrainConfig(
        data="phantom",
        train_samples=16,
        val_samples=8,
        model="efficientvit_ml_m0",
        img_size=64,
        epochs=1,
        batch_size=8,
        ema_decay=0.0,
        warmup_epochs=0,
        progress=False,
    )
    train(dataclasses.replace(cfg, output=str(tmp_path / "m")))
    train(dataclasses.replace(cfg, mxa=False, output=str(tmp_path / "b")))
    out = tmp_path / "v"
    assert (
        main(
            [
                "viz",
                str(shared_cxr / "00000001_000.png"),
                "--checkpoint",
                str(tmp_path / "m" / "last.pt"),
                "--baseline",
                str(tmp_path / "b" / "last.pt"),
                "--phantom-grid",
                "4",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    for name in ("00000001_000_roi.png", "00000001_000_attention.png", "phantom_grid.png"):
        _png_ok(out / name)


def test_block_colours_are_fixed_and_never_the_truths_green() -> None:
    import matplotlib.colors as mcolors

    from mxa.viz._common import BLOCK_COLORS, TRUTH_COLOR, block_color

    truth = mcolors.to_rgb(TRUTH_COLOR)
    for c in BLOCK_COLORS:
        r, g, b = mcolors.to_rgb(c)
        assert not (g > 0.5 and g > r + 0.2 and g > b + 0.2), c  # no green-dominant block colour
        assert mcolors.to_rgb(c) != truth
    assert len(set(BLOCK_COLORS)) == len(BLOCK_COLORS) and block_color(len(BLOCK_COLORS)) == BLOCK_COLORS[0]
