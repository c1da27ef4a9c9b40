from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# xdist runs the suite in parallel (pyproject's addopts): each worker its share of the cores, never more
# threads than cores in all (threads spinning against each other slow every test down many times)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# Small copies of the real X-ray samples in ../shared/data/cxr (tests/data/README.md says how they were made).
SHARED_CXR = Path(__file__).resolve().parent / "data" / "cxr"

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty folder of its own: outputs with a default path (``mxa-eval/``,
    ``preds.csv``, ...) land there, never in the clone, and no test sees another's."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def shared_cxr() -> Path:
    """The real X-ray samples, in the repository so these tests run wherever it is cloned."""
    return SHARED_CXR
