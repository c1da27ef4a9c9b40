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


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_orders_work() -> None:
    # the library first, timm through it (mxa.layers imports timm): a fresh process, as a user's script
    r = _run("import torch, mxa; print(mxa.MXABlock(8))")
    assert r.returncode == 0 and "MXABlock" in r.stdout, r.stderr[-2000:]
    r = _run(
        "import mxa, timm; m = timm.create_model('efficientvit_ml_m0', img_size=64); print(type(m).__name__)"
    )
    assert r.returncode == 0 and "MultiLabelEfficientViT" in r.stdout, r.stderr[-2000:]


def test_help_is_generated_from_the_parsers_and_served_without_torch() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "make_cli_help.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    code = (
        "import sys, mxa_cli; rc = mxa_cli.main(['train', '--help']); "
        "assert rc == 0 and 'torch' not in sys.modules and 'mxa' not in sys.modules"
    )
    r = _run(code)
    assert r.returncode == 0 and "--log-images-every" in r.stdout, r.stderr[-2000:]
    # anything else goes to the command line itself
    r = _run("import mxa_cli; raise SystemExit(mxa_cli.main(['--version']))")
    assert r.returncode == 0 and "mxa-attention" in r.stdout, r.stderr[-2000:]
