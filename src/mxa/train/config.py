"""``TrainConfig``: every setting of a training run, with its help text, range and flag in one place.

The ``mxa train`` / ``mxa ablate`` flags are generated from these fields (``mxa.cli.config``), and a YAML
``--config`` goes through the same checks, so a new setting cannot be forgotten in one of them.
Each field's ``metadata`` holds ``help``, ``group`` and optionally ``min``/``max``/``choices``/``nargs``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mxa.data.labels import POLICIES
from mxa.data.spec import SCHEMES
from mxa.data.transforms import PAPER_RAND_AUGMENT
from mxa.layers.label_roi import PEAK_FRACTION
from mxa.losses.multilabel import DEFAULT_MAX_POS_WEIGHT
from mxa.models.efficientvit_ml import MXA_PER_STAGE
from mxa.utils.runtime import AMP_CHOICES

__all__ = ["LEGACY_SETTINGS", "ConfigError", "TrainConfig", "stored_settings"]

#: Settings added with a default that differs from what runs before them did: a checkpoint whose stored
#: config lacks one was trained with the value given here (resume and rebuild use it, never the new default).
LEGACY_SETTINGS: dict[str, Any] = {
    "mxa_rois": 0,
    "roi_guide": 0.0,
    "mxa_min_size": 0.25,
    "mxa_mode": "zoom",
    "roi_mil": 0.0,
    "mxa_class_boxes": False,
}


#: Settings of the single-box block (``mxa_rois`` 0) that a label-ROI block has no use for.
SINGLE_BOX_SETTINGS = (
    "mxa_mode",
    "mxa_min_size",
    "mxa_init_size",
    "mxa_crop_size",
    "mxa_saliency_temperature",
    "mxa_crop_method",
    "mxa_box_size",
    "mxa_class_boxes",
    "mxa_box_grad",
)


def stored_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored config with :data:`LEGACY_SETTINGS` for the settings it predates."""
    return {**LEGACY_SETTINGS, **config}


class ConfigError(ValueError):
    """A setting has the wrong type or an impossible value (the message names it and the valid range)."""


def _opt(default: Any, help: str, group: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, "group": group, **meta})


