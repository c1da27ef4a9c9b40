"""``--data``: ``phantom``, ``<scheme>:<root>`` (a scheme per dataset class) or several joined by ``+``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mxa.data.xray_sets import DATASETS

__all__ = ["PHANTOMS", "SCHEMES", "DataSpec", "parse_data_spec"]


#: ``phantom``, then one scheme per dataset with a root folder (the dataset registry's keys).
SCHEMES = ("phantom", "chexpert", *DATASETS)
#: The built-in phantom sets by ``--data`` name: :class:`~mxa.data.PhantomCXR` kinds.
PHANTOMS = {"phantom": "chexpert", "phantom-small": "small"}
_WEIGHT = re.compile(r"^(?P<spec>.+?)\*(?P<w>\d+(?:\.\d*)?|\.\d+)$")
_SPEC_HELP = (
    "'phantom', 'phantom-small' or <scheme>:<root> with scheme "
    f"{', '.join(SCHEMES[1:])}; several joined by '+', each "
    "optionally weighted with *<w> (e.g. chexpert:/data/CheXpert-v1.0-small+nih:/data/nih*0.5)"
)


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "phantom", a scheme of SCHEMES, or "multi" (several sets in ``parts``)
    root: str | None = None
    weight: float = 1.0
    parts: tuple[DataSpec, ...] = ()
    phantom_kind: str = "chexpert"  # the PhantomCXR kind of a "phantom" set

    @property
    def sets(self) -> tuple[DataSpec, ...]:
        """The single sets: ``parts`` of a combination, else this one."""
        return self.parts or (self,)


def _parse_one(spec: str) -> DataSpec:
    weight = 1.0
    m = _WEIGHT.match(spec)
    if m:
        spec, weight = m.group("spec"), float(m.group("w"))
    if spec in PHANTOMS:
        return DataSpec("phantom", weight=weight, phantom_kind=PHANTOMS[spec])
    scheme, _, root = spec.partition(":")
    if scheme in SCHEMES[1:] and root:
        return DataSpec(scheme, root, weight)
    raise ValueError(f"--data must be {_SPEC_HELP}; got {spec!r}")


def parse_data_spec(spec: str) -> DataSpec:
    """``phantom``, ``phantom-small``, ``<scheme>:<root>``, or several joined by ``+`` (each optionally
    ``*<weight>``)."""
    parts = tuple(_parse_one(p) for p in spec.split("+"))
    return parts[0] if len(parts) == 1 else DataSpec("multi", parts=parts)
