"""How a model is described in a file: :class:`ModelSpec` (a timm architecture and its keyword arguments).

Checkpoints store it as ``model_name`` + ``model_kwargs``; exported safetensors as ``architecture`` +
``model_kwargs`` (with the ``pretrained_cfg`` a deployment needs). Rebuilding passes the arguments through an
allow-list and never asks timm for pretrained weights, so a file cannot make us download anything.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import timm
from torch import nn

from mxa.decision.rule import DecisionRule
from mxa.layers.mxa_block import MXABlock
from mxa.models import check_model_name
from mxa.models.grafted import GRAFTED_MODEL_NAMES

__all__ = ["ALLOWED_MODEL_KWARGS", "ALLOWED_MXA_CFG", "PREPROCESSING", "ModelSpec", "export_config"]


#: The constructor arguments a file may carry; anything else (``pretrained``, ``pretrained_cfg_overlay``,
#: hub ids, ...) is refused.
ALLOWED_MODEL_KWARGS = frozenset(
    {
        "img_size",
        "in_chans",
        "num_classes",
        "mxa",
        "mxa_stages",
        "mxa_per_stage",
        "mxa_cfg",
        "label_names",
        "drop_rate",
        "global_pool",
    }
)
#: Every ``mxa_cfg`` key is an ``MXABlock`` keyword (read from its signature, so a new option round-trips).
ALLOWED_MXA_CFG = frozenset(p for p in inspect.signature(MXABlock).parameters if p != "dim")
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
        mxa_per_stage: str = "all",
    ) -> ModelSpec:
        """The spec ``mxa train`` builds: MXA options only for ``efficientvit_ml_*`` and ``*_mxa`` models
        (``mxa_per_stage`` for ``efficientvit_ml_*`` only, recorded where it is not ``"all"``)."""
        kw: dict[str, Any] = {"img_size": int(img_size)}
        if model.startswith("efficientvit_ml_") or model in GRAFTED_MODEL_NAMES:
            kw["mxa"] = bool(mxa)
            if mxa_stages is not None:
                kw["mxa_stages"] = [int(i) for i in mxa_stages]
            if mxa and mxa_cfg:
                kw["mxa_cfg"] = dict(mxa_cfg)
            if mxa and mxa_per_stage != "all" and model.startswith("efficientvit_ml_"):
                kw["mxa_per_stage"] = mxa_per_stage
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
            kw["img_size"] = int(getattr(model, "input_hw")[0])  # noqa: B009
        # MXA options are constructor arguments of ours only (a timm model grafted by add_mxa has none)
        ours = arch.startswith("efficientvit_ml_") or arch in GRAFTED_MODEL_NAMES
        stages = getattr(model, "mxa_stages", None)
        mxa_cfg = getattr(model, "mxa_cfg", None)
        if stages is not None and ours:
            kw["mxa"] = bool(stages)
            if stages:
                kw["mxa_stages"] = list(stages)
            if mxa_cfg:
                kw["mxa_cfg"] = dict(mxa_cfg)
            if stages and getattr(model, "mxa_per_stage", "all") != "all":
                kw["mxa_per_stage"] = str(getattr(model, "mxa_per_stage"))  # noqa: B009
        return cls(arch, kw)

    def validate(self, source: str = "the model description") -> ModelSpec:
        """Raise ``ValueError`` unless the architecture is registered and every argument is allowed."""
        check_model_name(self.architecture, f"model in {source}")
        bad = sorted(set(self.kwargs) - ALLOWED_MODEL_KWARGS)
        mxa_cfg = self.kwargs.get("mxa_cfg") or {}
        bad += sorted(f"mxa_cfg.{k}" for k in set(mxa_cfg) - ALLOWED_MXA_CFG)
        if bad:
            raise ValueError(
                f"{source} carries model arguments that are not allowed: {bad}. Allowed: "
                f"{sorted(ALLOWED_MODEL_KWARGS)} (mxa_cfg: {sorted(ALLOWED_MXA_CFG)}); a model is never "
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
    "(decision.calibration; sigmoid(logit) without one), positive iff probability >= "
    "decision.thresholds[label]"
)
