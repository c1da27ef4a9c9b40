"""PhantomCXR: synthetic frontal chest radiographs with planted, label-specific findings.

Every image is generated on the fly from ``(seed, index)``: no files, deterministic, a few milliseconds
per 224 x 224 image. Label vectors are drawn from the real CheXpert label patterns (see
``scripts/derive_label_stats.py``), so prevalence, uncertainty and co-occurrence follow the real data.
Each present finding is drawn where radiologists look for it; uncertain (-1) findings are drawn faintly,
so the uncertainty policy matters. The ground-truth box of every drawn finding comes with the item.

A second kind, ``PhantomCXR(kind="small")`` (``--data phantom-small``), has at most one finding per image:
one of five kinds (:data:`SMALL_FINDINGS`) with a box side (the square root of its area) log-uniform in
:data:`SMALL_SIDES`, or none. Its size strata match NIH's ``BBox_List_2017`` (<= 0.10, 0.10-0.20), so a
box's fit to small findings can be measured.

Not anatomy: a test bed for the pipeline, the ROI localization metric and demos.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable
from importlib import resources

import numpy as np
import torch
from torch.utils.data import Dataset

from mxa.data.labels import CHEXPERT_LABELS, apply_policy

__all__ = [
    "PHANTOM_KINDS",
    "SMALL_FINDINGS",
    "SMALL_SIDES",
    "PhantomCXR",
    "label_pattern_table",
    "render_phantom",
    "render_small_phantom",
    "sample_raw_labels",
    "sample_small_labels",
]

_INDEX = {name: i for i, name in enumerate(CHEXPERT_LABELS)}  # label name -> column
_CODE = {"1": 1.0, "0": 0.0, "u": -1.0, ".": np.nan}
# Amplitude of a finding by raw label: positive drawn fully, uncertain faintly, else not at all.
_STRENGTH = {1.0: 1.0, -1.0: 0.45}


@functools.lru_cache(maxsize=1)
def label_pattern_table() -> tuple[np.ndarray, np.ndarray, dict]:
    """(patterns (P, 14) float with NaN for blank, cumulative probabilities (P,), metadata)."""
    with resources.files("mxa.data").joinpath("chexpert_label_patterns.json.gz").open("rb") as fb:
        data = json.loads(gzip.decompress(fb.read()).decode("utf-8"))
    codes = list(data["patterns"])
    counts = np.array([data["patterns"][c] for c in codes], dtype=np.float64)
    patterns = np.array([[_CODE[ch] for ch in c] for c in codes], dtype=np.float32)
    cum = np.cumsum(counts / counts.sum())
    cum[-1] = 1.0
    meta = {k: v for k, v in data.items() if k != "patterns"}
    return patterns, cum, meta


def sample_raw_labels(rng: np.random.Generator) -> np.ndarray:
    """One raw CheXpert label vector (14,), values 1, 0, -1 or NaN, with CheXpert's frequencies."""
    patterns, cum, _ = label_pattern_table()
    return patterns[int(np.searchsorted(cum, rng.random(), side="right"))].copy()


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, :].repeat(size, 0), c[:, None].repeat(size, 1)  # u (x, right), v (y, down)


@functools.lru_cache(maxsize=8)
def _noise_texture(size: int) -> np.ndarray:
    # One fixed texture per size; each image reads it at a random offset (drawing fresh Gaussian
    # noise per image costs more than the whole rest of the rendering).
    return np.random.default_rng(20250101).standard_normal((2 * size, 2 * size)).astype(np.float32)


