"""Models that travel: timm's Hub folder (``config.json``, ``model.safetensors``, a model card) and the
Hugging Face Hub (docs/deployment.md).

:func:`export_hub` writes the folder with timm's own ``save_for_hf``: after ``import mxa``,
``timm.create_model("local-dir:DIR", pretrained=True)`` and :func:`mxa.load_model` (``"local-dir:DIR"`` or
``"hf-hub:ORG/NAME"``; :func:`mxa.files.load.load_hub_model`) rebuild the model. Our metadata
(preprocessing, decision rule, MXA settings, how it was trained) is the ``mxa`` key of ``config.json``,
where timm ignores it. :func:`push_to_hub` uploads the folder with ``huggingface_hub``. Loading never
unpickles: the weights are safetensors.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from mxa.decision.rule import get_decision_rule
from mxa.files.spec import PREPROCESSING, ModelSpec
from mxa.utils.files import write_failure

__all__ = [
    "HUB_FILES",
    "export_hub",
    "is_hub_folder",
    "is_hub_source",
    "model_card",
    "push_to_hub",
]

log = logging.getLogger(__name__)

#: The files of a Hub folder, all three written by :func:`export_hub`.
HUB_FILES = ("config.json", "model.safetensors", "README.md")
_SOURCES = ("local-dir:", "hf-hub:")


def is_hub_folder(path: Path) -> bool:
    """Whether ``path`` is a folder in timm's Hub layout (``config.json`` with a ``pretrained_cfg``, and
    ``model.safetensors``), not one of :func:`mxa.export_safetensors` (its config has ``model_kwargs``)."""
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        config = json.loads(cfg.read_text())
    except ValueError:
        return False
    return isinstance(config, dict) and "pretrained_cfg" in config and "model_kwargs" not in config


def is_hub_source(source: str | Path) -> bool:
    """Whether ``source`` names a Hub folder (``local-dir:DIR``) or a Hub repo (``hf-hub:ORG/NAME[@REV]``)."""
    return isinstance(source, str) and source.startswith(_SOURCES)


def export_hub(
    model: nn.Module,
    folder: str | Path,
    *,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as timm's Hub folder: ``config.json`` and ``model.safetensors`` (timm's
    ``save_for_hf``) and a model card ``README.md``.

    Args:
        model: one of ours (``efficientvit_ml_*``, a registered ``*_mxa`` or its plain parent).
        folder: the folder to write (made whole in a temporary folder beside it, then moved into place).
        training: the run's settings (a checkpoint's ``config``), for the card and ``config.json``.
        metrics: ``mxa eval --json`` output, for the card's evaluation section.
        overwrite: replace an existing, non-empty ``folder``.

    Returns:
        ``folder``.

    Examples:
        >>> import tempfile, timm, torch, mxa
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64).eval()
        >>> folder = mxa.export_hub(model, tempfile.mkdtemp() + "/hub")
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
        >>> again = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        >>> x = torch.randn(1, 1, 64, 64)
        >>> torch.equal(again(x), model(x))
        True
    """
    from timm.models import save_for_hf

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise ValueError(
            f"{folder} exists and is not empty: pass overwrite=True (--overwrite) or another folder"
        )
    spec = ModelSpec.from_model(model)
    extras = {
        "label_names": list(getattr(model, "label_names", None) or []),
        "mxa": _metadata(model, training),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        save_for_hf(
            model, str(tmp), model_config=extras, model_args=dict(spec.kwargs), safe_serialization=True
        )
        (tmp / "README.md").write_text(model_card(model, training, metrics))
        if folder.exists():
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        tmp.rename(folder)
    except Exception as e:
        reason = write_failure(e)
        if reason is None:
            raise
        raise OSError(errno.ENOSPC, f"could not write {folder}: {reason}; nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s as a Hub folder: %s", spec.architecture, folder)
    return folder


def _metadata(model: nn.Module, training: dict[str, Any] | None) -> dict[str, Any]:
    from mxa import __version__

    rule = get_decision_rule(model)
    return {
        "version": __version__,
        "preprocessing": PREPROCESSING,
        "output": "logits (B, K) in label_names order; probabilities are their sigmoid unless 'decision' "
        "calibrates them",
        "decision": rule.to_dict() if rule is not None else None,
        "training": {k: (training or {}).get(k) for k in _TRAINING_KEYS if k in (training or {})},
    }


#: What of a run's settings a Hub folder records (and its card shows).
_TRAINING_KEYS = (
    "data",
    "train_samples",
    "policy",
    "model",
    "img_size",
    "mxa",
    "mxa_per_stage",
    "mxa_rois",
    "mxa_mode",
    "roi_mil",
    "roi_guide",
    "box_loss",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "ema_decay",
    "rand_augment",
    "teacher",
    "alpha",
    "tau",
    "seed",
)


def model_card(
    model: nn.Module, training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None
) -> str:
    """The ``README.md`` of a Hub folder: what the model is, how it was trained and evaluated, its labels
    and decision thresholds, how to load it, and what it must not be used for."""
    spec = ModelSpec.from_model(model)
    labels = list(getattr(model, "label_names", None) or [])
    n_params = sum(p.numel() for p in model.parameters())
    hw = getattr(model, "input_hw", None)
    training = training or {}
    synthetic = str(training.get("data", "")).startswith("phantom")
    lines = [
        "---",
        "library_name: timm",
        "license: apache-2.0",
        "tags: [timm, image-classification, chest-x-ray, mxa-attention, medical-imaging]",
        "---",
        "",
        f"# {spec.architecture}",
        "",
        "**Research software. Not a medical device; not for clinical use.**",
        "",
    ]
    if synthetic:
        lines += [
            "> **Trained on synthetic phantom X-rays** (`mxa`'s built-in phantoms), not on patients. It "
            "shows that the pipeline runs; on real radiographs its outputs mean nothing.",
            "",
        ]
    lines += [
        "## Model",
        "",
        f"- Architecture: `{spec.architecture}` (mxa-attention), {n_params / 1e6:.2f}M parameters, "
        f"{len(labels) or spec.kwargs.get('num_classes', '?')} sigmoid outputs (logits).",
        f"- Input: {getattr(model, 'in_chans', 1)} channel(s)"
        + (f", {hw[0]} x {hw[1]} pixels" if hw else "")
        + "; preprocessing in `config.json` (`mxa.preprocessing`).",
        "- Constructor arguments (`config.json` `model_args`): "
        f"`{json.dumps(spec.kwargs.get('mxa_cfg') or {})}` for the MXA blocks, MXA "
        f"{'on' if spec.kwargs.get('mxa', True) else 'off'}"
        + (
            f", in the {spec.kwargs['mxa_per_stage']} block of each stage that has it"
            if "mxa_per_stage" in spec.kwargs
            else ""
        )
        + ".",
        "",
        "## Training",
        "",
    ]
    if training:
        lines += [f"- `{k}`: `{training[k]}`" for k in _TRAINING_KEYS if k in training]
    else:
        lines.append("- Not recorded (the model was exported without its training checkpoint).")
    lines += ["", "## Evaluation", ""]
    lines += _metric_lines(metrics)
    lines += ["", "## Labels and decision thresholds", ""]
    lines += _label_lines(model, labels)
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import timm, mxa  # import mxa registers the architecture in timm",
        'model = timm.create_model("hf-hub:ORG/NAME", pretrained=True).eval()  # or "local-dir:FOLDER"',
        'model = mxa.load_model("hf-hub:ORG/NAME")  # the same weights, with the decision rule',
        "```",
        "",
        "`mxa predict --model hf-hub:ORG/NAME IMAGES...` gives the probabilities (and decisions) per image.",
        "",
        "## Intended use and limits",
        "",
        "- For research on chest X-ray classification and the MXA block (Rand & Ibrahim). Not a medical "
        "device, not validated for any clinical use, and not to be used to diagnose or treat anyone.",
        "- Findings are CheXpert's observations, labelled from radiology reports (with label noise); "
        "performance on another population, scanner or view (this model expects frontal views) is unknown "
        "until measured there.",
        "- The MXA boxes show where the model looked, not a segmentation of a finding.",
        "",
    ]
    return "\n".join(lines)


