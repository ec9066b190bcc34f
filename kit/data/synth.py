"""The synthetic chest X-ray benchmark (docs/synthetic-data.md): the competition's layout, classes and balance.

Real data needs a Kaggle account and the network; this generator lets every command run out of
the box. Each image is a grayscale chest-like picture (body, lung fields, heart, spine, ribs,
noise) drawn with whole-array numpy operations; each class adds one distinct finding whose
strength is random per image, so the task is learnable but not solved perfectly (faint
findings stay hard). A patient's images share one anatomy, so folds must be grouped.

Two presets draw the same labels, patients and ids for a seed and differ only in the pictures:
`easy` (the original benchmark: findings plain to see, macro AUC about 0.9 for the demo models)
and `realistic`, where each class's finding contrast comes from REALISTIC_CONTRAST, calibrated
(benchmarks/synth_difficulty.py) so that a plain-CE tiny ResNet at 64 px reaches per-class AUCs
near those of a CheXNet reproduction on real chest X-rays; a share of findings is all but
invisible, some images carry a faint look-alike of another class, tubes and leads, vessel
markings and per-exam tilt and exposure. synth.json records the preset and its table.

Multi-class (default) writes the Kaggle layout: train.csv (id, patient_id, one-hot columns),
train/ and test/ PNGs, sample_submission.csv, solution.csv (test labels, outside train/) and
the SYNTHETIC marker. Multi-label writes chestmnist.npz in the MedMNIST format.
Everything is written into a temp folder that is renamed at the end, so an interrupted run
never leaves a dataset that looks complete.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kit.data.medmnist_npz import CHESTMNIST_CLASSES
from kit.errors import KitError
from kit.files import write_json
from kit.progress import make_progress

# The competition's class counts for 51,043 images, in the order train.csv lists the columns.
COMPETITION_COUNTS: dict[str, int] = {
    "No Finding": 34097,
    "Effusion": 3356,
    "Atelectasis": 2600,
    "Infiltration": 2300,
    "Cardiomegaly": 1500,
    "Nodule": 1300,
    "Pneumothorax": 1100,
    "Mass": 1000,
    "Consolidation": 800,
    "Pleural Thickening": 700,
    "Emphysema": 500,
    "Edema": 450,
    "Fibrosis": 400,
    "Pneumonia": 350,
    "Tortuous Aorta": 250,
    "Calcification of the Aorta": 180,
    "Subcutaneous Emphysema": 70,
    "Hernia": 45,
    "Pneumoperitoneum": 40,
    "Pneumomediastinum": 5,
}
CLASSES = list(COMPETITION_COUNTS)
# ChestMNIST label -> the finding drawn for it; prevalences in the 2-15% range of ChestX-ray14.
CHESTMNIST_FINDINGS = dict(zip(CHESTMNIST_CLASSES, [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural Thickening", "Hernia",
]))
CHESTMNIST_PREVALENCE = np.array([0.10, 0.03, 0.12, 0.15, 0.05, 0.06, 0.02, 0.05, 0.04, 0.02, 0.03, 0.02, 0.03, 0.02])
MEDMNIST_SPLITS = (78468, 11219, 22433)
IMAGES_PER_PATIENT = ((1, 0.78), (2, 0.15), (3, 0.07))  # mean 1.29
_PNG_LEVEL = 1

DIFFICULTIES = ("easy", "realistic")
# Realistic preset: contrast factor of each class's finding, calibrated (benchmarks/synth_difficulty.py, 15,000 images, 64 px)
# so that the reference recipe reaches the per-class AUCs of a CheXNet reproduction.
REALISTIC_CONTRAST: dict[str, float] = {
    "Effusion": 0.3,
    "Atelectasis": 0.57,
    "Infiltration": 0.65,
    "Cardiomegaly": 1.5,
    "Nodule": 1.15,
    "Pneumothorax": 1.2,
    "Mass": 0.91,
    "Consolidation": 0.43,
    "Pleural Thickening": 0.91,
    "Emphysema": 1.02,
    "Edema": 0.9,
    "Fibrosis": 0.56,
    "Pneumonia": 1.0,
    "Tortuous Aorta": 1.55,
    "Calcification of the Aorta": 1.59,
    "Subcutaneous Emphysema": 5.3,
    "Hernia": 2.2,
    "Pneumoperitoneum": 2.2,
    "Pneumomediastinum": 3.0,
}
OCCULT_FRACTION = 0.08  # share of positives whose finding is all but invisible (labelled from more than the image)
OCCULT_CONTRAST = 0.1
DISTRACTOR_RATE = 0.12  # share of images with a faint finding of a class they are not labelled with
DISTRACTOR_CONTRAST = 0.35
DEVICE_RATE = 0.25  # share of images with tubes or leads
FINDING_NAMES = [c for c in COMPETITION_COUNTS if c != "No Finding"]
# distractor classes follow the findings' own frequencies, so a rare class gets rare look-alikes
FINDING_SHARE = np.array([COMPETITION_COUNTS[c] for c in FINDING_NAMES], dtype=np.float64) / sum(COMPETITION_COUNTS[c] for c in FINDING_NAMES)


def scale_counts(n: int, counts: dict[str, int] | None = None, min_per_class: int = 5) -> dict[str, int]:
    """Counts proportional to `counts` summing to exactly `n` (largest remainder), each >= min_per_class.

    The floor matters: the real data's smallest class has 5 images and the kit uses 5 folds,
    so every class must be able to appear in every fold.
    """
    counts = counts or COMPETITION_COUNTS
    names = list(counts)
    if n < min_per_class * len(names):
        raise KitError(f"--n-train/--n-test {n} is too small: {len(names)} classes x --min-per-class {min_per_class} need {min_per_class * len(names)}")
    raw = np.array([counts[c] for c in names], dtype=np.float64)
    quota = raw * n / raw.sum()
    out = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - out), kind="stable")
    out[order[: n - out.sum()]] += 1
    # raise small classes to the floor, taking the images from the largest classes
    for k in np.flatnonzero(out < min_per_class):
        need = min_per_class - out[k]
        out[k] = min_per_class
        while need:
            j = int(np.argmax(out))
            take = min(need, out[j] - min_per_class)
            out[j] -= take
            need -= take
    assert out.sum() == n
    return dict(zip(names, out.tolist()))


# drawing


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c, indexing="ij")  # y (down), x


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (d < 1), 0 outside, with a soft edge: d is an ellipse radius."""
    return np.clip((1 - d) / edge, 0, 1)


