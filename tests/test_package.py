from __future__ import annotations

import subprocess
import sys

import mxa


def test_version() -> None:
    assert isinstance(mxa.__version__, str) and mxa.__version__.count(".") == 2


def test_import_needs_only_core_dependencies() -> None:
    code = (
        "import sys, mxa, timm; "
        "assert 'efficientvit_ml_m5' in timm.list_models('efficientvit_ml_*'); "
        "heavy = [m for m in ('pandas', 'matplotlib', 'torchxrayvision', 'torchmetrics', 'onnx', 'onnxruntime', "
        "'pydicom', 'yaml', 'tqdm', 'sklearn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mxa", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and mxa.__version__ in r.stdout
