"""The one protocol every dataset of ours follows (CheXpert, the torchxrayvision-backed sets, the phantom).

Everything a run needs to know before reading an image is an attribute: image ``ids``, the (N, 14)
``labels`` under the uncertainty policy and their ``label_mask``, which of the 14 observations the set
``labelled`` at all, and whether it ``has_boxes``. Items are ``(image, target (14,), mask (14,)[, boxes
(14, 4)])``; ``boxes(index, image_hw)`` gives one image's normalized xyxy boxes (NaN rows: none).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["XRaySet"]


@runtime_checkable
class XRaySet(Protocol):
    """A labelled chest X-ray set (see the module docstring).

    Examples:
        >>> from mxa.data import PhantomCXR
        >>> from mxa.data.base import XRaySet
        >>> ds = PhantomCXR(4, image_size=64)
        >>> isinstance(ds, XRaySet), ds.has_boxes, ds.labels.shape, ds.boxes(0).shape
        (True, True, torch.Size([4, 14]), torch.Size([14, 4]))
    """

    ids: list[str]
    labels: torch.Tensor
    label_mask: torch.Tensor
    labelled: torch.Tensor
    has_boxes: bool

    def __len__(self) -> int: ...

    def boxes(self, index: int, image_hw: tuple[int, int] | None = None) -> torch.Tensor: ...
