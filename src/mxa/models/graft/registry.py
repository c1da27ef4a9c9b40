"""The block registry: which block types :func:`~mxa.add_mxa` knows and how to graft each."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from mxa.layers.mxa_block import MXABlock
from mxa.models.graft.mechanism import graft_residual

__all__ = ["RULES", "BlockRule", "Where", "register_block", "rule_for"]

Where = int | str | Sequence[int | str] | None


@dataclass(frozen=True)
class BlockRule:
    """How to graft MXA into one block type.

    Attributes:
        block_type: the block class (subclasses match too, the nearest registered base wins).
        family: the family name shown in errors and docs (``resnet``, ``vit``...).
        graft: ``graft(block, mxa_cfg, model) -> MXABlock`` installs the block in place and returns it.
        stage_pattern: regex whose first group is the stage number in the block's qualified name
            (``layer(\\d+)``); blocks of one stage share it.
        stage_base: the number of the first stage in those names (1 for ``layer1``): ``where=0`` is it.
        default: ``"all"`` (every block) or ``"last"`` (the last block of each stage) when ``where=None``.
        applies: ``applies(block, model) -> bool``; False for blocks where MXA cannot work (no residual
            path, or an output nothing reads).
        mxa_defaults: :class:`MXABlock` arguments of this family that the caller's ``mxa_cfg`` overrides.
    """

    block_type: type
    family: str
    graft: Callable[[nn.Module, dict[str, Any], nn.Module], MXABlock]
    stage_pattern: str = r"(\d+)"
    stage_base: int = 0
    default: str = "all"
    applies: Callable[[nn.Module, nn.Module], bool] = lambda block, model: True
    mxa_defaults: tuple[tuple[str, Any], ...] = ()


RULES: dict[type, BlockRule] = {}


def register_block(
    block_type: type,
    graft: Callable[[nn.Module, dict[str, Any], nn.Module], MXABlock] | str,
    *,
    family: str,
    stage_pattern: str = r"(\d+)",
    stage_base: int = 0,
    default: str = "all",
    applies: Callable[[nn.Module, nn.Module], bool] | None = None,
    mxa_defaults: dict[str, Any] | None = None,
) -> None:
    """Teach :func:`add_mxa` a block type.

    Args:
        block_type: your block class.
        graft: ``"residual"`` for a block whose output is ``x + branch(x)`` with an input and output of the
            same (B, C, H, W) shape: MXA is added as ``block(x) + mxa(x)``, ``C`` being the in-channels
            of the block's first ``Conv2d``. Or your own ``graft(block, mxa_cfg, model) -> MXABlock`` that
            installs the block as ``<module>.mxa`` and makes the block use it (see this module's rules).
        family: a name for messages.
        stage_pattern: regex with one group capturing the stage number in a block's qualified name.
        stage_base: the number of the first stage in those names.
        default: ``"all"`` or ``"last"``: the blocks ``where=None`` selects.
        applies: ``applies(block, model) -> bool``, excluding blocks that cannot take MXA.
        mxa_defaults: this family's :class:`MXABlock` arguments (the caller's ``mxa_cfg`` wins).

    Examples:
        >>> import torch, mxa
        >>> from torch import nn
        >>> class MyBlock(nn.Module):  # x + f(x), shape unchanged
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(8, 8, 3, padding=1)
        ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...         return x + self.conv(x)
        >>> mxa.register_block(MyBlock, "residual", family="mine")
        >>> net = mxa.add_mxa(nn.Sequential(MyBlock(), MyBlock()))
        >>> list(mxa.mxa_blocks(net))
        ['0', '1']
    """
    if default not in ("all", "last"):
        raise ValueError(f"default must be 'all' or 'last', got {default!r}")
    if isinstance(graft, str):
        if graft != "residual":
            raise ValueError(f"graft must be 'residual' or a function, got {graft!r}")
        graft = graft_residual
    re.compile(stage_pattern)
    RULES[block_type] = BlockRule(
        block_type,
        family,
        graft,
        stage_pattern,
        stage_base,
        default,
        applies or (lambda block, model: True),
        tuple(sorted((mxa_defaults or {}).items())),
    )


def rule_for(module: nn.Module) -> BlockRule | None:
    for t in type(module).__mro__:  # the nearest registered base class wins
        if t in RULES:
            return RULES[t]
    return None
