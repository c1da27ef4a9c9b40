from __future__ import annotations

import subprocess
import sys

import pytest

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


#: Every file the package reads at run time besides its modules: the wheel must carry them all.
PACKAGE_DATA = ("mxa/cli/help.json", "mxa/data/chexpert_label_patterns.json.gz", "mxa/py.typed")


def test_the_package_data_is_listed_and_declared() -> None:
    import fnmatch
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    src = root / "src"
    # every non-module file under src/mxa is listed here (a new data file cannot be forgotten)
    found = sorted(
        str(p.relative_to(src))
        for p in (src / "mxa").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )
    assert found == sorted(PACKAGE_DATA)
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mxa"]
    for f in PACKAGE_DATA:
        assert any(fnmatch.fnmatch(f.removeprefix("mxa/"), g) for g in globs), f


def test_a_built_wheel_carries_the_package_data(tmp_path) -> None:
    """The wheel CI built (MXA_WHEEL), or one built here from the source tree."""
    import os
    import shutil
    import zipfile
    from pathlib import Path

    wheel = os.environ.get("MXA_WHEEL")
    if not wheel:  # built from a copy: a build writes build/ and *.egg-info beside the sources
        root, tree = Path(__file__).resolve().parents[1], tmp_path / "tree"
        shutil.copytree(
            root / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
        )
        for f in ("pyproject.toml", "README.md"):
            shutil.copy(root / f, tree / f)
        pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        r = subprocess.run(
            [*pip, "-w", str(tmp_path), str(tree)], capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr[-2000:]
        wheel = str(next(tmp_path.glob("*.whl")))
    # every test runs in a folder of its own (conftest): a relative path is the clone's, where CI runs
    path = Path(wheel) if Path(wheel).is_absolute() else Path(__file__).resolve().parents[1] / wheel
    assert path.is_file(), f"MXA_WHEEL={wheel!r}: no such wheel; give an absolute path"
    names = set(zipfile.ZipFile(path).namelist())
    assert {*PACKAGE_DATA, "mxa_cli.py", "mxa/__init__.py"} <= names, sorted(set(PACKAGE_DATA) - names)


def test_the_tests_run_against_the_installed_package_where_asked() -> None:
    import os
    from pathlib import Path

    if os.environ.get("MXA_FROM_WHEEL"):  # .ci/run: never the source tree
        assert "site-packages" in Path(mxa.__file__).parts, mxa.__file__


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["report", "--curves"], "argument --curves: expected one argument"),
        (["train", "--mxa-mode", "zom"], "invalid choice: 'zom'"),
        (["export", "--checkpoint", "x.pt"], "the following arguments are required: --output"),
        (["eval", "--checkpoint", "x.pt", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_malformed_command_line_is_refused_as_fast_as_help(argv: list[str], says: str) -> None:
    """Without importing the library: the mxa command's light parser (help.json's spec) answers."""
    import time

    code = f"import sys, mxa_cli; sys.exit(mxa_cli.main({argv!r}))"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - t0
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
    assert took < 3.0, f"{took:.1f} s: the library was imported"  # loose: importing torch takes ~4 s here
    check = (
        "import sys, mxa_cli; mxa_cli.main("
        + repr(argv)
        + "); print(sorted(m for m in sys.modules if m.startswith('torch'))[:1])"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert "'torch'" not in r.stdout
