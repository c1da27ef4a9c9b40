"""Teacher outputs computed once over a dataset and stored as safetensors, keyed by image id.

Online distillation with DenseNet-121 costs ~5x the student's forward pass per step; reading cached
logits costs nothing. The trade-off: the cache sees the deterministic evaluation view of each image,
not the augmented view the student trains on.

A cache records what it was built for (``img_size``, label ``policy``, ``data``, ``transform`` in its
``meta``, plus a ``format_version``) so that :meth:`TeacherCache.check_compatible` can refuse to use a
cache built for another setting; :meth:`TeacherCache.load` refuses files it cannot fully decode and
logits that are not finite, rather than letting NaN poison distillation.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mxa.data.labels import CHEXPERT_LABELS
from mxa.utils.files import atomic_path

__all__ = ["FORMAT_VERSION", "TeacherCache", "build_teacher_cache", "cache_teacher_logits"]

# 2: records format_version (and img_size / policy / data in meta); files without it predate the check
FORMAT_VERSION = 2
_REBUILD = "rebuild it with `mxa cache-teacher`"
# the settings a cache is checked against, and the type each must have in ``meta``
_CHECKED: dict[str, type] = {"img_size": int, "policy": str, "data": str}


def _check_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the checked keys validated (``img_size`` made a plain int)."""
    meta = dict(meta)
    for key, kind in (*_CHECKED.items(), ("transform", str)):
        v = meta.get(key)
        if v is None:
            continue
        if kind is int and isinstance(v, numbers.Integral) and not isinstance(v, bool):
            meta[key] = v = int(v)  # numpy ints are not JSON-serialisable
        if not isinstance(v, kind):
            raise ValueError(
                f"teacher cache meta[{key!r}] must be {kind.__name__}, got {type(v).__name__} {v!r}"
            )
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise ValueError(f"teacher cache meta must be JSON-serialisable ({e}); pass plain values") from None
    return meta


