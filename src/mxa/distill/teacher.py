"""Frozen teachers for distillation: torchxrayvision's DenseNet-121 or any model of ours.

A teacher takes the batch the *student* receives (normalized with the student's mean/std, at the
student's size) and returns ``(logits14, mask14)``: raw logits in ``CHEXPERT_LABELS`` order and a bool
mask of the labels it predicts. It converts the batch to its own input convention itself.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mxa._optional import require
from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.transforms import GRAY_MEAN, GRAY_STD
from mxa.distill.mapping import xrv_to_chexpert
from mxa.files.load import load_model

log = logging.getLogger(__name__)

__all__ = ["ModelTeacher", "Teacher", "XRVTeacher", "load_teacher"]

XRV_DEFAULT_WEIGHTS = "densenet121-res224-chex"


class Teacher(nn.Module):
    """Base class: frozen, always in eval mode, no gradient.

    Args:
        student_mean: per-channel mean of the student's input normalization.
        student_std: per-channel std of the student's input normalization.
    """

    def __init__(self, student_mean: Sequence[float], student_std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "student_mean", torch.tensor(student_mean, dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("student_std", torch.tensor(student_std, dtype=torch.float32).view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> Teacher:
        # A teacher never trains: BN statistics and dropout stay frozen whatever the caller does.
        return super().train(False)

    def to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the student's normalization: (B, C, H, W) -> (B, C, H, W) in about [0, 1]."""
        if images.ndim != 4:
            raise ValueError(f"teacher input must be (B, C, H, W), got {tuple(images.shape)}")
        return images.float() * self.student_std + self.student_mean


