"""A new user's first hour: the README and the quick start, every command block verbatim, in a fresh venv.

A copy of the clone (the files git tracks or would track) and the system's ``python3``, no environment of
ours: each document's shell blocks run in one bash session, as a reader types them in one terminal (README
first, then the quick start in the same folder), then its Python blocks in one interpreter. Commands on the
user's own data (``/data/...``) cannot run here; they are parsed instead, in that venv (``doc_blocks``).
The README's test command is CI's own (``test_docs``), so it is not run from inside the tests.

About 10 minutes (two installs and the whole demo), so it is not in the default run: CI runs it after
the suite, ``python -m pytest -m walkthrough tests/test_walkthrough.py``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doc_blocks import USER_DATA, blocks, command_lines

pytestmark = [pytest.mark.walkthrough, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "docs" / "quickstart.md")


def _fresh_copy(dest: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    assert listed.returncode == 0, (
        f"git ls-files in {ROOT} failed: the walkthrough copies the files of a git checkout "
        f"(for a checkout owned by another user: git config --global --add safe.directory {ROOT}): "
        + listed.stderr.decode()
    )
    files = listed.stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():  # a file deleted in the work tree is still in the index
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _user_env() -> dict[str, str]:
    """The environment of a new terminal: no venv of ours on the PATH, no PYTHONPATH."""
    ours = (Path(sys.prefix) / "bin").resolve() if sys.prefix != sys.base_prefix else None  # a venv's
    path = [p for p in os.environ["PATH"].split(os.pathsep) if ours is None or Path(p).resolve() != ours]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return {**env, "PATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


def _shell_script(doc: Path) -> str:
    """The document's shell blocks as one script: each line verbatim, but those on the user's own data
    (parsed in the venv the earlier lines made) and the README's test command (CI's)."""
    lines = ["set -eo pipefail"]
    for block in blocks(doc):
        if doc.name == "README.md" and "pytest" in block.text:
            continue
        for line in command_lines(block.text):
            lines.append(f"echo {shlex.quote('$ ' + line)}")
            if USER_DATA.search(line):
                lines.append(f"python tests/doc_blocks.py {shlex.quote(line)}")
            else:
                lines.append(line)
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    text = r.stdout + r.stderr
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{text[-6000:]}"
    assert "Traceback" not in text, f"{what}:\n{text[-6000:]}"
    return text


def test_the_readme_and_the_quick_start_run_verbatim_in_a_fresh_venv(tmp_path: Path) -> None:
    env = _user_env()
    assert shutil.which("python3", path=env["PATH"]), "no python3 outside our venv"
    clone = _fresh_copy(tmp_path / "mxa-attention")
    for doc in DOCS:
        name = doc.relative_to(ROOT)
        out = _run(["bash", "-c", _shell_script(doc)], clone, env, f"{name}: the shell blocks")
        print(f"--- {name}\n{out[-3000:]}")
        code = "\n".join(b.text for b in blocks(doc, langs=("python",)))
        assert code, name
        (tmp_path / "blocks.py").write_text(code)
        _run(
            [str(clone / ".venv" / "bin" / "python"), str(tmp_path / "blocks.py")],
            clone,
            env,
            f"{name}: Python",
        )
    # the quick start's demo ran in the README's folder: it kept the four finished runs, trained nothing
    assert out.count("already trained with these settings, kept") == 4, out[-3000:]
    # what the quick start says the demo writes
    demo = clone / "mxa-demo"
    for run in ("teacher", "baseline/seed0", "mxa/seed0", "mxa_kd/seed0"):
        assert all((demo / run / f).is_file() for f in ("last.pt", "best.pt", "metrics.jsonl", "roc.png")), (
            run
        )
    assert (demo / "summary.json").is_file()
    assert "already trained with these settings, kept" in out or "kept" in out  # the second demo: run again
