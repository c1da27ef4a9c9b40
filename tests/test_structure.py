"""The codebase's shape: what the architecture page promises, checked so it cannot silently rot."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mxa"


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The mxa modules ``name`` imports (at any level: lazy imports count too)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycles_in_src() -> None:
    mods = _modules()
    known = set(mods)
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    graph = {
        m: {t for t in _imports(m, p, known) if not (p.name == "__init__.py" and t.startswith(m + "."))}
        for m, p in mods.items()
    }
    graph = {
        m: {t for t in ts if not m.startswith(t + ".") or t == "mxa"} - {"mxa"} for m, ts in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, ()):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


# One folder per question, in layers: a module may import its own layer and the ones below, never above
# (lazy imports count). ``mxa`` itself (the public surface) and the 0.2 alias modules may import anything.
LAYERS = (
    ("mxa._optional", "mxa._compat", "mxa._timm", "mxa.utils"),
    ("mxa.layers", "mxa.data"),
    ("mxa.models",),
    ("mxa.losses", "mxa.metrics"),
    ("mxa.decision",),
    ("mxa.files",),
    ("mxa.distill",),
    ("mxa.evaluate", "mxa.predict", "mxa.viz"),
    ("mxa.train",),
    ("mxa.demo", "mxa.serve", "mxa.bench"),  # applications: they build models as mxa train does
    ("mxa.cli", "mxa.__main__"),
)
ALIASES = ("mxa.engine", "mxa.export", "mxa.viz_cam", "mxa.viz_calibration")


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _is_alias(module: str) -> bool:
    return module == "mxa.engine" or "alias_module(" in _modules()[module].read_text()


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules() if m != "mxa" and _layer(m) is None and not _is_alias(m)]
    assert missing == [], f"add these to LAYERS (docs/architecture.md says where): {missing}"


def test_no_module_imports_a_layer_above_it() -> None:
    mods = _modules()
    bad = []
    for m, p in mods.items():
        if m == "mxa" or _is_alias(m):
            continue
        for t in _imports(m, p, set(mods)):
            if t != "mxa" and not _is_alias(t) and (_layer(t) or 0) > (_layer(m) or 0):
                bad.append(f"{m} -> {t}")
    assert bad == []


def _calls_outside(allowed: tuple[str, ...], needles: tuple[str, ...]) -> list[str]:
    hits = []
    for m, p in _modules().items():
        if any(m == a or m.startswith(a + ".") for a in allowed):
            continue
        text = p.read_text()
        hits += [f"{m}: {n}" for n in needles if n in text]
    return hits


def test_only_data_reads_dataset_files() -> None:
    # CSV tables, images and DICOMs are read in mxa.data (load_xray, the dataset classes) and nowhere else
    needles = ("read_csv(", "csv.reader(", "csv.DictReader(", "Image.open(", "dcmread(", "imread(")
    assert _calls_outside(("mxa.data",), needles) == []


def test_only_files_writes_model_formats() -> None:
    # checkpoints, safetensors weights and ONNX are written in mxa.files; the teacher cache's own
    # safetensors format lives with the cache (mxa.distill.cache)
    needles = ("torch.save(", "save_file(", "onnx.save(", "torch.onnx.export(", "save_checkpoint({")
    assert _calls_outside(("mxa.files", "mxa.distill.cache"), needles) == []


def test_old_module_paths_still_import() -> None:
    import importlib
    import warnings

    for m in sorted(_modules()):
        if m.startswith(ALIASES) and m != "mxa.engine" and _is_alias(m):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                new = importlib.import_module(m)
            target = getattr(new, "target", new)  # an AliasModule finds its names in several modules
            assert target.__name__ != m and not _is_alias(target.__name__), m


def test_only_the_cli_builds_argparse_parsers() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for m, p in _modules().items()
        if not m.startswith("mxa.cli") and "argparse" in p.read_text()
    ]
    assert offenders == []


def test_train_functions_are_short() -> None:
    trees = [ast.parse((SRC / "train" / f).read_text()) for f in ("loop.py", "setup.py", "state.py")]
    long = [
        (n.name, n.end_lineno - n.lineno + 1)
        for tree in trees
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80
    ]
    assert long == []


def test_every_train_setting_has_a_flag_and_back() -> None:
    from mxa.cli import build_parser
    from mxa.train.config import TrainConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    from mxa.cli.train import _NOT_ABLATE_SETTINGS

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # ablate sets each run's folder and resume itself
    for command, expected in (("train", fields), ("ablate", fields - set(_NOT_ABLATE_SETTINGS))):
        dests = {a.dest for a in sub.choices[command]._actions}
        assert expected <= dests, sorted(expected - dests)
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help text"


def test_every_command_has_a_description() -> None:
    from mxa.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) == 14
    for name, p in sub.choices.items():
        assert p.description and len(p.description) > 60, name
        for a in p._actions:
            assert a.help, f"mxa {name} {a.option_strings} has no help"


def test_import_mxa_stays_light() -> None:
    # the data package loads lazily: import mxa needs the label names and gray mean/std, nothing more
    code = (
        "import sys, mxa; heavy = [m for m in ('mxa.data.chexpert', 'mxa.data.phantom', 'mxa.data.writer', "
        "'mxa.train.loop', 'mxa.cli') if m in sys.modules]; assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_public_names_exist() -> None:
    import mxa
    from mxa.layers import ChannelAttention
    from mxa.models import MODEL_NAMES

    for name in mxa.__all__:
        assert hasattr(mxa, name), name
    assert tuple(f"efficientvit_ml_m{i}" for i in range(6)) == MODEL_NAMES
    assert ChannelAttention is not None


# the modules mypy does not check yet (pyproject.toml); the list may shrink, never grow
TYPING_DEBT = {
    "mxa.data.combine",
    "mxa.data.xray_sets",
    "mxa.distill.cache",
    "mxa.distill.teacher",
    "mxa.models.efficientvit_ml",
    "mxa.models.graft.api",
    "mxa.models.graft.mechanism",
    "mxa.models.graft.rules",
    "mxa.models.grafted",
    "mxa.train.setup",
}


def test_typing_debt_only_shrinks() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    cfg = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["mypy"]
    ignored = {m for o in cfg["overrides"] if o.get("ignore_errors") for m in o["module"]}
    assert ignored <= TYPING_DEBT, f"new modules without type checking: {sorted(ignored - TYPING_DEBT)}"
    strict = next(o for o in cfg["overrides"] if "mxa.layers" in o["module"])
    assert strict["disallow_untyped_defs"] and strict["warn_return_any"]


def test_public_api_has_runnable_examples() -> None:
    # every public class and function of the documented surface has an Examples: block (run as a doctest)
    import inspect

    import mxa
    import mxa.layers
    import mxa.losses

    missing = []
    for mod in (mxa, mxa.layers, mxa.losses):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and "Examples:" not in (obj.__doc__ or ""):
                missing.append(f"{mod.__name__}.{name}")
    assert missing == []


def test_help_texts_render_cleanly() -> None:
    # argparse %-formats help= strings but not descriptions: a "%%" typed in a description shows as such
    from mxa.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "%%" not in text and "%(" not in text, name
    assert "%%" not in parser.format_help()


def test_export_help_states_the_export_codes_limits() -> None:
    from mxa.cli import build_parser
    from mxa.files import export

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["export"].format_help().split())
    assert f">= {export.MIN_OPSET}" in text and f"default {export.DEFAULT_OPSET}" in text
    assert sub.choices["export"].parse_args(["--model", "x", "--output", "y", "--opset", "13"]).opset == 13
