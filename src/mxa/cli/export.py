"""``mxa export``: a model to ONNX (BN fused, verified in ONNX Runtime) or safetensors (+ config.json)."""

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
        help="export a model to ONNX (fused, verified) or safetensors (+ config)",
        description=(
            f"ONNX (opset >= {MIN_OPSET}): BatchNorms fused, MXA crops exported as MatMul (the separable "
            "crop), by the TorchScript exporter (the dynamo exporter only for blocks fixed to "
            f"crop_method='grid_sample' below opset {TORCHSCRIPT_AFFINE_GRID_OPSET}, which also need opset "
            f">= {GRID_SAMPLE_OPSET}); then run in ONNX Runtime on random batches and compared with PyTorch: "
            "the file is written only if they agree. safetensors: the weights plus config.json, loadable "
            "with mxa.load_model or timm.create_model(..., pretrained_cfg_overlay=dict(file=...))."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        help="a model of ours: a `mxa train` checkpoint (its EMA weights when present) or exported",
    )
    src.add_argument("--model", help="a timm model name (random weights)")
    p.add_argument(
        "--format", choices=["onnx", "safetensors"], default="onnx", help="output format (default onnx)"
    )
    p.add_argument("--output", required=True, help="the file to write (.onnx or .safetensors)")
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
    p.add_argument("--with-rois", action="store_true", help="add the MXA boxes as a second output 'rois'")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1")
    p.add_argument(
        "--img-size",
        type=bounded(int, 32, 2048),
        default=None,
        help="input size for --model (default the model's)",
    )
    declare_io(p, inputs=("checkpoint",), outputs=("output",))
    p.set_defaults(func=cmd_export)


def cmd_export(ns: argparse.Namespace) -> int:
    import timm

    from mxa.files.export import export_onnx, export_safetensors
    from mxa.files.load import load_model

    if ns.checkpoint:
        model = load_model(ns.checkpoint)
    else:
        check_model_name(ns.model)
        model = timm.create_model(ns.model, **({"img_size": ns.img_size} if ns.img_size else {})).eval()
    if ns.format == "onnx":
        export_onnx(
            model,
            ns.output,
            opset=ns.opset,
            dynamic_batch=not ns.static_batch,
            with_rois=ns.with_rois,
            exporter=ns.exporter,
        )
    else:
        export_safetensors(model, ns.output)
    print(f"written: {ns.output}")
    return 0
