"""Deployment: ONNX export (BN fused, verified in ONNX Runtime) and safetensors weights + config.

Exporters and opsets (``grid_sample`` exists in ONNX from opset 16):

* the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) decomposes ``affine_grid`` and works from
  opset 16; it is used for opsets below 20 (the default, 18);
* the TorchScript exporter cannot export ``affine_grid`` below opset 20; from opset 20 it works and is
  much faster to run, so it is used there.

Both formats carry what a deployment needs: the ONNX file's metadata (``metadata_props``; ONNX Runtime:
``session.get_modelmeta().custom_metadata_map``) and the safetensors config hold the label names, input size,
mean/std, the preprocessing in words and, when the model has a decision rule, its thresholds and
calibration (see :data:`ONNX_METADATA_KEYS`).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from timm.utils import reparameterize_model

from mxa._optional import require
from mxa.decision.rule import DecisionRule, get_decision_rule
from mxa.files.checkpoint import TrainCheckpoint
from mxa.files.load import load_exported
from mxa.files.spec import export_config
from mxa.models.hooks import forward_rois, has_label_rois
from mxa.utils.files import atomic_path, atomic_write_text

__all__ = [
    "ONNX_METADATA_KEYS",
    "export_onnx",
    "export_safetensors",
    "load_exported",
    "onnx_metadata",
    "save_with_decision",
    "verify_onnx",
]

#: The ONNX metadata keys (values are strings; JSON where noted).
#: The lowest ONNX opset we export (the separable MXA crop is MatMul), the lowest with GridSample (for blocks
#: fixed to crop_method="grid_sample"), the default, and the lowest at which TorchScript exports affine_grid.
MIN_OPSET, GRID_SAMPLE_OPSET, DEFAULT_OPSET, TORCHSCRIPT_AFFINE_GRID_OPSET = 13, 16, 18, 20

ONNX_METADATA_KEYS = (
    "mxa_config",  # JSON: the safetensors config (architecture, model_kwargs, pretrained_cfg, decision)
    "label_names",  # JSON list, in output order
    "input_size",  # JSON [C, H, W]
    "mean",  # JSON list
    "std",  # JSON list
    "preprocessing",  # text: how an image becomes the input
    "output",  # text: what the outputs are
    "mxa_decision",  # JSON: thresholds and calibration (DecisionRule.to_dict), "null" when none
)

log = logging.getLogger(__name__)


class _WithRois(torch.nn.Module):
    """(B, C, H, W) -> (logits (B, K), boxes (B, N, 4)[, roi labels (B, N)]) for export: N the boxes every
    block crops in block order (one per single-box block, R per label-ROI block), with the label index of
    each box (-1 for a single box) when the model has label-ROI blocks."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen = forward_rois(self.model, x)
        boxes = [b if b.ndim == 3 else b[:, None] for b in seen.boxes.values()]
        if not seen.labels:
            return seen.output, torch.cat(boxes, dim=1)
        labels = [
            seen.labels[k] if k in seen.labels else torch.full_like(b[..., 0], -1, dtype=torch.long)
            for k, b in zip(seen.boxes, boxes)
        ]
        return seen.output, torch.cat(boxes, dim=1), torch.cat(labels, dim=1)


