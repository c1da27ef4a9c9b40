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


def test_import_mxa_loads_no_torch_and_registers_with_timm_either_way() -> None:
    # import mxa alone: no torch, no timm (the command line's --help stays under a second)
    r = _run("import sys, mxa; assert 'torch' not in sys.modules and 'timm' not in sys.modules")
    assert r.returncode == 0, r.stderr[-2000:]
    # mxa first, timm after: the models are registered when timm is imported
    r = _run(
        "import mxa, timm; m = timm.create_model('efficientvit_ml_m0', img_size=64); print(type(m).__name__)"
    )
    assert r.returncode == 0 and "MultiLabelEfficientViT" in r.stdout, r.stderr[-2000:]
    # timm first: registered at import mxa; the public names import on first use
    r = _run("import timm, mxa; assert 'resnet50_mxa' in timm.list_models('*_mxa'); print(mxa.MXABlock(8))")
    assert r.returncode == 0 and "MXABlock" in r.stdout, r.stderr[-2000:]
    r = _run("import mxa; mxa.no_such_name")
    assert r.returncode != 0 and "module 'mxa' has no attribute 'no_such_name'" in r.stderr


def test_help_is_generated_from_the_parsers_and_served_without_torch(tmp_path) -> None:
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
        "import sys; from mxa.cli import main; rc = main(['train', '--help']); "
        "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    r = _run(code)
    assert r.returncode == 0 and "--log-images-every" in r.stdout, r.stderr[-2000:]
