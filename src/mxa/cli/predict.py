"""``mxa predict`` and ``mxa viz``: probabilities for X-ray files, ROI overlays and attention pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mxa.cli._common import bounded, declare_io

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="predict the 14 labels for PNG, JPEG or DICOM images",
        description=(
            "Write one CSV row per image (its path and one sigmoid probability per label). Folders are "
            "searched recursively. A missing extra (DICOM inputs need pydicom) stops before any work. An "
            "image that cannot be read is skipped and listed, the others are predicted, and the command "
            "then exits with status 1; the CSV, written whole at the end (never half a file), holds the "
            "images that were read. A model saved by `mxa eval --calibrate/--thresholds --save-model` gives "
            "calibrated probabilities and a positive/negative decision per label (printed, and as '<label> "
            "decision' CSV columns)."
        ),
    )
    p.add_argument("inputs", nargs="+", help="image files or folders")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        help="a model of ours: a checkpoint written by `mxa train` or an exported .safetensors",
    )
    src.add_argument(
        "--model",
        help="a shared model, hf-hub:ORG/NAME or local-dir:DIR (mxa export --format hub), or a timm model "
        "name with random weights (for trying the pipeline)",
    )
    p.add_argument("--out", default="preds.csv", help="CSV with one row per image (default preds.csv)")
    p.add_argument(
        "--roi-overlay", default=None, help="folder for one PNG per image with the MXA boxes drawn"
    )
    p.add_argument(
        "--heatmap",
        default=None,
        metavar="DIR",
        help="folder for one Grad-CAM PNG per image, drawn beside the MXA boxes (needs the cam extra)",
    )
    p.add_argument(
        "--heatmap-label",
        default="top",
        metavar="LABEL",
        help="the label the heatmap explains: a label name or 'top', the most probable (default top)",
    )
    p.add_argument(
        "--cam-stage",
        type=bounded(int, 0, 2),
        default=1,
        help="EfficientViT stage Grad-CAM looks at (default 1)",
    )
    p.add_argument(
        "--batch-size", type=bounded(int, 1, 4096), default=16, help="images per batch (default 16)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    declare_io(
        p,
        inputs=("inputs", "checkpoint"),
        outputs=("out", "roi_overlay", "heatmap"),
        folders=("roi_overlay", "heatmap"),
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "viz",
        help="pictures: ROI overlays, baseline-vs-MXA attention maps, a phantom grid",
        description=(
            "Draw, for each image, the box of every MXA block of --checkpoint over the X-ray with the top "
            "predictions beside it; with --baseline also the channel-mean activation maps of both models and "
            "their difference (the paper's Figure 4). --phantom-grid N draws N phantoms with their planted "
            "boxes."
        ),
    )
    p.add_argument("inputs", nargs="*", help="image files or folders (PNG, JPEG, DICOM)")
    p.add_argument(
        "--checkpoint", help="an MXA model of ours (checkpoint written by `mxa train`, or exported)"
    )
    p.add_argument(
        "--baseline", help="a baseline model of ours: also draw the attention comparison (paper Fig. 4)"
    )
    p.add_argument(
        "--stage",
        type=bounded(int, 0),
        default=1,
        help="stage whose activations make the attention map (default 1)",
    )
    p.add_argument(
        "--phantom-grid",
        type=bounded(int, 0, 400),
        default=0,
        metavar="N",
        help="also draw a grid of N phantoms",
    )
    p.add_argument(
        "--gradcam",
        action="append",
        default=None,
        metavar="LABEL",
        help="also draw the Grad-CAM heatmap of LABEL (a label name or 'top') beside the MXA boxes; "
        "repeatable",
    )
    p.add_argument(
        "--cam-stage",
        type=bounded(int, 0, 2),
        default=1,
        help="EfficientViT stage Grad-CAM looks at (default 1)",
    )
    p.add_argument("--output", default="mxa-viz", help="folder for the PNGs (default mxa-viz)")
    declare_io(p, inputs=("inputs", "checkpoint", "baseline"), outputs=("output",), folders=("output",))
    p.set_defaults(func=cmd_viz)


def cmd_predict(ns: argparse.Namespace) -> int:
    from mxa.predict import predict_files

    res = predict_files(
        ns.inputs,
        out=ns.out,
        checkpoint=ns.checkpoint,
        model_name=ns.model,
        roi_overlay=ns.roi_overlay,
        device=ns.device,
        batch_size=ns.batch_size,
        heatmap=ns.heatmap,
        heatmap_label=ns.heatmap_label,
        cam_stage=ns.cam_stage,
        overwrite=ns.overwrite,
    )
    _print_decisions(res)
    print(
        f"predictions for {res.n_predicted} image(s): {res.csv}"
        + (f"; overlays in {ns.roi_overlay}" if ns.roi_overlay else "")
        + (f"; heatmaps in {ns.heatmap}" if ns.heatmap else "")
    )
    if res.failures:
        print(
            f"error: {len(res.failures)} image(s) could not be read (the CSV holds the {res.n_predicted} "
            "others; fix or leave out these and run again with --overwrite):",
            file=sys.stderr,
        )
        for f, why in res.failures:
            print(f"  {f}: {why}", file=sys.stderr)
        return 1
    return 0


def _print_decisions(res: Any, full_up_to: int = 8) -> None:
    """Per image: every label's probability, threshold and decision (a table for a few images, one line
    each with the positive findings for many)."""
    rule = res.decision_rule
    if rule is None or rule.thresholds is None:
        return
    th = rule.thresholds
    kind = f"calibrated ({rule.calibration})" if rule.calibration else "uncalibrated"
    print(f"decisions at the model's thresholds ({rule.threshold_method}); probabilities {kind}")
    for f, probs, dec in res.rows:
        if len(res.rows) > full_up_to:
            pos = [f"{n} {p:.3f}" for n, p, d in zip(res.labels, probs, dec) if d == "positive"]
            print(f"{f}: positive: {', '.join(pos) or 'none'}")
            continue
        print(f"\n{f}")
        print(f"  {'label':<28} {'probability':>11} {'threshold':>9}  decision")
        for n, p, d in zip(res.labels, probs, dec):
            t = th.get(n)
            print(f"  {n:<28} {p:>11.3f} {'-' if t is None else f'{t:.3f}':>9}  {d or 'n/a (no threshold)'}")


def cmd_viz(ns: argparse.Namespace) -> int:
    from mxa.data.io import collect_images
    from mxa.files.load import load_model
    from mxa.utils.files import check_writable_dir
    from mxa.viz import draw_images, plot_phantom_grid

    out = check_writable_dir(ns.output, "--output folder")
    if ns.phantom_grid:
        print(plot_phantom_grid(Path(out) / "phantom_grid.png", n=ns.phantom_grid))
    if not ns.inputs:
        return 0
    if not ns.checkpoint:
        raise ValueError("--checkpoint is needed to draw ROI overlays or attention maps")
    model = load_model(ns.checkpoint)
    baseline = load_model(ns.baseline) if ns.baseline else None
    files = collect_images(ns.inputs)
    if ns.gradcam:
        from mxa.viz.cam import draw_gradcam

        for path in draw_gradcam(files, model, out, ns.gradcam, ns.cam_stage, overwrite=ns.overwrite):
            print(path)
        if baseline is not None:
            for path in draw_gradcam(
                files, baseline, Path(out) / "baseline", ns.gradcam, ns.cam_stage, overwrite=ns.overwrite
            ):
                print(path)
    from mxa.models.hooks import has_rois

    if ns.gradcam and not has_rois(model):
        return 0  # not one of our models: Grad-CAM only, no boxes to draw
    for path in draw_images(files, model, out, baseline, ns.stage, overwrite=ns.overwrite):
        print(path)
    return 0
