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


def test_cells_touched_include_every_cell_the_box_overlaps(evidence):
    box = torch.tensor([[0.40, 0.15, 0.60, 0.20]])  # across columns 1-2, in row 0 of a 4 x 4 map
    touched = evidence.cells_touched(box, 4, 4)[0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 1:3] = True
    assert torch.equal(touched, expected)
    # no cell centre lies inside this box, so the centre mask is empty: the pointing game could never hit it
    assert not bool(evidence.box_mask(box, 4, 4).any())


def test_pointing_hit_miss_flat_chance_and_offset(evidence):
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 2] = 1.0  # on the box below
    maps[1, 3, 2] = 1.0  # two cells below and one right of the box's cell
    boxes = torch.tensor([[0.5, 0.25, 0.75, 0.5], [0.25, 0.25, 0.5, 0.5], [0.0, 0.0, 0.25, 0.25]])
    out = evidence.pointing(maps, boxes)  # the third map is flat: a miss, though its argmax is on the box
    assert out["pointing"] == pytest.approx(1 / 3)
    assert out["flat"] == pytest.approx(1 / 3)
    assert out["chance"] == pytest.approx(1 / 16)
    assert out["near"] == pytest.approx(1.0)
    # peak minus box centre, in cells: (0, 0), (+2, +1) and (-0.5 + 0.5 = 0, 0) for the flat map's cell 0
    assert out["offset_y"] == pytest.approx(2 / 3) and out["offset_x"] == pytest.approx(1 / 3)


def test_blur_keeps_a_flat_image_and_spreads_a_point(evidence):
    # sigma 2: a 13-pixel kernel, inside the 33-pixel image, so the point's mass stays whole
    flat = torch.full((1, 2, 32, 32), 0.3)
    torch.testing.assert_close(evidence.blurred(flat, sigma=2.0), flat)
    point = torch.zeros(1, 2, 33, 33)
    point[0, 1, 16, 16] = 1.0  # in the second channel only: channels are blurred apart
    soft = evidence.blurred(point, sigma=2.0)
    assert float(soft[0, 0].abs().max()) == 0.0
    assert float(soft[0, 1].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(soft.max()) < 0.1 and int(soft[0, 1].flatten().argmax()) == 16 * 33 + 16
