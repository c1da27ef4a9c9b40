"""The one way to find a model's MXA blocks and read what they computed in a forward pass.

Works for every model with MXA blocks: our ``efficientvit_ml_*``, registered ``*_mxa`` names and models
grafted with :func:`mxa.add_mxa`. Everything that needs boxes (evaluation, box supervision, prediction,
pictures, export) goes through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from mxa.layers.label_roi import LabelROIPool
from mxa.layers.mxa_block import MXABlock

__all__ = [
    "BoxCapture",
    "ModelROIs",
    "capture_boxes",
    "capture_label_boxes",
    "capture_roi_labels",
    "capture_saliency_points",
    "forward_rois",
    "forward_with_rois",
    "has_label_rois",
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


def has_label_rois(model: nn.Module) -> bool:
    """Whether ``model`` has a label-ROI block (``rois`` > 0: its boxes come with labels)."""
    return any(isinstance(m, LabelROIPool) for m in model.modules())


def _hook_boxes(model: nn.Module, sink: dict[str, torch.Tensor]) -> list[Any]:
    def keep(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
        sink[name] = output[1]  # DynamicROIPool (B, 4); LabelROIPool (B, R, 4)

    return [blk.roi.register_forward_hook(partial(keep, name)) for name, blk in mxa_blocks(model).items()]


def _label_source(block: MXABlock) -> nn.Module | None:
    """The ROI classifier of a block (its output: ROI objective logits (B, 2, K), per-label boxes (B, K, 4)
    or None), or None."""
    if isinstance(block.roi, LabelROIPool):
        return block.roi.classifier
    return block.roi_cls


def _emitters(model: nn.Module) -> list[nn.Module]:
    """The modules whose ``emit_label_boxes`` makes per-label boxes in eval mode too."""
    out: list[nn.Module] = []
    for b in mxa_blocks(model).values():
        if isinstance(b.roi, LabelROIPool):
            out.append(b.roi)
        elif b.roi_cls is not None and b.roi_cls.class_boxes:
            out.append(b)
    return out


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
    """Within the block, forward passes fill ``{block: (B, 2)}``: where each block looks hardest, as
    normalized (x, y): the arg-max cell centre of a single-box block's saliency map, the centre of a label-ROI
    block's first ROI (the peak region of its highest-peaking label map)."""
    found: dict[str, torch.Tensor] = {}

    def keep(name: str, _m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        b, _, h, w = out.shape
        idx = out.detach().reshape(b, -1).argmax(1)
        found[name] = torch.stack([(idx % w + 0.5) / w, (idx // w + 0.5) / h], 1).float()

    def keep_first_roi(name: str, _m: nn.Module, _inp: Any, out: Any) -> None:
        first = out[1][:, 0].detach()  # (B, 4)
        found[name] = ((first[:, :2] + first[:, 2:]) / 2).float()

    handles = []
    for name, blk in mxa_blocks(model).items():
        if isinstance(blk.roi, LabelROIPool):
            handles.append(blk.roi.register_forward_hook(partial(keep_first_roi, name)))
        else:
            handles.append(blk.roi.saliency.register_forward_hook(partial(keep, name)))
    with _hooked(handles):
        yield found


@contextlib.contextmanager
def capture_label_boxes(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, forward passes fill ``{block: (B, K, 4)}``: the per-label boxes of every MXA block
    that has them (label-ROI blocks, and ROI classifiers with ``class_boxes``; they run in eval mode too
    while inside)."""
    found: dict[str, torch.Tensor] = {}

    def keep(name: str, _m: nn.Module, _inp: Any, out: Any) -> None:
        if out[1] is not None:
            found[name] = out[1]

    handles = []
    for n, b in mxa_blocks(model).items():
        src = _label_source(b)
        if src is not None:
            handles.append(src.register_forward_hook(partial(keep, n)))
    emitters = _emitters(model)
    for e in emitters:
        setattr(e, "emit_label_boxes", True)  # noqa: B010  (a plain attribute of these modules)
    try:
        with _hooked(handles):
            yield found
    finally:
        for e in emitters:
            setattr(e, "emit_label_boxes", False)  # noqa: B010


@contextlib.contextmanager
def capture_roi_labels(model: nn.Module) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Within the block, forward passes fill ``{block: (labels (B, R) int64, weights (B, R))}`` for every
    label-ROI block (``rois`` > 0): the label each cropped box belongs to, and its weight."""
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(name: str, _m: nn.Module, _inp: Any, out: Any) -> None:
        found[name] = (out[2], out[3])

    handles = [
        b.roi.register_forward_hook(partial(keep, n))
        for n, b in mxa_blocks(model).items()
        if isinstance(b.roi, LabelROIPool)
    ]
    with _hooked(handles):
        yield found


def forward_with_rois(model: nn.Module, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """One forward pass of ``model`` that also returns the boxes every MXA block crops.

    Returns:
        the model's output (logits (B, K)) and ``{block name: boxes}``, normalized x1, y1, x2, y2 relative to
        that block's feature map: (B, 4) for the paper's single-box block, (B, R, 4) for a label-ROI block
        (``rois=R``; :func:`capture_roi_labels` says which label each box belongs to).

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


@dataclass
class ModelROIs:
    """One forward pass with what every MXA block cropped (:func:`forward_rois`).

    Attributes:
        output: the model's output (logits (B, K)).
        boxes: ``{block: (B, 4)}`` for single-box blocks, ``{block: (B, R, 4)}`` for label-ROI blocks.
        labels: ``{block: (B, R)}`` the label index of each label ROI (label-ROI blocks only).
        weights: ``{block: (B, R)}`` each label ROI's weight (its label map's peak probability).
    """

    output: Any
    boxes: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def for_image(self, i: int, label_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Image ``i``'s boxes as ``{name: (4,)}``: a single box by its block's name, a label ROI as
        ``"<block>: <label>"`` (``label_names`` give the names; default the label index)."""
        out: dict[str, torch.Tensor] = {}
        for name, b in self.boxes.items():
            if b.ndim == 2:
                out[name] = b[i]
                continue
            for r in range(b.shape[1]):
                j = int(self.labels[name][i, r])
                out[f"{name}: {label_names[j] if label_names else j}"] = b[i, r]
        return out


def forward_rois(model: nn.Module, x: torch.Tensor) -> ModelROIs:
    """:func:`forward_with_rois` with the label and weight of every label ROI (:class:`ModelROIs`).

    Examples:
        >>> import timm, torch, mxa
        >>> m = timm.create_model("efficientvit_ml_m0", img_size=64, mxa_cfg=dict(rois=2, roi_classes=14))
        >>> seen = mxa.forward_rois(m.eval(), torch.randn(1, 1, 64, 64))
        >>> seen.boxes["stages.0.blocks.0"].shape, seen.labels["stages.0.blocks.0"].shape
        (torch.Size([1, 2, 4]), torch.Size([1, 2]))
    """
    with capture_roi_labels(model) as which:
        out, boxes = forward_with_rois(model, x)
    return ModelROIs(out, boxes, {k: v[0] for k, v in which.items()}, {k: v[1] for k, v in which.items()})


class BoxCapture:
    """Keep the boxes every MXA block of ``model`` predicted in its last forward pass (for training,
    where the forward runs inside DDP/compile wrappers): :meth:`take` returns them in block order ((B, 4), or
    (B, R, 4) for label-ROI blocks), :meth:`take_roi_logits` the (B, 2, K) logits of the ROI objective
    (``roi_classes`` > 0) and :meth:`take_label_boxes` the per-label boxes."""

    def __init__(self, model: nn.Module) -> None:
        if not has_rois(model):
            raise ValueError("box objectives need a model with MXA blocks (train with --mxa)")
        self._boxes: dict[str, torch.Tensor] = {}
        self._roi_logits: dict[str, torch.Tensor] = {}
        self._label_boxes: dict[str, torch.Tensor] = {}
        self._label_maps: dict[str, torch.Tensor] = {}
        self._handles = _hook_boxes(model, self._boxes)

        def keep_maps(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            self._label_maps[name] = output

        def keep(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            self._roi_logits[name] = output[0]
            if output[1] is not None:
                self._label_boxes[name] = output[1]

        for name, blk in mxa_blocks(model).items():
            src = _label_source(blk)
            if src is not None:
                self._handles.append(src.register_forward_hook(partial(keep, name)))
            if isinstance(blk.roi, LabelROIPool):
                self._handles.append(blk.roi.maps.register_forward_hook(partial(keep_maps, name)))

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

    def take_label_maps(self) -> list[torch.Tensor]:
        """The (B, K, H, W) label logit maps of the label-ROI blocks (``rois`` > 0), in block order."""
        maps = list(self._label_maps.values())
        self._label_maps.clear()
        return maps

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