class _Canvas:
    """The image plus coordinate grids; shapes are drawn only inside their bounding window."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.u, self.v = _grid(size)
        self.img = np.zeros((size, size), np.float32)

    def window(self, cx: float, cy: float, hx: float, hy: float) -> tuple[slice, slice]:
        n = self.size
        r0, r1 = max(0, int((cy - hy) * n)), min(n, int((cy + hy) * n) + 2)
        c0, c1 = max(0, int((cx - hx) * n)), min(n, int((cx + hx) * n) + 2)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

    def ellipse(self, cx, cy, rx, ry, soft, pad=1.05):
        """(window, mask) of a soft-edged ellipse, 1 inside, 0 outside."""
        w = self.window(cx, cy, rx * pad, ry * pad)
        d = ((self.u[w] - cx) / rx) ** 2 + ((self.v[w] - cy) / ry) ** 2
        return w, np.clip((1.0 - d) / soft, 0.0, 1.0)

    def gauss(self, cx, cy, sx, sy):
        w = self.window(cx, cy, 3 * sx, 3 * sy)
        return w, np.exp(-0.5 * (((self.u[w] - cx) / sx) ** 2 + ((self.v[w] - cy) / sy) ** 2))


def _box(cx, cy, hw, hh):
    return [max(0.0, cx - hw), max(0.0, cy - hh), min(1.0, cx + hw), min(1.0, cy + hh)]


Box = list[float]  # normalized xyxy
Lung = tuple[float, float, float, float]  # cx, cy, rx, ry


class _Scene:
    """Canvas, random source and the anatomy (lungs, ribs, patient shift) that findings are placed in."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.cv = _Canvas(size)
        self.size, self.u, self.v, self.img = size, self.cv.u, self.cv.v, self.cv.img
        self.rng, self.r = rng, rng.uniform
        self.sx = self.sy = 0.0  # patient position, set by _draw_thorax
        self.lungs: list[Lung] = []  # image-left lung (side -1), then image-right (side 1)
        self.lung_mask = np.zeros_like(self.img)
        self.ribs = np.zeros_like(self.img)

    def side(self) -> int:
        return int(self.rng.choice((-1, 1)))

    def lung(self, side: int) -> Lung:
        return self.lungs[(side + 1) // 2]

    def lung_point(self, side: int, vmin: float, vmax: float) -> tuple[float, float]:
        cx, cy, rx, ry = self.lung(side)
        return cx + self.r(-0.5, 0.5) * rx, cy + ry * self.r(vmin, vmax)

    def add(self, w: tuple[slice, slice], values: np.ndarray, amp: float) -> None:
        """Add ``amp * values`` in window ``w``, inside the lungs only."""
        self.img[w] += amp * values * self.lung_mask[w]


# --- anatomy ---------------------------------------------------------------------------------------
# The random draws happen in a fixed order (anatomy, findings in _FINDINGS order, acquisition): changing
# it changes every phantom of every seed.


def _draw_thorax(sc: _Scene) -> None:
    """Patient shift, body, lungs and ribs."""
    r, img = sc.r, sc.img
    sx, sy = r(-0.02, 0.02), r(-0.02, 0.02)
    sc.sx, sc.sy = sx, sy
    img += 0.06
    w, body = sc.cv.ellipse(0.5 + sx, 0.58 + sy, r(0.42, 0.47), 0.62, 0.15)
    img[w] += 0.42 * body
    for side in (-1, 1):
        cx, cy = 0.5 + side * r(0.16, 0.18) + sx, 0.47 + sy
        rx, ry = r(0.12, 0.14), r(0.25, 0.28)
        sc.lungs.append((cx, cy, rx, ry))
        w, m = sc.cv.ellipse(cx, cy, rx, ry, 0.25)
        sc.lung_mask[w] = np.maximum(sc.lung_mask[w], m)
    img -= 0.27 * sc.lung_mask
    # ribs: bright bands curving down laterally, drawn inside the lungs only
    for cx, cy, rx, ry in sc.lungs:
        w = sc.cv.window(cx, cy, rx, ry)
        phase = (sc.v[w] - 0.17 - sy - 0.35 * (sc.u[w] - 0.5 - sx) ** 2) / 0.062
        sc.ribs[w] = (np.abs(phase - np.round(phase)) < 0.14) & (phase > -0.3) & (phase < 8.3)
    img += 0.09 * sc.ribs * sc.lung_mask


def _draw_mediastinum(sc: _Scene, s: float) -> Box | None:
    """Spine and mediastinum, wider at the top when enlarged (``s`` > 0)."""
    sx, sy = sc.sx, sc.sy
    med_w, box = 0.045, None
    if s:
        med_w += 0.035 * s
        box = _box(0.5 + sx, 0.33 + sy, med_w + 0.02, 0.15)
    w = sc.cv.window(0.5 + sx, 0.6, med_w + 0.02, 0.5)
    uu, vv = sc.u[w], sc.v[w]
    upper = np.clip((0.52 + sy - vv) / 0.05, 0, 1)
    col = np.clip((med_w - np.abs(uu - 0.5 - sx)) / 0.012, 0, 1) * np.clip((vv - 0.12 - sy) / 0.03, 0, 1)
    sc.img[w] += 0.38 * col * (0.55 + 0.45 * upper)
    return box


def _draw_heart(sc: _Scene, s: float) -> Box | None:
    """The heart, enlarged when ``s`` > 0."""
    hx, hy, hrx, hry = 0.54 + sc.sx, 0.64 + sc.sy, sc.r(0.11, 0.13), sc.r(0.09, 0.11)
    box = None
    if s:
        hrx *= 1.0 + 0.5 * s
        hry *= 1.0 + 0.2 * s
        box = _box(hx, hy, hrx, hry)
    w, heart = sc.cv.ellipse(hx, hy, hrx, hry, 0.2)
    sc.img[w] += 0.34 * heart
    return box


def _draw_diaphragm(sc: _Scene) -> None:
    """Dense below the lung bases."""
    w = (slice(int(0.68 * sc.size), sc.size), slice(0, sc.size))
    sc.img[w] += 0.2 * np.clip((sc.v[w] - 0.74 - sc.sy - 0.2 * (sc.u[w] - 0.5) ** 2) / 0.03, 0, 1)


# --- findings: each draws at amplitude ``s`` and returns its box ---------------------------------------


def _draw_lung_opacity(sc: _Scene, s: float) -> Box:
    cx, cy = sc.lung_point(sc.side(), -0.4, 0.5)
    sgx, sgy = sc.r(0.04, 0.06), sc.r(0.05, 0.08)
    w, g = sc.cv.gauss(cx, cy, sgx, sgy)
    sc.add(w, g, 0.22 * s)
    return _box(cx, cy, 2 * sgx, 2 * sgy)


def _draw_lung_lesion(sc: _Scene, s: float) -> Box:
    """A nodule of a few pixels."""
    cx, cy = sc.lung_point(sc.side(), -0.6, 0.4)
    rad = sc.r(0.012, 0.02)
    w, m = sc.cv.ellipse(cx, cy, rad, rad, 0.5)
    sc.img[w] += 0.32 * s * m
    return _box(cx, cy, rad * 1.5, rad * 1.5)


def _draw_edema(sc: _Scene, s: float) -> Box:
    """Bilateral perihilar haze with interstitial lines."""
    for cx, cy, _, _ in sc.lungs:
        w, haze = sc.cv.gauss(cx - 0.3 * (cx - 0.5), cy + 0.03, 0.07, 0.1)
        lines = np.abs(np.sin(sc.v[w] * sc.size * 0.9)) > 0.92
        sc.add(w, haze * (0.16 + 0.08 * lines), s)
    return _box(0.5 + sc.sx, 0.5 + sc.sy, 0.28, 0.2)


def _draw_consolidation(sc: _Scene, s: float) -> Box:
    """Dense lobar patch at a lung base."""
    cx, cy, rx, ry = sc.lung(sc.side())
    px, py = cx + sc.r(-0.3, 0.3) * rx, cy + ry * sc.r(0.35, 0.6)
    w, patch = sc.cv.ellipse(px, py, rx * 0.55, ry * 0.28, 0.4)
    sc.add(w, patch, 0.3 * s)
    return _box(px, py, rx * 0.55, ry * 0.28)


def _draw_pneumonia(sc: _Scene, s: float) -> Box:
    """Patchy clustered opacities."""
    cx, cy = sc.lung_point(sc.side(), -0.2, 0.5)
    for _ in range(5):
        w, g = sc.cv.gauss(cx + sc.r(-0.04, 0.04), cy + sc.r(-0.04, 0.04), 0.015, 0.015)
        sc.add(w, g, 0.16 * s)
    return _box(cx, cy, 0.07, 0.07)


def _draw_atelectasis(sc: _Scene, s: float) -> Box:
    """Plate-like horizontal band in a lower zone."""
    cx, cy = sc.lung_point(sc.side(), 0.2, 0.5)
    w = sc.cv.window(cx, cy, 0.075, 0.03)
    band = np.clip((0.008 - np.abs(sc.v[w] - cy - 0.1 * (sc.u[w] - cx))) / 0.004, 0, 1)
    sc.add(w, band, 0.25 * s)
    return _box(cx, cy, 0.08, 0.025)


def _draw_pneumothorax(sc: _Scene, s: float) -> Box:
    """Lucent apex without lung markings, bounded by a pleural line."""
    sd = sc.side()
    cx, cy, rx, ry = sc.lung(sd)
    ax, ay, arx, ary = cx + sd * 0.02, cy - ry * 0.55, rx * 0.75, ry * 0.45
    w = sc.cv.window(ax, ay, arx * 1.1, ary * 1.1)
    d = ((sc.u[w] - ax) / arx) ** 2 + ((sc.v[w] - ay) / ary) ** 2
    cap = np.clip((1.0 - d) / 0.05, 0, 1) * sc.lung_mask[w]
    rim = np.clip(1 - np.abs(d - 1) / 0.06, 0, 1) * sc.lung_mask[w]
    sc.img[w] += s * (0.2 * rim - (0.08 + 0.09 * sc.ribs[w]) * cap)
    return _box(ax, ay, arx, ary)


def _draw_pleural_effusion(sc: _Scene, s: float) -> Box:
    """Meniscus filling a costophrenic angle."""
    sd = sc.side()
    cx, cy, rx, ry = sc.lung(sd)
    level = cy + ry * sc.r(0.45, 0.65)
    w, inside = sc.cv.ellipse(cx, cy, rx * 1.15, ry * 1.05, 0.1)
    lateral = np.clip(sd * (sc.u[w] - cx) / rx, 0, 1) ** 2
    meniscus = np.clip((sc.v[w] - level + 0.12 * lateral) / 0.01, 0, 1)
    sc.img[w] += 0.32 * s * meniscus * inside
    return [cx - rx * 1.1, level - 0.12, cx + rx * 1.1, min(1.0, cy + ry * 1.05)]


def _draw_pleural_other(sc: _Scene, s: float) -> Box:
    """Pleural thickening along a lateral chest wall."""
    sd = sc.side()
    cx, cy, rx, ry = sc.lung(sd)
    y0 = cy + sc.r(-0.4, 0.2) * ry
    w = sc.cv.window(cx + sd * rx, y0, 0.05, 0.08)
    d = ((sc.u[w] - cx) / rx) ** 2 + ((sc.v[w] - cy) / ry) ** 2
    sc.img[w] += 0.2 * s * np.clip(1 - np.abs(d - 1) / 0.12, 0, 1) * (sd * (sc.u[w] - cx) > 0)
    return _box(cx + sd * rx * 0.95, y0, 0.05, 0.08)


def _draw_fracture(sc: _Scene, s: float) -> Box:
    """A broken, offset rib (placed on one of the drawn rib bands)."""
    sd = sc.side()
    cx, cy, rx, ry = sc.lung(sd)
    fx = cx + sd * rx * sc.r(0.3, 0.7)
    fy = 0.17 + sc.sy + 0.35 * (fx - 0.5 - sc.sx) ** 2 + 0.062 * int(sc.rng.integers(1, 7))
    w, near = sc.cv.gauss(fx, fy, 0.012, 0.02)
    gap = (np.abs(sc.u[w] - fx) < 0.006) & (np.abs(sc.v[w] - fy) < 0.02)
    sc.img[w] += s * (0.14 * near - 0.15 * gap)
    return _box(fx, fy, 0.025, 0.03)


def _draw_support_devices(sc: _Scene, s: float) -> Box:
    """An endotracheal tube down the midline and a line with a port."""
    u, v, img, sy = sc.u, sc.v, sc.img, sc.sy
    tx = 0.51 + sc.sx
    w = sc.cv.window(tx, 0.2 + sy / 2, 0.01, 0.2 + sy / 2)
    img[w] += 0.45 * s * np.clip((0.0045 - np.abs(u[w] - tx)) / 0.002, 0, 1) * (v[w] > 0.05)
    px, py = sc.r(0.18, 0.28), sc.r(0.12, 0.2)
    w = sc.cv.window((px + tx) / 2, py + 0.45 * (tx - px), (tx - px) / 2, 0.45 * (tx - px) + 0.01)
    line = np.clip((0.004 - np.abs(v[w] - py - (u[w] - px) * 0.9)) / 0.002, 0, 1) * (u[w] > px)
    img[w] += 0.4 * s * line
    w, port = sc.cv.ellipse(px, py, 0.025, 0.02, 0.3)
    img[w] += 0.5 * s * port
    return [px - 0.03, 0.03, tx + 0.02, max(0.4 + sy, py + 0.9 * (tx - px))]


# Findings that reshape anatomy which is always drawn: called at every strength, 0 included.
_ANATOMY: dict[str, Callable[[_Scene, float], Box | None]] = {
    "Enlarged Cardiomediastinum": _draw_mediastinum,
    "Cardiomegaly": _draw_heart,
}
# Findings laid over the anatomy, drawn only when present or uncertain, in this order (dicts keep it).
_FINDINGS: dict[str, Callable[[_Scene, float], Box]] = {
    "Lung Opacity": _draw_lung_opacity,
    "Lung Lesion": _draw_lung_lesion,
    "Edema": _draw_edema,
    "Consolidation": _draw_consolidation,
    "Pneumonia": _draw_pneumonia,
    "Atelectasis": _draw_atelectasis,
    "Pneumothorax": _draw_pneumothorax,
    "Pleural Effusion": _draw_pleural_effusion,
    "Pleural Other": _draw_pleural_other,
    "Fracture": _draw_fracture,
    "Support Devices": _draw_support_devices,
}


def _acquire(sc: _Scene) -> None:
    """Contrast curve, exposure and noise."""
    r, img, size = sc.r, sc.img, sc.size
    np.clip(img, 0.0, 1.0, out=img)
    g = r(-0.3, 0.3)  # gamma-like curve without a per-pixel pow
    img *= (1.0 + g * (1.0 - img)) * r(0.85, 1.1)
    img += r(-0.04, 0.04)
    tex = _noise_texture(size)
    oy, ox = sc.rng.integers(0, size, size=2)
    img += r(0.01, 0.025) * tex[oy : oy + size, ox : ox + size]
    np.clip(img, 0.0, 1.0, out=img)


def render_phantom(raw: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom.

    Args:
        raw: (14,) raw labels (1, 0, -1, NaN) deciding which findings to draw and how strongly.
        size: image side in pixels.
        rng: the random source (all anatomy variation and finding placement come from it).

    Returns:
        image (size, size) float32 in [0, 1] (white = dense), boxes (14, 4) float32 normalized xyxy,
        NaN rows for findings not drawn.
    """

    def strength(name: str) -> float:
        x = float(raw[_INDEX[name]])
        return 0.0 if np.isnan(x) else _STRENGTH.get(x, 0.0)

    sc = _Scene(size, rng)
    boxes = np.full((len(CHEXPERT_LABELS), 4), np.nan, dtype=np.float32)
    _draw_thorax(sc)
    for name, draw in _ANATOMY.items():
        if (box := draw(sc, strength(name))) is not None:
            boxes[_INDEX[name]] = box
    _draw_diaphragm(sc)
    for name, draw_finding in _FINDINGS.items():
        if s := strength(name):
            boxes[_INDEX[name]] = draw_finding(sc, s)
    _acquire(sc)
    return sc.img, np.clip(boxes, 0.0, 1.0)


# --- the small-finding kind: at most one finding per image, of a drawn size ---------------------------

#: Range of a small phantom finding's box side (square root of its area, as a share of the image side).
SMALL_SIDES = (0.05, 0.20)
#: Share of small phantoms without a finding ("No Finding").
SMALL_NORMAL = 0.2


def _small_centre(sc: _Scene, half_w: float, half_h: float) -> tuple[float, float]:
    """A centre inside a lung whose box (half sides ``half_w``, ``half_h``) stays inside the image."""
    cx, cy, rx, ry = sc.lung(sc.side())
    px = cx + sc.r(-0.6, 0.6) * max(rx - half_w, 0.0)
    py = cy + sc.r(-0.6, 0.6) * max(ry - half_h, 0.0)
    return float(np.clip(px, half_w, 1 - half_w)), float(np.clip(py, half_h, 1 - half_h))


def _small_nodule(sc: _Scene, side: float, amp: float) -> Box:
    """Lung Lesion: a round, sharp-edged nodule of diameter ``side``."""
    rad = side / 2
    cx, cy = _small_centre(sc, rad, rad)
    w, m = sc.cv.ellipse(cx, cy, rad, rad, 0.2)
    sc.img[w] += 0.45 * amp * m
    return _box(cx, cy, rad, rad)


def _small_opacity(sc: _Scene, side: float, amp: float) -> Box:
    """Lung Opacity: a soft Gaussian haze; its box is +-2 sigma."""
    aspect = sc.r(0.7, 1.4)
    sgx, sgy = side / 4 * np.sqrt(aspect), side / 4 / np.sqrt(aspect)
    cx, cy = _small_centre(sc, 2 * sgx, 2 * sgy)
    w, g = sc.cv.gauss(cx, cy, sgx, sgy)
    sc.img[w] += 0.35 * amp * g
    return _box(cx, cy, 2 * sgx, 2 * sgy)


def _small_consolidation(sc: _Scene, side: float, amp: float) -> Box:
    """Consolidation: a dense, wider-than-tall patch crossed by dark air bronchograms."""
    aspect = sc.r(1.3, 2.0)
    rx, ry = side / 2 * np.sqrt(aspect), side / 2 / np.sqrt(aspect)
    cx, cy = _small_centre(sc, rx, ry)
    w, patch = sc.cv.ellipse(cx, cy, rx, ry, 0.4)
    bronchi = np.abs(np.sin((sc.u[w] - cx) * sc.size * 0.6)) > 0.85
    sc.img[w] += 0.42 * amp * patch * (1.0 - 0.45 * bronchi)
    return _box(cx, cy, rx, ry)


def _small_pneumonia(sc: _Scene, side: float, amp: float) -> Box:
    """Pneumonia: five small blobs clustered in a square of side ``side``."""
    half = side / 2
    cx, cy = _small_centre(sc, half, half)
    sg = side / 10
    for _ in range(5):
        bx, by = cx + sc.r(-1, 1) * (half - 2 * sg), cy + sc.r(-1, 1) * (half - 2 * sg)
        w, g = sc.cv.gauss(bx, by, sg, sg)
        sc.img[w] += 0.35 * amp * g
    return _box(cx, cy, half, half)


def _small_atelectasis(sc: _Scene, side: float, amp: float) -> Box:
    """Atelectasis: a horizontal plate-like band, four times as long as it is thick."""
    hl, ht = side, side / 4
    cx, cy = _small_centre(sc, hl, ht)
    w = sc.cv.window(cx, cy, hl, ht)
    inside = np.clip((hl - np.abs(sc.u[w] - cx)) * sc.size / 1.5, 0, 1)
    inside *= np.clip((ht - np.abs(sc.v[w] - cy)) * sc.size / 1.5, 0, 1)
    sc.img[w] += 0.4 * amp * inside
    return _box(cx, cy, hl, ht)


#: The small phantom's findings by label, in a fixed order (the label drawn indexes it).
SMALL_FINDINGS: dict[str, Callable[[_Scene, float, float], Box]] = {
    "Lung Lesion": _small_nodule,
    "Lung Opacity": _small_opacity,
    "Consolidation": _small_consolidation,
    "Pneumonia": _small_pneumonia,
    "Atelectasis": _small_atelectasis,
}
_SMALL_COLUMNS = [_INDEX["No Finding"], *(_INDEX[n] for n in SMALL_FINDINGS)]


def sample_small_labels(rng: np.random.Generator) -> np.ndarray:
    """One raw label vector (14,) of the small kind: one of :data:`SMALL_FINDINGS` positive (or No Finding,
    with probability :data:`SMALL_NORMAL`), the other labels of the kind 0, the rest NaN (not labelled)."""
    raw = np.full(len(CHEXPERT_LABELS), np.nan, np.float32)
    raw[_SMALL_COLUMNS] = 0.0
    if rng.random() < SMALL_NORMAL:
        raw[_INDEX["No Finding"]] = 1.0
    else:
        raw[_INDEX[list(SMALL_FINDINGS)[int(rng.integers(len(SMALL_FINDINGS)))]]] = 1.0
    return raw


def render_small_phantom(
    raw: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom of the small kind (normal anatomy, at most one finding): as :func:`render_phantom`."""
    sc = _Scene(size, rng)
    boxes = np.full((len(CHEXPERT_LABELS), 4), np.nan, dtype=np.float32)
    _draw_thorax(sc)
    for draw in _ANATOMY.values():
        draw(sc, 0.0)
    _draw_diaphragm(sc)
    lo, hi = SMALL_SIDES
    side = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # log-uniform: as many below 0.1 as above
    amp = rng.uniform(0.7, 1.0)
    for name, finding in SMALL_FINDINGS.items():
        if raw[_INDEX[name]] == 1:
            boxes[_INDEX[name]] = finding(sc, side, amp)
    _acquire(sc)
    return sc.img, np.clip(boxes, 0.0, 1.0)


#: ``PhantomCXR`` kinds: ``chexpert`` (CheXpert's label patterns, several findings) and ``small``.
PHANTOM_KINDS = ("chexpert", "small")


class PhantomCXR(Dataset):
    """``n`` synthetic frontal chest X-rays, deterministic per ``(seed, index)``.

    Args:
        n: number of images.
        image_size: side of the square image.
        seed: dataset seed; ``PhantomCXR(n, seed=s)[i]`` is always the same image.
        policy: uncertainty policy for the targets (``ones``, ``zeros``, ``ignore``, ``mixed``).
        transform: callable on a (1, H, W) float tensor in [0, 1]; default: normalize with the
            models' gray mean/std (what ``mxa.data.transforms`` does for evaluation).
        kind: ``chexpert`` (the default) or ``small`` (at most one finding per image, of a drawn size;
            only its six labels are labelled).

    Items: ``(image (1, H, W), target (14,), mask (14,) bool, boxes (14, 4))`` where ``boxes`` holds
    the normalized xyxy box of each drawn finding and NaN rows for the others.

    Attributes ``raw_labels`` (n, 14; NaN blank), ``labels`` and ``label_mask`` are available without
    rendering any image; ``ids`` are ``"phantom-<seed>-<index>"`` (``"phantom-small-<seed>-<index>"``).
    """

    def __init__(
        self,
        n: int,
        image_size: int = 224,
        seed: int = 0,
        policy: str = "ones",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        kind: str = "chexpert",
    ) -> None:
        if kind not in PHANTOM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PHANTOM_KINDS)}, got {kind!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.n, self.image_size, self.seed, self.policy, self.kind = n, image_size, seed, policy, kind
        sample = sample_small_labels if kind == "small" else sample_raw_labels
        self.raw_labels = torch.from_numpy(
            np.stack([sample(self._rng(i, 0)) for i in range(n)])
            if n
            else np.zeros((0, len(CHEXPERT_LABELS)), np.float32)
        )
        if transform is None:
            from mxa.data.transforms import GRAY_MEAN, GRAY_STD, Normalize

            transform = Normalize(GRAY_MEAN, GRAY_STD)
        self.transform = transform
        prefix = "phantom-small" if kind == "small" else "phantom"
        self.ids = [f"{prefix}-{seed}-{i}" for i in range(n)]
        self.labelled = torch.ones(len(CHEXPERT_LABELS), dtype=torch.bool)
        if kind == "small":
            self.labelled = torch.zeros(len(CHEXPERT_LABELS), dtype=torch.bool)
            self.labelled[_SMALL_COLUMNS] = True
        self.labels, self.label_mask = apply_policy(self.raw_labels, policy)
        self.label_mask &= self.labelled  # the small kind's other labels are not labelled: never negatives
        self.has_boxes = True  # every drawn finding has its box

    def boxes(self, index: int, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(14, 4) normalized xyxy boxes of item ``index`` (NaN rows for the findings not drawn)."""
        return torch.from_numpy(self.render(index)[1])

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index, stream])

    def __len__(self) -> int:
        return self.n

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image (H, W) in [0, 1] and boxes (14, 4) of item ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for PhantomCXR of {self.n} images")
        draw = render_small_phantom if self.kind == "small" else render_phantom
        return draw(self.raw_labels[index].numpy(), self.image_size, self._rng(index, 1))

    def __getitem__(self, index: int):
        img, boxes = self.render(index)
        image = self.transform(torch.from_numpy(img)[None])
        return image, self.labels[index], self.label_mask[index], torch.from_numpy(boxes)