def _ellipse(y, x, cy, cx, ry, rx):
    return np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)


def _blob(y, x, cy, cx, r):
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))


def _coarse_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BILINEAR))


def patient_anatomy(rng: np.random.Generator) -> dict[str, float]:
    """Per-patient shape and exposure: shared by a patient's images (why folds are grouped)."""
    return {
        "body_rx": rng.uniform(0.78, 0.92), "lung_dx": rng.uniform(0.33, 0.42), "lung_rx": rng.uniform(0.25, 0.31),
        "lung_ry": rng.uniform(0.48, 0.58), "lung_cy": rng.uniform(-0.12, -0.02), "heart_rx": rng.uniform(0.22, 0.27),
        "heart_cx": rng.uniform(0.06, 0.14), "rib_freq": rng.uniform(5.0, 6.5), "gain": rng.uniform(0.85, 1.15),
        "bias": rng.uniform(-0.05, 0.05), "lung_dark": rng.uniform(0.22, 0.3),
    }


def _realistic_look(size: int, y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-exam variation of the realistic preset: tilt and offset of the patient, an exposure ramp.

    Returns the rotated/shifted grid and an additive intensity field; drawn from its own stream
    so the findings' draws are the same as without it.
    """
    angle = rng.normal(0, np.deg2rad(3.0))
    dy, dx = rng.normal(0, 0.04, 2)
    cos, sin = np.cos(angle), np.sin(angle)
    y, x = cos * y - sin * x - dy, sin * y + cos * x - dx
    phi = rng.uniform(0, 2 * np.pi)
    ramp = rng.uniform(0.0, 0.08) * (np.cos(phi) * x + np.sin(phi) * y)
    return y, x, ramp.astype(np.float32)


def _support_devices(y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright thin curves (tubes, ECG leads) in a share of the exams, of no class: a distractor."""
    out = np.zeros_like(y)
    for _ in range(int(rng.integers(1, 3))):
        x0, bend, tilt = rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.8), rng.uniform(-0.5, 0.5)
        width = rng.uniform(0.008, 0.016)
        out += rng.uniform(0.1, 0.25) * np.exp(-(((x - x0 - tilt * y - bend * y * y) / width) ** 2))
    return out


# findings as painters


@dataclass(frozen=True)
class Mark:
    """One finding on one image: its strength, side (-1 or 1), contrast factor and the stream its shape is drawn from."""

    strength: float
    side: float
    contrast: float
    rng: np.random.Generator


@dataclass
class Canvas:
    """The chest being drawn: the (tilted) grid, the patient's anatomy, the structures painters refer to, the image."""

    size: int
    y: np.ndarray
    x: np.ndarray
    a: dict[str, float]
    body: np.ndarray
    lungs: np.ndarray
    lung_r: dict[float, np.ndarray]  # ellipse radius of each lung field, by side
    ribs: np.ndarray
    img: np.ndarray
    diaphragm_y: np.ndarray | None = None


