"""The one module that reads private timm API, where timm has no public path to what we need.

``tests/test_timm_private.py`` imports each name here and fails with the timm version when one moves.
"""

from __future__ import annotations

__all__ = ["PRIVATE_NAMES", "efficientnet_block_types"]

#: (module, attribute) pairs of private timm API we use, checked by the tests on every timm version.
PRIVATE_NAMES = (
    ("timm.models._efficientnet_blocks", "InvertedResidual"),
    ("timm.models._efficientnet_blocks", "DepthwiseSeparableConv"),
    ("timm.models._efficientnet_blocks", "UniversalInvertedResidual"),
)


def efficientnet_block_types() -> tuple[type, ...]:
    """The EfficientNet/MobileNet block classes with a skip (timm exports them from no public module)."""
    import importlib

    return tuple(getattr(importlib.import_module(m), name) for m, name in PRIVATE_NAMES)