def _metric_lines(metrics: dict[str, Any] | None) -> list[str]:
    if not metrics:
        return ["Not evaluated here: run `mxa eval --checkpoint ... --json eval.json` and export with "
                "`--metrics eval.json` to include the numbers."]  # fmt: skip
    ci = metrics.get("ci") or {}
    out = [
        f"On `{metrics.get('data', '?')}` ({metrics.get('n_images', '?')} images), with 95% bootstrap CIs:",
        "",
    ]
    out += ["| metric | value | 95% CI |", "| --- | --- | --- |"]
    for key in ("macro_auc", "micro_auc", "competition_auc"):
        v = metrics.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        lo_hi = ci.get(key)
        interval = f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "-"
        out.append(f"| {key.replace('_', ' ')} | {v:.3f} | {interval} |")
    det = metrics.get("detection")
    if det:
        out.append(
            f"\nBoxes (`{det.get('block')}`, chosen by {det.get('block_chosen_by')}): AP@0.3 "
            f"{det['ap'].get('0.3', float('nan')):.3f}, RoDeO {det['rodeo']['total']:.3f}."
        )
    return out


def _label_lines(model: nn.Module, labels: list[str]) -> list[str]:
    rule = get_decision_rule(model)
    out = ["| label | threshold |", "| --- | --- |"]
    for name in labels:
        thr = rule.threshold(name) if rule is not None else None
        out.append(f"| {name} | {f'{thr:.3f}' if thr is not None else '- (none chosen)'} |")
    if rule is None:
        out.append("\nNo decision rule: choose thresholds with `mxa eval --thresholds ... --save-model`.")
    return out