@dataclass(frozen=True)
class Painter:
    """How a finding is drawn. phase "anatomy": `draw(anatomy, mark)` changes the patient's shape before
    anything is drawn; "under_lungs": `draw(canvas, mark)` before the lung fields darken the chest;
    "overlay": `draw(canvas, mark)` on the finished chest."""

    phase: str
    draw: Callable


PAINTERS: dict[str, Painter] = {}


def painter(name: str, phase: str = "overlay") -> Callable:
    """Register the decorated function as the painter of finding `name`; a name registered twice is an error."""

    def register(draw: Callable) -> Callable:
        if name in PAINTERS:
            raise KitError(f"finding {name!r} has two painters ({PAINTERS[name].draw.__name__}, {draw.__name__}); keep one")
        PAINTERS[name] = Painter(phase, draw)
        return draw

    return register


def _lung_side(c: Canvas, m: Mark) -> np.ndarray:
    return _soft(c.lung_r[m.side], 0.15)


def _center(c: Canvas, m: Mark) -> tuple[float, float]:
    """(cy, cx): the centre of the finding's lung field."""
    return c.a["lung_cy"], m.side * c.a["lung_dx"]


@painter("Emphysema", "anatomy")
def _emphysema(a: dict[str, float], m: Mark) -> None:
    """Hyperinflated, darker lungs, flat diaphragm."""
    a["lung_ry"] += m.contrast * 0.12 * m.strength
    a["lung_dark"] += m.contrast * 0.12 * m.strength
    a["rib_freq"] *= 1 - min(1.0, m.contrast * 0.15 * m.strength)


@painter("Cardiomegaly", "anatomy")
def _cardiomegaly(a: dict[str, float], m: Mark) -> None:
    a["heart_rx"] *= 1 + m.contrast * 0.5 * m.strength


@painter("Pneumothorax", "under_lungs")
def _pneumothorax(c: Canvas, m: Mark) -> None:
    """Collapsed rim at the apex-lateral edge: dark, no lung markings."""
    sgn, st, k, a, y, x = m.side, m.strength, m.contrast, c.a, c.y, c.x
    r = c.lung_r[sgn]
    rim = np.clip((r - (1 - 0.45 * st)) / 0.04, 0, 1) * (r < 1.02) * (y < a["lung_cy"] + 0.15) * (sgn * x > a["lung_dx"] - 0.1)
    c.ribs = c.ribs * (1 - min(1.0, k * 0.8) * rim)
    c.img -= k * 0.14 * (0.4 + st) * rim
    c.img += k * 0.12 * st * np.exp(-(((r - (1 - 0.45 * st)) / 0.02) ** 2)) * (rim > 0)


@painter("Effusion")
def _effusion(c: Canvas, m: Mark) -> None:
    """Fluid level at a lung base with a meniscus rising laterally."""
    (cy, cx), st, x = _center(c, m), m.strength, c.x
    level = cy + c.a["lung_ry"] * (0.55 - 0.4 * st) - 0.12 * np.abs(x - cx) * (m.side * (x - cx) > 0)
    c.img += m.contrast * 0.32 * (0.4 + 0.6 * st) * _lung_side(c, m) / (1 + np.exp(-(c.y - level) / 0.015))


@painter("Atelectasis")
def _atelectasis(c: Canvas, m: Mark) -> None:
    """Plate-like linear density in the mid-lower lung."""
    cy, cx = _center(c, m)
    y0 = cy + m.rng.uniform(0.05, 0.3)
    slope = m.rng.uniform(-0.3, 0.3)
    c.img += m.contrast * 0.3 * m.strength * np.exp(-(((c.y - y0 - slope * (c.x - cx)) / 0.03) ** 2)) * _lung_side(c, m)


@painter("Infiltration")
def _infiltration(c: Canvas, m: Mark) -> None:
    """Several small patchy spots in both lungs."""
    cy, draw = c.a["lung_cy"], m.rng
    for _ in range(int(draw.integers(5, 10))):
        side_k = draw.choice((-1.0, 1.0))
        spot_y, spot_x, spot_r = cy + draw.uniform(-0.35, 0.35), side_k * c.a["lung_dx"] + draw.uniform(-0.15, 0.15), draw.uniform(0.03, 0.06)
        c.img += m.contrast * 0.18 * m.strength * _blob(c.y, c.x, spot_y, spot_x, spot_r) * c.lungs


