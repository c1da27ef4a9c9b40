"""Where MXA goes in a model: the blocks the registry knows, by stage, and the ``where`` selection."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from mxa.models.graft.mechanism import Grafted
from mxa.models.graft.registry import BlockRule, Where, rule_for
from mxa.models.hooks import has_rois

__all__ = ["Site", "describe", "find_sites", "select"]


@dataclass
class Site:
    name: str
    module: nn.Module
    rule: BlockRule
    stage: int
    ok: bool


def find_sites(model: nn.Module) -> list[Site]:
    sites: list[Site] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue  # a block inside a known block (MIT's ResidualBlocks...) belongs to its rule
        rule = rule_for(m)
        if rule is None:
            continue
        if isinstance(m, Grafted) or has_rois(m):
            raise ValueError(f"{name or type(model).__name__} already has an MXA block: add_mxa grafts once")
        inside.append(name)
        match = re.search(rule.stage_pattern, name)
        stage = int(match.group(1)) - rule.stage_base if match else 0
        sites.append(Site(name, m, rule, stage, bool(rule.applies(m, model))))
    return sites


def select(sites: list[Site], where: Where) -> list[Site]:
    ok = [s for s in sites if s.ok]
    if where is None or where == "last" or (isinstance(where, str) and where == "all"):
        mode = where
        chosen = []
        for s in ok:
            rule_mode = mode or s.rule.default
            if rule_mode == "all" or s is _last_of_stage(ok, s.stage):
                chosen.append(s)
        return chosen
    items = [where] if isinstance(where, int | str) else list(where)
    chosen_ids: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(f"where items must be stage indices or name patterns, got {item!r}")
        if isinstance(item, int):
            in_stage = [s for s in ok if s.stage == item]
            if not in_stage:
                raise ValueError(
                    f"where={item}: no stage {item} with blocks that take MXA; stages: {describe(ok)}"
                )
            for s in in_stage:
                if s.rule.default == "all" or s is _last_of_stage(ok, item):
                    chosen_ids.add(id(s))
        else:
            hits = [s for s in ok if fnmatchcase(s.name, item)]
            if not hits:
                raise ValueError(f"where={item!r} matches no block that takes MXA; blocks: {describe(ok)}")
            chosen_ids.update(id(s) for s in hits)
    return [s for s in ok if id(s) in chosen_ids]


def _last_of_stage(sites: list[Site], stage: int) -> Site:
    return [s for s in sites if s.stage == stage][-1]


def describe(sites: list[Site]) -> str:
    by_stage: dict[int, list[str]] = {}
    for s in sites:
        by_stage.setdefault(s.stage, []).append(s.name)
    return "; ".join(f"{k}: {v[0]} .. {v[-1]} ({len(v)})" for k, v in sorted(by_stage.items()))