@dataclass
class TrainConfig:
    """Every setting of a run (the ``mxa train`` flags; a YAML ``--config`` uses the same names).

    Values are checked when the config is made (also by ``dataclasses.replace``): a wrong type or an
    impossible value raises :class:`ConfigError`.
    """

    data: str = _opt(
        "phantom",
        "'phantom' (built-in synthetic X-rays, no download), 'phantom-small' (the same with at most one "
        "small finding per image) or <scheme>:<root> with scheme "
        f"{', '.join(SCHEMES[1:])}; several joined by '+' (each set split by patient, validated per set and "
        "pooled), each optionally weighted with *<w> (drawn w times as often per image)",
        "data",
        fixed=True,
    )
    train_samples: int = _opt(2000, "phantom training images", "data", min=1, max=10_000_000, fixed=True)
    val_samples: int = _opt(500, "phantom validation images", "data", min=1, max=10_000_000)
    policy: str = _opt(
        "ones",
        "what an uncertain (-1) CheXpert label becomes; 'ones' is the paper's U-1",
        "data",
        choices=POLICIES,
        fixed=True,
    )
    rand_augment: str | None = _opt(PAPER_RAND_AUGMENT, "timm RandAugment string, or 'none'", "data")
    workers: int = _opt(0, "data-loading processes", "data", min=0)
    model: str = _opt(
        "efficientvit_ml_m5",
        "timm model name: efficientvit_ml_m0 ... efficientvit_ml_m5, or a grafted densenet121_mxa, "
        "resnet50_mxa, convnext_tiny_mxa, deit_small_patch16_224_mxa",
        "model",
        fixed=True,
    )
    mxa: bool = _opt(
        True,
        "add MXA blocks beside the attention (--no-mxa: the plain multi-label baseline)",
        "model",
        fixed=True,
    )
    mxa_stages: list[int] | None = _opt(  # noqa: RUF009  (_opt returns a dataclasses.field)
        None, "stages that get MXA (default: all)", "model", min=0, nargs="+", fixed=True
    )
    mxa_per_stage: str = _opt(
        "all",
        "which blocks of each stage get MXA: 'all' (the paper's), 'first' or 'last' (one per stage: 3 of "
        "M5's 8 blocks; efficientvit_ml_* models only). Measured for 'first': the latency MXA adds falls to "
        "a little under half on M5 at batch 1 (docs/benchmarks.md), and the crop localizes less well "
        "(docs/localization.md)",
        "model",
        choices=MXA_PER_STAGE,
        fixed=True,
    )
    mxa_rois: int = _opt(
        2,
        "ROIs per MXA block from the ROI classifier's label maps: the boxes of the R labels whose maps peak "
        "highest, each refined by CBAM where it lies and weighted by its label's probability (needs "
        "--roi-mil > 0); 0 = the paper's single box from the block's own box head, to which --mxa-mode, "
        "--mxa-box-size, "
        "--mxa-init-size, --mxa-crop-size, --mxa-crop-method, --mxa-saliency-temperature and "
        "--mxa-class-boxes apply (docs/localization.md)",
        "model",
        min=0,
        max=14,
        fixed=True,
    )
    mxa_roi_fraction: float = _opt(
        PEAK_FRACTION,
        "with --mxa-rois > 0: where each ROI's edges lie on its label map, from the map's mean (0) to its "
        "peak (1); 0.5 is the half maximum, higher gives tighter boxes (docs/localization.md)",
        "model",
        min=0.0,
        max=0.99,
        fixed=True,
    )
    mxa_mode: str = _opt(
        "paste",
        "how an MXA block uses its box: 'paste' (the gated crop put back where the box is, aligned with the "
        "map) or 'zoom' (the paper's: the crop resized to the whole map); the paper's MXA is --mxa-mode zoom "
        "--roi-mil 0 (docs/localization.md)",
        "model",
        choices=("zoom", "paste"),
        fixed=True,
    )
    mxa_min_size: float = _opt(
        0.05,
        "smallest MXA box side, as a fraction of the feature map side (0.05 fits a median NIH nodule on a "
        "stage-0 map; 0.25 = the paper's and 0.2's; see docs/localization.md)",
        "model",
        min=0.0,
        exclusive_min=True,
        max=1.0,
        exclusive_max=True,
        fixed=True,
    )
    mxa_init_size: float = _opt(
        0.95,
        "MXA box side at initialisation (between --mxa-min-size and 1; with --mxa-box-size head)",
        "model",
        min=0.0,
        exclusive_min=True,
        max=1.0,
        exclusive_max=True,
        fixed=True,
    )
    mxa_crop_size: int | None = _opt(
        None, "side of the MXA crop in --mxa-mode paste (default: the map's size)", "model", min=1, fixed=True
    )
    mxa_saliency_temperature: float = _opt(
        1.0,
        "temperature of the MXA box head's soft-argmax (below 1: sharper centres and, with --mxa-box-size "
        "saliency, smaller boxes)",
        "model",
        min=0.0,
        exclusive_min=True,
        max=100.0,
        fixed=True,
    )
    mxa_crop_method: str = _opt(
        "auto",
        "how MXA crops its box: auto (separable under --deterministic, else the faster on the device), "
        "grid_sample or separable (the same crop either way)",
        "model",
        choices=("auto", "grid_sample", "separable"),
        fixed=True,
    )
    mxa_box_size: str = _opt(
        "head",
        "how an MXA box gets its size: 'head' (a linear layer on pooled features, the paper's) or 'saliency' "
        "(sqrt(12) x the spread of the block's saliency map around its centre; docs/localization.md)",
        "model",
        choices=("head", "saliency"),
        fixed=True,
    )
    pretrained: bool = _opt(
        False, "start from timm's ImageNet EfficientViT weights (downloads once)", "model"
    )
    pretrained_file: str | None = _opt(
        None, "local file with those (or our own) weights: works offline", "model"
    )
    img_size: int = _opt(224, "input size in pixels", "model", min=32, max=2048, fixed=True)
    epochs: int = _opt(50, "total epochs, warm-up and cool-down included", "optimization", min=1, fixed=True)
    batch_size: int = _opt(512, "images per step per process", "optimization", min=1, fixed=True)
    lr: float = _opt(
        1e-3, "peak learning rate", "optimization", min=0.0, exclusive_min=True, max=10.0, fixed=True
    )
    min_lr: float = _opt(
        1e-5, "cosine floor and cool-down learning rate", "optimization", min=0.0, max=10.0, fixed=True
    )
    weight_decay: float = _opt(0.025, "AdamW weight decay", "optimization", min=0.0, max=10.0, fixed=True)
    warmup_epochs: int = _opt(
        5,
        "linear warm-up epochs (scaled down when warm-up and cool-down take over half the run)",
        "optimization",
        min=0,
        fixed=True,
    )
    cooldown_epochs: int = _opt(
        10, "epochs at --min-lr at the end (scaled like --warmup-epochs)", "optimization", min=0, fixed=True
    )
    warmup_lr: float = _opt(
        1e-6, "learning rate at the start of the warm-up", "optimization", min=0.0, max=10.0, fixed=True
    )
    agc: float = _opt(0.02, "adaptive gradient clipping factor, 0 = off", "optimization", min=0.0)
    ema_decay: float = _opt(
        0.99996,
        "EMA decay per update, 0 = no EMA",
        "optimization",
        min=0.0,
        max=1.0,
        exclusive_max=True,
        fixed=True,
    )
    accum_steps: int = _opt(1, "gradient accumulation steps", "optimization", min=1, fixed=True)
    class_balance: bool = _opt(
        True,
        "class-balanced BCE (pos_weight = negatives/positives, capped at --max-pos-weight), as the paper",
        "optimization",
    )
    max_pos_weight: float = _opt(
        DEFAULT_MAX_POS_WEIGHT, "cap of the class-balanced pos_weight", "optimization", min=1.0, max=1e6
    )
    max_steps_per_epoch: int | None = _opt(
        None, "cap the steps of an epoch (quick experiments)", "optimization", min=1, fixed=True
    )
    stop_after_epoch: int | None = _opt(
        None,
        "end the run cleanly after this epoch (of the full --epochs schedule); it continues later: `mxa "
        "train --resume RUN/last.pt`, or the same ablate command again",
        "optimization",
        min=1,
    )
    teacher: str = _opt(
        "none",
        "none | densenet121-res224-chex (torchxrayvision) | a model of ours (checkpoint .pt or exported "
        ".safetensors) | cache:<file> (teacher logits precomputed by `mxa cache-teacher`)",
        "distillation",
        fixed=True,
    )
    alpha: float = _opt(0.5, "weight of the distillation term", "distillation", min=0.0, max=1.0, fixed=True)
    tau: float = _opt(
        1.0, "distillation temperature T", "distillation", min=0.0, exclusive_min=True, max=100.0, fixed=True
    )
    dynamic_weights: bool = _opt(True, "per-label dynamic KD weights w_j = 1 - mean p_j", "distillation")
    trust_pickle: bool = _opt(
        False,
        "allow unpickling a teacher weights file that cannot be read safely (runs code from the file: only "
        "for files you trust)",
        "distillation",
    )
    box_loss: float = _opt(
        0.0,
        "weight of a GIoU loss between every MXA box and the best-matching true box of its image, for images "
        "that have boxes (phantom, NIH, VinDr, RSNA, or a boxes_<split>.json; 0 = off), and with "
        "--mxa-class-boxes between every label's box and its own true box; augmentation then leaves out "
        "rotations, shears and translations",
        "localization",
        min=0.0,
        max=1e3,
        fixed=True,
    )
    box_fraction: float = _opt(
        1.0,
        "with --box-loss: the share of the training images whose box labels it uses, drawn by --seed (the "
        "others train from their image labels alone): how few boxed images a run needs "
        "(docs/localization.md)",
        "localization",
        min=0.0,
        max=1.0,
        fixed=True,
    )
    box_file: str = _opt(
        "",
        "with --box-loss: the training images' box labels from this JSON file ({image id: {label: "
        "[x1, y1, x2, y2]}}, normalized; the format of boxes_<split>.json) instead of the data's: images "
        "it does not list train from their labels alone. For boxes drawn without box labels, e.g. by "
        "occlusion of a run trained on image labels (mxa.viz.cam.occlusion_boxes; docs/localization.md)",
        "localization",
        fixed=True,
    )
    box_area_penalty: float = _opt(
        0.0,
        "weight of a penalty on the mean area of the MXA boxes (0 = off)",
        "localization",
        min=0.0,
        max=1e3,
        fixed=True,
    )
    mxa_class_boxes: bool = _opt(
        False,
        "with --mxa-rois 0 and --roi-mil > 0: every label gets its own box per MXA block, from that label's "
        "map of the ROI classifier (the per-label boxes of `mxa eval`'s detection metrics; label ROIs always "
        "have them)",
        "localization",
        fixed=True,
    )
    mxa_box_grad: float = _opt(
        1.0,
        "with --mxa-rois 0: the share of the gradient through every MXA block's box head (and the per-label "
        "boxes of --mxa-class-boxes) that reaches the backbone: 0 stops it (--box-loss's, the task's "
        "through the crop; the heads still learn), 1 passes it all (docs/localization.md)",
        "localization",
        min=0.0,
        max=1.0,
        fixed=True,
    )
    roi_mil: float = _opt(
        1.0,
        "weight of the ROI objective that needs image labels only: the mean label score inside each MXA box "
        "must predict the image's labels, a soft maximum outside it none (a linear classifier per block, run "
        "in training only; 0 = off, the paper's)",
        "localization",
        min=0.0,
        max=1e3,
        fixed=True,
    )
    roi_guide: float = _opt(
        1.0,
        "with --mxa-rois > 0: weight of the coarse-to-fine objective, in which the deepest MXA block's label "
        "maps tell every earlier block where each finding roughly is (inside its peak box the label, outside "
        "none), so finer maps learn to fire on the finding itself (0 = off)",
        "localization",
        min=0.0,
        max=1e3,
        fixed=True,
    )
    seed: int = _opt(
        0, "random seed", "run", min=0, max=2**31 - 1, fixed=True
    )  # NumPy takes seeds below 2**32
    output: str = _opt("runs/mxa", "run folder: last.pt, best.pt, metrics.jsonl", "run")
    resume: str | None = _opt(None, "continue a run from its last.pt exactly where it stopped", "run")
    overwrite: bool = _opt(
        False,
        "start over, replacing the run(s) the output folder holds (without it, train refuses a folder "
        "holding a run; ablate keeps its finished runs and continues the others)",
        "run",
    )
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N (under torchrun one GPU per process)", "run")
    amp: str = _opt(
        "auto",
        "mixed precision: auto (bf16 on CUDA, none on CPU), none, bf16, fp16",
        "run",
        choices=AMP_CHOICES,
    )
    channels_last: bool = _opt(True, "channels_last memory format on CUDA", "run")
    compile: bool = _opt(False, "torch.compile the model", "run")
    deterministic: bool = _opt(
        False,
        "deterministic algorithms only (torch.use_deterministic_algorithms, cuDNN deterministic, the cuBLAS "
        "workspace setting; MXA crops use the separable method): two runs give bit-identical weights on "
        "one machine",
        "run",
    )
    eval_bootstrap: int = _opt(0, "bootstrap resamples for per-epoch CIs", "run", min=0)
    log: str = _opt(
        "",
        "live tracking, a comma-separated subset of tensorboard, wandb, mlflow (the tracking extra): each "
        "epoch's numbers, the settings, validation images with their MXA boxes; metrics.jsonl is always "
        "written (docs/cluster.md)",
        "run",
    )
    log_images_every: int = _opt(
        5,
        "with --log: every this many epochs, a few validation images with their MXA boxes (0: never)",
        "run",
        min=0,
    )
    progress: bool = _opt(True, "progress bars", "run")

    def __post_init__(self) -> None:
        if self.rand_augment in ("none", "None", ""):
            self.rand_augment = None
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check(f, getattr(self, f.name)))
        from mxa.data.spec import parse_data_spec
        from mxa.train.tracking import parse_trackers

        try:
            self.log = ",".join(parse_trackers(self.log))
        except ValueError as e:
            raise ConfigError(str(e)) from None

        try:
            parse_data_spec(self.data)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.mxa_box_size == "head" and not self.mxa_init_size > self.mxa_min_size:
            raise ConfigError(
                f"mxa_init_size ({self.mxa_init_size}) must be above mxa_min_size ({self.mxa_min_size})"
            )
        if self.mxa and self.mxa_rois and not self.roi_mil > 0:
            raise ConfigError(
                f"mxa_rois ({self.mxa_rois}) takes its ROIs from the label maps that the ROI objective "
                "trains: set roi_mil > 0 (e.g. 1), or mxa_rois 0 for the paper's single box"
            )
        if self.mxa and self.mxa_rois:
            changed = [
                f.name
                for f in dataclasses.fields(self)
                if f.name in SINGLE_BOX_SETTINGS and getattr(self, f.name) != f.default
            ]
            if changed:
                raise ConfigError(
                    f"{', '.join(changed)} set the paper's single-box MXA block, but mxa_rois "
                    f"({self.mxa_rois}) takes the block's ROIs from the label maps: set mxa_rois 0 to use "
                    "them, or leave them out"
                )
        if self.mxa and self.mxa_per_stage != "all" and not self.model.startswith("efficientvit_ml_"):
            raise ConfigError(
                f"mxa_per_stage {self.mxa_per_stage!r} picks blocks of our EfficientViT's stages, and "
                f"{self.model} is not one: use an efficientvit_ml_* model, or leave mxa_per_stage out"
            )
        if self.box_fraction < 1 and not self.box_loss > 0:
            raise ConfigError(
                f"box_fraction ({self.box_fraction}) chooses the images whose boxes box_loss uses, and "
                "box_loss is 0: set box_loss > 0 (e.g. 1), or leave box_fraction out"
            )
        if self.box_file and not self.box_loss > 0:
            raise ConfigError(
                f"box_file ({self.box_file}) gives the box labels box_loss trains on, and box_loss is 0: set "
                "box_loss > 0 (e.g. 1), or leave box_file out"
            )
        if self.mxa and not self.mxa_rois and self.mxa_roi_fraction != PEAK_FRACTION:
            raise ConfigError(
                f"mxa_roi_fraction ({self.mxa_roi_fraction}) places the edges of label ROIs, and mxa_rois 0 "
                "builds the paper's single box: set mxa_rois > 0 (e.g. 2), or leave mxa_roi_fraction out"
            )
        if self.mxa and self.mxa_class_boxes and not self.roi_mil > 0:
            raise ConfigError(
                "mxa_class_boxes gives every label a box from the ROI classifier, which roi_mil 0 turns off: "
                "set roi_mil > 0 (e.g. 1), or leave mxa_class_boxes out"
            )
        if self.mxa and self.mxa_rois and self.box_area_penalty > 0:
            raise ConfigError(
                f"box_area_penalty needs a box with a gradient, and mxa_rois ({self.mxa_rois}) boxes are a "
                "read-out of the label maps: set box_area_penalty 0, or mxa_rois 0 for the paper's single box"
            )
        if self.mxa_crop_size is not None and self.mxa_mode != "paste":
            raise ConfigError("mxa_crop_size is for --mxa-mode paste only (zoom crops to the map's size)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _kind(f: dataclasses.Field) -> str:
    """bool, int, float, str or int_list, from the annotation text (annotations are strings here)."""
    t = str(f.type)
    for k in ("bool", "list[int]", "int", "float", "str"):
        if t.startswith(k):
            return "int_list" if k == "list[int]" else k
    raise TypeError(f"TrainConfig.{f.name}: unsupported type {t}")


def _check(f: dataclasses.Field, v: Any) -> Any:
    """Type-check (ints are accepted for floats) and range-check one value; returns it normalised."""
    name, meta, kind = f.name, f.metadata, _kind(f)
    if v is None:
        if "None" in str(f.type):
            return None
        raise ConfigError(f"{name} must be set (got nothing)")
    if kind == "int_list":
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{name} must be a list of integers, got {v!r}")
        return [_number(name, x, "int", meta) for x in v]
    if kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{name} must be true or false, got {v!r}")
        return v
    if kind == "str":
        if not isinstance(v, str):
            raise ConfigError(f"{name} must be a string, got {v!r}")
        if "choices" in meta and v not in meta["choices"]:
            raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])}, got {v!r}")
        return v
    return _number(name, v, kind, meta)


def _number(name: str, v: Any, kind: str, meta: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and not isinstance(v, int)):
        raise ConfigError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
    if kind == "float":
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (v < lo or (meta.get("exclusive_min") and v == lo)):
        raise ConfigError(f"{name} must be {'>' if meta.get('exclusive_min') else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (meta.get("exclusive_max") and v == hi)):
        raise ConfigError(f"{name} must be {'<' if meta.get('exclusive_max') else '<='} {hi}, got {v}")
    return v