@painter("Nodule")
def _nodule(c: Canvas, m: Mark) -> None:
    (cy, cx), draw = _center(c, m), m.rng
    c.img += m.contrast * 0.4 * m.strength * _blob(c.y, c.x, cy + draw.uniform(-0.35, 0.3), cx + draw.uniform(-0.12, 0.12), draw.uniform(0.025, 0.04))


@painter("Mass")
def _mass(c: Canvas, m: Mark) -> None:
    """Bigger than a nodule, lobulated."""
    (cy, cx), draw = _center(c, m), m.rng
    my, mx = cy + draw.uniform(-0.3, 0.2), cx + draw.uniform(-0.1, 0.1)
    for _ in range(3):
        c.img += m.contrast * 0.16 * m.strength * _blob(c.y, c.x, my + draw.normal(0, 0.04), mx + draw.normal(0, 0.04), draw.uniform(0.07, 0.11))


@painter("Consolidation")
def _consolidation(c: Canvas, m: Mark) -> None:
    """Large homogeneous density in a lower zone."""
    (cy, cx), draw = _center(c, m), m.rng
    g = _blob(c.y, c.x, cy + draw.uniform(0.1, 0.3), cx + draw.uniform(-0.08, 0.08), draw.uniform(0.14, 0.2))
    c.img += m.contrast * 0.3 * m.strength * np.minimum(1, 2 * g) * _lung_side(c, m)


@painter("Pleural Thickening")
def _pleural_thickening(c: Canvas, m: Mark) -> None:
    """Bright band along the lateral lung borders."""
    for side_k in (-1.0, 1.0):
        r = c.lung_r[side_k]
        c.img += m.contrast * 0.25 * m.strength * np.exp(-(((r - 0.93) / 0.05) ** 2)) * (side_k * c.x > c.a["lung_dx"])


@painter("Edema")
def _edema(c: Canvas, m: Mark) -> None:
    """Bilateral perihilar haze ("bat wings")."""
    cy = c.a["lung_cy"]
    for side_k in (-1.0, 1.0):
        c.img += m.contrast * 0.24 * m.strength * _blob(c.y, c.x, cy + 0.1, side_k * (c.a["lung_dx"] - 0.12), 0.15) * c.lungs


@painter("Fibrosis")
def _fibrosis(c: Canvas, m: Mark) -> None:
    """Reticular pattern in the lower zones."""
    y, x = c.y, c.x
    net = np.maximum(np.sin(40 * x + 3 * y), np.sin(40 * y - 2 * x)) ** 8
    c.img += m.contrast * 0.22 * m.strength * net * c.lungs * (y > c.a["lung_cy"])


@painter("Pneumonia")
def _pneumonia(c: Canvas, m: Mark) -> None:
    """Patchy, textured opacity in an upper/mid zone."""
    (cy, cx), draw = _center(c, m), m.rng
    g = _blob(c.y, c.x, cy - draw.uniform(0.05, 0.25), cx + draw.uniform(-0.08, 0.08), 0.15)
    tex = np.clip(_coarse_noise(draw, c.size, 12) + 0.5, 0, 1.5)
    c.img += m.contrast * 0.28 * m.strength * g * tex * _lung_side(c, m)


@painter("Tortuous Aorta")
def _tortuous_aorta(c: Canvas, m: Mark) -> None:
    """Wavy bright aortic contour at the upper mediastinum."""
    y, st = c.y, m.strength
    xc = -0.12 - 0.1 * st * np.sin(4 * (y + 0.3))
    c.img += m.contrast * 0.22 * (0.4 + 0.6 * st) * np.exp(-(((c.x - xc) / 0.04) ** 2)) * (y > -0.6) * (y < 0.15)


@painter("Calcification of the Aorta")
def _aortic_calcification(c: Canvas, m: Mark) -> None:
    """Thin very bright arc at the aortic knob."""
    r = _ellipse(c.y, c.x, -0.35, -0.14, 0.07, 0.07)
    c.img += m.contrast * 0.55 * m.strength * np.exp(-(((r - 1) / 0.15) ** 2)) * (c.y < -0.33)


@painter("Subcutaneous Emphysema")
def _subcutaneous_emphysema(c: Canvas, m: Mark) -> None:
    """Dark gas streaks in the lateral soft tissue."""
    draw = m.rng
    for _ in range(int(draw.integers(6, 12))):
        side_k = draw.choice((-1.0, 1.0))
        c.img -= m.contrast * 0.22 * m.strength * _blob(c.y, c.x, draw.uniform(-0.6, 0.6), side_k * draw.uniform(0.68, 0.8) * c.a["body_rx"], 0.025) * c.body