def push_to_hub(
    folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None, api: Any = None
) -> str:
    """Upload a Hub folder (:func:`export_hub`) to the Hugging Face Hub as model repo ``repo_id``.

    Args:
        folder: the folder to upload (its three :data:`HUB_FILES`).
        repo_id: ``ORG/NAME``; created if missing.
        private: create the repo private (an existing repo keeps its visibility).
        token: a Hub token (default: the one ``huggingface-cli login`` stored, or ``HF_TOKEN``).
        api: a ``huggingface_hub.HfApi`` (the tests pass a stand-in).

    Returns:
        The repo's URL.

    Examples:
        >>> import os, tempfile, timm, mxa
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=64)
        >>> folder = mxa.export_hub(model, tempfile.mkdtemp() + "/hub")
        >>> class DryRun:  # stands in for huggingface_hub.HfApi(), which needs a network and a token
        ...     def create_repo(self, repo_id, **kwargs): print("create", repo_id)
        ...     def upload_folder(self, repo_id, folder_path, **kwargs):
        ...         print(sorted(os.listdir(folder_path)))
        >>> mxa.push_to_hub(folder, "my-org/m0-mxa", api=DryRun())
        create my-org/m0-mxa
        ['README.md', 'config.json', 'model.safetensors']
        'https://huggingface.co/my-org/m0-mxa'
    """
    folder = Path(folder)
    missing = [f for f in HUB_FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"{folder} is not a Hub folder of mxa (missing {', '.join(missing)}): export it first"
        )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"--push-to-hub takes ORG/NAME, got {repo_id!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message="mxa export"
        )
    except OSError as e:  # requests' and httpx's connection errors are OSErrors
        raise ValueError(
            f"cannot reach the Hugging Face Hub to upload {repo_id} ({type(e).__name__}): the folder "
            f"{folder} is complete; upload it later with the same command or `huggingface-cli upload`"
        ) from None
    return f"https://huggingface.co/{repo_id}"