def _input_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", {})
    hw = getattr(model, "input_hw", None) or tuple(cfg.get("input_size", (1, 224, 224))[-2:])
    return int(getattr(model, "in_chans", 1)), int(hw[0]), int(hw[1])


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool | int = True,
    with_rois: bool = False,
    exporter: str = "auto",
    verify: bool = True,
    atol: float = 1e-4,
    simplify: bool = True,
) -> Path:
    """Export ``model`` to ONNX with its BatchNorms fused, and check it in ONNX Runtime.

    Args:
        model: a classification model (an ``efficientvit_ml_*`` for ``with_rois``).
        path: the ``.onnx`` file to write.
        opset: ONNX opset: from 13 when the MXA crops are exported as MatMul (``crop_method`` ``auto``
            or ``separable``: the exported copy uses the separable crop, which equals the grid_sample crop to
            1e-5), from 16 for blocks built with ``crop_method="grid_sample"`` (ONNX GridSample).
        dynamic_batch: ``True``: a symbolic batch dimension; ``False``: batch 1; a number: that batch
            size, fixed (ONNX Runtime then knows every shape, and folds the shape arithmetic).
        with_rois: add an output ``rois`` (B, N, 4) with the boxes the MXA blocks crop (normalized xyxy, in
            block order: one per single-box block, R per label-ROI block) and, for a model with label-ROI
            blocks, ``roi_labels`` (B, N) with each box's label index (-1 for a single box).
        exporter: ``auto`` (TorchScript, unless a block is fixed to grid_sample below opset 20: dynamo),
            ``dynamo`` or ``torchscript``.
        verify: run batches of 1 and 3 in ONNX Runtime and compare with the eager (unfused) model.
        atol: the largest absolute difference of the logits ``verify`` accepts.
        simplify: simplify the graph with onnxslim (constant and shape folding, fused nodes: with a symbolic
            batch, about half the nodes; docs/benchmarks.md). ``verify`` checks the simplified graph.

    Returns:
        ``path``. Raises ``ValueError`` if ONNX Runtime disagrees with PyTorch by more than ``atol``.

    Examples:
        >>> import tempfile, timm, mxa
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64).eval()
        >>> path = mxa.export_onnx(model, tempfile.mkdtemp() + "/m.onnx", opset=17)  # checked in ONNX Runtime
        >>> path.suffix
        '.onnx'
    """
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is not supported: use opset >= {MIN_OPSET} (default {DEFAULT_OPSET})"
        )
    fixed, auto = _crop_methods(model)
    if opset < GRID_SAMPLE_OPSET and fixed:
        raise ValueError(
            f"opset {opset} has no GridSample, which the grid_sample crop of {fixed} MXA block(s) needs: use "
            "opset >= 16, or build the model with mxa_cfg=dict(crop_method='separable') (MatMul, opset >= 13)"
        )
    if exporter == "auto":  # TorchScript is much faster to run; it exports affine_grid only from opset 20
        exporter = "dynamo" if fixed and opset < TORCHSCRIPT_AFFINE_GRID_OPSET else "torchscript"
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    if exporter == "torchscript" and opset < TORCHSCRIPT_AFFINE_GRID_OPSET and fixed:
        raise ValueError(
            "the TorchScript exporter cannot export affine_grid below opset 20; use exporter='dynamo', or "
            "build the model with mxa_cfg=dict(crop_method='separable')"
        )
    require("onnx", "ONNX export")
    if exporter == "dynamo":
        require("onnxscript", "ONNX export with the dynamo exporter")
    batch = _fixed_batch(dynamic_batch)
    if simplify:
        require("onnxslim", "ONNX export with simplify=True (or simplify=False: mxa export --no-simplify)")
    path = Path(path)
    eager = model.eval()
    fused = reparameterize_model(copy.deepcopy(eager).cpu()).eval().requires_grad_(False)
    if auto:  # MatMul instead of GridSample: any opset >= 13, the TorchScript exporter, runtimes without it
        for blk in getattr(fused, "mxa_blocks", dict)().values():
            if getattr(blk.roi, "crop_method", None) == "auto":
                blk.roi.crop_method = "separable"
    net: torch.nn.Module = _WithRois(fused) if with_rois else fused
    c, h, w = _input_shape(eager)
    x = torch.randn(batch or 2, c, h, w)
    names = ["logits", "rois", "roi_labels"][: (3 if has_label_rois(eager) else 2) if with_rois else 1]
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        _export(net, x, tmp, exporter, opset, batch is None, names)
        if simplify:
            _simplify(tmp)
        _write_metadata(tmp, onnx_metadata(eager, with_rois))
        if verify:
            diff = verify_onnx(tmp, eager, batch_sizes=(1, 3) if batch is None else (batch,))
            if diff > atol:
                raise ValueError(
                    f"ONNX Runtime and PyTorch disagree on {path}: max |diff| of logits {diff:.3g} > {atol}; "
                    "nothing was written"
                )
    if verify:
        log.info(
            "exported %s (opset %d, %s exporter, BN fused); ONNX Runtime vs PyTorch: max |diff| of logits "
            "%.2e",
            path,
            opset,
            exporter,
            diff,
        )
    return path


def _fixed_batch(dynamic_batch: bool | int) -> int | None:
    """The batch size an export fixes (None: symbolic) from ``export_onnx``'s ``dynamic_batch``."""
    if dynamic_batch is True:
        return None
    if dynamic_batch is False:
        return 1
    if isinstance(dynamic_batch, int) and dynamic_batch >= 1:
        return dynamic_batch
    raise ValueError(f"dynamic_batch must be True, False or a batch size >= 1, got {dynamic_batch!r}")


def _simplify(path: Path) -> None:
    """Simplify the ONNX file at ``path`` in place with onnxslim (constants, shapes folded; nodes fused)."""
    import onnx
    import onnxslim

    before = len(onnx.load(str(path), load_external_data=False).graph.node)
    slim = onnxslim.slim(str(path))
    onnx.save(slim, str(path))
    log.info("onnxslim: %d -> %d graph nodes", before, len(slim.graph.node))


