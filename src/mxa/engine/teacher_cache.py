"""Teacher logits over a run's training images, computed once: the one builder behind
``mxa cache-teacher``, ``mxa demo`` and experiments with a cached teacher."""

from __future__ import annotations

from pathlib import Path

import torch

from ..distill.cache import TeacherCache, build_teacher_cache
from ..distill.teacher import Teacher, load_teacher
from ..utils.runtime import resolve_device
from .data import build_datasets

__all__ = ["cache_teacher_logits"]


def cache_teacher_logits(
    teacher: str | Teacher,
    student: torch.nn.Module,
    data: str = "phantom",
    policy: str = "ones",
    train_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
    trust_pickle: bool = False,
    output: str | Path | None = None,
) -> TeacherCache:
    """Run ``teacher`` over the training images a ``mxa train`` run with these settings sees.

    The images are in the evaluation view (the student's eval transform: no augmentation), at the
    student's input size and normalization; the teacher converts them to its own convention.
    ``data``/``train_samples``/``seed``/``policy`` must match the run's (phantom images depend on the seed).
    The cache records the teacher, data, image size and policy, and is checked against the run that uses it.
    Written atomically to ``output`` when given.
    """
    dev = resolve_device(device)
    train_ds, _ = build_datasets(
        data, student, policy, train_samples, 1, seed, rand_augment=None, augment=False
    )
    if isinstance(teacher, str):
        name = teacher
        teacher = load_teacher(
            teacher, student.pretrained_cfg["mean"], student.pretrained_cfg["std"], trust_pickle=trust_pickle
        )
    else:
        name = type(teacher).__name__
    img_size = int(getattr(student, "input_hw", (224, 224))[0])
    meta = {
        "teacher": name,
        "data": data,
        "img_size": img_size,
        "policy": policy,
        "transform": "eval",
        "seed": seed,
    }
    cache = build_teacher_cache(
        teacher.to(dev),
        train_ds.base,
        train_ds.ids,
        batch_size=batch_size,
        device=dev,
        meta=meta,
        progress=progress,
    )
    if output is not None:
        cache.save(output)
    return cache
