"""One way to describe, rebuild and load a model: from a ``mxa train`` checkpoint or an exported folder.

:class:`ModelSpec` is the single description of a model's constructor: a timm architecture name and the
keyword arguments it was built with. Checkpoints store it as ``model_name`` + ``model_kwargs``; exported
safetensors store it as ``architecture`` + ``model_kwargs`` (with the ``pretrained_cfg`` a deployment needs).
Rebuilding passes the keyword arguments through an allow-list and never asks timm for pretrained weights,
so a file cannot make us download anything or pass arbitrary arguments to a model constructor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..utils.checkpoint import load_checkpoint
from .decision import DecisionRule
from .grafted import GRAFTED_MODEL_NAMES

__all__ = [
    "ALLOWED_MODEL_KWARGS",
    "PREPROCESSING",
    "ModelSpec",
    "attach_decision_rule",
    "load_exported",
    "load_model",
    "load_model_from_checkpoint",
]

log = logging.getLogger(__name__)

#: The constructor arguments a file may carry; anything else (``pretrained``, ``pretrained_cfg_overlay``,
#: hub ids, ...) is refused.
ALLOWED_MODEL_KWARGS = frozenset(
    {
        "img_size",
        "in_chans",
        "num_classes",
        "mxa",
        "mxa_stages",
        "mxa_cfg",
        "label_names",
        "drop_rate",
        "global_pool",
    }
)
_ALLOWED_MXA_CFG = frozenset(
    {
        "reduction",
        "spatial_kernel",
        "min_size",
        "init_size",
        "init_scale",
        "mode",
        "crop_size",
        "saliency_temperature",
    }
)
_PCFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "first_conv", "classifier", "license")


@dataclass(frozen=True)
class ModelSpec:
    """A timm ``architecture`` and the ``kwargs`` of ``timm.create_model(architecture, **kwargs)``."""

    architecture: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_training(
        cls,
        model: str,
        img_size: int,
        mxa: bool = True,
        mxa_stages: list[int] | None = None,
        mxa_cfg: dict[str, Any] | None = None,
    ) -> ModelSpec:
        """The spec ``mxa train`` builds: MXA options only for our ``efficientvit_ml_*`` and ``*_mxa`` models."""
        kw: dict[str, Any] = {"img_size": int(img_size)}
        if model.startswith("efficientvit_ml_") or model in GRAFTED_MODEL_NAMES:
            kw["mxa"] = bool(mxa)
            if mxa_stages is not None:
                kw["mxa_stages"] = [int(i) for i in mxa_stages]
            if mxa and mxa_cfg:
                kw["mxa_cfg"] = dict(mxa_cfg)
        return cls(model, kw)

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelSpec:
        """Describe a built model (what export writes)."""
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        arch = cfg.get("architecture") or getattr(model, "default_cfg", {}).get("architecture")
        if not arch:
            raise ValueError(
                "the model has no timm pretrained_cfg['architecture']: build it with timm.create_model"
            )
        kw: dict[str, Any] = {
            "num_classes": int(getattr(model, "num_classes", 14)),
            "in_chans": int(getattr(model, "in_chans", 1)),
        }
        if hasattr(model, "input_hw"):
            kw["img_size"] = int(model.input_hw[0])
        # MXA options are constructor arguments of ours only (a timm model grafted by add_mxa has none)
        ours = arch.startswith("efficientvit_ml_") or arch in GRAFTED_MODEL_NAMES
        if hasattr(model, "mxa_stages") and ours:
            kw["mxa"] = bool(model.mxa_stages)
            if model.mxa_stages:
                kw["mxa_stages"] = list(model.mxa_stages)
            if getattr(model, "mxa_cfg", None):
                kw["mxa_cfg"] = dict(model.mxa_cfg)
        return cls(arch, kw)

    def validate(self, source: str = "the model description") -> ModelSpec:
        """Raise ``ValueError`` unless the architecture is registered and every argument is allowed."""
        if not isinstance(self.architecture, str) or not timm.is_model(self.architecture):
            raise ValueError(
                f"{source} names the model {self.architecture!r}, which timm does not know "
                "(did you `import mxa`?; `timm.list_models('efficientvit_ml_*')` lists ours)"
            )
        bad = sorted(set(self.kwargs) - ALLOWED_MODEL_KWARGS)
        mxa_cfg = self.kwargs.get("mxa_cfg") or {}
        bad += sorted(f"mxa_cfg.{k}" for k in set(mxa_cfg) - _ALLOWED_MXA_CFG)
        if bad:
            raise ValueError(
                f"{source} carries model arguments that are not allowed: {bad}. Allowed: "
                f"{sorted(ALLOWED_MODEL_KWARGS)} (mxa_cfg: {sorted(_ALLOWED_MXA_CFG)}); a model is never "
                "rebuilt with pretrained weights or hub ids from a file"
            )
        return self

    def build(self, source: str = "the model description") -> nn.Module:
        """``timm.create_model`` with random weights (no download), after :meth:`validate`."""
        self.validate(source)
        return timm.create_model(self.architecture, pretrained=False, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "model_kwargs": dict(self.kwargs)}


def export_config(model: nn.Module) -> dict[str, Any]:
    """The config written beside exported weights: the spec and the ``pretrained_cfg`` a deployment needs."""
    spec = ModelSpec.from_model(model)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    pcfg = {k: cfg[k] for k in _PCFG_KEYS if k in cfg}
    pcfg["num_classes"] = spec.kwargs["num_classes"]
    pcfg["label_names"] = list(getattr(model, "label_names", None) or [])
    pcfg["preprocessing"] = PREPROCESSING
    out = {**spec.to_dict(), "pretrained_cfg": pcfg}
    rule = getattr(model, "decision_rule", None)
    if isinstance(rule, DecisionRule):
        out["decision"] = rule.to_dict()
    return out


#: How an image becomes the model's input (what ``mxa predict`` does), for deployments in other runtimes.
PREPROCESSING = (
    "gray image scaled to [0, 1] (8-bit / 255, 16-bit / 65535, DICOM: full stored bit depth with rescale "
    "slope/intercept, MONOCHROME1 inverted); resized to input_size[-2:] (H, W) with antialiased bicubic "
    "interpolation (PIL BICUBIC on a float32 image), clamped to [0, 1]; (x - mean) / std; float32 NCHW, "
    "C = input_size[0]. Outputs are logits: probability = sigmoid(slope * logit + intercept) per label "
    "(decision.calibration; sigmoid(logit) without one), positive iff probability >= decision.thresholds[label]"
)


def attach_decision_rule(model: nn.Module, data: Any, source: str) -> nn.Module:
    """Set ``model.decision_rule`` from a stored :meth:`DecisionRule.to_dict` (None: leave it unset)."""
    model.decision_rule = None
    if data is not None:
        rule = DecisionRule.from_dict(data, source=f"the decision rule in {source}")
        labels = getattr(model, "label_names", None)
        if labels is not None:
            rule.check_labels(labels, f"the decision rule in {source}")
        model.decision_rule = rule
    return model


def load_model_from_checkpoint(
    path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model a ``mxa train`` checkpoint describes and load its (EMA, if any) weights, in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    if "model_name" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint written by `mxa train` (no model_name/model)")
    kwargs = ckpt.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: model_kwargs must be a mapping, got {type(kwargs).__name__}")
    model = ModelSpec(ckpt["model_name"], dict(kwargs)).build(source=f"checkpoint {path}")
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    _load_state(model, state, path)
    attach_decision_rule(model, ckpt.get("decision"), str(path))
    return model.eval()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"the weights in {path} do not fit the model it describes ({str(e).splitlines()[0]})"
        ) from None


def load_exported(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild a model from a file written by :func:`mxa.export_safetensors` (or its folder), in eval mode.

    ``overrides`` replace constructor arguments (the allow-list applies to them too).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = _exported_file(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); export it again") from None
    if "mxa_config" not in meta:
        raise ValueError(
            f"{path} has no mxa config in its metadata: was it written by mxa.export_safetensors?"
        )
    try:
        config = json.loads(meta["mxa_config"])
        spec = ModelSpec(config["architecture"], {**config["model_kwargs"], **overrides})
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: its mxa config cannot be read ({e}); export it again") from None
    model = spec.build(source=f"exported model {path}")
    _load_state(model, state, path)
    attach_decision_rule(model, config.get("decision"), str(path))
    return model.eval()


def _exported_file(path: Path) -> Path:
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(f"{path} holds {len(files)} .safetensors files; name the one to load")
        return files[0]
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def load_model(path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load any model of ours, in eval mode: a ``mxa train`` checkpoint (``.pt``; its EMA weights when it
    has them and ``use_ema``) or an exported safetensors file or folder.

    A file that carries a calibration and thresholds (``mxa eval --save-model``) gives a model with
    ``model.decision_rule`` (a :class:`~mxa.models.decision.DecisionRule`; ``None`` otherwise), which
    :func:`mxa.predict_files` and exports use; ``forward`` still returns raw logits.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the file is corrupt, not ours, or describes a model we may not build (see
            :class:`ModelSpec`).
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return load_exported(path)
    return load_model_from_checkpoint(path, use_ema=use_ema, map_location=map_location)
