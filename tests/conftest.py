from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_CXR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr"

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def shared_cxr() -> Path:
    if not SHARED_CXR.is_dir():
        pytest.skip(f"real X-ray samples not found at {SHARED_CXR}")
    return SHARED_CXR