@painter("Hernia")
def _hernia(c: Canvas, m: Mark) -> None:
    """Retrocardiac gas bubble with a fluid level."""
    r = _ellipse(c.y, c.x, 0.38, 0.0, 0.09, 0.1)
    c.img -= m.contrast * 0.3 * (0.3 + 0.7 * m.strength) * _soft(r, 0.3) * (c.y < 0.4)


@painter("Pneumoperitoneum")
def _pneumoperitoneum(c: Canvas, m: Mark) -> None:
    """Dark crescent of free gas under a hemidiaphragm."""
    st, (_, cx) = m.strength, _center(c, m)
    crescent = np.exp(-(((c.y - c.diaphragm_y - 0.05) / (0.015 + 0.02 * st)) ** 2)) * (np.abs(c.x - cx) < c.a["lung_rx"])
    c.img -= m.contrast * 0.3 * (0.3 + 0.7 * st) * crescent


@painter("Pneumomediastinum")
def _pneumomediastinum(c: Canvas, m: Mark) -> None:
    """Dark streaks along the mediastinal borders."""
    for side_k in (-1.0, 1.0):
        c.img -= m.contrast * 0.25 * (0.3 + 0.7 * m.strength) * np.exp(-(((c.x - side_k * 0.13) / 0.012) ** 2)) * (c.y > -0.55) * (c.y < 0.2)


# drawing a chest


def _marks(
    findings: list[str], rng: np.random.Generator, hide_rng: np.random.Generator, extra_rng: np.random.Generator,
    realistic: bool, contrast: Mapping[str, float] | None,
) -> dict[str, Mark]:
    """Each finding's strength (faint findings stay hard), side and contrast; in the realistic preset a share
    is all but hidden and some images get a faint look-alike of another class (from its own stream)."""
    unknown = [f for f in findings if f not in PAINTERS]
    if unknown:
        raise KitError(f"no painter for finding {unknown[0]!r}; findings are {', '.join(PAINTERS)}")
    strength = {f: rng.uniform(0.15, 1.0) for f in findings}
    side = {f: rng.choice((-1.0, 1.0)) for f in findings}
    if not realistic:  # contrast factor 1.0 for every finding
        return {f: Mark(strength[f], side[f], 1.0, rng) for f in findings}
    contrast = REALISTIC_CONTRAST if contrast is None else contrast
    amp = {f: contrast[f] * (OCCULT_CONTRAST if hide_rng.random() < OCCULT_FRACTION else 1.0) for f in findings}
    marks = {f: Mark(strength[f], side[f], amp[f], rng) for f in findings}
    if extra_rng.random() < DISTRACTOR_RATE:
        extra = str(extra_rng.choice(FINDING_NAMES, p=FINDING_SHARE))
        if extra not in marks:
            marks[extra] = Mark(extra_rng.uniform(0.15, 1.0), extra_rng.choice((-1.0, 1.0)), contrast[extra] * DISTRACTOR_CONTRAST, extra_rng)
    return marks


def _bare_chest(size: int, y: np.ndarray, x: np.ndarray, a: dict[str, float]) -> tuple[Canvas, np.ndarray]:
    """Body, spine and lung fields of one patient, before the lungs darken it; also the heart's mask."""
    body = _soft(_ellipse(y, x, 0.1, 0.0, 1.05, a["body_rx"]), 0.08)
    img = 0.12 + 0.38 * body
    img += 0.1 * np.exp(-(x / 0.09) ** 2) * body  # spine / mediastinum
    lungs = np.zeros_like(y)
    lung_r = {}
    for sgn in (-1.0, 1.0):
        r = _ellipse(y, x, a["lung_cy"], sgn * a["lung_dx"], a["lung_ry"], a["lung_rx"])
        lung_r[sgn] = r
        lungs = np.maximum(lungs, _soft(r, 0.15))
    heart_r = _ellipse(y, x, 0.3, a["heart_cx"], 0.22, a["heart_rx"])
    heart = _soft(heart_r, 0.2)
    ribs = np.clip(np.sin(2 * np.pi * (a["rib_freq"] * 0.5 * (y + 0.35 * x * x))), 0, 1) ** 3
    return Canvas(size, y, x, a, body, lungs, lung_r, ribs, img), heart


def _finish_chest(c: Canvas, heart: np.ndarray, look_rng: np.random.Generator | None) -> None:
    """Dark lung fields with ribs, the heart, the diaphragm; in the realistic preset (`look_rng` given)
    vessel markings that hide small findings, and tubes/leads in some exams."""
    a, y, x = c.a, c.y, c.x
    c.img -= a["lung_dark"] * c.lungs * (1 - 0.7 * heart)
    c.img += 0.07 * c.ribs * c.lungs
    c.img += 0.22 * heart
    c.diaphragm_y = a["lung_cy"] + a["lung_ry"] * 0.85 - 0.12 * (x * x)
    below = 1 / (1 + np.exp(-(y - c.diaphragm_y) / 0.02))
    c.img += 0.1 * below * c.body
    if look_rng is not None:
        c.img += 0.05 * _coarse_noise(look_rng, c.size, 14) * c.lungs
        if look_rng.random() < DEVICE_RATE:
            c.img += _support_devices(y, x, look_rng)


