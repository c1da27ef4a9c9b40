"""mxa-attention: the Medical X-ray Attention (MXA) block, multi-label EfficientViT and soft KD.

``import mxa`` registers the ``efficientvit_ml_m0`` ... ``efficientvit_ml_m5`` models in timm, and the
grafted ``densenet121_mxa``, ``resnet50_mxa``, ``convnext_tiny_mxa``, ``deit_small_patch16_224_mxa``;
``mxa.add_mxa(model)`` grafts MXA into a timm, torchvision or torchxrayvision model of your own.

The names below are imported on first use, and the models are registered as soon as timm is imported
(at once when it already is): ``import mxa`` itself loads neither torch nor timm, so ``mxa --help`` is fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from mxa._compat import lazy_names

__version__ = "0.2.0"

_WHERE = {
    "CBAM": "mxa.layers",
    "DynamicROIPool": "mxa.layers",
    "MXABlock": "mxa.layers",
    "roi_crop": "mxa.layers",
    "DistillationLoss": "mxa.losses",
    "SoftKDLoss": "mxa.losses",
    "MultiLabelEfficientViT": "mxa.models",
    "add_mxa": "mxa.models",
    "forward_with_rois": "mxa.models",
    "mxa_blocks": "mxa.models",
    "register_block": "mxa.models",
    "export_onnx": "mxa.files.export",
    "export_safetensors": "mxa.files.export",
    "load_exported": "mxa.files.load",
    "load_model": "mxa.files.load",
}
_names = lazy_names(__name__, _WHERE)


def __getattr__(name: str) -> Any:
    if name == "models":  # the subpackage, as `mxa.models` after `import mxa`
        return importlib.import_module("mxa.models")
    return _names(name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, "models"])


def _register_models() -> None:
    importlib.import_module("mxa.models")  # registers the efficientvit_ml_* and grafted models in timm


class _AfterTimm:
    """A meta-path finder that registers our models right after ``timm`` itself is imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "timm":
            return None
        sys.meta_path.remove(self)  # once, and the real finders below find timm
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _register_models()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this module's loader only
        return spec


if "timm" in sys.modules:
    _register_models()
elif not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterTimm())

__all__ = [
    "CBAM",
    "DistillationLoss",
    "DynamicROIPool",
    "MXABlock",
    "MultiLabelEfficientViT",
    "SoftKDLoss",
    "__version__",
    "add_mxa",
    "export_onnx",
    "export_safetensors",
    "forward_with_rois",
    "load_exported",
    "load_model",
    "models",
    "mxa_blocks",
    "register_block",
    "roi_crop",
]