def _crop_methods(model: torch.nn.Module) -> tuple[int, int]:
    """(MXA blocks fixed to grid_sample, blocks with crop_method 'auto')."""
    blocks = list(getattr(model, "mxa_blocks", dict)().values())
    # label-ROI blocks do not resample: they have no crop method
    methods = [b.roi.crop_method for b in blocks if hasattr(b.roi, "crop_method")]
    return methods.count("grid_sample"), methods.count("auto")


def _export(
    net: torch.nn.Module,
    x: torch.Tensor,
    path: Path,
    exporter: str,
    opset: int,
    dynamic_batch: bool,
    names: list[str],
) -> None:
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
        assert prog is not None  # dynamo=True always returns a program
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


def onnx_metadata(model: torch.nn.Module, with_rois: bool = False) -> dict[str, str]:
    """The metadata :func:`export_onnx` writes (keys :data:`ONNX_METADATA_KEYS`), as strings."""
    config = export_config(model)
    pcfg = config["pretrained_cfg"]
    c, h, w = _input_shape(model)
    rule = get_decision_rule(model)
    out = "logits (B, K) in label_names order"
    if with_rois:
        out += ", rois (B, N, 4) normalized xyxy: the boxes the MXA blocks crop, in block order"
        if has_label_rois(model):
            out += ", roi_labels (B, N) the label index of each box (-1: a block's single box)"
    return {
        "mxa_config": json.dumps(config),
        "label_names": json.dumps(pcfg.get("label_names") or []),
        "input_size": json.dumps([c, h, w]),
        "mean": json.dumps(list(pcfg.get("mean", ()))),
        "std": json.dumps(list(pcfg.get("std", ()))),
        "preprocessing": pcfg["preprocessing"],
        "output": out,
        "mxa_decision": json.dumps(rule.to_dict() if rule is not None else None),
    }


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    onnx = require("onnx", "ONNX export")
    m = onnx.load(str(path))
    onnx.helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, **props})
    onnx.save(m, str(path))


def save_with_decision(source: str | Path, out: str | Path, rule: DecisionRule, use_ema: bool = True) -> Path:
    """Write a copy of the model file ``source`` that carries ``rule`` (never over ``source``).

    A ``mxa train`` checkpoint (``.pt``) is copied with the key ``decision`` added (digest renewed); an
    exported model is exported again (``out`` must end in ``.safetensors``, in another folder, since its
    ``config.json`` is written beside it). :func:`mxa.load_model` on ``out`` gives ``model.decision_rule``.
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise ValueError(
            f"--save-model {out} is the model being evaluated; write the new model to another file"
        )
    if source.is_dir() or source.suffix == ".safetensors":
        if out.suffix != ".safetensors":
            raise ValueError(f"an exported model is saved as .safetensors; got {out}")
        src_dir = source if source.is_dir() else source.parent
        if out.parent.resolve() == src_dir.resolve():
            raise ValueError(
                f"{out} is in the folder of {source}, whose config.json it would replace; choose another "
                "folder"
            )
        model = load_exported(source)
        rule.check_labels(list(getattr(model, "label_names", None) or rule.labels), f"the rule for {source}")
        model.decision_rule = rule  # type: ignore[assignment]  # (nn.Module types attributes as Tensor | Module)
        return export_safetensors(model, out)
    ckpt = TrainCheckpoint.load(source)
    ckpt.decision = rule.to_dict()
    ckpt.save(out)
    log.debug("wrote %s: %s with thresholds/calibration", out, source)  # the CLI prints the path
    return out


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


def export_safetensors(model: torch.nn.Module, path: str | Path) -> Path:
    """Weights as safetensors (the config in its metadata) and ``config.json`` beside it (timm-hub style).

    Load back with :func:`mxa.load_model` / :func:`load_exported`, or with
    ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path), **model_kwargs)``.
    Both files are written atomically.

    Examples:
        >>> import tempfile, timm, mxa
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64)
        >>> path = mxa.export_safetensors(model, tempfile.mkdtemp() + "/m.safetensors")
        >>> sorted(p.name for p in path.parent.iterdir())
        ['config.json', 'm.safetensors']
    """
    from safetensors.torch import save_file

    path = Path(path)
    config = export_config(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"mxa_config": json.dumps(config), "format": "pt"})
    atomic_write_text(path.parent / "config.json", json.dumps(config, indent=2))
    log.info("exported %s and %s (%s)", path, path.parent / "config.json", config["architecture"])
    return path
