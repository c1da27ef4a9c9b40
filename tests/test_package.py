from __future__ import annotations

import subprocess
import sys

import mxa


def test_version() -> None:
    assert isinstance(mxa.__version__, str) and mxa.__version__.count(".") == 2


def test_import_needs_only_core_dependencies() -> None:
    # what `import mxa` adds on top of torch + timm (timm itself brings PyYAML, huggingface_hub, tqdm)
    code = (
        "import sys, torch, timm; before = set(sys.modules); import mxa; "
        "assert 'efficientvit_ml_m5' in timm.list_models('efficientvit_ml_*'); "
        "added = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "extras = {'pandas', 'matplotlib', 'torchxrayvision', 'torchmetrics', 'onnx', 'onnxruntime', "
        "'onnxscript', "
        "'pydicom', 'yaml', 'tqdm', 'sklearn', 'scipy', 'PIL'}; "
        "assert not added & extras, sorted(added & extras)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mxa", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and mxa.__version__ in r.stdout
