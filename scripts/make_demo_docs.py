"""Write the numbers of a committed `mxa demo` run into README.md and docs/quickstart.md.

Every number in those pages that comes from the demo comes from ``docs/results/demo.json`` (the demo's
``summary.json``), between ``<!-- demo:NAME -->`` and ``<!-- /demo:NAME -->`` markers:

    mxa demo --output /tmp/demo && cp /tmp/demo/summary.json docs/results/demo.json
    python scripts/make_demo_docs.py            # rewrite the marked blocks
    python scripts/make_demo_docs.py --check    # exit 1 if a page is out of step (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from generated_blocks import render  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "demo.json"
PAGES = (ROOT / "README.md", ROOT / "docs" / "quickstart.md")


def _cell(m: dict, key: str) -> str:
    v, ci = m.get(key), (m.get("ci") or {}).get(key)
    if v is None:
        return "undefined"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def _crop(m: dict) -> tuple[str, str]:
    """(localization accuracy at IoU 0.3, mean IoU / area-matched chance) of what the chosen block crops."""
    crop = m.get("crop") or {}
    if not crop:
        return "-", "-"
    return f"{crop['loc_acc_0.3']:.2f}", f"{crop['mean_iou']:.2f} / {crop['random_iou']:.2f}"


def blocks(summary: dict) -> dict[str, str]:
    res = summary["results"]
    rows = [
        "| model | macro AUC | micro AUC | competition AUC | crop loc. acc. @ IoU 0.3 | crop IoU / chance |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in res.items():
        acc, iou = _crop(m)
        rows.append(
            f"| {name} | {_cell(m, 'macro_auc')} | {_cell(m, 'micro_auc')} | {_cell(m, 'competition_auc')} "
            f"| {acc} | {iou} |"
        )
    students = [res[k]["macro_auc"] for k in res if k != "teacher" and res[k].get("macro_auc") is not None]
    cfg = summary["runs"]["baseline"]["config"]
    teacher_cfg = summary["runs"]["teacher"]["config"]
    threads = summary.get("versions", {}).get("threads", "?")
    facts = (
        f"{summary['minutes']:.1f} minutes on {threads} CPU threads; one seed, {cfg['train_samples']:,} "
        "training and "
        f"{cfg['val_samples']} validation phantoms at {cfg['img_size']} px, "
        f"{cfg['model'].replace('efficientvit_ml_', '').upper()} "
        f"students trained for {cfg['epochs']} epochs, the teacher for {teacher_cfg['epochs']}; student "
        "macro AUC "
        f"{min(students):.2f}-{max(students):.2f}, teacher {res['teacher']['macro_auc']:.2f}"
    )
    return {"table": "\n".join(rows), "facts": facts, "minutes": f"{summary['minutes']:.0f}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the pages are in step; exit 1 if not")
    args = ap.parse_args()
    values = blocks(json.loads(RESULTS.read_text()))
    stale = []
    for page in PAGES:
        old = page.read_text()
        new = render(old, "demo", values)
        if new != old:
            stale.append(page.name)
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print(f"out of step with {RESULTS.name}: {', '.join(stale)}; run python scripts/make_demo_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
