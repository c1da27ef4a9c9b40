"""TeacherCache: what a cache was built for is recorded and checked; unreadable files are ValueErrors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from mxa.data import CHEXPERT_LABELS
from mxa.distill.cache import FORMAT_VERSION, TeacherCache, build_teacher_cache

META = {"teacher": "densenet", "img_size": 224, "policy": "ones", "data": "phantom", "transform": "eval"}
IDS = [f"img{i}" for i in range(6)]


def _cache(meta: dict | None = None) -> TeacherCache:
    torch.manual_seed(0)
    return TeacherCache(torch.randn(len(IDS), 14), torch.ones(14, dtype=torch.bool), IDS, meta or META)


def _write(path: Path, logits: torch.Tensor, metadata: dict[str, str], mask: bool = True) -> None:
    """A file as some writer (an older mxa, a bug, another tool) may have left it."""
    tensors = {"logits": logits}
    if mask:
        tensors["mask"] = torch.ones(14, dtype=torch.uint8)
    save_file(tensors, str(path), metadata=metadata)


def _old_metadata(n: int = len(IDS)) -> dict[str, str]:
    """Metadata as written before format_version (no img_size, policy, data)."""
    return {
        "ids": json.dumps(IDS[:n]),
        "labels": json.dumps(list(CHEXPERT_LABELS)),
        "meta": json.dumps({"teacher": "densenet", "transform": "eval"}),
    }


def test_roundtrip_keeps_meta(tmp_path) -> None:
    cache = _cache()
    path = cache.save(tmp_path / "sub" / "t.safetensors")
    assert cache.path == path
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]  # no temporary file left behind
    again = TeacherCache.load(path)
    assert again.meta == META and again.ids == IDS
    assert again.format_version == FORMAT_VERSION and again.path == path
    assert torch.equal(again.logits, cache.logits) and torch.equal(again.mask, cache.mask)
    again.check_compatible(img_size=224, policy="ones", data="phantom")
    again.check_compatible()  # nothing requested, nothing to refuse


def test_build_reads_settings_from_meta(tmp_path) -> None:
    images = torch.randn(5, 1, 8, 8)
    ids = IDS[:5]

    def teacher(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1)[:, :14], torch.ones(14, dtype=torch.bool)

    meta = {**META, "img_size": np.int64(224)}  # e.g. from a numpy config; must stay JSON-storable
    cache = build_teacher_cache(teacher, TensorDataset(images), ids, batch_size=2, progress=False, meta=meta)
    assert cache.meta["img_size"] == 224 and type(cache.meta["img_size"]) is int
    again = TeacherCache.load(cache.save(tmp_path / "t.safetensors"))
    again.check_compatible(img_size=224, policy="ones", data="phantom")
    torch.testing.assert_close(again.logits, images.flatten(1)[:, :14])


def test_build_rejects_bad_meta_before_running_the_teacher() -> None:
    def teacher(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError("the teacher must not run")

    with pytest.raises(ValueError, match="img_size.*must be int"):
        build_teacher_cache(teacher, TensorDataset(torch.zeros(2, 1)), IDS[:2], meta={"img_size": "224"})


def test_build_rejects_nonfinite_teacher_logits() -> None:
    def teacher(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.zeros(len(x), 14)
        out[x[:, 0] == 3] = float("nan")  # image 3 only
        return out, torch.ones(14, dtype=torch.bool)

    ds = TensorDataset(torch.arange(6.0)[:, None])
    with pytest.raises(ValueError, match=r"NaN/inf.*'img3'.*no cache was built"):
        build_teacher_cache(teacher, ds, IDS, batch_size=2, progress=False, meta=META)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_constructor_rejects_nonfinite_logits(bad: float) -> None:
    logits = torch.zeros(len(IDS), 14)
    logits[2, 5] = bad
    with pytest.raises(ValueError, match=r"non-finite.*'img2'"):
        TeacherCache(logits, torch.ones(14, dtype=torch.bool), IDS, META)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    _cache().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _torch_pickle(path: Path) -> None:
    torch.save({"logits": torch.zeros(2, 14)}, path)


def _bad_json(path: Path) -> None:
    _write(path, torch.zeros(len(IDS), 14), {**_old_metadata(), "format_version": "2", "meta": "{oops"})


def _ids_not_a_list(path: Path) -> None:
    _write(path, torch.zeros(len(IDS), 14), {**_old_metadata(), "ids": json.dumps({"a": 1})})


def _count_mismatch(path: Path) -> None:
    _write(path, torch.zeros(len(IDS), 14), {**_old_metadata(n=4), "format_version": "2"})


def _nan_logits(path: Path) -> None:
    logits = torch.zeros(len(IDS), 14)
    logits[1, 0] = float("nan")
    _write(path, logits, {**_old_metadata(), "format_version": "2"})


def _no_mask(path: Path) -> None:
    _write(path, torch.zeros(len(IDS), 14), {**_old_metadata(), "format_version": "2"}, mask=False)


def _no_ids(path: Path) -> None:
    _write(path, torch.zeros(len(IDS), 14), {"format_version": "2"})


def _bad_img_size(path: Path) -> None:
    meta = {**_old_metadata(), "format_version": "2", "meta": json.dumps({"img_size": "224"})}
    _write(path, torch.zeros(len(IDS), 14), meta)


def _bad_version(path: Path) -> None:
    _write(path, torch.zeros(len(IDS), 14), {**_old_metadata(), "format_version": "two"})


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_empty, "cannot be read as safetensors"),
        (_truncated, "cannot be read as safetensors"),
        (_random_bytes, "cannot be read as safetensors"),
        (_torch_pickle, "cannot be read as safetensors"),
        (_bad_json, "'meta' metadata is not valid JSON"),
        (_ids_not_a_list, "'ids' metadata is a dict"),
        (_count_mismatch, r"shape \(6, 14\) for 4 image ids"),
        (_nan_logits, r"non-finite.*'img1'"),
        (_no_mask, "no mask tensor"),
        (_no_ids, "no image ids"),
        (_bad_img_size, "img_size.*must be int"),
        (_bad_version, "format_version 'two' is not an integer"),
    ],
)
def test_corrupt_file_is_a_value_error_naming_it(tmp_path, make: Callable[[Path], None], why: str) -> None:
    path = tmp_path / "cache.safetensors"
    make(path)
    with pytest.raises(ValueError) as err:
        TeacherCache.load(path)
    msg = str(err.value)
    assert str(path) in msg and "mxa cache-teacher" in msg
    assert re.search(why, msg), msg
    # no chained third-party traceback under ours
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_missing_file_is_file_not_found(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        TeacherCache.load(tmp_path / "nope.safetensors")


def test_newer_format_is_refused(tmp_path) -> None:
    path = tmp_path / "t.safetensors"
    _write(path, torch.zeros(len(IDS), 14), {**_old_metadata(), "format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(ValueError, match="newer than this mxa reads"):
        TeacherCache.load(path)


def test_check_compatible_size_mismatch(tmp_path) -> None:
    path = _cache().save(tmp_path / "t.safetensors")
    cache = TeacherCache.load(path)
    with pytest.raises(ValueError) as err:
        cache.check_compatible(img_size=320, policy="ones", data="phantom")
    msg = str(err.value)
    assert str(path) in msg
    assert "img_size=224" in msg and "img_size=320" in msg
    assert "rebuild it with `mxa cache-teacher --img-size 320" in msg


def test_check_compatible_policy_mismatch(tmp_path) -> None:
    cache = TeacherCache.load(_cache().save(tmp_path / "t.safetensors"))
    with pytest.raises(ValueError, match=r"policy='ones', but policy='zeros' was requested.*rebuild it with"):
        cache.check_compatible(img_size=224, policy="zeros")


def test_check_compatible_data_mismatch_and_in_memory() -> None:
    with pytest.raises(ValueError, match=r"\(in memory\).*data='phantom', but data='chexpert:/x'"):
        _cache().check_compatible(data="chexpert:/x")


def test_check_compatible_unrecorded_setting() -> None:
    cache = _cache({"teacher": "demo"})  # built without the settings in meta
    cache.check_compatible()
    with pytest.raises(ValueError, match="does not record its img_size"):
        cache.check_compatible(img_size=224)


def test_old_format_cache_fails_the_check(tmp_path) -> None:
    path = tmp_path / "old.safetensors"
    _write(path, torch.zeros(len(IDS), 14), _old_metadata())
    cache = TeacherCache.load(path)  # still readable: its logits are fine
    assert cache.format_version is None
    for kwargs in ({"img_size": 224}, {}):
        with pytest.raises(ValueError) as err:
            cache.check_compatible(**kwargs)
        msg = str(err.value)
        assert str(path) in msg and "predates" in msg and "mxa cache-teacher" in msg
    # re-saving does not make it look checked
    assert TeacherCache.load(cache.save(tmp_path / "again.safetensors")).format_version is None
