"""``mxa serve``: a local web page that shows a model's findings on uploaded X-rays (the ``app`` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from mxa.cli._common import bounded

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page: upload X-rays, see the findings, the MXA regions and Grad-CAM",
        description=(
            "Start a web page on this computer for a model: drop PNG, JPEG or DICOM files on it and see, "
            "per image, the findings as bars sorted by probability (with the model's thresholds and "
            "decisions when it has a decision rule), the image with the MXA regions (toggled per finding), "
            "a Grad-CAM view, "
            "notes about the file, and download the results (CSV and JSON, mxa predict's columns) and the "
            "overlay. Nothing is sent anywhere; uploads live in a temporary folder removed at exit. Ctrl-C "
            "stops it. Research software, not for clinical use. Needs the app extra: "
            'pip install "mxa-attention[app]".'
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        help="what mxa.load_model reads: a checkpoint (.pt), an exported .safetensors or folder, "
        "hf-hub:ORG/NAME, local-dir:DIR; or a model name (efficientvit_ml_m0...) for random weights, to try "
        "the page",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only); another (0.0.0.0: every "
        "network) lets other computers upload images, with a warning",
    )
    p.add_argument(
        "--port",
        type=bounded(int, 1, 65535),
        default=None,
        help="port (default Gradio's: 7860, or the next free one)",
    )
    p.add_argument(
        "--device", default="auto", help="where the model runs: auto, cpu, cuda, cuda:1... (default auto)"
    )
    p.add_argument(
        "--max-file-size",
        type=bounded(int, 1, 4096),
        default=50,
        metavar="MB",
        help="the largest file the page accepts, in MB (default 50)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(ns: argparse.Namespace) -> int:
    from mxa._optional import require

    require("gradio", "mxa serve")
    from mxa.predict import Predictor, resolve_model
    from mxa.serve import serve

    if _looks_like_a_file(ns.model):
        model = resolve_model(None, ns.model, None)
    else:
        model = resolve_model(None, None, ns.model)
        if not str(ns.model).startswith(("hf-hub:", "local-dir:")):
            print(f"note: {ns.model} with random weights: the page works, its findings mean nothing")
    predictor = Predictor(model, ns.device)
    print("Research software, not for clinical use. Ctrl-C stops the page.")
    serve(
        predictor,
        host=ns.host,
        port=ns.port,
        max_file_mb=ns.max_file_size,
        on_ready=lambda url: print(f"serving {ns.model} on {url}", flush=True),
    )
    print("stopped; the uploads are deleted")
    return 0


def _looks_like_a_file(source: str) -> bool:
    from pathlib import Path

    return Path(source).exists() or Path(source).suffix in (".pt", ".safetensors")
