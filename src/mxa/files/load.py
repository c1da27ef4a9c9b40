"""One loader for every model file of ours: a ``mxa train`` checkpoint or an exported safetensors folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mxa.decision.rule import DecisionRule
from mxa.files.checkpoint import TrainCheckpoint
from mxa.files.hub import HUB_FILES, is_hub_folder, is_hub_source
from mxa.files.spec import ModelSpec

__all__ = [
    "ModelSpec",
    "attach_decision_rule",
    "load_exported",
    "load_hub_model",
    "load_model",
    "load_model_from_checkpoint",
]

log = logging.getLogger(__name__)


def attach_decision_rule(model: nn.Module, data: Any, source: str) -> nn.Module:
    """Set ``model.decision_rule`` from a stored :meth:`DecisionRule.to_dict` (None: leave it unset)."""
    model.decision_rule = None  # type: ignore[assignment]  # (nn.Module types attributes as Tensor | Module)
    if data is not None:
        rule = DecisionRule.from_dict(data, source=f"the decision rule in {source}")
        labels = getattr(model, "label_names", None)
        if labels is not None:
            rule.check_labels(labels, f"the decision rule in {source}")
        model.decision_rule = rule  # type: ignore[assignment]
    return model


def load_model_from_checkpoint(
    path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model a ``mxa train`` checkpoint describes, with its (EMA) weights, in eval mode."""
    ckpt = TrainCheckpoint.load(path, map_location)
    model = ModelSpec(ckpt.model_name, dict(ckpt.model_kwargs)).build(source=f"checkpoint {path}")
    state = ckpt.ema if use_ema and ckpt.ema is not None else ckpt.model
    _load_state(model, state, path)
    attach_decision_rule(model, ckpt.decision, str(path))
    model.trained_on = (ckpt.config or {}).get("data")  # type: ignore[assignment]  # what predict warns about
    return model.eval()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        why = lines[1] if len(lines) > 1 else lines[0] if lines else "unknown"
        raise ValueError(f"the weights in {path} do not fit the model it describes ({why[:300]})") from None


def load_exported(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild a model from a file written by :func:`mxa.export_safetensors` (or its folder), in eval mode.

    ``overrides`` replace constructor arguments (the allow-list applies to them too).

    Examples:
        >>> import tempfile, timm, mxa
        >>> folder = tempfile.mkdtemp()
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64)
        >>> _ = mxa.export_safetensors(model, f"{folder}/m.safetensors")
        >>> mxa.load_exported(folder, num_classes=14).input_hw
        (64, 64)
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = _exported_file(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); export it again") from None
    if "mxa_config" not in meta:
        raise ValueError(
            f"{path} has no mxa config in its metadata: was it written by mxa.export_safetensors?"
        )
    try:
        config = json.loads(meta["mxa_config"])
        spec = ModelSpec(config["architecture"], {**config["model_kwargs"], **overrides})
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: its mxa config cannot be read ({e}); export it again") from None
    model = spec.build(source=f"exported model {path}")
    _load_state(model, state, path)
    attach_decision_rule(model, config.get("decision"), str(path))
    return model.eval()


def _exported_file(path: Path) -> Path:
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(f"{path} holds {len(files)} .safetensors files; name the one to load")
        return files[0]
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def load_model(path: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load any model of ours, in eval mode: a ``mxa train`` checkpoint (``.pt``; its EMA weights when it
    has them and ``use_ema``), an exported safetensors file or folder, a Hub folder ``"local-dir:DIR"`` or a
    Hugging Face Hub repo ``"hf-hub:ORG/NAME[@REV]"`` (:mod:`mxa.files.hub`).

    A file that carries a calibration and thresholds (``mxa eval --save-model``) gives a model with
    ``model.decision_rule`` (a :class:`~mxa.decision.rule.DecisionRule`; ``None`` otherwise), which
    :func:`mxa.predict_files` and exports use; ``forward`` still returns raw logits.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the file is corrupt, not ours, or describes a model we may not build (see
            :class:`ModelSpec`).

    Examples:
        >>> import tempfile, timm, torch, mxa
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64).eval()
        >>> folder = tempfile.mkdtemp()
        >>> path = mxa.export_safetensors(model, f"{folder}/model.safetensors")
        >>> again = mxa.load_model(folder)
        >>> x = torch.randn(1, 1, 64, 64)
        >>> torch.equal(again(x), model(x))
        True
    """
    if is_hub_source(path):
        return load_hub_model(str(path))
    path = Path(path)
    if is_hub_folder(path):  # a folder of `mxa export --format hub`, named without local-dir:
        return load_hub_model(f"local-dir:{path}")
    if path.is_dir() or path.suffix == ".safetensors":
        return load_exported(path)
    return load_model_from_checkpoint(path, use_ema=use_ema, map_location=map_location)


def load_hub_model(source: str) -> nn.Module:
    """A model from ``local-dir:DIR`` (a Hub folder) or ``hf-hub:ORG/NAME[@REV]`` (downloaded once into the
    Hugging Face cache; offline, ``HF_HUB_OFFLINE=1`` uses the cache alone), in eval mode."""
    if source.startswith("local-dir:"):
        folder = Path(source.removeprefix("local-dir:"))
    elif source.startswith("hf-hub:"):
        folder = _download(source.removeprefix("hf-hub:"))
    else:
        raise ValueError(f"a Hub source is local-dir:DIR or hf-hub:ORG/NAME, got {source!r}")
    config, state = _read_folder(folder)
    if "model_kwargs" in config and "model_args" not in config:  # a folder of mxa.export_safetensors
        return load_exported(folder)
    try:
        spec = ModelSpec(config["architecture"], dict(config.get("model_args") or {}))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{folder / 'config.json'} is not a timm Hub config ({e})") from None
    model = spec.build(source=f"Hub model {source}")
    _load_state(model, state, folder / "model.safetensors")
    meta = config.get("mxa") or {}
    attach_decision_rule(model, meta.get("decision"), source)
    model.trained_on = (meta.get("training") or {}).get("data")  # type: ignore[assignment]
    return model.eval()


def _read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hub folder: it needs config.json and model.safetensors (mxa export --format "
            "hub)"
        )
    try:
        config = json.loads(cfg_path.read_text())
        state = load_file(str(weights))
    except (ValueError, SafetensorError, OSError) as e:
        raise ValueError(f"{folder} cannot be read ({e}); export or download it again") from None
    return config, state


def _download(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError

    repo_id, _, revision = repo.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=list(HUB_FILES)))
    except (OSError, HfHubHTTPError, ValueError) as e:
        raise ValueError(
            f"cannot get hf-hub:{repo} ({type(e).__name__}: {str(e).splitlines()[0][:160]}). Offline, use a "
            "downloaded copy: local-dir:FOLDER (from huggingface_hub.snapshot_download("
            f"'{repo_id}', local_dir=FOLDER) on a machine with network), or HF_HUB_OFFLINE=1 with a Hugging "
            "Face cache that holds it"
        ) from None
