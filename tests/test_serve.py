"""``mxa serve``: the functions behind the page (the code of ``mxa predict``), and the page in a real browser.

The browser test starts ``mxa serve`` on a free localhost port, drives the system's Chromium with
Playwright, uploads a real X-ray from tests/data, and compares what the page shows with ``mxa predict``'s
CSV for the same file and model. It saves screenshots (1280x800 and phone width) to ``$MXA_SCREENSHOTS``
when set (docs/img is made that way), else to the test's temporary folder.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch

from mxa.decision.rule import DecisionRule
from mxa.predict import Predictor, box_findings, predict_files

pytest.importorskip("gradio")

CXR = Path(__file__).parent / "data" / "cxr"
PNG = CXR / "00000001_000.png"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A random-weight M0 at 64 px, saved as mxa export writes it (what mxa.load_model reads)."""
    from mxa.files.export import export_safetensors
    from mxa.train.config import TrainConfig
    from mxa.train.state import model_spec

    torch.manual_seed(0)
    model = model_spec(TrainConfig(model="efficientvit_ml_m0", img_size=64)).build().eval()
    with torch.no_grad():  # a head that says something different for every label (its init says 0.5)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return export_safetensors(model, tmp_path_factory.mktemp("model") / "m0.safetensors")


def test_the_findings_are_sorted_with_thresholds_and_decisions() -> None:
    from mxa.serve import findings_html

    model = timm.create_model("efficientvit_ml_m0", img_size=64).eval()
    labels = list(Predictor(model, "cpu").labels)
    model.decision_rule = DecisionRule(
        tuple(labels), thresholds={n: 0.5 for n in labels}, threshold_method="fixed"
    )
    predictor = Predictor(model, "cpu")
    p = next(predictor.predict([PNG], [], 1))
    text = findings_html(predictor, p)
    shown = [float(v) for v in re.findall(r'data-probability="([0-9.]+)"', text)]
    assert len(shown) == 14 and shown == sorted(shown, reverse=True)
    assert text.count('class="mxa-threshold" style="left:50.0%"') == 14
    n_pos = sum(v >= 0.5 for v in p.probabilities)
    assert text.count(">positive (≥ 0.500)<") == n_pos and text.count(">negative (< 0.500)<") == 14 - n_pos


def test_the_page_results_are_mxa_predicts(model_file, tmp_path) -> None:
    from mxa.files.load import load_model
    from mxa.serve import _write_results, analyze

    predictor = Predictor(load_model(model_file), "cpu")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    session, messages = analyze(
        predictor, [str(PNG), str(CXR / "siim_pa_mono1_tag.dcm"), str(text)], tmp_path
    )
    assert [p.path.name for p in session.predictions] == [PNG.name, "siim_pa_mono1_tag.dcm"]
    assert len(messages) == 1 and messages[0].startswith("notes.txt: not read as an X-ray")
    assert str(tmp_path) not in messages[0]  # no temporary path in the page
    assert any("MONOCHROME1" in n for n in session.predictions[1].notes)
    assert session.folder is not None
    written = _write_results(predictor, session.predictions, session.folder)
    want = predict_files([PNG], tmp_path / "p.csv", checkpoint=model_file, device="cpu")
    with open(want.csv) as fh:
        header, row = list(csv.reader(fh))
    with open(written[0]) as fh:
        got_header, got_row, _ = list(csv.reader(fh))
    assert got_header == header and got_row[1:] == row[1:]
    data = json.loads(written[1].read_text())
    assert data[0]["Cardiomegaly"] == pytest.approx(float(row[header.index("Cardiomegaly")]), abs=1e-6)
    assert set(box_findings(session.predictions[0])) and data[0]["boxes"]


def test_the_page_toggles_boxes_and_draws_grad_cam(model_file, tmp_path) -> None:
    pytest.importorskip("pytorch_grad_cam")
    from mxa.files.load import load_model
    from mxa.serve import _Page

    page = _Page(Predictor(load_model(model_file), "cpu"), tmp_path)
    session, _, _ = page.run([str(PNG)])
    findings, notes, overlay, boxes, downloads = page.choose(PNG.name, session)
    assert Path(overlay).name == "00000001_000_roi.png" and len(downloads) == 3
    chosen = boxes["value"][:1]
    one = page.boxes(PNG.name, chosen, session)
    assert one != overlay and Path(one).is_file()
    cam = page.cam(PNG.name, "Edema", session)
    assert cam["visible"] and Path(cam["value"]).is_file()
    assert page.cam(PNG.name, "(none)", session)["visible"] is False
    assert page.run([])[1] == "Upload one or more X-rays first."


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(model_file, tmp_path):
    port = _free_port()
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path / "tmp")}
    cmd = [
        sys.executable,
        "-m",
        "mxa",
        "serve",
        "--model",
        str(model_file),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "serving" in line or proc.poll() is not None:
            break
    url = re.search(r"on (http://\S+)", "".join(lines))
    assert url, "".join(lines)
    yield url.group(1), proc, lines
    if proc.poll() is None:
        proc.kill()


def test_the_page_in_a_real_browser(server, model_file, tmp_path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    browser_path = _browser()
    if browser_path is None:
        pytest.skip("no Chromium installed (apt-get install -y chromium)")
    url, proc, lines = server
    shots = Path(os.environ.get("MXA_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    want = predict_files([PNG], tmp_path / "p.csv", checkpoint=model_file, device="cpu")
    with open(want.csv) as fh:
        header, row = list(csv.reader(fh))
    expected = {n: float(v) for n, v in zip(header[1:], row[1:])}
    start = time.monotonic()
    outside = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url.rstrip("/")) else None)
        page.goto(url)
        assert "not for clinical use" in page.inner_text("#banner")
        page.set_input_files("#upload input[type=file]", str(PNG))
        page.click("#analyze")
        page.wait_for_selector("#findings tr.mxa-finding", timeout=60_000)
        rows = page.query_selector_all("#findings tr.mxa-finding")
        shown = {
            r.get_attribute("data-label"): r.query_selector(".mxa-probability").inner_text() for r in rows
        }
        assert shown == {n: f"{v:.3f}" for n, v in expected.items()}
        page.wait_for_selector("#overlay img", timeout=60_000)
        assert page.query_selector("#overlay img").get_attribute("src")
        page.wait_for_selector("#downloads a", timeout=30_000)
        page.screenshot(path=str(shots / "serve_1280x800.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(shots / "serve_phone.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400  # no sideways scrolling
        page.set_viewport_size({"width": 1280, "height": 800})
        text = tmp_path / "notes.txt"
        text.write_text("not an image")
        page.set_input_files("#upload input[type=file]", str(text))
        page.click("#analyze")
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('not read as an X-ray')", timeout=60_000
        )
        browser.close()
    seconds = time.monotonic() - start
    assert outside == [], f"the page fetched from outside this computer: {outside[:5]}"
    uploads = list((tmp_path / "tmp").glob("mxa-serve-*"))
    assert uploads and list(uploads[0].rglob("00000001_000.png")), "the uploads are not in the page's folder"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in out, "".join(lines) + out
    assert not list((tmp_path / "tmp").glob("mxa-serve-*")), "the uploads outlived the page"
    print(f"browser test: {seconds:.1f} s; screenshots in {shots}")