def _nonfinite_rows(logits: torch.Tensor, ids: Sequence[Any]) -> str | None:
    """A description of the rows with NaN/inf logits, or None when all are finite."""
    bad = (~torch.isfinite(logits)).any(1).nonzero().flatten().tolist()
    if not bad:
        return None
    shown = ", ".join(repr(ids[i]) for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
    return f"non-finite (NaN/inf) logits for {len(bad)} image{'s' * (len(bad) > 1)} ({shown})"


class TeacherCache:
    """Cached teacher logits.

    Attributes:
        logits: (N, 14) float32, all finite.
        mask: (14,) bool, the labels the teacher predicts.
        ids: the N image ids, in row order.
        meta: metadata: teacher name, and what the cache was built for (``img_size`` int, ``policy``,
            ``data``, ``transform`` str) when the builder passed them.
        format_version: the file format; None for files written before caches recorded it.
        path: the file it was loaded from or last saved to (None while only in memory).
    """

    def __init__(
        self,
        logits: torch.Tensor,
        mask: torch.Tensor,
        ids: Sequence[str],
        meta: dict | None = None,
        format_version: int | None = FORMAT_VERSION,
    ) -> None:
        if logits.ndim != 2 or logits.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for logits of shape {tuple(logits.shape)}")
        if mask.ndim != 1 or mask.numel() != logits.shape[1]:
            raise ValueError(f"label mask of shape {tuple(mask.shape)} for {logits.shape[1]} logit columns")
        self.logits = logits.float()
        if (why := _nonfinite_rows(self.logits, ids)) is not None:
            raise ValueError(f"a teacher cache cannot hold {why}: they would poison distillation")
        self.mask = mask.bool()
        self.ids = list(ids)
        self.meta = _check_meta(meta or {})
        self.format_version = format_version
        self.path: Path | None = None
        self._row = {k: i for i, k in enumerate(self.ids)}
        if len(self._row) != len(self.ids):
            raise ValueError("image ids in a teacher cache must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str]) -> torch.Tensor:
        try:
            return torch.tensor([self._row[i] for i in ids], dtype=torch.long)
        except KeyError as e:
            raise KeyError(
                f"image {e.args[0]!r} is not in the teacher cache ({len(self)} images, teacher "
                f"{self.meta.get('teacher', '?')}); rebuild it with `mxa cache-teacher` for this dataset"
            ) from None

    def lookup(
        self, ids: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 14), mask (14,)) for the given image ids."""
        logits = self.logits[self.rows(ids)]
        return logits.to(device) if device else logits, self.mask.to(device) if device else self.mask

    def check_compatible(
        self, img_size: int | None = None, policy: str | None = None, data: str | None = None
    ) -> None:
        """Raise ValueError unless the cache was built for the given settings (None: not checked).

        A cache that predates the check (no ``format_version``) always fails: what it was built for
        is unknown.
        """
        where = str(self.path) if self.path is not None else "(in memory)"
        # N: the student's input size, unknown here when not requested
        hint = f"mxa cache-teacher --img-size {img_size if img_size is not None else 'N'}" + (
            f" --data {data}" if data is not None else ""
        )
        fix = f"rebuild it with `{hint} ...`" + (
            f" for label policy {policy!r}" if policy is not None else ""
        )
        if self.format_version is None:
            raise ValueError(
                f"teacher cache {where} predates the compatibility check: it does not record the image "
                f"size, label policy and data it was built for, so it may silently be used at the wrong "
                f"setting; {fix}"
            )
        wanted = {"img_size": img_size, "policy": policy, "data": data}
        problems = []
        for key, want in wanted.items():
            if want is None:
                continue
            have = self.meta.get(key)
            if have is None:
                problems.append(f"it does not record its {key} (requested {want!r})")
            elif have != want:
                problems.append(f"it was built for {key}={have!r}, but {key}={want!r} was requested")
        if problems:
            raise ValueError(f"teacher cache {where} does not fit this run: {'; '.join(problems)}; {fix}")

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {
            "ids": json.dumps(self.ids),
            "labels": json.dumps(list(CHEXPERT_LABELS)),
            "meta": json.dumps(self.meta),
        }
        if self.format_version is not None:  # an old cache stays recognisably old when re-saved
            meta["format_version"] = str(self.format_version)
        with atomic_path(path) as tmp:
            save_file(
                {"logits": self.logits.contiguous(), "mask": self.mask.to(torch.uint8)}, tmp, metadata=meta
            )
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> TeacherCache:
        """Read a cache written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a complete, valid teacher cache (the message names it).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache not found: {path}")

        def invalid(why: str) -> ValueError:
            return ValueError(f"{path} is not a usable teacher cache: {why}; {_REBUILD}")

        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                names = set(f.keys())  # a safe_open handle does not support `in`
                tensors = {k: f.get_tensor(k) for k in ("logits", "mask") if k in names}
        # safetensors raises its own error types (and OSError, RuntimeError) for empty, truncated or
        # foreign files; all mean the same thing to the user
        except Exception as e:
            raise invalid(f"it cannot be read as safetensors ({type(e).__name__}: {e})") from None
        if missing := {"logits", "mask"} - tensors.keys():
            raise invalid(f"it has no {' or '.join(sorted(missing))} tensor")
        logits, mask = tensors["logits"], tensors["mask"]
        if "ids" not in meta:
            raise invalid("it was not written by mxa (no image ids in its metadata)")
        decoded: dict[str, Any] = {}
        for key, default, kind in (("ids", None, list), ("labels", "[]", list), ("meta", "{}", dict)):
            try:
                decoded[key] = json.loads(meta.get(key, default))
            except json.JSONDecodeError as e:
                raise invalid(f"its {key!r} metadata is not valid JSON ({e})") from None
            if not isinstance(decoded[key], kind):
                raise invalid(
                    f"its {key!r} metadata is a {type(decoded[key]).__name__}, not a {kind.__name__}"
                )
        labels, ids = decoded["labels"], decoded["ids"]
        if labels and tuple(labels) != CHEXPERT_LABELS:
            raise ValueError(
                f"{path} was written for labels {labels}, not the 14 CheXpert labels; {_REBUILD}"
            )
        version: int | None = None
        if "format_version" in meta:
            try:
                version = int(meta["format_version"])
            except ValueError:
                raise invalid(f"its format_version {meta['format_version']!r} is not an integer") from None
            if version > FORMAT_VERSION:
                raise ValueError(
                    f"{path} is a teacher cache of format {version}, newer than this mxa reads "
                    f"({FORMAT_VERSION}); upgrade mxa or {_REBUILD}"
                )
        if logits.ndim != 2 or logits.shape[0] != len(ids):
            raise invalid(f"it holds logits of shape {tuple(logits.shape)} for {len(ids)} image ids")
        if not logits.is_floating_point():
            raise invalid(f"its logits are {logits.dtype}, not floating point")
        if (why := _nonfinite_rows(logits.float(), ids)) is not None:
            raise invalid(f"it holds {why}, which would poison distillation")
        try:
            cache = cls(logits, mask, ids, decoded["meta"], format_version=version)
        except ValueError as e:
            raise invalid(str(e)) from None
        cache.path = path
        return cache


@torch.no_grad()
def build_teacher_cache(
    teacher: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    dataset: Dataset,
    ids: Sequence[str],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    meta: dict | None = None,
    progress: bool = True,
) -> TeacherCache:
    """Run ``teacher`` over ``dataset`` (use the evaluation transform) and collect its logits.

    ``dataset[i]`` must return the image first; ``ids[i]`` is its id. Pass what the cache is built for
    in ``meta`` (``img_size`` int, ``policy``, ``data``, ``transform`` str) so that
    :meth:`TeacherCache.check_compatible` can check it later.

    Raises:
        ValueError: the teacher produced NaN/inf logits (a cache of them would poison distillation).
    """
    if len(ids) != len(dataset):
        raise ValueError(f"{len(ids)} ids for a dataset of {len(dataset)} images")
    meta = _check_meta(meta or {})  # fail before the expensive pass, not after it
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    it = loader
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(loader, desc="teacher cache", unit="batch", disable=None)  # no bar off a terminal
        except ImportError:
            pass
    chunks, mask, done = [], None, 0
    for batch in it:
        images = batch[0].to(device)
        logits, mask = teacher(images)
        logits = logits.float().cpu()
        if (why := _nonfinite_rows(logits, ids[done : done + len(logits)])) is not None:
            raise ValueError(
                f"the teacher produced {why} among images {done}-{done + len(logits) - 1} of "
                f"{len(ids)}; no cache was built (NaN would poison distillation). "
                "Check the teacher's weights and that the dataset uses its evaluation transform"
            )
        chunks.append(logits)
        done += len(logits)
    logits = torch.cat(chunks) if chunks else torch.zeros(0, len(CHEXPERT_LABELS))
    if mask is None:
        mask = torch.zeros(len(CHEXPERT_LABELS), dtype=torch.bool)
    return TeacherCache(logits, mask.cpu(), ids, meta)


def cache_teacher_logits(
    teacher: str | Callable[..., Any],
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
    from mxa.data.combine import build_datasets
    from mxa.distill.teacher import load_teacher
    from mxa.utils.runtime import resolve_device

    dev = resolve_device(device)
    train_ds, _ = build_datasets(
        data,
        student,
        policy=policy,
        train_samples=train_samples,
        val_samples=1,
        seed=seed,
        rand_augment=None,
        augment=False,
        describe_validation=False,
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
    if isinstance(teacher, torch.nn.Module):
        teacher = teacher.to(dev)
    cache = build_teacher_cache(
        teacher,
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
