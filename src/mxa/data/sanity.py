"""Does a batch look like what the model expects? Warnings for the common ways of preparing X-rays wrongly.

Our models expect ``(x - mean) / std`` of a gray image in [0, 1] (mean/std from the model's
``pretrained_cfg``; 0.449/0.226 by default), i.e. values in about [-2, 2.5], dark background negative.
:func:`input_problems` recognizes, from one reduction per image:

* raw 8-bit pixels (values up to 255), raw 16-bit / detector values (beyond 255);
* torchxrayvision's [-1024, 1024] scaling (large negative values);
* a [0, 1] image that was never normalized (nothing negative);
* constant images (every pixel equal: an empty or failed read, a wrong window), which all get one score.

The bounds are wide (about 10 standard deviations), so a correctly prepared X-ray, a phantom or a
``torch.randn`` test batch never warns. A 1-channel model given three identical channels (the ImageNet
habit) cannot run at all: that is an error raised by the model, naming the fix.

``MultiLabelEfficientViT`` calls :func:`check_model_input` in eval mode: it warns once per model
(:class:`InputSanityWarning`) and stops checking after that, or after its first 32 eval batches, so
benchmarks and long inference runs pay nothing. Tracing, scripting, ``torch.compile``, export and the
capture of a CUDA graph skip it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mxa.data.transforms import GRAY_MEAN, GRAY_STD

__all__ = [
    "InputSanityWarning",
    "check_model_input",
    "image_notes",
    "input_problems",
    "suppress_input_checks",
]

_SUPPRESSED = contextvars.ContextVar("mxa_input_checks_suppressed", default=False)
_MAX_CHECKS = 32
_HOW = (
    "prepare images with mxa.data.load_xray (gray, [0, 1]) then mxa.data.build_transforms(model, "
    "train=False) "
    "(resize and (x - mean) / std)"
)


class InputSanityWarning(UserWarning):
    """A batch that does not look like a correctly prepared X-ray batch for this model."""


def input_problems(
    x: torch.Tensor, mean: Sequence[float] = GRAY_MEAN, std: Sequence[float] = GRAY_STD
) -> list[str]:
    """What looks wrong with a normalized (B, C, H, W) batch (empty list: nothing).

    ``mean`` / ``std`` are the model's normalization (one value, or one per channel).
    """
    if x.ndim != 4 or x.numel() == 0 or not x.is_floating_point():
        return []
    flat = x.detach().float().flatten(1)
    lo, hi = flat.aminmax(dim=1)
    lo_all, hi_all = float(lo.min()), float(hi.max())
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    exp_lo, exp_hi = float(((0 - m) / s).min()), float(((1 - m) / s).max())
    where = f"expected about [{exp_lo:.2f}, {exp_hi:.2f}] (mean {list(mean)}, std {list(std)})"
    problems = []
    if lo_all < -20:
        problems.append(
            f"values go down to {lo_all:.4g}: this looks like torchxrayvision's [-1024, 1024] scaling or "
            f"Hounsfield-like units, not this model's normalization ({where}); {_HOW}"
        )
    elif lo_all >= -0.5 and hi_all > 300:
        problems.append(
            f"values go up to {hi_all:.4g}: this looks like raw 16-bit or detector pixel values ({where}); "
            f"scale the image to [0, 1] first; {_HOW}"
        )
    elif lo_all >= -0.5 and hi_all > 20:
        problems.append(
            f"values go up to {hi_all:.4g}: this looks like raw 8-bit pixels in 0..255 ({where}); divide by "
            f"255 and normalize; {_HOW}"
        )
    elif lo_all >= 0 and hi_all <= 1.001 and exp_lo < 0 and hi_all > lo_all:
        problems.append(
            f"values lie in [{lo_all:.3g}, {hi_all:.3g}]: this looks like a [0, 1] image that was never "
            f"normalized with (x - mean) / std ({where}); {_HOW}"
        )
    const = (hi - lo <= 1e-6 * torch.clamp(hi.abs(), min=1.0)).nonzero().flatten().tolist()
    if const:
        shown = ", ".join(str(i) for i in const[:8]) + (" ..." if len(const) > 8 else "")
        problems.append(
            f"{len(const)} of {x.shape[0]} images are constant (every pixel {float(lo[const[0]]):.4g}; batch "
            f"index {shown}): an empty or failed read or a wrong window; they all get the same scores. Check "
            "the files (mxa.data.load_xray reads PNG, JPEG and DICOM at full bit depth)"
        )
    return problems


#: DICOM ViewPosition values of a lateral chest view
_LATERAL = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}


def image_notes(path: str | Path, image: torch.Tensor, input_hw: tuple[int, int]) -> list[str]:
    """What a reader of the prediction of one file should know about the file (empty list: nothing).

    From the file's header and the image :func:`mxa.data.load_xray` read from it: a MONOCHROME1 DICOM
    (inverted on reading), a lateral view (DICOM ``ViewPosition``; our models learn frontal views), an image
    smaller than the model's input (upsampled), a 16-bit PNG that uses only the low bits of its range
    (12-bit data: it looks dark), and a constant image.

    Args:
        path: the file read.
        image: (1, H, W) in [0, 1], as read.
        input_hw: the model's input (H, W).
    """
    path = Path(path)
    notes = []
    if path.suffix.lower() in (".dcm", ".dicom"):
        notes += _dicom_notes(path)
    elif path.suffix.lower() == ".png":
        notes += _png_notes(path, image)
    h, w = image.shape[-2:]
    if min(h, w) < min(input_hw):
        notes.append(
            f"the image is {w} x {h} px, smaller than the model's {input_hw[1]} x {input_hw[0]} input: it is "
            "upscaled, and detail it never had cannot be seen; use the original resolution if there is one"
        )
    if image.numel() and float(image.max() - image.min()) == 0.0:
        notes.append(
            f"the image is constant (every pixel {float(image.flatten()[0]):.4g}): an empty image, a failed "
            "export or a wrong window; it gets the same scores as any other blank image. Check the file"
        )
    return notes


def _dicom_notes(path: Path) -> list[str]:
    import pydicom  # load_xray needed it to read the file

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    notes = []
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        notes.append(
            "MONOCHROME1 DICOM (dense is dark in the file): inverted on reading, so that dense is white as "
            "the model expects"
        )
    view = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
    if view in _LATERAL:
        notes.append(
            f"a lateral view (DICOM ViewPosition {view}): the model learnt frontal (PA/AP) views; its "
            "outputs on a lateral view are not meaningful"
        )
    return notes


def _png_notes(path: Path, image: torch.Tensor) -> list[str]:
    from PIL import Image

    with Image.open(path) as img:
        mode = img.mode
    top = float(image.max()) if image.numel() else 0.0
    if mode.startswith("I;16") and 0 < top <= 4096 / 65535:
        bits = max(1, math.ceil(math.log2(top * 65535 + 1)))
        return [
            f"a 16-bit PNG whose values use only {bits} of its 16 bits (at most {round(top * 65535)}): "
            "read as 16-bit, it is nearly black; rescale it to the full 16-bit range (or save it as 8-bit) "
            "before predicting"
        ]
    return []


@contextlib.contextmanager
def suppress_input_checks() -> Iterator[None]:
    """Skip the model-level check inside this block (for callers that check the images themselves)."""
    token = _SUPPRESSED.set(True)
    try:
        yield
    finally:
        _SUPPRESSED.reset(token)


def _skip(x: Any) -> bool:
    if _SUPPRESSED.get() or not isinstance(x, torch.Tensor) or isinstance(x, torch.fx.Proxy):
        return True
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    exporting = getattr(torch.compiler, "is_exporting", None)
    if exporting is not None and exporting():
        return True
    try:  # fake / meta tensors (non-strict export, shape propagation) have no values to look at
        from torch._subclasses.fake_tensor import is_fake

        if is_fake(x) or x.is_meta:
            return True
    except ImportError:  # pragma: no cover - older torch
        if x.is_meta:
            return True
    # a CUDA graph being captured: reading values syncs the device, which capture forbids
    return bool(x.is_cuda and torch.cuda.is_current_stream_capturing())


def check_model_input(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Warn once per ``model`` (:class:`InputSanityWarning`) if ``x`` does not look like its input."""
    # Before the state is read: torch.compile would guard on its counter and recompile on every change.
    if _skip(x):
        return
    state = model.__dict__.setdefault("_mxa_input_check", {"checks": 0, "warned": False})
    if state["warned"] or state["checks"] >= _MAX_CHECKS:
        return
    state["checks"] += 1
    from mxa.data.transforms import resolve_data_cfg

    cfg = resolve_data_cfg(model)
    problems = input_problems(x, cfg["mean"], cfg["std"])
    if problems:
        state["warned"] = True
        name = type(model).__name__
        warnings.warn(
            f"{name}: this input batch does not look like a prepared chest X-ray batch (warned once per "
            "model): " + " | ".join(problems),
            InputSanityWarning,
            stacklevel=4,
        )