def draw_chest(
    size: int,
    findings: list[str],
    rng: np.random.Generator,
    anatomy: dict[str, float],
    difficulty: str = "easy",
    contrast: Mapping[str, float] | None = None,
) -> np.ndarray:
    """One (size, size) uint8 chest-like image with the given findings (class names) drawn in.

    `difficulty="realistic"` scales each finding's contrast by `contrast` (default
    REALISTIC_CONTRAST), hides a share of findings, adds faint findings of other classes, support
    devices, lung markings and per-exam tilt/exposure; "easy" is the original benchmark.
    Each finding is drawn by its painter (PAINTERS), in the order the findings are given.
    """
    y, x = _grid(size)
    a = dict(anatomy)
    # separate streams: the same image with and without a finding differs by the finding only,
    # and the realistic preset's extra draws leave the findings' draws unchanged
    rng, noise_rng, look_rng, hide_rng, extra_rng = rng.spawn(5)
    shift_y, shift_x = noise_rng.normal(0, 0.03, 2)
    y = y - shift_y
    x = x - shift_x
    realistic = difficulty == "realistic"
    marks = _marks(findings, rng, hide_rng, extra_rng, realistic, contrast)
    if realistic:
        y, x, ramp = _realistic_look(size, y, x, look_rng)
    by_phase = {phase: [(PAINTERS[f].draw, m) for f, m in marks.items() if PAINTERS[f].phase == phase] for phase in ("anatomy", "under_lungs", "overlay")}
    for draw, mark in by_phase["anatomy"]:
        draw(a, mark)
    canvas, heart = _bare_chest(size, y, x, a)
    for draw, mark in by_phase["under_lungs"]:
        draw(canvas, mark)
    _finish_chest(canvas, heart, look_rng if realistic else None)
    for draw, mark in by_phase["overlay"]:
        draw(canvas, mark)
    img = canvas.img
    img += 0.02 * _coarse_noise(noise_rng, size, 6)
    img += noise_rng.normal(0, 0.02, img.shape).astype(np.float32)
    if realistic:
        img += ramp
    img = img * a["gain"] + a["bias"] + 0.08
    return np.clip(img * 255, 0, 255).astype(np.uint8)

# generation


def _patients(n: int, rng: np.random.Generator, prefix: str) -> np.ndarray:
    """Patient id per image: ~1.3 images per patient, a patient's images of any classes."""
    sizes, probs = zip(*IMAGES_PER_PATIENT)
    per = rng.choice(sizes, size=n, p=probs)
    owner = np.repeat(np.arange(n), per)[:n]
    rng.shuffle(owner)
    return np.array([f"{prefix}{k:06d}" for k in owner])


def _image_job(args: tuple) -> np.ndarray | None:
    """Draw images [start, stop) of one split; write PNGs when `folder` is given, else return them."""
    seed, split_code, start, stop, size, findings, patients, folder, ids, difficulty, contrast = args
    out = None if folder else np.zeros((stop - start, size, size), dtype=np.uint8)
    for k in range(stop - start):
        i = start + k
        anatomy = patient_anatomy(np.random.default_rng([seed, 7, split_code, int(patients[k])]))
        img = draw_chest(size, findings[k], np.random.default_rng([seed, split_code, i]), anatomy, difficulty, contrast)
        if folder:
            Image.fromarray(img, mode="L").save(os.path.join(folder, f"{ids[k]}.png"), compress_level=_PNG_LEVEL)
        else:
            out[k] = img
    return out


def _draw_all(jobs: list[tuple], description: str, n: int, processes: int) -> list:
    results = []
    if processes <= 1 or n < 400:
        with make_progress() as progress:
            task = progress.add_task(description, total=n)
            for job in jobs:
                results.append(_image_job(job))
                progress.advance(task, job[3] - job[2])
        return results
    # the pool is forked before the progress bar starts its refresh thread
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        with make_progress() as progress:
            task = progress.add_task(description, total=n)
            for job, res in zip(jobs, pool.imap(_image_job, jobs)):
                results.append(res)
                progress.advance(task, job[3] - job[2])
    return results


