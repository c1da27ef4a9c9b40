"""The training flags, generated from :class:`~mxa.train.config.TrainConfig` (one place for both).

Defaults come from the dataclass, then a YAML ``--config`` file, then the flags given. Flags default to
``argparse.SUPPRESS``, so only the flags a user typed override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mxa.cli._common import checked
from mxa.train.config import ConfigError, TrainConfig, _check, _kind

__all__ = ["add_config_flags", "add_train_flags", "train_config_from_args"]

_GROUPS = {
    "data": "data",
    "model": "model",
    "optimization": "optimization (timm AdamW, cosine schedule, EMA, AGC)",
    "distillation": "distillation",
    "localization": "localization (MXA boxes)",
    "run": "run",
}


def _value_type(f: dataclasses.Field, kind: str) -> Any:
    """An argparse type that converts the text and applies the field's checks (a list item at a time)."""
    conv = float if kind == "float" else int if kind in ("int", "int_list") else str
    return checked(conv, (lambda v: _check(f, [v])[0]) if kind == "int_list" else (lambda v: _check(f, v)))


def _add_flag(g: Any, f: dataclasses.Field, default: Any, suppress: bool) -> None:
    meta, kind = f.metadata, _kind(f)
    shown = "on" if default is True else "off" if default is False else default
    text = f"{meta['help']} (default {shown})" if shown is not None else meta["help"]
    flag = "--" + f.name.replace("_", "-")
    kw: dict[str, Any] = {"default": argparse.SUPPRESS if suppress else default, "help": text}
    if kind == "bool":
        g.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif kind == "str" and "choices" in meta:
        g.add_argument(flag, choices=list(meta["choices"]), **kw)
    else:
        if "nargs" in meta:
            kw["nargs"] = meta["nargs"]
        metavar = f.name.upper() if kind != "str" else None
        g.add_argument(flag, type=_value_type(f, kind), metavar=metavar, **kw)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else None


def add_train_flags(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per TrainConfig field (``--name-with-dashes``) but those in ``skip``, grouped, with its help
    and default."""
    groups = {k: p.add_argument_group(title) for k, title in _GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in skip:
            _add_flag(groups[f.metadata["group"]], f, _default(f), suppress=True)
    p.add_argument(
        "--config",
        default=None,
        help="YAML file of settings (same names as the flags); flags given override it",
    )


def add_config_flags(p: argparse.ArgumentParser, names: Sequence[str], **defaults: Any) -> None:
    """The flags of the TrainConfig fields ``names`` for another command (``cache-teacher``), with the
    same help, types and checks; ``defaults`` replaces a field's default for that command."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in names:
        _add_flag(p, fields[name], defaults.get(name, _default(fields[name])), suppress=False)


#: settings of a checkpoint's run that a resume does not take over: where and how this invocation runs
_NOT_RESUMED = ("resume", "output", "overwrite", "stop_after_epoch")


def train_config_from_args(ns: argparse.Namespace, extra_keys: Sequence[str] = ()) -> TrainConfig:
    """TrainConfig from the defaults, the ``--config`` YAML file and the flags given, checked once.

    With ``--resume RUN/last.pt`` the run's own settings (stored in the checkpoint) replace the defaults and
    the output folder is the checkpoint's: ``mxa train --resume RUN/last.pt`` alone continues the run, and
    only the flags given are compared with it (those a run may not change are refused).
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if getattr(ns, "resume", None):
        values.update(_resumed_settings(Path(ns.resume), fields))
    if getattr(ns, "config", None):  # extra_keys: a command's own YAML keys (mxa ablate's cluster settings)
        loaded = _read_yaml(Path(ns.config), fields | set(extra_keys))
        values.update({k: v for k, v in loaded.items() if k in fields})
    for k, v in vars(ns).items():
        if k in fields:
            values[k] = v
    try:
        return TrainConfig(**values)
    except ConfigError as e:
        where = f" (flags and {ns.config})" if getattr(ns, "config", None) else ""
        raise ConfigError(f"{e}{where}") from None


def _resumed_settings(path: Path, fields: set[str]) -> dict[str, Any]:
    from mxa.files.checkpoint import TrainCheckpoint
    from mxa.train.config import stored_settings

    stored = stored_settings(TrainCheckpoint.load(path).config)
    values = {k: v for k, v in stored.items() if k in fields and k not in _NOT_RESUMED}
    values["output"] = str(path.parent)
    return values


def read_yaml(path: Path) -> dict[str, Any]:
    """A ``--config`` YAML file's mapping, keys as Python names (``time-min`` -> ``time_min``)."""
    from mxa._optional import require

    yaml = require("yaml", "--config")
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of settings (flag names without --)")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def _read_yaml(path: Path, fields: set[str]) -> dict[str, Any]:
    values = read_yaml(path)
    for key in values:
        if key not in fields:
            raise ValueError(f"{path}: unknown setting {key!r}; the settings are the `mxa train` flags")
    return values
