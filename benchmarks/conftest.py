"""pytest-benchmark suite: `pytest benchmarks/ --benchmark-only` (CPU here, CUDA too when present).

Each goal is a ratio measured side by side in one run: compare the rows of one group
(`--benchmark-group-by=group`). Timings are reported, never asserted.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
