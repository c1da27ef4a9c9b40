"""``mxa export``: a model to ONNX (BN fused, verified in ONNX Runtime), safetensors (+ config.json), or
timm's Hub folder (+ a model card), optionally pushed to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from typing import Any

from mxa.cli._common import bounded, declare_io
from mxa.files.export import DEFAULT_OPSET, GRID_SAMPLE_OPSET, MIN_OPSET, TORCHSCRIPT_AFFINE_GRID_OPSET
from mxa.models import check_model_name

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (fused, verified), safetensors (+ config) or a Hub folder (+ card)",
        description=(
            f"ONNX (opset >= {MIN_OPSET}): BatchNorms fused, MXA crops exported as MatMul (the separable "
            "crop), by the TorchScript exporter (the dynamo exporter only for blocks fixed to "
            f"crop_method='grid_sample' below opset {TORCHSCRIPT_AFFINE_GRID_OPSET}, which also need opset "
            f">= {GRID_SAMPLE_OPSET}); then run in ONNX Runtime on random batches and compared with PyTorch: "
            "the file is written only if they agree. safetensors: the weights plus config.json, loadable "
            "with mxa.load_model or timm.create_model(..., pretrained_cfg_overlay=dict(file=...)). hub: a "
            "folder in timm's Hub layout (config.json, model.safetensors, a model card README.md), loadable "
            "after `import mxa` with timm.create_model('local-dir:DIR', pretrained=True) or "
            "mxa.load_model('local-dir:DIR'); --push-to-hub uploads it (then 'hf-hub:ORG/NAME')."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        help="a model of ours: a `mxa train` checkpoint (its EMA weights when present), exported, a Hub "
        "folder (local-dir:DIR) or repo (hf-hub:ORG/NAME)",
    )
    src.add_argument("--model", help="a timm model name (random weights)")
    p.add_argument(
        "--format",
        choices=["onnx", "safetensors", "hub"],
        default="onnx",
        help="output format (default onnx)",
    )
    p.add_argument(
        "--output", required=True, help="the file to write (.onnx or .safetensors), or the folder (hub)"
    )
    p.add_argument(
        "--metrics",
        default=None,
        help="with --format hub: an `mxa eval --json` file whose numbers (with their CIs) go in the model "
        "card",
    )
    p.add_argument(
        "--push-to-hub",
        default=None,
        metavar="ORG/NAME",
        help="with --format hub: upload the folder to this Hugging Face Hub model repo (created private if "
        "missing; needs network and a token: `huggingface-cli login` or HF_TOKEN)",
    )
    p.add_argument(
        "--public", action="store_true", help="with --push-to-hub: create the repo public (default private)"
    )
    p.add_argument(
        "--opset",
        type=bounded(int, MIN_OPSET, 30),
        default=DEFAULT_OPSET,
        help=f"ONNX opset, >= {MIN_OPSET} (>= {GRID_SAMPLE_OPSET} with grid_sample crops; "
        f"default {DEFAULT_OPSET})",
    )
    p.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "torchscript"],
        default="auto",
        help="auto: TorchScript (seconds), unless a block is fixed to grid_sample below opset "
        f"{TORCHSCRIPT_AFFINE_GRID_OPSET}: dynamo; see docs/deployment.md",
    )
    p.add_argument(
        "--with-rois",
        action="store_true",
        help="add the boxes the MXA blocks crop as an output 'rois' (B, N, 4), and for a model with label "
        "ROIs 'roi_labels' (B, N), the label of each box",
    )
    p.add_argument(
        "--static-batch",
        type=bounded(int, 1, 65536),
        nargs="?",
        const=1,
        default=None,
        metavar="N",
        help="fix the batch size to N (default 1 when given without N) instead of a symbolic batch: ONNX "
        "Runtime then folds the shape arithmetic (faster at that batch size; docs/benchmarks.md)",
    )
    p.add_argument(
        "--no-simplify",
        action="store_true",
        help="keep the exporter's graph as it is; by default onnxslim folds constants and shape arithmetic "
        "and fuses nodes (the result is checked against PyTorch either way)",
    )
    p.add_argument(
        "--img-size",
        type=bounded(int, 32, 2048),
        default=None,
        help="input size for --model (default the model's)",
    )
    declare_io(p, inputs=("checkpoint", "metrics"), outputs=("output",))
    p.set_defaults(func=cmd_export)


def cmd_export(ns: argparse.Namespace) -> int:
    import timm

    from mxa.files.export import export_onnx, export_safetensors
    from mxa.files.load import load_model

    hub_only = [f for f, v in (("--metrics", ns.metrics), ("--push-to-hub", ns.push_to_hub)) if v]
    if hub_only and ns.format != "hub":
        raise ValueError(f"{' and '.join(hub_only)} go with --format hub (got --format {ns.format})")
    onnx_only = [f for f, v in (("--static-batch", ns.static_batch), ("--no-simplify", ns.no_simplify)) if v]
    if onnx_only and ns.format != "onnx":
        raise ValueError(f"{' and '.join(onnx_only)} go with --format onnx (got --format {ns.format})")
    if ns.checkpoint:
        model = load_model(ns.checkpoint)
    else:
        check_model_name(ns.model)
        model = timm.create_model(ns.model, **({"img_size": ns.img_size} if ns.img_size else {})).eval()
    if ns.format == "hub":
        return _export_hub(ns, model)
    if ns.format == "onnx":
        export_onnx(
            model,
            ns.output,
            opset=ns.opset,
            dynamic_batch=ns.static_batch or True,
            with_rois=ns.with_rois,
            exporter=ns.exporter,
            simplify=not ns.no_simplify,
        )
    else:
        export_safetensors(model, ns.output)
    print(f"written: {ns.output}")
    return 0


def _export_hub(ns: argparse.Namespace, model: Any) -> int:
    import json
    from pathlib import Path

    from mxa.files.checkpoint import load_checkpoint
    from mxa.files.hub import export_hub, push_to_hub

    training = None
    if ns.checkpoint and Path(ns.checkpoint).suffix == ".pt":
        training = load_checkpoint(ns.checkpoint).get("config") or None
    metrics = None
    if ns.metrics:
        try:
            metrics = json.loads(Path(ns.metrics).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--metrics {ns.metrics} is not an `mxa eval --json` file ({e})") from None
    folder = export_hub(model, ns.output, training=training, metrics=metrics, overwrite=ns.overwrite)
    print(f"written: {folder} (config.json, model.safetensors, README.md)")
    if ns.push_to_hub:
        print(f"uploaded: {push_to_hub(folder, ns.push_to_hub, private=not ns.public)}")
    return 0
