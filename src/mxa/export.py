"""Deployment: ONNX export (BN fused, verified in ONNX Runtime) and safetensors weights + config.

Exporters and opsets (``grid_sample`` exists in ONNX from opset 16):

* the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) decomposes ``affine_grid`` and works from
  opset 16; it is used for opsets below 20 (the default, 18);
* the TorchScript exporter cannot export ``affine_grid`` below opset 20; from opset 20 it works and is
  much faster to run, so it is used there.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from timm.utils import reparameterize_model

from ._optional import require

__all__ = ["export_onnx", "export_safetensors", "load_exported", "register"]

log = logging.getLogger(__name__)


class _WithRois(torch.nn.Module):
    """(B, C, H, W) -> (logits (B, K), boxes (B, n_blocks, 4)) for export."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, boxes = self.model.forward_with_rois(x)
        return logits, torch.stack(list(boxes.values()), dim=1)


def _input_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    hw = getattr(model, "input_hw", None) or tuple(model.pretrained_cfg.get("input_size", (1, 224, 224))[-2:])
    return int(getattr(model, "in_chans", 1)), int(hw[0]), int(hw[1])


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    opset: int = 18,
    dynamic_batch: bool = True,
    with_rois: bool = False,
    exporter: str = "auto",
    verify: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Export ``model`` to ONNX with its BatchNorms fused, and check it in ONNX Runtime.

    Args:
        model: a classification model (an ``efficientvit_ml_*`` for ``with_rois``).
        path: the ``.onnx`` file to write.
        opset: ONNX opset, at least 16 (``grid_sample``).
        dynamic_batch: a symbolic batch dimension (otherwise batch 1).
        with_rois: add a second output ``rois`` (B, n_blocks, 4) with the MXA boxes (normalized xyxy).
        exporter: ``auto`` (dynamo below opset 20, TorchScript from 20), ``dynamo`` or ``torchscript``.
        verify: run batches of 1 and 3 in ONNX Runtime and compare with the eager (unfused) model.
        atol: the largest absolute difference of the logits ``verify`` accepts.

    Returns:
        ``path``. Raises ``ValueError`` if ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    if opset < 16:
        raise ValueError(f"opset {opset} has no GridSample: use opset >= 16 (default 18)")
    if exporter == "auto":
        exporter = "dynamo" if opset < 20 else "torchscript"
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    if exporter == "torchscript" and opset < 20:
        raise ValueError(
            "the TorchScript exporter cannot export affine_grid below opset 20; use exporter='dynamo'"
        )
    require("onnx", "ONNX export")
    if exporter == "dynamo":
        require("onnxscript", "ONNX export with the dynamo exporter")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    eager = model.eval()
    fused = reparameterize_model(copy.deepcopy(eager).cpu()).eval()
    net: torch.nn.Module = _WithRois(fused) if with_rois else fused
    c, h, w = _input_shape(eager)
    x = torch.randn(2 if dynamic_batch else 1, c, h, w)
    names = ["logits", "rois"] if with_rois else ["logits"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
            prog = torch.onnx.export(
                net,
                (x,),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=shapes,
                input_names=["x"],
                output_names=names,
                verbose=False,
            )
            prog.save(str(path))
        else:
            axes = {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}} if dynamic_batch else None
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["x"],
                output_names=names,
                dynamic_axes=axes,
            )
    if verify:
        diff = verify_onnx(path, eager, batch_sizes=(1, 3) if dynamic_batch else (1,))
        if diff > atol:
            raise ValueError(
                f"ONNX Runtime and PyTorch disagree on {path}: max |diff| of logits {diff:.3g} > {atol}"
            )
        print(
            f"exported {path} (opset {opset}, {exporter} exporter, BN fused); "
            f"ONNX Runtime vs PyTorch: max |diff| of logits {diff:.2e}"
        )
    return path


