"""How long things take here: ``--help``, the quick demo, ``mxa bench``, the tests, the walkthrough.

Each item is timed as a user runs it (a fresh ``python -m mxa`` / ``python -m pytest`` process, wall clock)
and written to benchmarks/results/cpu-timings.json, with the full demo's time read from
docs/results/demo.json. docs/benchmarks.md's "How long things take" table is generated from that file.

Usage: python benchmarks/timings.py [--only help,quick_demo,bench,tests,slow_tests,walkthrough]
    [--output FILE]
(about 25 minutes on 2 cores; the goal of issue 25: every --help under 1 s)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ("help", "quick_demo", "bench", "tests", "slow_tests", "walkthrough")


def _wall(cmd: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def _commands() -> list[str]:
    sys.path.insert(0, str(ROOT / "src"))
    from mxa.cli import build_parser

    return list(build_parser().get_default("commands"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(ITEMS), help=f"comma-separated subset of {', '.join(ITEMS)}")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "cpu-timings.json"))
    args = ap.parse_args()
    only = [x for x in args.only.split(",") if x]
    py = [sys.executable]
    out: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if "help" in only:
        # the `mxa` command's own entry point (the console script runs mxa_cli.main)
        runs = {"": [*py, "-m", "mxa_cli", "--help"]}
        runs.update({c: [*py, "-m", "mxa_cli", c, "--help"] for c in _commands()})
        each = {name: statistics.median(_wall(cmd) for _ in range(5)) for name, cmd in runs.items()}
        out["help_s"] = {"median": statistics.median(each.values()), "max": max(each.values()), "each": each}
        print(
            f"--help: median {out['help_s']['median']:.2f} s, slowest {max(each, key=each.get)!r} "  # type: ignore[index]
            f"{max(each.values()):.2f} s"
        )
    if "quick_demo" in only:
        with tempfile.TemporaryDirectory() as tmp:
            out["quick_demo_s"] = _wall([*py, "-m", "mxa", "demo", "--quick", "--output", f"{tmp}/demo"])
        print(f"mxa demo --quick: {out['quick_demo_s']:.0f} s")
    if "bench" in only:
        with tempfile.TemporaryDirectory() as tmp:
            out["bench_s"] = _wall([*py, "-m", "mxa", "bench", "--json", f"{tmp}/b.json"])
        print(f"mxa bench (M5, batch 32, 10 repeats, train step): {out['bench_s']:.0f} s")
    if "tests" in only:
        out["tests_s"] = _wall([*py, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
        print(f"python -m pytest -q: {out['tests_s'] / 60:.1f} min")
    if "slow_tests" in only:  # CI's step after the suite: the multi-process runs, one at a time
        slow = ["-n", "0", "-m", "slow and not walkthrough"]
        out["slow_tests_s"] = _wall([*py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *slow])
        print(f"the slow tests: {out['slow_tests_s'] / 60:.1f} min")
    if "walkthrough" in only:  # CI's second step: README and quick start verbatim in a fresh venv
        walk = ["-m", "walkthrough", "tests/test_walkthrough.py"]
        out["walkthrough_s"] = _wall([*py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *walk])
        print(f"the walkthrough: {out['walkthrough_s'] / 60:.1f} min")
    demo = json.loads((ROOT / "docs" / "results" / "demo.json").read_text())
    out["demo_minutes"] = demo.get("minutes")
    path = Path(args.output)
    if path.exists():
        old = json.loads(path.read_text())
        old.update(out)  # items not re-timed keep their earlier numbers
        out = old
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