def _jobs(seed, split_code, size, findings, patient_index, folder, *, ids, difficulty, contrast, chunk=100):
    n = len(findings)
    return [
        (seed, split_code, s, min(s + chunk, n), size, findings[s : s + chunk], patient_index[s : s + chunk], folder, ids[s : s + chunk], difficulty, contrast)
        for s in range(0, n, chunk)
    ]


def _labels_for_counts(counts: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    idx = np.repeat(np.arange(len(counts)), list(counts.values()))
    rng.shuffle(idx)
    return idx


def _prepare_out(out: Path) -> Path:
    """A fresh temp folder beside `out`; refuses to replace a folder that `kit synth` did not make."""
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise KitError(f"{path}: is a file, not a folder; give `kit synth` a folder path for OUT (new or made by `kit synth`)")
    if out.exists() and any(out.iterdir()) and not (out / "SYNTHETIC").exists():
        raise KitError(f"{out}: folder exists and was not made by `kit synth` (no SYNTHETIC marker); choose another OUT")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise KitError(f"{out}: cannot create the output folder ({exc.strerror}); choose a writable OUT") from None
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def generate(
    out: Path,
    *,
    n_train: int = 5000,
    n_test: int = 1700,
    size: int = 128,
    seed: int = 42,
    task: str = "multi-class",
    min_per_class: int = 5,
    n_val: int | None = None,
    processes: int | None = None,
    difficulty: str = "easy",
    contrast: Mapping[str, float] | None = None,
) -> dict:
    """Write the synthetic benchmark into `out`; return a summary (counts, paths, seconds).

    `difficulty` picks the preset ("easy": the original images; "realistic": findings as hard to
    see as on real X-rays, see REALISTIC_CONTRAST). `contrast` replaces the realistic preset's
    per-class contrast table (for its calibration); it is recorded in synth.json.
    """
    out = Path(out)
    if size < 8:
        raise KitError(f"--size {size} is too small; use at least 8")
    if difficulty not in DIFFICULTIES:
        raise KitError(f"--difficulty {difficulty!r}: use one of {', '.join(DIFFICULTIES)}")
    if contrast is not None:
        if difficulty != "realistic":
            raise KitError("a contrast table applies to --difficulty realistic only")
        missing = [f for f in FINDING_NAMES if f not in contrast]
        bad = [f for f, v in contrast.items() if not (np.isfinite(v) and v >= 0)]
        if missing or bad:
            raise KitError(f"contrast table: {'missing ' + missing[0] if missing else 'negative or not finite: ' + bad[0]}; give every finding a factor >= 0")
        contrast = {f: float(contrast[f]) for f in FINDING_NAMES}
    elif difficulty == "realistic":
        contrast = dict(REALISTIC_CONTRAST)
    look = (difficulty, contrast)
    processes = processes or min(2, os.cpu_count() or 1)
    start = time.perf_counter()
    tmp = _prepare_out(out)
    try:
        if task == "multi-class":
            summary = _generate_kaggle(tmp, n_train, n_test, size, seed, min_per_class, processes=processes, look=look)
        elif task == "multi-label":
            summary = _generate_chestmnist(tmp, n_train, n_test, size, seed, n_val, processes=processes, look=look)
        else:
            raise KitError(f"--task {task!r}: use 'multi-class' or 'multi-label'")
        summary.update(size=size, seed=seed, task=task, difficulty=difficulty)
        if contrast is not None:
            summary["contrast"] = contrast
        write_json(tmp / "synth.json", summary)
        (tmp / "SYNTHETIC").write_text(f"made by `kit synth` (seed {seed}); not competition data\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.update(out=str(out), seconds=round(time.perf_counter() - start, 2))
    return summary


def _generate_kaggle(tmp: Path, n_train: int, n_test: int, size: int, seed: int, min_per_class: int, *, processes: int, look: tuple) -> dict:
    rng = np.random.default_rng(seed)
    train_counts = scale_counts(n_train, min_per_class=min_per_class)
    # the test floor is lower (at least 1) so that a small test set keeps the train proportions
    test_counts = scale_counts(n_test, min_per_class=min(min_per_class, max(1, n_test // (4 * len(CLASSES)))))
    frames = {}
    for split_code, (name, counts, prefix, id_prefix) in enumerate(
        (("train", train_counts, "p", "img_"), ("test", test_counts, "q", "test_"))
    ):
        label_idx = _labels_for_counts(counts, rng)
        n = len(label_idx)
        ids = np.array([f"{id_prefix}{i + 1:06d}" for i in range(n)])
        patients = _patients(n, rng, prefix)
        patient_index = np.array([int(p[1:]) for p in patients])
        findings = [[] if k == 0 else [CLASSES[k]] for k in label_idx]
        folder = tmp / name
        folder.mkdir()
        _draw_all(_jobs(seed, split_code, size, findings, patient_index, str(folder), ids=ids, difficulty=look[0], contrast=look[1]), f"synth {name} {size}px", n, processes)
        onehot = np.eye(len(CLASSES), dtype=np.uint8)[label_idx]
        frame = pd.DataFrame(onehot, columns=CLASSES)
        frame.insert(0, "id", ids)
        if name == "train":
            frame.insert(1, "patient_id", patients)
        frames[name] = frame
    sample = pd.DataFrame(0, index=range(len(frames["test"])), columns=CLASSES)
    sample["No Finding"] = 1
    sample.insert(0, "id", frames["test"]["id"].to_numpy())
    # CSVs last: a folder without them is never mistaken for a complete dataset
    frames["test"].to_csv(tmp / "solution.csv", index=False)
    sample.to_csv(tmp / "sample_submission.csv", index=False)
    frames["train"].to_csv(tmp / "train.csv", index=False)
    return {"classes": CLASSES, "train_counts": train_counts, "test_counts": test_counts, "n_train": n_train, "n_test": n_test}


def _generate_chestmnist(tmp: Path, n_train: int, n_test: int, size: int, seed: int, n_val: int | None, *, processes: int, look: tuple) -> dict:
    rng = np.random.default_rng(seed)
    n_val = n_val if n_val is not None else max(1, round(n_train * MEDMNIST_SPLITS[1] / MEDMNIST_SPLITS[0]))
    arrays: dict[str, np.ndarray] = {}
    counts = {}
    for split_code, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        labels = (rng.random((n, len(CHESTMNIST_CLASSES))) < CHESTMNIST_PREVALENCE).astype(np.uint8)
        for k in range(len(CHESTMNIST_CLASSES)):  # every label present at least twice per split
            if labels[:, k].sum() < 2 and n >= 2:
                labels[rng.choice(n, 2, replace=False), k] = 1
        findings = [[CHESTMNIST_FINDINGS[c] for c, on in zip(CHESTMNIST_CLASSES, row) if on] for row in labels]
        patient_index = np.arange(n) + 10 * split_code * max(n_train, n_val, n_test)
        chunks = _draw_all(_jobs(seed, 10 + split_code, size, findings, patient_index, None, ids=np.arange(n), difficulty=look[0], contrast=look[1]), f"synth {name} {size}px", n, processes)
        arrays[f"{name}_images"] = np.concatenate(chunks) if chunks else np.zeros((0, size, size), np.uint8)
        arrays[f"{name}_labels"] = labels
        counts[name] = dict(zip(CHESTMNIST_CLASSES, labels.sum(axis=0).tolist()))
    arrays["synthetic"] = np.array(True)
    np.savez(tmp / "chestmnist.npz", **arrays)
    return {"classes": CHESTMNIST_CLASSES, "counts": counts, "n_train": n_train, "n_val": n_val, "n_test": n_test}


# preview


def preview(source: Path, png_path: Path, per_class: int = 4) -> Path:
    """PNG grid: `per_class` example images per class (one row per class, class names as titles)."""
    import matplotlib.pyplot as plt

    from kit.plots import save_figure

    rows = _preview_rows(Path(source), per_class)
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.6 * per_class, 1.7 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255)
            if c == 0:
                ax.set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    return save_figure(fig, png_path)


def _preview_rows(source: Path, per_class: int) -> list[tuple[str, list[np.ndarray]]]:
    """(class name, up to `per_class` images) per class of a `kit synth` folder."""
    rows: list[tuple[str, list[np.ndarray]]] = []
    if (source / "train.csv").is_file():
        frame = pd.read_csv(source / "train.csv", dtype={"id": str})
        classes = [c for c in frame.columns if c not in ("id", "patient_id")]
        for c in classes:
            ids = frame.loc[frame[c] == 1, "id"].head(per_class)
            rows.append((c, [np.asarray(Image.open(source / "train" / f"{i}.png").convert("L")) for i in ids]))
    elif (source / "chestmnist.npz").is_file():
        with np.load(source / "chestmnist.npz") as npz:
            images, labels = npz["train_images"], npz["train_labels"]
        for k, c in enumerate(CHESTMNIST_CLASSES):
            idx = np.flatnonzero(labels[:, k])[:per_class]
            rows.append((c, [images[i] for i in idx]))
        none = np.flatnonzero(labels.sum(axis=1) == 0)[:per_class]
        rows.insert(0, ("no label", [images[i] for i in none]))
    else:
        raise KitError(f"{source}: neither train.csv nor chestmnist.npz found; nothing to preview")
    return rows