@torch.no_grad()
def verify_onnx(
    path: str | Path, model: torch.nn.Module, batch_sizes: tuple[int, ...] = (1, 3), seed: int = 0
) -> float:
    """Largest absolute difference between ONNX Runtime's logits and the eager model's."""
    ort = require("onnxruntime", "Checking an ONNX export")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    c, h, w = _input_shape(model)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = model.eval().cpu()
    for b in batch_sizes:
        x = torch.randn(b, c, h, w, generator=g)
        got = torch.from_numpy(sess.run(None, {inp: x.numpy()})[0])
        worst = max(worst, float((got - model(x)).abs().max()))
    return worst


def _model_config(model: torch.nn.Module) -> dict[str, Any]:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    arch = cfg.get("architecture") or getattr(model, "default_cfg", {}).get("architecture")
    kwargs: dict[str, Any] = {
        "num_classes": int(getattr(model, "num_classes", 14)),
        "in_chans": int(getattr(model, "in_chans", 1)),
    }
    if hasattr(model, "input_hw"):
        kwargs["img_size"] = int(model.input_hw[0])
    if hasattr(model, "mxa_stages"):
        kwargs["mxa"] = bool(model.mxa_stages)
        if model.mxa_stages:
            kwargs["mxa_stages"] = list(model.mxa_stages)
    keep = ("input_size", "mean", "std", "interpolation", "crop_pct", "first_conv", "classifier", "license")
    pcfg = {k: cfg[k] for k in keep if k in cfg}
    pcfg["num_classes"] = kwargs["num_classes"]
    pcfg["label_names"] = list(getattr(model, "label_names", None) or [])
    return {"architecture": arch, "model_kwargs": kwargs, "pretrained_cfg": pcfg}


def export_safetensors(model: torch.nn.Module, path: str | Path) -> Path:
    """Weights as safetensors (the config in its metadata) and ``config.json`` beside it (timm-hub style).

    Load back with :func:`load_exported`, or with
    ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path), **model_kwargs)``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = _model_config(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"mxa_config": json.dumps(config), "format": "pt"})
    (path.parent / "config.json").write_text(json.dumps(config, indent=2))
    print(f"exported {path} and {path.parent / 'config.json'} ({config['architecture']})")
    return path


def load_exported(path: str | Path, **overrides: Any) -> torch.nn.Module:
    """Rebuild a model from a file written by :func:`export_safetensors`, through timm's pretrained loading."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "mxa_config" not in meta:
        raise ValueError(
            f"{path} has no mxa config in its metadata: was it written by mxa.export_safetensors?"
        )
    config = json.loads(meta["mxa_config"])
    kwargs = {**config["model_kwargs"], **overrides}
    model = timm.create_model(
        config["architecture"], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )
    return model.eval()


def _load_for_export(ns: argparse.Namespace) -> torch.nn.Module:
    if ns.checkpoint:
        from .engine.checkpoint import load_model_from_checkpoint

        return load_model_from_checkpoint(ns.checkpoint)
    kw = {"img_size": ns.img_size} if ns.img_size else {}
    return timm.create_model(ns.model, **kw).eval()


def cmd_export(ns: argparse.Namespace) -> int:
    model = _load_for_export(ns)
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
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fused, verified) or safetensors (+ config)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint", help="a checkpoint written by `mxa train` (its EMA weights when present)"
    )
    src.add_argument("--model", help="a timm model name (random weights)")
    p.add_argument(
        "--format", choices=["onnx", "safetensors"], default="onnx", help="output format (default onnx)"
    )
    p.add_argument("--output", required=True, help="the file to write (.onnx or .safetensors)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 16 (default 18)")
    p.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "torchscript"],
        default="auto",
        help="auto: dynamo below opset 20, TorchScript from 20 (faster); see docs/deployment.md",
    )
    p.add_argument("--with-rois", action="store_true", help="add the MXA boxes as a second output 'rois'")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1")
    p.add_argument("--img-size", type=int, default=None, help="input size for --model (default the model's)")
    p.set_defaults(func=cmd_export)
