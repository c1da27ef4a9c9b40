"""The measures of benchmarks/localization_evidence.py (pointing game, box masks, the occluding blur)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def evidence():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("localization_evidence")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_box_mask_takes_the_cells_whose_centres_are_inside(evidence):
    box = torch.tensor([[0.25, 0.0, 0.75, 0.5]])  # columns 1-2 and rows 0-1 of a 4 x 4 map
    mask = evidence.box_mask(box, 4, 4)[0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0:2, 1:3] = True
    assert torch.equal(mask, expected)
    grown = evidence.box_mask(box, 4, 4, grow=2.0)[0]  # about its centre: columns 0-3, rows 0-2
    assert int(grown.sum()) == 12 and bool(grown[2].all()) and not bool(grown[3].any())


def test_pointing_hit_miss_chance_and_offset(evidence):
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 2] = 1.0  # inside the box below
    maps[1, 3, 3] = 1.0  # one cell below and right of the box's corner cell
    boxes = torch.tensor([[0.5, 0.25, 0.75, 0.5], [0.5, 0.5, 0.75, 0.75]])  # cells (1, 2) and (2, 2)
    out = evidence.pointing(maps, boxes)
    assert out["pointing"] == pytest.approx(0.5)
    assert out["chance"] == pytest.approx(1 / 16)
    assert out["near"] == pytest.approx(1.0)
    # peak minus box centre, in cells: (0, 0) and (+1, +1)
    assert out["offset_y"] == pytest.approx(0.5) and out["offset_x"] == pytest.approx(0.5)


def test_blur_keeps_a_flat_image_and_spreads_a_point(evidence):
    flat = torch.full((1, 1, 32, 32), 0.3)
    torch.testing.assert_close(evidence.blurred(flat, sigma=2.0), flat)
    point = torch.zeros(1, 1, 33, 33)
    point[0, 0, 16, 16] = 1.0
    soft = evidence.blurred(point, sigma=2.0)
    assert float(soft.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(soft.max()) < 0.1 and int(soft.flatten().argmax()) == 16 * 33 + 16
