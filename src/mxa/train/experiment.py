"""One description of an experiment (variants, seeds, teacher), run by ``mxa ablate`` and ``mxa demo``.

An :class:`Experiment` trains, with identical settings but for the variable under study:

1. a teacher, when asked: an MXA-free model of the same size on a longer schedule (``teacher="train"``);
2. every :class:`Variant` (by default the paper's baseline, +MXA and +MXA+KD) for each seed, in
   ``OUTPUT/<variant.folder>/seed<k>``; the KD variants distil from the teacher, online or from its
   cached logits (``cache_teacher``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxa.distill.cache import cache_teacher_logits
from mxa.files.checkpoint import TrainCheckpoint
from mxa.files.spec import ModelSpec
from mxa.metrics.report import aggregate_runs
from mxa.train.config import TrainConfig, stored_settings
from mxa.train.loop import train
from mxa.train.state import FIXED_ON_RESUME
from mxa.utils.files import atomic_write_text

__all__ = ["PAPER_VARIANTS", "Experiment", "Variant", "run_ablation", "run_experiment"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One model of an experiment: its name in tables and JSON, its run folder, what it changes."""

    name: str
    folder: str
    mxa: bool
    distill: bool


#: The paper's Tables 2-3: baseline, +MXA, +MXA+KD.
PAPER_VARIANTS = (
    Variant("baseline", "baseline", mxa=False, distill=False),
    Variant("+MXA", "mxa", mxa=True, distill=False),
    Variant("+MXA+KD", "mxa_kd", mxa=True, distill=True),
)


@dataclass
class Experiment:
    """Variants x seeds with one base config.

    Attributes:
        base: the settings every run shares (its ``seed`` is the first seed, its ``output`` ignored).
        output: the experiment folder.
        seeds: seeds per variant (``base.seed``, ``base.seed + 1``, ...).
        teacher: ``"train"`` (train an MXA-free teacher first) or a teacher spec for ``--teacher``.
        teacher_epochs: the trained teacher's epochs (default twice ``base.epochs``).
        cache_teacher: distil from the teacher's cached logits (fast; the evaluation view of each image)
            instead of running it online on the augmented batch.
        variants: what to train.
    """

    base: TrainConfig
    output: Path
    seeds: int = 1
    teacher: str = "train"
    teacher_epochs: int | None = None
    cache_teacher: bool = False
    variants: tuple[Variant, ...] = PAPER_VARIANTS

    @property
    def teacher_dir(self) -> Path:
        return self.output / "teacher"

    def teacher_config(self) -> TrainConfig:
        return dataclasses.replace(
            self.base,
            mxa=False,
            teacher="none",
            epochs=self.teacher_epochs or 2 * self.base.epochs,
            output=str(self.teacher_dir),
            seed=self.base.seed + 1000,
        )

    def run_dir(self, variant: Variant, seed_index: int) -> Path:
        return self.output / variant.folder / f"seed{seed_index}"

    def run_config(self, variant: Variant, seed_index: int, teacher_spec: str) -> TrainConfig:
        return dataclasses.replace(
            self.base,
            seed=self.base.seed + seed_index,
            output=str(self.run_dir(variant, seed_index)),
            mxa=variant.mxa,
            teacher=teacher_spec if variant.distill else "none",
        )


#: settings that only shape MXA blocks
_MXA_ONLY = frozenset(k for k in FIXED_ON_RESUME if k.startswith("mxa_") or k == "roi_mil")


