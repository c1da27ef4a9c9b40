"""``mxa serve``: a local web app that shows what a model says about chest X-rays, and where it looked.

One page (Gradio, the ``app`` extra): upload PNG, JPEG or DICOM files, and for each image see the findings
as bars sorted by probability (with the model's thresholds and decisions when it carries a decision rule),
the image with the MXA regions drawn on it (toggled per finding), a Grad-CAM view of a chosen finding, the
notes about the file (MONOCHROME1, lateral view, small, 16-bit range), and download the results as CSV
and JSON (``mxa predict``'s columns) and the overlay as PNG.

Everything runs through :class:`mxa.predict.Predictor`, the code of ``mxa predict``: the page shows the
numbers ``mxa predict`` writes. The app listens on 127.0.0.1 unless told otherwise, fetches nothing from
the internet (system fonts, no analytics), keeps uploads and results in one temporary folder removed at
exit, and caps the upload size.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxa.predict import (
    ImagePrediction,
    Predictor,
    box_findings,
    draw_heatmap,
    draw_overlay,
    synthetic_note,
)

__all__ = ["BANNER", "Session", "build_app", "findings_html", "serve"]

log = logging.getLogger(__name__)

#: Shown at the top of the page.
BANNER = (
    "**Research software, not for clinical use.** The probabilities come from a research model and are "
    "not a diagnosis. Images stay on this computer: nothing is sent anywhere."
)
#: Hosts that only this computer reaches.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: The page's style: bars drawn with CSS, fonts of the system (nothing fetched).
CSS = """
.mxa-banner {border-left: 4px solid #c0392b; padding-left: 8px;}
.mxa-findings {width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 0.9em;}
.mxa-findings td, .mxa-findings th {padding: 2px 4px; vertical-align: middle; overflow-wrap: anywhere;}
.mxa-findings caption {text-align: left; padding-bottom: 4px;}
.mxa-bar {position: relative; height: 14px; background: #eceff1; border-radius: 3px;}
.mxa-fill {position: absolute; left: 0; top: 0; bottom: 0; background: #1f77b4; border-radius: 3px;}
.mxa-positive .mxa-fill {background: #d62728;}
.mxa-threshold {position: absolute; top: -3px; bottom: -3px; width: 2px; background: #222;}
.mxa-decision-positive {color: #d62728; font-weight: 600;}
"""


@dataclass
class Session:
    """What one page holds: the predictions of its last upload, and the files written for it."""

    predictions: list[ImagePrediction] = field(default_factory=list)
    folder: Path | None = None

    def find(self, name: str | None) -> ImagePrediction | None:
        for p in self.predictions:
            if p.path.name == name:
                return p
        return None


def findings_html(predictor: Predictor, p: ImagePrediction) -> str:
    """The findings of ``p`` as an HTML table of bars, most probable first: probability (3 decimals) and,
    where the model has a decision rule, its threshold (a black tick on the bar) and decision."""
    rule = predictor.rule
    kind = f"calibrated ({rule.calibration})" if rule is not None and rule.calibration else "model output"
    rows = []
    for j in sorted(range(len(predictor.labels)), key=lambda j: -p.probabilities[j]):
        label, prob, decision = predictor.labels[j], p.probabilities[j], p.decisions[j]
        t = predictor.threshold(label)
        tick = "" if t is None else f'<div class="mxa-threshold" style="left:{100 * t:.1f}%"></div>'
        cells = [
            f"<td>{html.escape(label)}</td>",
            f'<td><div class="mxa-bar"><div class="mxa-fill" style="width:{100 * prob:.1f}%"></div>{tick}'
            "</div></td>",
            f'<td class="mxa-probability">{prob:.3f}</td>',
        ]
        if predictor.with_decisions:
            at = "" if t is None else f" ({'≥' if decision == 'positive' else '<'} {t:.3f})"
            cells.append(
                f'<td class="mxa-decision-{decision or "none"}">{decision or "no threshold"}{at}</td>'
            )
        rows.append(
            f'<tr class="mxa-finding mxa-{decision or "none"}" data-label="{html.escape(label)}" '
            f'data-probability="{prob:.6f}">{"".join(cells)}</tr>'
        )
    decision_head = '<th style="width:24%">decision</th>' if predictor.with_decisions else ""
    head = (
        f'<tr><th style="width:34%">finding</th><th></th><th style="width:13%">prob.</th>{decision_head}</tr>'
    )
    caption = f"<caption>{html.escape(p.path.name)}: probabilities ({kind}), most probable first</caption>"
    return f'<table class="mxa-findings">{caption}{head}{"".join(rows)}</table>'


def notes_markdown(p: ImagePrediction) -> str:
    """The notes about the file of ``p``, as a Markdown list ('' when there is nothing to know)."""
    return "\n".join(f"- ⚠ {n}" for n in p.notes)


def _write_results(predictor: Predictor, preds: Sequence[ImagePrediction], folder: Path) -> list[Path]:
    """``results.csv`` (``mxa predict``'s columns) and ``results.json`` (the same, with each file's notes
    and boxes) in ``folder``."""
    columns = predictor.columns()
    with open(folder / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for p in preds:
            writer.writerow(predictor.row(p))
    rows = []
    for p in preds:
        row: dict[str, Any] = dict(zip(columns, predictor.row(p)))
        row.update({label: prob for label, prob in zip(predictor.labels, p.probabilities)})
        row["notes"] = p.notes
        row["boxes"] = {k: [round(float(v), 6) for v in b] for k, b in p.rois.items()}
        rows.append(row)
    (folder / "results.json").write_text(json.dumps(rows, indent=1))
    return [folder / "results.csv", folder / "results.json"]


def analyze(
    predictor: Predictor,
    paths: Sequence[str],
    work: Path,
    progress: Callable[[float, str], None] = lambda f, d: None,
) -> tuple[Session, list[str]]:
    """Predict the uploaded files at ``paths`` (each named by its own file name in the results); returns the
    session and one message per file that could not be read."""
    folder = Path(tempfile.mkdtemp(prefix="results-", dir=work))
    files = []
    for i, src in enumerate(paths):  # a copy under its own name, so every output says which file it was
        dst = folder / f"{i:03d}" / Path(src).name
        dst.parent.mkdir()
        shutil.copyfile(src, dst)
        files.append(dst)
    failures: list[tuple[Path, str]] = []
    preds = []
    for p in predictor.predict(files, failures, batch_size=1):
        preds.append(p)
        progress(len(preds) / max(1, len(files)), f"{p.path.name} ({len(preds)} of {len(files)})")
    messages = [
        f"{f.name}: not read as an X-ray ({_short(why, f)}). Upload PNG, JPEG or DICOM files."
        for f, why in failures
    ]
    return Session(preds, folder), messages


def _short(why: str, path: Path) -> str:
    """An error message without the temporary folder it names (the file by its own name)."""
    return why.replace(str(path), path.name)


class _Page:
    """The page's callbacks: each takes the page's values and gives what changes."""

    def __init__(self, predictor: Predictor, work: Path) -> None:
        import gradio as gr

        self.gr, self.predictor, self.work = gr, predictor, work
        self.labels = list(predictor.labels)

    def run(self, paths: list[str] | None, progress: Any = None) -> tuple[Any, ...]:
        """Analyze the uploads: (session, status text, the image chooser)."""
        gr = self.gr
        if not paths:
            return Session(), "Upload one or more X-rays first.", gr.update(choices=[], value=None)
        report = (lambda f, d: progress(f, desc=d)) if progress is not None else (lambda f, d: None)
        session, messages = analyze(self.predictor, paths, self.work, report)
        names = [p.path.name for p in session.predictions]
        done = f"{len(names)} image(s) analyzed." if names else "No image could be read."
        text = "\n".join([done, *(f"- {m}" for m in messages)])
        return session, text, gr.update(choices=names, value=names[0] if names else None)

    def choose(self, name: str | None, session: Session) -> tuple[Any, ...]:
        """Show one image: (findings, notes, overlay, box toggles, downloads)."""
        p = session.find(name)
        if p is None or session.folder is None:
            return "", "", None, self.gr.update(choices=[], value=[]), None
        boxed = box_findings(p)
        picture = _overlay(self.predictor, p, session.folder, boxed)
        files = [*_write_results(self.predictor, session.predictions, session.folder), picture]
        return (
            findings_html(self.predictor, p),
            notes_markdown(p),
            str(picture),
            self.gr.update(choices=boxed, value=boxed),
            [str(f) for f in files],
        )

    def boxes(self, name: str | None, chosen: list[str], session: Session) -> Any:
        """The overlay with the boxes of the ``chosen`` findings only."""
        p = session.find(name)
        if p is None or session.folder is None:
            return None
        return str(_overlay(self.predictor, p, session.folder, chosen))

    def cam(self, name: str | None, label: str, session: Session) -> Any:
        """The Grad-CAM view of ``label`` (hidden for "(none)")."""
        p = session.find(name)
        if p is None or session.folder is None or label == "(none)":
            return self.gr.update(value=None, visible=False)
        out = session.folder / f"{p.path.stem}_gradcam_{self.labels.index(label)}.png"
        if not out.exists():
            draw_heatmap(self.predictor, p, label, 1, out)
        return self.gr.update(value=str(out), visible=True)


def build_app(predictor: Predictor, work: Path) -> Any:
    """The page (a ``gradio.Blocks``) for ``predictor``; results are written under ``work``."""
    import gradio as gr

    page = _Page(predictor, work)
    with gr.Blocks(title="mxa serve: chest X-ray findings", analytics_enabled=False) as app:
        note = synthetic_note(predictor.model, "images")
        banner = BANNER + (f"\n\n⚠ {note[0].upper()}{note[1:]}." if note else "")
        gr.Markdown(banner, elem_classes=["mxa-banner"], elem_id="banner")
        state = gr.State(Session())
        with gr.Row():
            upload = gr.File(
                label="X-rays (PNG, JPEG, DICOM): drop files here",
                file_count="multiple",
                type="filepath",
                elem_id="upload",
            )
            with gr.Column(scale=0, min_width=160):
                run = gr.Button("Analyze", variant="primary", elem_id="analyze")
        status = gr.Markdown(elem_id="status")
        choice = gr.Dropdown(label="image", choices=[], elem_id="image-choice", interactive=True)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                overlay = gr.Image(label="MXA regions", type="filepath", elem_id="overlay", interactive=False)
                shown = gr.CheckboxGroup(label="boxes shown, per finding", choices=[], elem_id="boxes")
                cam_of = gr.Dropdown(
                    label="Grad-CAM of", choices=["(none)", *page.labels], value="(none)", elem_id="cam-of"
                )
                cam = gr.Image(
                    label="Grad-CAM", type="filepath", elem_id="gradcam", interactive=False, visible=False
                )
            with gr.Column(scale=2, min_width=300):
                findings = gr.HTML(elem_id="findings")
                notes = gr.Markdown(elem_id="notes")
                downloads = gr.File(
                    label="downloads: results (CSV, JSON), overlay (PNG)", elem_id="downloads"
                )

        def on_run(paths: list[str] | None, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
            return page.run(paths, progress)  # Gradio finds the progress bar by this default

        run.click(on_run, [upload], [state, status, choice], show_progress="full")
        choice.change(page.choose, [choice, state], [findings, notes, overlay, shown, downloads])
        shown.input(page.boxes, [choice, shown, state], [overlay])
        cam_of.change(page.cam, [choice, cam_of, state], [cam])
    return app


def _overlay(predictor: Predictor, p: ImagePrediction, folder: Path, findings: Sequence[str]) -> Path:
    """The overlay PNG of ``p`` with the boxes of ``findings`` (made once per choice)."""
    if set(findings) == set(box_findings(p)):  # every box: the overlay mxa predict --roi-overlay writes
        out = folder / f"{p.path.stem}_roi.png"
    else:
        key = "_".join(sorted(str(predictor.labels.index(f)) for f in findings)) or "none"
        out = folder / f"{p.path.stem}_roi_{key}.png"
    if not out.exists():
        draw_overlay(predictor, p, out, findings)
    return out


def _theme() -> Any:
    import gradio as gr

    # system fonts: the default theme would fetch its fonts from the internet
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def serve(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_file_mb: int = 50,
    on_ready: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve the page for ``predictor`` until Ctrl-C; its temporary folder is removed at exit.

    Args:
        host: the address to listen on; another than this computer's only when asked (a warning says so).
        port: the port (None: Gradio's default, 7860, or the next free one).
        max_file_mb: the largest upload accepted, in MB.
        on_ready: called with the page's address once it is served.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # nothing sent anywhere
    if host not in LOCAL_HOSTS:
        log.warning(
            "listening on %s: other computers on the network can reach this page and upload images to it; "
            "use the default 127.0.0.1 unless you mean that",
            host,
        )
    with tempfile.TemporaryDirectory(prefix="mxa-serve-") as work:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(work) / "uploads")  # the uploads, removed with the folder
        app = build_app(predictor, Path(work))
        try:
            app.queue(default_concurrency_limit=1).launch(
                server_name=host,
                server_port=port,
                max_file_size=f"{max_file_mb}mb",
                share=False,
                inbrowser=False,
                quiet=True,
                footer_links=[],
                ssr_mode=False,
                mcp_server=False,
                theme=_theme(),
                css=CSS,
                allowed_paths=[work],
                prevent_thread_lock=True,
            )
            on_ready(app.local_url)
            app.block_thread()  # until Ctrl-C
        finally:
            app.close()
