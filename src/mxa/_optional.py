"""Optional dependencies: import them with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

# module name -> extra of mxa-attention that provides it
_EXTRA_OF = {
    "pandas": "data",
    "PIL": "data",
    "pydicom": "dicom",
    "torchxrayvision": "xrv",
    "torchmetrics": "metrics",
    "sklearn": "metrics",
    "scipy": "metrics",
    "pycocotools": "metrics",
    "matplotlib": "viz",
    "pytorch_grad_cam": "cam",
    "cv2": "cam",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "onnxslim": "onnx",
    "gradio": "app",
    "yaml": "train",
    "tqdm": "train",
    "submitit": "cluster",
    "tensorboard": "tensorboard",  # one extra per tracker (tracking: all three)
    "wandb": "wandb",
    "mlflow": "mlflow",
    "huggingface_hub": "hub",
}


class MissingExtraError(ImportError):
    """Raised when a feature needs a package from an extra that is not installed."""


def require(module: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Args:
        module: importable module name, e.g. ``"pandas"`` or ``"matplotlib.pyplot"``.
        feature: what the caller wanted to do, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        extra = _EXTRA_OF.get(top, "all")
        what = f"{feature} needs" if feature else "This feature needs"
        raise MissingExtraError(
            f"{what} the package '{top}', which is not installed. "
            f'Install it with: pip install "mxa-attention[{extra}]"'
        ) from e