def _train_or_continue(cfg: TrainConfig) -> None:
    """Train ``cfg``; a run already in its folder is kept when it finished with these settings and
    continued from its ``last.pt`` when it did not (``mxa demo``/``mxa ablate`` can simply be run again).

    With ``cfg.overwrite`` the run starts over; a run of other settings is refused (train says how).
    """
    last = Path(cfg.output) / "last.pt"
    if cfg.overwrite or not last.is_file():
        train(cfg)
        return
    ckpt = TrainCheckpoint.load(last)
    old = stored_settings(ckpt.config)
    # a run without MXA blocks is the same run whatever its MXA settings (0.2 folders have other defaults)
    ignored = _MXA_ONLY if not cfg.mxa and not old.get("mxa", True) else ()
    same = all(
        json.loads(json.dumps(getattr(cfg, k), default=str)) == old[k]
        for k in FIXED_ON_RESUME
        if k in old and k not in ignored
    )
    if same and ckpt.epoch >= cfg.epochs and not ckpt.batch_in_epoch:
        log.info("%s: already trained with these settings, kept", cfg.output)
        return
    if same:
        log.info("%s: continuing the unfinished run from %s", cfg.output, last)
        train(dataclasses.replace(cfg, resume=str(last)))
        return
    train(cfg)  # another run's folder: refused, with the fix in the message


def run_experiment(exp: Experiment) -> dict[str, list[Path]]:
    """Train the teacher (if asked) and every variant for every seed; returns {variant name: run folders}.

    Runs that already finished in their folders are kept, unfinished ones continued (see
    :func:`_train_or_continue`); ``base.overwrite`` starts them all over.
    """
    teacher = exp.teacher
    if teacher == "train" and any(v.distill for v in exp.variants):
        log.info("teacher: %s without MXA, %d epochs", exp.base.model, exp.teacher_config().epochs)
        _train_or_continue(exp.teacher_config())
        teacher = str(exp.teacher_dir / "best.pt")
    runs: dict[str, list[Path]] = {v.name: [] for v in exp.variants}
    for s in range(exp.seeds):
        spec = _teacher_for_seed(exp, teacher, s)
        for v in exp.variants:
            log.info("%s, seed %d", v.name, exp.base.seed + s)
            _train_or_continue(exp.run_config(v, s, spec))
            runs[v.name].append(exp.run_dir(v, s))
    return runs


def _teacher_for_seed(exp: Experiment, teacher: str, seed_index: int) -> str:
    """The ``--teacher`` of this seed's KD runs: the teacher itself, or its cached logits."""
    if not exp.cache_teacher or teacher == "none":
        return teacher
    cfg = exp.base
    # The cache holds the student's view of each image: its input size and normalization decide.
    student = ModelSpec.for_training(cfg.model, cfg.img_size, mxa=False).build()
    path = exp.output / f"teacher_logits_seed{seed_index}.safetensors"
    log.info("caching the teacher's logits on the training images (evaluation view): %s", path)
    cache_teacher_logits(
        teacher,
        student,
        cfg.data,
        cfg.policy,
        cfg.train_samples,
        cfg.seed + seed_index,
        batch_size=128,
        device=cfg.device,
        progress=cfg.progress,
        trust_pickle=cfg.trust_pickle,
        output=path,
    )
    return f"cache:{path}"


def run_ablation(
    cfg: Any, seeds: int, output: Path, teacher_epochs: int | None = None, json_path: str | None = None
) -> dict[str, Any]:
    """Train baseline, +MXA and +MXA+KD with identical settings over ``seeds`` seeds (the paper's Tables
    2-3, see :class:`~mxa.train.experiment.Experiment`); returns {variant: aggregate}, also written to
    ``output/ablation.json`` (and ``json_path``).

    ``cfg.teacher`` decides the KD teacher; ``none`` trains an MXA-free teacher of the same model first
    (``teacher_epochs``, default 2x the epochs) and distils from it online.
    """
    exp = Experiment(
        cfg,
        Path(output),
        seeds,
        "train" if cfg.teacher == "none" else cfg.teacher,
        teacher_epochs,
    )
    runs = run_experiment(exp)
    table = {name: aggregate_runs(dirs) for name, dirs in runs.items()}
    text = json.dumps(table, indent=2)
    atomic_write_text(Path(output) / "ablation.json", text)
    if json_path:
        atomic_write_text(json_path, text)
    return table
