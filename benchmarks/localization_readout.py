"""Does a connected-component read-out of the label maps fit findings better than the bounding box?

    python benchmarks/localization_readout.py   # the study's trained `labels` runs; about 10 min on 2 cores

A post-hoc analysis of the runs `benchmarks/localization_study.py` trained (docs/localization.md): the label
maps stay as trained, and only the way a box is read off a chosen label's map changes. ``bbox`` is what the
block crops today (:func:`mxa.layers.peak_boxes`: the box around everything above 70% of the way from the
map's mean to its peak); ``component`` keeps only the connected region of those cells (8-neighbours, on the
same 4x upsampling) that holds the map's peak, the usual CAM practice. Each is read at the block's own
threshold and at others (``FRACTIONS``), the threshold then chosen with the block on validation. All are
scored for the labels the block chooses (its top R), the block chosen on the study's validation split and
scored on its test split, exactly as the study does. Writes ``benchmarks/results/localization-readout.json``.

``deblur`` asks whether a box can be shrunk to the finding by undoing the map's blur: a map is
the finding blurred by the features' reach, so a box read at the block's own fraction is about
``sqrt(side^2 + w0^2)`` wide for a finding of that side. Each side is shrunk to ``sqrt(side^2 - w0^2)``
about the box's centre (at least a fine cell), with w0 (``WIDTHS``, a fraction of the map side) chosen with
the block on validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchvision.ops import box_convert

import mxa
from localization_study import TEST, VALIDATION, analyse_runs, single_finding
from mxa.data.combine import build_eval_dataset
from mxa.evaluate import predict
from mxa.layers.label_roi import PEAK_FRACTION, LabelROIPool, _threshold, peak_boxes

EIGHT = np.ones((3, 3), dtype=bool)  # 8-neighbour connectivity
#: Where box edges lie (from each map's mean, 0, to its peak, 1): the block's own (0.7) and others, the
#: choice made on the validation split
FRACTIONS = (0.5, 0.6, PEAK_FRACTION, 0.8, 0.9)
#: The blur widths w0 the deblurred read-out may remove (fractions of the map side), chosen on validation
WIDTHS = tuple(round(0.025 * i, 3) for i in range(17))


def deblurred(boxes: torch.Tensor, width: float, smallest: float) -> torch.Tensor:
    """(..., 4) boxes, each side shrunk to ``sqrt(side^2 - width^2)`` (>= ``smallest``) about its centre."""
    cxcywh = box_convert(boxes, "xyxy", "cxcywh")
    side = (cxcywh[..., 2:].square() - width**2).clamp(min=smallest**2).sqrt()
    return box_convert(torch.cat([cxcywh[..., :2], side], -1), "cxcywh", "xyxy")


def component_boxes(maps: torch.Tensor, refine: int, fraction: float) -> torch.Tensor:
    """(N, H, W) maps -> (N, 4) boxes of the connected above-threshold region holding each map's peak."""
    fine = F.interpolate(maps[:, None], scale_factor=refine, mode="bilinear")[:, 0]
    flat = fine.flatten(1)
    above = (fine >= _threshold(flat.mean(1), flat.amax(1), fraction)[:, None, None]).numpy()
    peak = flat.argmax(1).numpy()
    side_y, side_x = fine.shape[-2:]
    out = np.zeros((len(maps), 4), dtype=np.float32)
    for i, a in enumerate(above):
        regions, _ = ndimage.label(a, structure=EIGHT)
        ys, xs = np.nonzero(regions == regions.flat[peak[i]])
        out[i] = [xs.min() / side_x, ys.min() / side_y, (xs.max() + 1) / side_x, (ys.max() + 1) / side_y]
    return torch.from_numpy(out)


def block_boxes(model: torch.nn.Module, kind: str, split: dict[str, int]) -> tuple[dict, torch.Tensor]:
    """Per block and read-out, (N, K, 4) boxes for the labels the block chooses (NaN for the others)."""
    pools = {n: b.roi for n, b in model.mxa_blocks().items() if isinstance(b.roi, LabelROIPool)}
    maps: dict[str, list[torch.Tensor]] = {n: [] for n in pools}
    hooks = [
        p.register_forward_pre_hook(
            lambda m, a, n=n: maps[n].append(m.classifier.label_maps(a[0].float()).detach())
        )
        for n, p in pools.items()
    ]
    try:
        ds = build_eval_dataset(kind, model, samples=split["samples"], seed=split["seed"])
        preds = predict(model, ds, batch_size=64, with_rois=False)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, torch.Tensor] = {}
    for n, pool in pools.items():
        z = torch.cat(maps[n])  # (N, K, H, W)
        labels = (z.amax((2, 3)) + pool.never).topk(pool.rois, dim=1).indices  # (N, R): the block's choice
        rows = torch.arange(len(z))[:, None].expand_as(labels)
        chosen = z[rows, labels]  # (N, R, H, W)
        own = peak_boxes(chosen, pool.refine, pool.fraction)
        for width in WIDTHS:
            full = torch.full((*z.shape[:2], 4), float("nan"))
            full[rows, labels] = deblurred(own, width, 1 / (pool.refine * z.shape[-1]))
            out[f"{n}/deblur@{width}"] = full
        for fraction in FRACTIONS:
            for name, boxes in (
                ("bbox", peak_boxes(chosen, pool.refine, fraction)),
                (
                    "component",
                    component_boxes(chosen.flatten(0, 1), pool.refine, fraction).view(*labels.shape, 4),
                ),
            ):
                full = torch.full((*z.shape[:2], 4), float("nan"))
                full[rows, labels] = boxes
                out[f"{n}/{name}@{fraction}"] = full
    return out, preds["true_boxes"]


def analyse(run: Path, kind: str) -> dict[str, Any]:
    model = mxa.load_model(run / "last.pt").eval()
    val_boxes, val_true = block_boxes(model, kind, VALIDATION)
    test_boxes, test_true = block_boxes(model, kind, TEST)
    val, test = single_finding(val_boxes, val_true), single_finding(test_boxes, test_true)
    # each read-out: the block chosen on validation at the read-out's own setting (the block's fraction, no
    # deblurring), and (block, setting) chosen together; every choice scored on test
    match = {"deblur@0": "/deblur@0.0", "deblur": "/deblur@"}
    for readout in ("bbox", "component"):
        match.update({readout: f"/{readout}@{PEAK_FRACTION}", f"{readout}+fraction": f"/{readout}@"})
    rec: dict[str, Any] = {}
    for key, part in match.items():
        sets = [k for k in val["sets"] if part in k and (part.endswith("@") or k.endswith(part))]
        best = max(sets, key=lambda k: val["sets"][k]["iou"])
        rec[key] = {"set": best, **test["sets"][best]}
    return rec


def main() -> int:
    def describe(rec: dict[str, Any]) -> str:
        return "\n".join(f"  {k}: {v['set']} IoU {v['iou']:.3f}" for k, v in rec.items())

    header = {"validation": VALIDATION, "test": TEST}
    variants = ["labels", "labels+box-loss"]
    return analyse_runs(__doc__, "localization-readout.json", variants, analyse, describe, header)


if __name__ == "__main__":
    raise SystemExit(main())
