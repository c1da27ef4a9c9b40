"""Training and evaluation transforms, built in one place from a model's ``pretrained_cfg``.

Images enter as (1, H, W) float tensors in [0, 1] (what :func:`mxa.data.io.load_xray` returns).
Training: bicubic resize, timm's RandAugment (``rand-m5-mstd0.2-inc2``, the paper's) made to work on
8-bit grayscale, normalization. Evaluation: bicubic resize (antialiased, at full bit depth),
normalization.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GEOMETRIC_OPS", "GRAY_MEAN", "GRAY_STD", "Normalize", "build_transforms", "resolve_data_cfg"]

# ImageNet mean/std averaged over RGB: timm sums the RGB filters of the first conv when it adapts the
# ImageNet weights to one channel, so a gray image normalized like this matches what they were trained on.
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)
PAPER_RAND_AUGMENT = "rand-m5-mstd0.2-inc2"
# RandAugment's ops that move pixels: without them, boxes stay valid (box supervision needs that).
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_RAND_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)  # fmt: skip  (timm's increasing-magnitude set, which the paper's "inc2" string selects)


class Normalize:
    """(C, H, W) in [0, 1] -> ``(x - mean) / std``; one-value stats apply to every channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_chans: int = 1) -> None:
        self.in_chans = in_chans
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.in_chans:
            x = x.mean(0, keepdim=True).expand(self.in_chans, -1, -1)
        return (x.float() - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def resolve_data_cfg(model_or_cfg: Any) -> dict[str, Any]:
    """``input_size`` (C, H, W), ``mean``, ``std``, ``interpolation`` from a model or a cfg dict."""
    cfg: Mapping[str, Any]
    if isinstance(model_or_cfg, Mapping):
        cfg = model_or_cfg
    else:
        cfg = dict(getattr(model_or_cfg, "pretrained_cfg", {}) or {})
        hw = getattr(model_or_cfg, "input_hw", None)
        chans = getattr(model_or_cfg, "in_chans", None)
        if hw is not None and chans is not None:
            cfg = {**cfg, "input_size": (chans, *hw)}
    size = tuple(cfg.get("input_size", (1, 224, 224)))
    return {
        "input_size": size,
        "mean": tuple(cfg.get("mean", GRAY_MEAN)),
        "std": tuple(cfg.get("std", GRAY_STD)),
        "interpolation": cfg.get("interpolation", "bicubic"),
    }


class _EvalTransform:
    def __init__(self, size: tuple[int, int], norm: Normalize) -> None:
        self.size, self.norm = size, norm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x[None].float(), size=self.size, mode="bicubic", antialias=True, align_corners=False
            )[0]
            x = x.clamp(0.0, 1.0)
        return self.norm(x)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, bicubic, {self.norm})"


class _TrainTransform:
    def __init__(
        self, size: tuple[int, int], norm: Normalize, auto_augment: str | None, geometric: bool = True
    ) -> None:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        self.size, self.norm = size, norm
        self._bicubic = Image.Resampling.BICUBIC
        # timm's default fill is an RGB triple; PIL wants one int for an 'L' image.
        hparams = {"img_mean": int(round(255 * float(np.mean(norm.mean.numpy()))))}
        ops = None if geometric else [o for o in _RAND_OPS if o not in GEOMETRIC_OPS]
        self.augment = rand_augment_transform(auto_augment, hparams, transforms=ops) if auto_augment else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arr = (x[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
        if img.size != (self.size[1], self.size[0]):
            img = img.resize((self.size[1], self.size[0]), self._bicubic)
        if self.augment is not None:
            img = self.augment(img)
        out = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
        return self.norm(out)

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.size}, bicubic, {self.augment!r}, {self.norm})"


def build_transforms(
    model_or_cfg: Any, train: bool, auto_augment: str | None = PAPER_RAND_AUGMENT, geometric: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The transform for training (``train=True``) or evaluation, from a model or its ``pretrained_cfg``.

    Returns a callable ``(1, H, W) float in [0, 1] -> (C, h, w)`` normalized, C and (h, w) from the cfg.
    ``geometric=False`` leaves out RandAugment's rotations, shears and translations (:data:`GEOMETRIC_OPS`),
    so boxes of the untransformed image stay valid.
    """
    cfg = resolve_data_cfg(model_or_cfg)
    chans, h, w = cfg["input_size"]
    norm = Normalize(cfg["mean"], cfg["std"], in_chans=chans)
    if train:
        return _TrainTransform((h, w), norm, auto_augment, geometric)
    return _EvalTransform((h, w), norm)
