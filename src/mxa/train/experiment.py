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
from mxa.train.loop import CONTINUE_HINT, train
from mxa.train.run_folder import RunFolderError
from mxa.train.state import FIXED_ON_RESUME
from mxa.utils.files import atomic_write_text, json_text

__all__ = [
    "PAPER_VARIANTS",
    "Experiment",
    "Variant",
    "ablation_experiment",
    "ablation_table",
    "run_ablation",
    "run_experiment",
    "run_finished",
    "select_variants",
    "teacher_for_seed",
    "teacher_spec",
    "train_or_continue",
]

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
        command: the command that runs (and, run again, continues) the experiment, for the hints.
    """

    base: TrainConfig
    output: Path
    seeds: int = 1
    teacher: str = "train"
    teacher_epochs: int | None = None
    cache_teacher: bool = False
    variants: tuple[Variant, ...] = PAPER_VARIANTS
    command: str = "mxa ablate"

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
_MXA_ONLY = frozenset(k for k in FIXED_ON_RESUME if k.startswith("mxa_") or k in ("roi_mil", "roi_guide"))


def _run_state(cfg: TrainConfig) -> tuple[str, list[str]]:
    """``new`` (no run in ``cfg.output``), ``finished`` or ``unfinished`` (a run of these settings), or
    ``other`` (a run of other settings), with the settings that differ."""
    last = Path(cfg.output) / "last.pt"
    if cfg.overwrite or not last.is_file():
        return "new", []
    ckpt = TrainCheckpoint.load(last)
    if changed := _changed_settings(cfg, stored_settings(ckpt.config)):
        return "other", changed
    return ("finished" if ckpt.epoch >= cfg.epochs and not ckpt.batch_in_epoch else "unfinished"), []


def _changed_settings(cfg: TrainConfig, old: dict[str, Any]) -> list[str]:
    """The settings fixed at a run's start in which ``cfg`` differs from the run's (``old``)."""
    # a run without MXA blocks is the same run whatever its MXA settings (0.2 folders have other defaults)
    ignored = _MXA_ONLY if not cfg.mxa and not old.get("mxa", True) else ()
    return [
        k
        for k in FIXED_ON_RESUME
        if k in old and k not in ignored and json.loads(json.dumps(getattr(cfg, k), default=str)) != old[k]
    ]


def run_finished(cfg: TrainConfig) -> bool:
    """Whether ``cfg.output`` holds a finished run of these settings."""
    return _run_state(cfg)[0] == "finished"


def train_or_continue(cfg: TrainConfig) -> None:
    """Train ``cfg``; a run already in its folder is kept when it finished with these settings and
    continued from its ``last.pt`` when it did not (``mxa demo``/``mxa ablate`` can simply be run again).

    With ``cfg.overwrite`` the run starts over; a run of other settings is refused (train says how).
    """
    check_same_settings(cfg)
    state, _ = _run_state(cfg)
    if state == "finished":
        log.info("%s: already trained with these settings, kept", cfg.output)
    elif state == "unfinished":
        last = Path(cfg.output) / "last.pt"
        log.info("%s: continuing the unfinished run from %s", cfg.output, last)
        train(dataclasses.replace(cfg, resume=str(last)))
    else:
        train(cfg)


def check_same_settings(cfg: TrainConfig) -> None:
    """Raise :class:`RunFolderError` when ``cfg.output`` holds a run of other settings (before any work, also
    where the run would be a cluster job: its own log is not where the answer belongs)."""
    state, changed = _run_state(cfg)
    if state == "other":  # the experiment's own wording: its runs' folders are not flags of its command
        raise RunFolderError(
            f"{cfg.output} holds a run of other settings ({', '.join(changed)}): run the same command with "
            "--overwrite to replace the experiment's runs, or give the experiment another output folder"
        )


def run_experiment(exp: Experiment) -> dict[str, list[Path]]:
    """Train the teacher (if asked) and every variant for every seed; returns {variant name: run folders}.

    Runs that already finished in their folders are kept, unfinished ones continued (see
    :func:`train_or_continue`); ``base.overwrite`` starts them all over.
    """
    token = CONTINUE_HINT.set(f"the same {exp.command} command again")  # a stopped run continues with it
    try:
        return _run_all(exp)
    finally:
        CONTINUE_HINT.reset(token)


def _run_all(exp: Experiment) -> dict[str, list[Path]]:
    teacher = exp.teacher
    if teacher == "train" and any(v.distill for v in exp.variants):
        log.info("teacher: %s without MXA, %d epochs", exp.base.model, exp.teacher_config().epochs)
        train_or_continue(exp.teacher_config())
        teacher = str(exp.teacher_dir / "best.pt")
    runs: dict[str, list[Path]] = {v.name: [] for v in exp.variants}
    for s in range(exp.seeds):
        spec = teacher_for_seed(exp, teacher, s)
        for v in exp.variants:
            log.info("%s, seed %d", v.name, exp.base.seed + s)
            train_or_continue(exp.run_config(v, s, spec))
            runs[v.name].append(exp.run_dir(v, s))
    return runs


def teacher_spec(exp: Experiment, teacher: str, seed_index: int) -> str:
    """The ``--teacher`` of this seed's KD runs (nothing is built): the teacher, or its logits' cache."""
    if not exp.cache_teacher or teacher == "none":
        return teacher
    return f"cache:{exp.output / f'teacher_logits_seed{seed_index}.safetensors'}"


def teacher_for_seed(exp: Experiment, teacher: str, seed_index: int) -> str:
    """:func:`teacher_spec`, with the cache of the teacher's logits built first where it is one."""
    spec = teacher_spec(exp, teacher, seed_index)
    if not spec.startswith("cache:"):
        return spec
    cfg = exp.base
    # The cache holds the student's view of each image: its input size and normalization decide.
    student = ModelSpec.for_training(cfg.model, cfg.img_size, mxa=False).build()
    path = Path(spec.removeprefix("cache:"))
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
    return spec


