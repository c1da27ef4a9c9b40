"""The one way to find a model's MXA blocks and read what they computed in a forward pass.

Works for every model with MXA blocks: our ``efficientvit_ml_*``, registered ``*_mxa`` names and models
grafted with :func:`mxa.add_mxa`. Everything that needs boxes (evaluation, box supervision, prediction,
pictures, export) goes through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import nn

from mxa.layers.mxa_block import MXABlock

__all__ = [
    "BoxCapture",
    "capture_boxes",
    "capture_label_boxes",
    "capture_saliency_points",
    "forward_with_rois",
    "has_rois",
    "mxa_blocks",
]


def mxa_blocks(model: nn.Module) -> dict[str, MXABlock]:
    """The MXA blocks of ``model`` in forward order, by the name of the block that holds them.

    Names are ``stages.1.blocks.0`` for our EfficientViT, ``layer4.2`` or ``blocks.3`` for grafted models.

    Examples:
        >>> import timm, mxa
        >>> m = timm.create_model("efficientvit_ml_m0", mxa_stages=[2])
        >>> list(mxa.mxa_blocks(m))
        ['stages.2.blocks.0', 'stages.2.blocks.1', 'stages.2.blocks.2']
    """
    out: dict[str, MXABlock] = {}
    for name, m in model.named_modules():
        if isinstance(m, MXABlock):
            out[getattr(m, "mxa_site", None) or name.removesuffix(".mxa")] = m
    return out


def has_rois(model: nn.Module) -> bool:
    """Whether ``model`` has at least one MXA block (so :func:`forward_with_rois` gives boxes)."""
    return any(isinstance(m, MXABlock) for m in model.modules())


def _hook_boxes(model: nn.Module, sink: dict[str, torch.Tensor]) -> list[Any]:
    def keep(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
        sink[name] = output[1]

    return [blk.roi.register_forward_hook(partial(keep, name)) for name, blk in mxa_blocks(model).items()]


@contextlib.contextmanager
def _hooked(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_boxes(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, forward passes of ``model`` fill the yielded ``{block: (B, 4) boxes}``."""
    boxes: dict[str, torch.Tensor] = {}
    with _hooked(_hook_boxes(model, boxes)):
        yield boxes


@contextlib.contextmanager
def capture_saliency_points(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, forward passes fill ``{block: (B, 2)}``: the (x, y) arg-max of each box head's
    saliency map, as normalized pixel centres."""
    found: dict[str, torch.Tensor] = {}

    def keep(name: str, _m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        b, _, h, w = out.shape
        idx = out.reshape(b, -1).argmax(1)
        found[name] = torch.stack([(idx % w + 0.5) / w, (idx // w + 0.5) / h], 1).float()

    handles = [
        blk.roi.saliency.register_forward_hook(partial(keep, name)) for name, blk in mxa_blocks(model).items()
    ]
    with _hooked(handles):
        yield found


@contextlib.contextmanager
def capture_label_boxes(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, forward passes fill ``{block: (B, K, 4)}``: the per-label boxes of every MXA block
    whose ROI classifier has ``class_boxes`` (the classifier runs in eval mode too while inside)."""
    found: dict[str, torch.Tensor] = {}

    def keep(name: str, _m: nn.Module, _inp: Any, out: Any) -> None:
        if out[1] is not None:
            found[name] = out[1]

    blocks = {n: b for n, b in mxa_blocks(model).items() if b.roi_cls is not None and b.roi_cls.class_boxes}
    handles = [b.roi_cls.register_forward_hook(partial(keep, n)) for n, b in blocks.items()]  # type: ignore[union-attr]
    for b in blocks.values():
        b.emit_label_boxes = True
    try:
        with _hooked(handles):
            yield found
    finally:
        for b in blocks.values():
            b.emit_label_boxes = False


def forward_with_rois(model: nn.Module, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """One forward pass of ``model`` that also returns the ROI box of every MXA block.

    Returns:
        the model's output (logits (B, K)) and ``{block name: boxes (B, 4)}``, normalized x1, y1, x2, y2
        relative to that block's feature map.

    Examples:
        >>> import timm, torch, mxa
        >>> m = timm.create_model("efficientvit_ml_m0", img_size=128).eval()
        >>> logits, rois = mxa.forward_with_rois(m, torch.randn(2, 1, 128, 128))
        >>> logits.shape, rois["stages.0.blocks.0"].shape
        (torch.Size([2, 14]), torch.Size([2, 4]))
    """
    with capture_boxes(model) as boxes:
        out = model(x)
    return out, dict(boxes)


class BoxCapture:
    """Keep the boxes every MXA block of ``model`` predicted in its last forward pass (for training,
    where the forward runs inside DDP/compile wrappers): :meth:`take` returns them in block order, and
    :meth:`take_roi_logits` the (B, 2, K) logits of the blocks' ROI classifiers (``roi_classes`` > 0)."""

    def __init__(self, model: nn.Module) -> None:
        if not has_rois(model):
            raise ValueError("box objectives need a model with MXA blocks (train with --mxa)")
        self._boxes: dict[str, torch.Tensor] = {}
        self._roi_logits: dict[str, torch.Tensor] = {}
        self._label_boxes: dict[str, torch.Tensor] = {}
        self._handles = _hook_boxes(model, self._boxes)

        def keep(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            self._roi_logits[name] = output[0]
            if output[1] is not None:
                self._label_boxes[name] = output[1]

        for name, blk in mxa_blocks(model).items():
            if blk.roi_cls is not None:
                self._handles.append(blk.roi_cls.register_forward_hook(partial(keep, name)))

    def take(self) -> list[torch.Tensor]:
        boxes = list(self._boxes.values())
        self._boxes.clear()
        return boxes

    def take_roi_logits(self) -> list[torch.Tensor]:
        logits = list(self._roi_logits.values())
        self._roi_logits.clear()
        return logits

    def take_label_boxes(self) -> list[torch.Tensor]:
        """The (B, K, 4) per-label boxes of the blocks with ``class_boxes``, in block order."""
        boxes = list(self._label_boxes.values())
        self._label_boxes.clear()
        return boxes

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