class XRVTeacher(Teacher):
    """torchxrayvision's DenseNet-121 as a frozen teacher returning raw CheXpert logits.

    Args:
        weights: torchxrayvision weight name (default ``densenet121-res224-chex``), or None for random
            weights with the same outputs (tests, benchmarks).
        cache_dir: where torchxrayvision keeps (and downloads, once) its weights.
        weights_file: a local copy of the official weights file (works offline). It is read without
            running code from it where possible (see ``trust_pickle``).
        labels: output names for ``weights=None`` (default: the ``weights`` variant's, else the chex one).
        student_mean: the student's normalization mean, undone before converting to torchxrayvision's
            convention (1 channel, 224 x 224, values in [-1024, 1024]).
        student_std: the student's normalization std.
        trust_pickle: allow unpickling a weights file whose classes are not all torch/torchxrayvision
            modules (runs code from the file: only for files you trust).

    Named weights are fetched by torchxrayvision (downloaded once to ``cache_dir``) but read by us, with the
    same safety rules as ``weights_file`` (torchxrayvision itself unpickles them with ``weights_only=False``).
    ``op_threshs`` is removed: with it, torchxrayvision returns calibrated probabilities, which would
    then get a second sigmoid (the paper's bug).
    """

    def __init__(
        self,
        weights: str | None = XRV_DEFAULT_WEIGHTS,
        cache_dir: str | Path | None = None,
        weights_file: str | Path | None = None,
        labels: Sequence[str] | None = None,
        student_mean: Sequence[float] = GRAY_MEAN,
        student_std: Sequence[float] = GRAY_STD,
        trust_pickle: bool = False,
    ) -> None:
        super().__init__(student_mean, student_std)
        xrv = require("torchxrayvision", "The torchxrayvision teacher")
        variant = weights or XRV_DEFAULT_WEIGHTS
        if variant not in xrv.models.model_urls:
            known = sorted(k for k in xrv.models.model_urls if k.startswith("densenet"))
            raise ValueError(f"unknown torchxrayvision weights {weights!r}; choose one of {known}")
        info = xrv.models.model_urls[variant]
        self.resolution = int(info.get("input_resolution", 224))
        model = xrv.models.DenseNet(weights=None, num_classes=len(info["labels"]))
        self.labels = tuple(labels) if labels is not None else tuple(info["labels"])
        if weights is not None and weights_file is None:
            kw = {"cache_dir": str(cache_dir)} if cache_dir else {}
            weights_file = xrv.models.get_weights(weights, **kw)  # downloads once
        if weights_file is not None:
            try:
                model.load_state_dict(_read_xrv_weights(Path(weights_file), trust_pickle))
            except RuntimeError as e:
                raise ValueError(f"{weights_file} does not hold {variant} weights ({str(e)[:300]})") from None
        model.op_threshs = None  # raw logits
        model.apply_sigmoid = False
        self.model = model.eval().requires_grad_(False)
        self.weights = weights

    def to_xrv_input(self, images: torch.Tensor) -> torch.Tensor:
        """Student batch -> (B, 1, R, R) in [-1024, 1024], R the teacher's resolution (224)."""
        x = self.to_unit_range(images)
        if x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(
                x,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return ((2.0 * x - 1.0) * 1024.0).clamp(-1024.0, 1024.0)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.to_xrv_input(images).to(next(self.model.parameters()).dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits18 = self.model.classifier(self.model.features2(x)).float()
        return xrv_to_chexpert(logits18, self.labels)


def _read_xrv_weights(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a torchxrayvision weights file, without running code from the file if possible.

    safetensors and plain state dicts load directly. The official files are pickled ``nn.Module`` s: they
    are loaded with ``weights_only=True`` and an allow-list of exactly the module classes they name, as
    long as every class is an ``nn.Module`` from torch or torchxrayvision (rebuilding such a class runs no
    code of the file). Anything else is unpickled only with ``trust_pickle=True``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"torchxrayvision weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = _load_pickled_module(path, trust_pickle)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"cannot read torchxrayvision weights {path}: {e}") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not torchxrayvision weights")
    obj.pop("op_threshs", None)  # we use raw logits (see XRVTeacher)
    return obj


def _load_pickled_module(path: Path, trust_pickle: bool) -> Any:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    classes, unsafe = [], []
    for name in names:
        mod, _, attr = name.rpartition(".")
        obj = None
        if mod.split(".")[0] in ("torch", "torchxrayvision"):
            with contextlib.suppress(ImportError, AttributeError):
                obj = getattr(importlib.import_module(mod), attr)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            classes.append(obj)
        else:
            unsafe.append(name)
    if not unsafe:
        with torch.serialization.safe_globals(classes):
            return torch.load(path, map_location="cpu", weights_only=True)
    if not trust_pickle:
        raise ValueError(
            f"{path} can only be read by unpickling, which would run code from the file (it names "
            f"{', '.join(unsafe[:5])}). If you trust the file, pass trust_pickle=True (CLI: --trust-pickle)"
        )
    log.warning("unpickling %s with weights_only=False, as --trust-pickle allows", path)
    return torch.load(path, map_location="cpu", weights_only=False)


class ModelTeacher(Teacher):
    """Any 14-label model of ours (or a timm CNN fine-tuned on the CheXpert labels) as a frozen teacher.

    Args:
        model: outputs (B, 14) logits in ``CHEXPERT_LABELS`` order (or ``label_names`` says which).
        student_mean: the student's normalization mean.
        student_std: the student's normalization std.
        teacher_mean: the teacher's own normalization mean (default: its ``pretrained_cfg``); the student
            batch is converted to the teacher's convention.
        teacher_std: the teacher's normalization std (default: its ``pretrained_cfg``).
        teacher_size: the teacher's input size (default: its own).
        label_names: the teacher's output names (default: its ``label_names``, else the 14 CheXpert labels).
    """

    def __init__(
        self,
        model: nn.Module,
        student_mean: Sequence[float] = GRAY_MEAN,
        student_std: Sequence[float] = GRAY_STD,
        teacher_mean: Sequence[float] | None = None,
        teacher_std: Sequence[float] | None = None,
        teacher_size: tuple[int, int] | None = None,
        label_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(student_mean, student_std)
        cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}) or {})
        teacher_mean = teacher_mean or cfg.get("mean", student_mean)
        teacher_std = teacher_std or cfg.get("std", student_std)
        self.teacher_size = teacher_size or tuple(
            getattr(model, "input_hw", cfg.get("input_size", (1, 224, 224))[-2:])
        )
        self.in_chans = int(getattr(model, "in_chans", len(teacher_mean)))
        self.register_buffer(
            "teacher_mean", torch.tensor(teacher_mean, dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("teacher_std", torch.tensor(teacher_std, dtype=torch.float32).view(1, -1, 1, 1))
        names = tuple(label_names or getattr(model, "label_names", None) or CHEXPERT_LABELS)
        unknown = [n for n in names if n not in CHEXPERT_LABELS]
        if unknown:
            raise ValueError(f"teacher outputs {unknown} are not CheXpert labels {list(CHEXPERT_LABELS)}")
        self.register_buffer(
            "index", torch.tensor([CHEXPERT_LABELS.index(n) for n in names], dtype=torch.long)
        )
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.to_unit_range(images)
        if x.shape[1] != self.in_chans:
            x = x.mean(dim=1, keepdim=True).expand(-1, self.in_chans, -1, -1)
        if tuple(x.shape[-2:]) != tuple(self.teacher_size):
            x = F.interpolate(x, size=self.teacher_size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.teacher_mean) / self.teacher_std
        out = self.model(x).float()
        logits = out.new_zeros(out.shape[0], len(CHEXPERT_LABELS))
        logits[:, self.index] = out
        mask = torch.zeros(len(CHEXPERT_LABELS), dtype=torch.bool, device=out.device)
        mask[self.index] = True
        return logits, mask


def load_teacher(
    spec: str,
    student_mean: Sequence[float] = GRAY_MEAN,
    student_std: Sequence[float] = GRAY_STD,
    cache_dir: str | Path | None = None,
    trust_pickle: bool = False,
) -> Teacher:
    """Build a teacher from a command-line spec.

    ``densenet121-res224-chex`` (or another torchxrayvision DenseNet weight name), ``xrv-random``
    (random weights: tests), or a model of ours: a ``mxa train`` checkpoint (``.pt``) or an exported
    safetensors file or folder (see :func:`mxa.load_model`).
    """
    if spec == "xrv-random":
        return XRVTeacher(weights=None, student_mean=student_mean, student_std=student_std)
    path = Path(spec)
    if path.suffix in (".pt", ".pth", ".safetensors") or path.exists():
        return ModelTeacher(load_model(path), student_mean, student_std)
    if spec.startswith("densenet"):
        return XRVTeacher(
            spec,
            cache_dir=cache_dir,
            student_mean=student_mean,
            student_std=student_std,
            trust_pickle=trust_pickle,
        )
    raise ValueError(
        f"unknown teacher {spec!r}: use densenet121-res224-chex, xrv-random, or the path of a model of ours "
        "(a checkpoint .pt or an exported .safetensors)"
    )