def ablation_experiment(
    cfg: Any,
    seeds: int,
    output: Path,
    teacher_epochs: int | None = None,
    variants: tuple[Variant, ...] = PAPER_VARIANTS,
) -> Experiment:
    """The :class:`Experiment` of ``mxa ablate``: ``cfg.teacher`` ``none`` trains an MXA-free teacher of
    the same model first (``teacher_epochs``, default 2x the epochs) when a variant distils."""
    return Experiment(
        cfg,
        Path(output),
        seeds,
        "train" if cfg.teacher == "none" else cfg.teacher,
        teacher_epochs,
        variants=variants,
    )


def ablation_table(runs: dict[str, list[Path]], output: Path, json_path: str | None = None) -> dict[str, Any]:
    """{variant: aggregate over its runs}, written to ``output/ablation.json`` (and ``json_path``)."""
    table = {name: aggregate_runs(dirs) for name, dirs in runs.items()}
    text = json_text(table, indent=2)
    atomic_write_text(Path(output) / "ablation.json", text)
    if json_path:
        atomic_write_text(json_path, text)
    return table


def run_ablation(
    cfg: Any,
    seeds: int,
    output: Path,
    teacher_epochs: int | None = None,
    json_path: str | None = None,
    variants: tuple[Variant, ...] = PAPER_VARIANTS,
) -> dict[str, Any]:
    """Train baseline, +MXA and +MXA+KD (or ``variants``) with identical settings over ``seeds`` seeds (the
    paper's Tables 2-3, see :func:`ablation_experiment`), one after another in this process; returns
    {variant: aggregate}, also written to ``output/ablation.json`` (and ``json_path``)."""
    exp = ablation_experiment(cfg, seeds, output, teacher_epochs, variants)
    return ablation_table(run_experiment(exp), Path(output), json_path)


def select_variants(spec: str | None) -> tuple[Variant, ...]:
    """``"baseline,+MXA+KD"`` -> those of :data:`PAPER_VARIANTS`, in their order; None/"" -> all three."""
    if not spec:
        return PAPER_VARIANTS
    names = [n.strip() for n in spec.split(",") if n.strip()]
    known = {v.name: v for v in PAPER_VARIANTS}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(
            f"unknown variant(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(known)}"
        )
    return tuple(v for v in PAPER_VARIANTS if v.name in names)
