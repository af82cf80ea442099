"""Synthetic axial CT at L3 with an exact skeletal-muscle mask.

Why: no public dataset ships expert L3 muscle masks, so converters, training plumbing and the
SMA/SMI arithmetic are exercised on phantoms whose true muscle area is known to the pixel.
The anatomy is deliberately not trivial: bowel loops, kidneys and the liver tip sit at muscle-like
HU and touch the muscles, fat planes split the abdominal wall, bone replaces muscle around the spine.

Geometry (all in mm), "anatomy frame": X increases towards the patient's Left, Y towards Posterior,
origin at the centre of the L3 vertebral body, z towards Superior (0 = middle of L3). This is the
LPS convention of ``sarco_nn.constants.CANONICAL_ORIENTATION``: array rows follow Y, columns follow X.
Everything random is drawn once into an :class:`Anatomy`; rendering is deterministic, so one patient
can be rendered at many z (see ``phantom_volume.py``) or on a coarse grid to tune its muscle area.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Callable

import numpy as np

from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.errors import SarcoError
from sarco_nn.thresholds import THRESHOLD_SETS

# The generator's truth label uses the reference study's built-in `paper` set (fixed cut-offs, never
# user-edited), taken from the one place the toolkit defines thresholds.
_SMA_CUTOFF_CM2: dict[str, float] = {sex: THRESHOLD_SETS["paper"].cutoff_for(sex) for sex in ("M", "F")}
# Target SMA ranges (cm²) per sex: [lo, hi] overall, and the sarcopenic / non-sarcopenic sub-ranges
# keep a margin from the cutoff so that rasterisation never flips the requested class.
_SMA_RANGE_CM2: dict[str, tuple[float, float]] = {"M": (108.0, 200.0), "F": (68.0, 140.0)}
_SMA_MARGIN_CM2 = 5.0


class Tissue(IntEnum):
    """Internal tissue labels of the rendered label map (only MUSCLE goes into the mask)."""

    AIR = 0
    TABLE = 1
    TABLE_FOAM = 2
    SKIN = 3
    SUBCUT_FAT = 4
    VISC_FAT = 5
    IM_FAT = 6  # intermuscular / intramuscular fat: same HU family, never muscle
    MUSCLE = 7
    BOWEL_WALL = 8
    FLUID = 9
    GAS = 10
    FECES = 11
    LIVER = 12
    SPLEEN = 13
    KIDNEY = 14
    VESSEL = 15
    CORTICAL = 16
    TRABECULAR = 17
    CSF = 18
    DISC = 19
    CALCIUM = 20
    ORAL = 21  # positive oral contrast in a bowel loop


#: TotalSegmentator vertebra numbering, cranial to caudal.
VERTEBRA_LABELS: dict[str, int] = {"T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}
_L3 = VERTEBRA_LABELS["L3"]
# Level coordinate u: 0 at the L3 centre, +1 per vertebra cranially (T12 = +3), -1 caudally (S1 = -3).
_U = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
_PROFILES: dict[str, np.ndarray] = {  # z-variation of the anatomy, sampled at _U (S1 ... T12)
    "psoas": np.array([1.15, 1.35, 1.25, 1.0, 0.7, 0.4, 0.12]),
    "paraspinal": np.array([0.55, 0.8, 0.95, 1.0, 1.02, 1.03, 1.05]),
    "ql": np.array([0.0, 0.3, 0.8, 1.0, 1.0, 0.8, 0.5]),
    "oblique": np.array([1.0, 1.0, 1.0, 1.0, 0.92, 0.8, 0.65]),
    "width": np.array([1.08, 1.03, 0.99, 0.98, 1.0, 1.03, 1.06]),
    "depth": np.array([0.97, 0.98, 1.0, 1.0, 1.02, 1.05, 1.08]),
    "vert_size": np.array([1.1, 1.08, 1.04, 1.0, 0.96, 0.92, 0.88]),
    "spleen": np.array([0.0, 0.0, 0.0, 0.0, 0.2, 0.6, 1.0]),
}


# ----------------------------------------------------------------------------------- public API
@dataclass
class PhantomSlice:
    """One synthetic axial L3 slice, LPS array layout (row 0 anterior, column 0 patient right)."""

    ct_hu: np.ndarray  # int16 (rows=y, cols=x), HU
    muscle_mask: np.ndarray  # uint8 same shape, 1 = skeletal muscle
    spacing_mm: tuple[float, float]  # (row spacing = y, column spacing = x)
    sex: str  # "M" or "F"
    height_m: float
    weight_kg: float
    age: int

    @property
    def true_sma_cm2(self) -> float:
        """Exact muscle area: pixel count × row spacing × column spacing (mm² → cm²)."""
        return float(np.count_nonzero(self.muscle_mask)) * self.spacing_mm[0] * self.spacing_mm[1] / 100.0

    @property
    def sarcopenic_truth(self) -> bool:
        return self.true_sma_cm2 < _SMA_CUTOFF_CM2[self.sex]


def generate_phantom_slice(
    rng: np.random.Generator,
    sex: str | None = None,
    matrix: int = 512,
    spacing_mm: tuple[float, float] | None = None,
    sarcopenic: bool | None = None,
) -> PhantomSlice:
    """Draw a patient and render the axial slice through (near) the middle of L3.

    Args:
        rng: source of all randomness (same rng state → same slice).
        sex: "M" / "F"; drawn at random when None.
        matrix: rows = columns of the image.
        spacing_mm: (row, column) pixel spacing; when None it is chosen so the body fills the field
            of view like a clinical scan (0.6-1.0 mm for 512², proportionally coarser for smaller
            matrices, sometimes non-square). A given spacing too small for the body truncates it.
        sarcopenic: force the class by the 144 / 92 cm² cutoffs (with a margin); None draws the
            SMA from a range that straddles the cutoff.
    """
    an = sample_anatomy(rng, sex=sex, sarcopenic=sarcopenic)
    z = float(rng.uniform(-0.2, 0.2)) * an.level_height(_L3)  # the reader's slice is near mid-L3
    grid = choose_grid(an, rng, matrix, spacing_mm)
    lab, _ = render_labels(an, z, grid.xs, grid.ys)
    ct = tissue_to_hu(an, lab, grid, rng)
    mask = (lab == Tissue.MUSCLE).astype(np.uint8) * np.uint8(MUSCLE_LABEL)
    return PhantomSlice(ct, mask, grid.spacing, an.sex, an.height_m, an.weight_kg, an.age)


# ----------------------------------------------------------------------------------- the patient
@dataclass
class Anatomy:
    """Every random choice for one patient (mm, HU); rendering reads it and draws nothing."""

    sex: str
    height_m: float
    weight_kg: float
    age: int
    target_sma_cm2: float
    k: float  # skeletal scale
    s: float = 1.0  # muscle scale, tuned so the L3 muscle area hits target_sma_cm2
    # abdominal outline: fascia (outer boundary of the muscle ring) and subcutaneous fat
    half_width: float = 120.0
    y_ant: float = -100.0
    n_ant: float = 2.1
    n_post: float = 2.8
    contour_wobble: np.ndarray = field(default_factory=lambda: np.zeros((4, 2)))
    groove: float = 3.0
    fat: tuple[float, float, float] = (20.0, 20.0, 15.0)  # anterior, lateral, posterior
    fat_wobble: np.ndarray = field(default_factory=lambda: np.zeros((4, 2)))
    skin: float = 2.0
    # abdominal wall band (thickness in mm at s = 1, angles in rad from anterior midline)
    rectus_th: float = 10.0
    rectus_end: float = 0.6
    linea_alba_mm: float = 4.0
    oblique_th: float = 12.0
    oblique_end: float = 2.25
    lat_th: float = 4.0
    lat_end: float = 2.7
    planes: tuple[float, float] = (0.35, 0.68)
    wall_asym: float = 0.0
    # spine and posterior muscles
    vert_w: float = 23.0
    vert_d: float = 17.0
    cortex: float = 1.5
    psoas: tuple[float, float, float] = (17.0, 20.0, 0.2)  # a (lat), b (AP), rotation
    paraspinal: tuple[float, float] = (32.0, 25.0)
    ql: tuple[float, float, float] = (15.0, 9.0, 0.5)
    wobbles: dict[str, np.ndarray] = field(default_factory=dict)
    speckles: list[tuple[str, float, float, float]] = field(default_factory=list)
    # organs and bowel
    kidneys: list[dict] = field(default_factory=list)
    liver_tip: float = 0.2
    liver_pos: tuple[float, float] = (0.6, 0.0)
    aorta_r: float = 11.0
    calcium: list[float] = field(default_factory=list)
    bowel: list[dict] = field(default_factory=list)
    mes_vessels: list[tuple[float, float, float, float]] = field(default_factory=list)
    # levels: label -> (z_top, z_bottom) of the vertebral body
    levels: dict[int, tuple[float, float]] = field(default_factory=dict)
    iliac: tuple[float, float] = (80.0, 8.0)  # wing radius, thickness
    table: bool = True
    # intensities
    hu: dict[int, float] = field(default_factory=dict)
    texture: dict[int, float] = field(default_factory=dict)
    noise_sigma: float = 12.0
    blur_mm: float = 0.5
    circular_fov: bool = False

    def level_height(self, label: int) -> float:
        top, bot = self.levels[label]
        return top - bot

    def u_of_z(self, z: float) -> float:
        """Level coordinate: 0 at the L3 centre, +1 per vertebra towards T12, -1 towards S1."""
        labels = sorted(self.levels)  # 26 (S1) ... 32 (T12): caudal to cranial
        centres = [0.5 * sum(self.levels[lb]) for lb in labels]
        return float(np.interp(z, centres, [lb - _L3 for lb in labels]))

    def profile(self, name: str, z: float) -> float:
        return float(np.interp(self.u_of_z(z), _U, _PROFILES[name]))

    def y_post(self) -> float:
        """Posterior extent of the fascia: behind the paraspinal muscles at L3."""
        return self.vert_d + 12.0 * self.k + 2.0 * self.paraspinal[1] * self.s + 2.0

    @property
    def bmi(self) -> float:
        return self.weight_kg / self.height_m**2


def _wobble(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """Fourier coefficients (amplitude, phase) for harmonics 2..n+1: smooth, non-identical outlines."""
    return np.stack([rng.normal(0.0, amp, n), rng.uniform(0, 2 * np.pi, n)], axis=1)


def _target_sma(rng: np.random.Generator, sex: str, sarcopenic: bool | None) -> float:
    lo, hi = _SMA_RANGE_CM2[sex]
    cut = _SMA_CUTOFF_CM2[sex]
    if sarcopenic is True:
        hi = cut - _SMA_MARGIN_CM2
    elif sarcopenic is False:
        lo = cut + _SMA_MARGIN_CM2
    return float(rng.uniform(lo, hi))


def _levels(rng: np.random.Generator, k: float) -> dict[int, tuple[float, float]]:
    """Vertebral body spans (z_top, z_bottom) with L3 centred on z = 0; discs in between."""
    heights = {32: 23.0, 31: 25.0, 30: 27.0, 29: 28.0, 28: 28.0, 27: 27.0, 26: 32.0}
    discs = {32: 7.0, 31: 8.5, 30: 9.5, 29: 10.0, 28: 10.5, 27: 10.0}  # disc below that vertebra
    h = {lb: v * k * rng.uniform(0.93, 1.07) for lb, v in heights.items()}
    d = {lb: v * k * rng.uniform(0.85, 1.15) for lb, v in discs.items()}
    levels = {_L3: (h[_L3] / 2, -h[_L3] / 2)}
    for lb in range(_L3 + 1, 33):  # cranial
        bottom = levels[lb - 1][0] + d[lb]
        levels[lb] = (bottom + h[lb], bottom)
    for lb in range(_L3 - 1, 25, -1):  # caudal
        top = levels[lb + 1][1] - d[lb + 1]
        levels[lb] = (top, top - h[lb])
    return levels


def _draw_anatomy(rng: np.random.Generator, sex: str | None, sarcopenic: bool | None) -> Anatomy:
    """Draw one patient: habitus, muscle target, organ layout, contrast phase and noise."""
    if sex is None:
        sex = "M" if rng.random() < 0.5 else "F"
    if sex not in ("M", "F"):
        raise SarcoError(f"phantom sex must be 'M' or 'F', got {sex!r}")
    male = sex == "M"
    target = _target_sma(rng, sex, sarcopenic)
    lo, hi = _SMA_RANGE_CM2[sex]
    frailty = 1.0 - (target - lo) / (hi - lo)  # 1 = least muscle of the range
    age = int(np.clip(rng.normal(55 + 18 * frailty, 12), 22, 92))
    # taller patients carry more muscle: the frame follows the target, loosely
    height = float(np.clip(rng.normal((1.76 if male else 1.63) + 0.04 * (0.5 - frailty), 0.06), 1.45, 2.02))
    bmi = float(np.clip(rng.normal((27.0 if male else 26.5) - 2.5 * frailty, 4.5 if male else 5.5), 16.5, 42.0))
    weight = bmi * height**2
    k = height / 1.70 * (1.0 if male else 0.93)
    ob = bmi - 22.0
    visc = (1.25 if male else 0.8) * rng.uniform(0.7, 1.3)
    subq = (1.0 if male else 1.5) * rng.uniform(0.7, 1.3)
    f_ant = float(np.clip(6.0 + 1.9 * subq * ob, 3.0, 85.0))
    an = Anatomy(sex=sex, height_m=round(height, 3), weight_kg=round(weight, 1), age=age, target_sma_cm2=target, k=k)
    an.half_width = k * (138.0 + 2.9 * visc * ob) * rng.uniform(0.95, 1.05)
    an.y_ant = -k * (102.0 + 3.4 * visc * ob) * rng.uniform(0.93, 1.07)
    an.n_ant = rng.uniform(1.9, 2.3)
    an.n_post = rng.uniform(2.5, 3.2)
    an.contour_wobble = _wobble(rng, 4, 0.012)
    an.groove = rng.uniform(1.0, 6.0)
    an.fat = (f_ant, f_ant * rng.uniform(0.7, 1.1), f_ant * rng.uniform(0.5, 0.9))
    an.fat_wobble = _wobble(rng, 4, 0.07)
    an.skin = rng.uniform(1.5, 2.8)
    sx = 1.0 if male else 0.86
    an.rectus_th = 11.0 * sx * rng.uniform(0.85, 1.15)
    an.rectus_end = rng.uniform(0.5, 0.7)
    an.linea_alba_mm = rng.uniform(2.0, 9.0) + (6.0 if rng.random() < 0.1 else 0.0)  # some diastasis
    an.oblique_th = 13.0 * sx * rng.uniform(0.85, 1.15)
    an.oblique_end = rng.uniform(2.1, 2.35)
    an.lat_th = 4.5 * sx * rng.uniform(0.7, 1.3)
    an.lat_end = an.oblique_end + rng.uniform(0.3, 0.5)
    an.planes = (rng.uniform(0.3, 0.4), rng.uniform(0.62, 0.72))
    an.wall_asym = rng.normal(0.0, 0.05)
    an.vert_w = 23.0 * k * rng.uniform(0.93, 1.07)
    an.vert_d = 17.0 * k * rng.uniform(0.93, 1.07)
    an.cortex = rng.uniform(1.2, 2.0)
    an.psoas = (16.5 * sx * rng.uniform(0.85, 1.15), 23.0 * sx * rng.uniform(0.85, 1.15), rng.uniform(0.1, 0.6))
    an.paraspinal = (35.0 * sx * rng.uniform(0.9, 1.1), 27.0 * sx * rng.uniform(0.9, 1.1))
    an.ql = (17.0 * sx * rng.uniform(0.8, 1.2), 10.0 * sx * rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.8))
    an.wobbles = {name: _wobble(rng, 3, 0.035) for name in ("psoasL", "psoasR", "paraL", "paraR", "qlL", "qlR")}
    n_speck = int(rng.poisson(2 + 0.25 * max(age - 30, 0) * (0.5 + frailty)))
    an.speckles = [
        (str(rng.choice(["paraL", "paraR", "psoasL", "psoasR"], p=[0.4, 0.4, 0.1, 0.1])),
         *(rng.uniform(-0.75, 0.75, 2)), rng.uniform(0.8, 2.5))
        for _ in range(n_speck)
    ]
    an.levels = _levels(rng, k)
    for side in (-1.0, 1.0):  # right kidney (X < 0) sits lower than the left
        centre_u = rng.uniform(1.2, 1.8) - (0.4 if side < 0 else 0.0)
        an.kidneys.append({
            "side": side, "u0": centre_u, "half_u": rng.uniform(1.3, 1.8),
            "a": 27.0 * k * rng.uniform(0.85, 1.15), "b": 22.0 * k * rng.uniform(0.85, 1.15),
            "rot": side * rng.uniform(0.4, 0.9), "dx": rng.uniform(-5, 8), "dy": rng.uniform(-5, 8),
            "wob": _wobble(rng, 3, 0.03),
        })
    an.liver_tip = float(rng.choice([0.0, rng.uniform(0.15, 0.45)], p=[0.35, 0.65]))
    an.liver_pos = (rng.uniform(0.45, 0.7), rng.uniform(-0.3, 0.2))
    an.aorta_r = (10.0 + 0.05 * max(age - 40, 0)) * k * rng.uniform(0.9, 1.15)
    n_calc = int(rng.poisson(max(age - 50, 0) / 8))
    an.calcium = [float(rng.uniform(0, 2 * np.pi)) for _ in range(n_calc)]
    an.bowel = _sample_bowel(rng, an, ob)
    an.mes_vessels = [
        (rng.uniform(-0.5, 0.5) * an.half_width, rng.uniform(0.15, 0.7) * an.y_ant, rng.uniform(-120, 110),
         rng.uniform(1.2, 3.0))
        for _ in range(int(rng.integers(4, 14)))
    ]
    an.iliac = (rng.uniform(65, 80) * k * (1.0 if male else 1.08), rng.uniform(6.0, 10.0))
    an.table = bool(rng.random() < 0.8)
    _sample_intensities(rng, an, frailty)
    return an


def _sample_bowel(rng: np.random.Generator, an: Anatomy, ob: float) -> list[dict]:
    """Bowel as ellipsoids in the peritoneal cavity (z from L1 to S1); colon on the flanks."""
    loops: list[dict] = []
    crowd = float(np.clip(1.2 - 0.03 * ob, 0.55, 1.3))  # thin patients: bowel fills the cavity
    n = int(rng.integers(30, 46) * crowd)
    kinds = ["fluid", "gas", "level", "collapsed", "contrast"]
    oral = rng.random() < 0.2
    p = [0.45, 0.17, 0.2, 0.18, 0.0] if not oral else [0.2, 0.12, 0.13, 0.15, 0.4]
    for _ in range(n):
        phi = rng.uniform(-1.9, 1.9)
        rr = math.sqrt(rng.uniform(0.02, 0.8))
        x = rr * an.half_width * 0.85 * math.sin(phi)
        y = -an.vert_d - 12 + rr * (abs(an.y_ant) - an.vert_d) * (-math.cos(phi)) * 0.9
        kind = str(rng.choice(kinds, p=p))
        rad = rng.uniform(7, 15) if kind != "collapsed" else rng.uniform(4, 7)
        loops.append({"x": x, "y": min(y, -an.vert_d * 0.3), "z": rng.uniform(-110, 95),
                      "rx": rad * rng.uniform(0.8, 1.3), "ry": rad * rng.uniform(0.8, 1.3),
                      "rz": rng.uniform(12, 45), "rot": rng.uniform(0, np.pi), "kind": kind,
                      "wall": rng.uniform(1.5, 3.0), "level": rng.uniform(-0.3, 0.5)})
    for side in (-1.0, 1.0):  # ascending (right) and descending (left) colon
        rad = rng.uniform(14, 24) if side < 0 else rng.uniform(10, 17)
        loops.insert(0, {"x": side * (an.half_width - an.oblique_th - rad - rng.uniform(2, 12)),
                         "y": rng.uniform(-0.45, -0.1) * abs(an.y_ant), "z": 0.0, "rx": rad, "ry": rad * 0.9,
                         "rz": 400.0, "rot": 0.0, "kind": str(rng.choice(["feces", "gas", "feces"])),
                         "wall": 2.0, "level": 0.0})
    return loops


def _sample_intensities(rng: np.random.Generator, an: Anatomy, frailty: float) -> None:
    """Per-patient mean HU per tissue: contrast phase, myosteatosis, bone density, noise."""
    contrast = rng.random() < 0.55
    muscle = float(np.clip(rng.normal(50 - 0.3 * max(an.age - 30, 0) - 6 * frailty, 6), 15, 62))
    fat = rng.normal(-100, 7)
    hu = {
        Tissue.AIR: -1000.0, Tissue.TABLE: rng.uniform(100, 350), Tissue.TABLE_FOAM: rng.uniform(-450, -250),
        Tissue.SKIN: rng.normal(45, 8), Tissue.SUBCUT_FAT: fat, Tissue.VISC_FAT: fat + rng.normal(8, 4),
        Tissue.IM_FAT: fat + rng.normal(10, 5), Tissue.MUSCLE: muscle,
        Tissue.BOWEL_WALL: rng.normal(70, 10) if contrast else rng.normal(40, 6),
        Tissue.FLUID: rng.normal(15, 6), Tissue.GAS: rng.normal(-930, 25), Tissue.FECES: rng.normal(-60, 25),
        Tissue.LIVER: rng.normal(105, 12) if contrast else rng.normal(57, 6),
        Tissue.SPLEEN: rng.normal(115, 12) if contrast else rng.normal(48, 5),
        Tissue.KIDNEY: rng.normal(165, 25) if contrast else rng.normal(32, 5),
        Tissue.VESSEL: rng.normal(165, 30) if contrast else rng.normal(42, 5),
        Tissue.CORTICAL: float(np.clip(rng.normal(900 - 3 * max(an.age - 40, 0), 60), 700, 1000)),
        Tissue.TRABECULAR: float(np.clip(rng.normal(280 - 2.2 * max(an.age - 30, 0), 25), 150, 300)),
        Tissue.CSF: rng.normal(15, 4), Tissue.DISC: rng.normal(85, 10), Tissue.CALCIUM: rng.uniform(400, 900),
    }
    hu[Tissue.ORAL] = rng.uniform(180, 400)
    an.hu = {int(k): float(v) for k, v in hu.items()}
    an.texture = {int(Tissue.MUSCLE): 5.0, int(Tissue.SUBCUT_FAT): 7.0, int(Tissue.VISC_FAT): 9.0,
                  int(Tissue.IM_FAT): 8.0, int(Tissue.LIVER): 5.0, int(Tissue.FECES): 70.0,
                  int(Tissue.TRABECULAR): 40.0, int(Tissue.FLUID): 4.0, int(Tissue.KIDNEY): 8.0}
    an.noise_sigma = rng.uniform(8.0, 20.0)
    an.blur_mm = rng.uniform(0.35, 0.8)
    an.circular_fov = bool(rng.random() < 0.4)


# ----------------------------------------------------------------------------------- the grid
@dataclass
class Grid:
    """Pixel centres in the anatomy frame: xs (columns, towards Left), ys (rows, towards Posterior)."""

    xs: np.ndarray
    ys: np.ndarray

    @property
    def spacing(self) -> tuple[float, float]:
        return (float(self.ys[1] - self.ys[0]), float(self.xs[1] - self.xs[0]))


def body_extent(an: Anatomy, zs: list[float] | None = None) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of the skin outline over the given z (mm)."""
    phi = np.linspace(-np.pi, np.pi, 721)
    ext = [np.inf, -np.inf, np.inf, -np.inf]
    for z in zs or [0.0]:
        c = _contours(an, z, phi)
        xb, yb = c["r_body"] * np.sin(phi), c["yc"] - c["r_body"] * np.cos(phi)
        ext = [min(ext[0], xb.min()), max(ext[1], xb.max()), min(ext[2], yb.min()), max(ext[3], yb.max())]
    return tuple(float(v) for v in ext)  # type: ignore[return-value]


def choose_grid(an: Anatomy, rng: np.random.Generator, matrix: int, spacing_mm: tuple[float, float] | None,
                zs: list[float] | None = None) -> Grid:
    """Field of view like a clinical scan: body centred with a margin, table below if it fits."""
    if matrix < 16:
        raise SarcoError(f"phantom matrix must be at least 16 pixels, got {matrix}")
    x0, x1, y0, y1 = body_extent(an, zs)
    if spacing_mm is None:
        scale = 512.0 / matrix
        fov_x = (x1 - x0) * rng.uniform(1.08, 1.35)
        sx = float(np.clip(fov_x / matrix, 0.6 * scale, 1.0 * scale))
        sy = sx
        if rng.random() < 0.3:  # non-square pixels, e.g. 0.7 x 0.8
            sy = sx * rng.uniform(0.85, 0.95)
        sy = float(np.clip(max(sy, (y1 - y0) * 1.06 / matrix), 0.6 * scale, 1.0 * scale))
        # multiples of 1/1024 mm survive NIfTI's float32 pixdim exactly (truth.csv must match the file)
        lo, hi = math.ceil(0.6 * scale * 1024), math.floor(1.0 * scale * 1024)
        sy, sx = (min(max(round(v * 1024), lo), hi) / 1024 for v in (sy, sx))
    else:
        sy, sx = (float(v) for v in spacing_mm)
        if sy <= 0 or sx <= 0:
            raise SarcoError(f"phantom spacing must be positive, got {spacing_mm}")
    cx = 0.5 * (x0 + x1) + rng.uniform(-0.03, 0.03) * matrix * sx
    room = matrix * sy - (y1 - y0)
    cy = 0.5 * (y0 + y1) + (rng.uniform(0.0, 0.35) * room if room > 0 else 0.0)  # table side gets the room
    xs = cx + (np.arange(matrix) - (matrix - 1) / 2) * sx
    ys = cy + (np.arange(matrix) - (matrix - 1) / 2) * sy
    return Grid(xs.astype(np.float64), ys.astype(np.float64))


# ----------------------------------------------------------------------------------- rendering
def _smoothstep(t: np.ndarray | float) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _bump(x: np.ndarray, a: float, b: float, ea: float, eb: float) -> np.ndarray:
    """1 inside [a+ea, b-eb], smooth ramps to 0 at a and b."""
    return _smoothstep((x - a) / ea) * (1.0 - _smoothstep((x - (b - eb)) / eb))


def _harmonics(phi: np.ndarray, coeffs: np.ndarray, first: int = 2) -> np.ndarray:
    out = np.zeros_like(phi)
    for i, (amp, ph) in enumerate(coeffs):
        out += amp * np.cos((first + i) * phi + ph)
    return out


def _contours(an: Anatomy, z: float, phi: np.ndarray) -> dict:
    """Polar outlines about (0, yc) for angle phi (0 = anterior, +pi/2 = patient left)."""
    width, depth = an.profile("width", z), an.profile("depth", z)
    y_post = an.y_post()
    y_ant = an.y_ant * depth
    yc = y_ant + 0.55 * (y_post - y_ant)
    a, b_ant, b_post = an.half_width * width, yc - y_ant, y_post - yc
    sn, cs = np.abs(np.sin(phi)), np.cos(phi)
    ant = cs >= 0
    b = np.where(ant, b_ant, b_post)
    n = np.where(ant, an.n_ant, an.n_post)
    r_f = ((sn / a) ** n + (np.abs(cs) / b) ** n) ** (-1.0 / n)
    r_f = r_f * (1.0 + _harmonics(phi, an.contour_wobble))
    r_f = r_f - an.groove * np.exp(-(((np.pi - np.abs(phi)) / 0.1) ** 2))
    w_ant, w_post = np.maximum(cs, 0) ** 2, np.maximum(-cs, 0) ** 2
    fat = an.fat[0] * w_ant + an.fat[1] * (1 - w_ant - w_post) + an.fat[2] * w_post
    r_body = r_f + fat * (1.0 + _harmonics(phi, an.fat_wobble)) + an.skin
    return {"yc": yc, "r_f": r_f, "r_body": r_body, "a": a, "b_ant": b_ant}


class _Canvas:
    """Label map plus helpers that paint a shape only inside its bounding box (speed)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray):
        self.xs, self.ys = xs, ys
        self.lab = np.zeros((len(ys), len(xs)), np.uint8)
        self.vert = np.zeros((len(ys), len(xs)), np.uint8)

    def window(self, x0: float, x1: float, y0: float, y1: float):
        c0, c1 = np.searchsorted(self.xs, [x0, x1])
        r0, r1 = np.searchsorted(self.ys, [y0, y1])
        if c1 <= c0 or r1 <= r0:
            return None
        sl = (slice(r0, r1), slice(c0, c1))
        return sl, self.xs[c0:c1][None, :], self.ys[r0:r1][:, None]

    def paint(self, shape: tuple[Callable, tuple[float, float, float, float]], label: int,
              into: tuple[int, ...] | None = None, vert: int | None = None) -> np.ndarray | None:
        """Set `label` where the shape holds (and the current label is in `into`); return the mask."""
        fn, bbox = shape
        win = self.window(*bbox)
        if win is None:
            return None
        sl, X, Y = win
        m = fn(X, Y)
        if into is not None:
            m &= np.isin(self.lab[sl], into)
        self.lab[sl][m] = label
        if vert is not None:
            self.vert[sl][m] = vert
        full = np.zeros(self.lab.shape, bool)
        full[sl] = m
        return full


def ellipse(cx: float, cy: float, a: float, b: float, rot: float = 0.0, wob: np.ndarray | None = None):
    """Rotated ellipse (semi-axes a along rotated x, b along rotated y), optionally wobbled outline."""
    a, b = max(a, 1e-3), max(b, 1e-3)
    extra = 1.0 + (np.abs(wob[:, 0]).sum() if wob is not None else 0.0)
    rmax = max(a, b) * extra
    c, s = math.cos(rot), math.sin(rot)

    def fn(X, Y):
        dx, dy = X - cx, Y - cy
        u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
        rho2 = u * u + v * v
        if wob is None:
            return rho2 <= 1.0
        lim = 1.0 + _harmonics(np.arctan2(v, u), wob)
        return rho2 <= lim * lim

    return fn, (cx - rmax, cx + rmax, cy - rmax, cy + rmax)


def capsule(x0: float, y0: float, x1: float, y1: float, width: float):
    """Thick line segment (bone processes, fat planes)."""
    h = width / 2
    dx, dy = x1 - x0, y1 - y0
    ll = max(dx * dx + dy * dy, 1e-9)

    def fn(X, Y):
        t = np.clip(((X - x0) * dx + (Y - y0) * dy) / ll, 0.0, 1.0)
        return (X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2 <= h * h

    return fn, (min(x0, x1) - h, max(x0, x1) + h, min(y0, y1) - h, max(y0, y1) + h)


def render_labels(an: Anatomy, z: float, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue label map and vertebra label map (TotalSegmentator numbers) of the axial plane at z."""
    cv = _Canvas(xs, ys)
    _paint_outline_and_wall(cv, an, z)
    _paint_posterior_muscles(cv, an, z)
    _paint_pelvis(cv, an, z)
    _paint_organs(cv, an, z)
    _paint_bowel(cv, an, z)
    _paint_spine(cv, an, z)
    _paint_ribs(cv, an, z)
    if an.table:
        _paint_table(cv, an, z)
    return cv.lab, cv.vert


def _paint_outline_and_wall(cv: _Canvas, an: Anatomy, z: float) -> None:
    X, Y = cv.xs[None, :], cv.ys[:, None]
    c0 = _contours(an, z, np.zeros(1))
    yc = c0["yc"]
    dy = Y - yc
    phi = np.arctan2(X, -dy)
    r = np.hypot(X, dy)
    c = _contours(an, z, phi)
    r_f, r_b = c["r_f"], c["r_body"]
    lab = cv.lab
    lab[r < r_b] = Tissue.SKIN
    lab[r < r_b - an.skin] = Tissue.SUBCUT_FAT
    lab[r < r_f] = Tissue.VISC_FAT
    # abdominal wall band: rectus (paired, split by the linea alba), obliques + transversus, latissimus
    aphi = np.abs(phi)
    s = an.s * (1.0 + an.wall_asym * np.sign(phi))
    la = an.linea_alba_mm / 2 / float(c0["r_f"][0])
    rect = an.rectus_th * s * _bump(aphi, la, an.rectus_end, 0.04, 0.2)
    obl = an.oblique_th * s * an.profile("oblique", z) * _bump(aphi, an.rectus_end - 0.12, an.oblique_end, 0.15, 0.3)
    lat = an.lat_th * s * _bump(aphi, an.oblique_end - 0.3, an.lat_end, 0.12, 0.15)
    th = np.maximum(np.maximum(rect, obl), lat)
    depth = r_f - r
    band = (depth > 0) & (depth < th) & (th > 1.0)
    lab[band] = Tissue.MUSCLE
    # thin fat planes between external oblique, internal oblique and transversus
    d = depth / np.maximum(th, 1e-3)
    pw = 0.6
    planes = band & (obl > rect) & (th > 7.0) & (
        (np.abs(d - an.planes[0]) * th < pw) | (np.abs(d - an.planes[1]) * th < pw))
    lab[planes] = Tissue.IM_FAT


def _paint_posterior_muscles(cv: _Canvas, an: Anatomy, z: float) -> None:
    k, s, vw, vd = an.k, an.s, an.vert_w, an.vert_d
    inside = (Tissue.VISC_FAT, Tissue.MUSCLE)
    centres: dict[str, tuple[float, float, float, float]] = {}
    pa, pb = an.paraspinal[0] * s * an.profile("paraspinal", z), an.paraspinal[1] * s * an.profile("paraspinal", z)
    # L3 geometry fixes the back: paraspinal size caudally shrinks away from the fascia, not the fascia
    py = vd + 12.0 * k + an.paraspinal[1] * s
    for side, name in ((-1, "paraR"), (1, "paraL")):
        cx = side * (4.0 * k + pa * 0.95)
        cv.paint(ellipse(cx, py + (an.paraspinal[1] * s - pb) * 0.3, pa, pb, 0.0, an.wobbles[name]),
                 Tissue.MUSCLE, inside)
        centres[name] = (cx, py, pa, pb)
        # fat plane between multifidus and erector spinae
        cv.paint(capsule(side * 14 * k, py - pb * 0.6, side * (14 * k + pa * 0.5), py + pb * 0.9, 1.0),
                 Tissue.IM_FAT, (Tissue.MUSCLE,))
    cv.paint(capsule(0.0, vd + 40 * k, 0.0, py + pb + 10, 2.5 * k), Tissue.IM_FAT, (Tissue.MUSCLE,))
    qf = an.profile("ql", z)
    if qf > 0.05:
        qa, qb = an.ql[0] * s * qf, an.ql[1] * s * math.sqrt(qf)
        for side, name in ((-1, "qlR"), (1, "qlL")):
            cx = side * (vw + 24 * k + qa * 0.6)
            cv.paint(ellipse(cx, vd + 2 * k, qa, qb, side * an.ql[2], an.wobbles[name]), Tissue.MUSCLE, inside)
    pf = an.profile("psoas", z)
    u = an.u_of_z(z)
    if pf > 0.03:
        a, b = an.psoas[0] * s * pf, an.psoas[1] * s * math.sqrt(pf)
        shift = max(-u, 0.0) * 9.0 * k  # psoas moves laterally and forwards towards the pelvis
        for side, name in ((-1, "psoasR"), (1, "psoasL")):
            cx = side * (vw * an.profile("vert_size", z) + a * 0.85 + shift)
            cy = -vd * 0.15 - shift * 0.6
            cv.paint(ellipse(cx, cy, a, b, side * an.psoas[2], an.wobbles[name]), Tissue.MUSCLE, inside)
            centres[name] = (cx, cy, a, b)
    for name, ru, rv, rad in an.speckles:  # intramuscular fat (myosteatosis), not muscle
        if name in centres:
            cx, cy, a, b = centres[name]
            cv.paint(ellipse(cx + ru * a, cy + rv * b, rad, rad * 0.7, ru * 3), Tissue.IM_FAT, (Tissue.MUSCLE,))


def _paint_pelvis(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Iliac wings near L5/S1 with iliacus inside and gluteus medius outside them."""
    u = an.u_of_z(z)
    g = float(_smoothstep((-u - 1.5) / 1.0))
    if g <= 0.0:
        return
    rw, th = an.iliac
    for side in (-1.0, 1.0):
        # arc from the sacroiliac joint (posteromedial) sweeping laterally and forwards; it opens
        # anteromedially, where the iliacus lies, with the gluteus medius on its outer side
        cx, cy = side * (an.vert_w + 10 * an.k), -30.0 * an.k
        lo, hi = 0.35, 0.35 + 1.55 * g  # angle from posterior, towards lateral

        def arc(r_in: float, r_out: float, cx=cx, cy=cy, side=side, lo=lo, hi=hi):
            def fn(X, Y):
                dx, dy = (X - cx) * side, Y - cy
                r = np.hypot(dx, dy)
                ang = np.arctan2(dx, dy)  # 0 = posterior, +pi/2 = lateral
                return (r >= r_in) & (r <= r_out) & (ang >= lo) & (ang <= hi)

            return fn, (cx - r_out, cx + r_out, cy - r_out, cy + r_out)

        cv.paint(arc(rw - th / 2 - 22 * an.s * g, rw - th / 2), Tissue.MUSCLE, (Tissue.VISC_FAT,))  # iliacus
        cv.paint(arc(rw + th / 2, rw + th / 2 + 28 * an.s * g), Tissue.MUSCLE, (Tissue.VISC_FAT, Tissue.SUBCUT_FAT))
        cv.paint(arc(rw - th / 2, rw + th / 2), Tissue.CORTICAL)
        cv.paint(arc(rw - th / 2 + 1.5, rw + th / 2 - 1.5), Tissue.TRABECULAR)


def _paint_organs(cv: _Canvas, an: Anatomy, z: float) -> None:
    k, vw, vd = an.k, an.vert_w, an.vert_d
    fat = (Tissue.VISC_FAT,)
    u = an.u_of_z(z)
    for kd in an.kidneys:
        t = (u - kd["u0"]) / kd["half_u"]
        if abs(t) >= 1.0:
            continue
        f = math.sqrt(1 - t * t)
        side = kd["side"]
        cx = side * (vw + 2 * an.psoas[0] * an.s * 0.8 + kd["a"] * 0.7) + kd["dx"]
        cy = vd * 0.3 + kd["dy"]
        cv.paint(ellipse(cx, cy, kd["a"] * f, kd["b"] * f, kd["rot"], kd["wob"]), Tissue.KIDNEY, fat)
        if abs(t) < 0.4:  # renal sinus fat at the hilum
            cv.paint(ellipse(cx - side * kd["a"] * 0.45, cy - 4, kd["a"] * 0.35, kd["b"] * 0.35, kd["rot"]),
                     Tissue.VISC_FAT, (Tissue.KIDNEY,))
    liver = an.liver_tip if u < 0.5 else an.liver_tip + (u - 0.5) * 0.45
    liver *= float(_smoothstep((u + 0.6) / 0.6))
    if liver > 0.02:
        c = _contours(an, z, np.array([0.0]))
        cx = -an.half_width * an.liver_pos[0]
        cy = c["yc"] + an.liver_pos[1] * c["b_ant"]
        cv.paint(ellipse(cx, cy, 120 * liver * k, 90 * liver * k, 0.3, an.wobbles.get("psoasR")), Tissue.LIVER, fat)
    sp = an.profile("spleen", z)
    if sp > 0.02:
        cv.paint(ellipse(an.half_width * 0.6, vd + 5, 45 * sp * k, 30 * sp * k, -0.6), Tissue.SPLEEN, fat)
    # aorta (left-anterior of the spine) with wall calcifications; IVC right-anterior
    ar, acx, acy = an.aorta_r, 0.35 * vw, -(vd + an.aorta_r + 3 * k)
    if u > -1.3:  # bifurcation around L4
        cv.paint(ellipse(acx, acy, ar, ar), Tissue.VESSEL, fat)
        for ang in an.calcium:
            cv.paint(ellipse(acx + ar * 0.9 * math.cos(ang), acy + ar * 0.9 * math.sin(ang), 1.6, 1.0, ang),
                     Tissue.CALCIUM, (Tissue.VESSEL, Tissue.VISC_FAT))
        cv.paint(ellipse(-0.9 * vw, -(vd + 9 * k), 13 * k, 8 * k, 0.2), Tissue.VESSEL, fat)
    else:
        for side in (-1.0, 1.0):
            cv.paint(ellipse(side * 0.8 * vw, -(vd + 8 * k), 0.65 * ar, 0.65 * ar), Tissue.VESSEL, fat)
    for x, y, zz, r in an.mes_vessels:
        if abs(zz - z) < 25:
            cv.paint(ellipse(x, y, r, r), Tissue.VESSEL, fat)


def _paint_bowel(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Bowel loops only into visceral fat: they touch but never replace muscle or organs."""
    for lp in an.bowel:
        t = (z - lp["z"]) / lp["rz"]
        if abs(t) >= 1.0:
            continue
        f = math.sqrt(1 - t * t)
        rx, ry = lp["rx"] * f, lp["ry"] * f
        if min(rx, ry) < 2.0:
            continue
        outer = cv.paint(ellipse(lp["x"], lp["y"], rx, ry, lp["rot"]), Tissue.BOWEL_WALL, (Tissue.VISC_FAT,))
        if outer is None or lp["kind"] == "collapsed":
            continue
        w = lp["wall"]
        fn, bbox = ellipse(lp["x"], lp["y"], rx - w, ry - w, lp["rot"])
        win = cv.window(*bbox)
        if win is None or rx - w < 1.0 or ry - w < 1.0:
            continue
        sl, X, Y = win
        m = fn(X, Y) & outer[sl]
        kind = lp["kind"]
        if kind == "level":  # supine: gas floats anteriorly (low Y) over fluid
            lev = lp["y"] + lp["level"] * ry
            content = np.where(Y < lev, Tissue.GAS, Tissue.FLUID)
            cv.lab[sl][m] = np.broadcast_to(content, m.shape)[m]
        else:
            cv.lab[sl][m] = {"fluid": Tissue.FLUID, "gas": Tissue.GAS, "feces": Tissue.FECES,
                             "contrast": Tissue.ORAL}[kind]


def _paint_spine(cv: _Canvas, an: Anatomy, z: float) -> None:
    k = an.k
    body_lab = next((lb for lb, (top, bot) in an.levels.items() if bot <= z <= top), None)
    vs = an.profile("vert_size", z)
    vw, vd = an.vert_w * vs, an.vert_d * vs
    canal_y = an.vert_d + 9 * k
    cv.paint(ellipse(0.0, canal_y, 11 * k, 8 * k), Tissue.CSF)
    if body_lab is None:
        cv.paint(ellipse(0.0, 0.0, vw * 1.02, vd * 1.02), Tissue.DISC)
    else:
        top, bot = an.levels[body_lab]
        near_plate = min(top - z, z - bot) < 1.2  # end plate: dense bone across the body
        notch = ellipse(0.0, vd + 3.0 * k, 9 * k, 5 * k)
        body = ellipse(0.0, 0.0, vw, vd)

        def body_fn(X, Y, b=body[0], n=notch[0]):
            return b(X, Y) & ~n(X, Y)

        cv.paint((body_fn, body[1]), Tissue.CORTICAL, vert=body_lab)
        if not near_plate:
            inner = ellipse(0.0, -an.cortex * 0.3, vw - an.cortex, vd - an.cortex)
            cv.paint(inner, Tissue.TRABECULAR, (Tissue.CORTICAL,))
        if body_lab == VERTEBRA_LABELS["S1"]:  # sacral ala towards the sacroiliac joints
            for side in (-1.0, 1.0):
                cv.paint(capsule(side * vw * 0.6, vd * 0.4, side * (vw + 30 * k), vd + 8 * k, 16 * k),
                         Tissue.CORTICAL, vert=body_lab)
                cv.paint(capsule(side * vw * 0.6, vd * 0.4, side * (vw + 30 * k), vd + 8 * k, 12 * k),
                         Tissue.TRABECULAR, (Tissue.CORTICAL,), vert=body_lab)
    # posterior elements lag the body caudally by ~40 % of its height (facets, spinous process)
    post_lab = None
    for lb, (top, bot) in an.levels.items():
        lag = 0.4 * (top - bot)
        if bot - lag <= z <= top - lag * 0.5:
            post_lab = lb
    if post_lab is None or post_lab == VERTEBRA_LABELS["S1"]:
        return
    ped_y0, ped_y1 = vd * 0.6, canal_y + 5 * k
    lam_y = canal_y + 10 * k
    parts = [
        (-vw * 0.45, ped_y0, -vw * 0.42, ped_y1, 8 * k), (vw * 0.45, ped_y0, vw * 0.42, ped_y1, 8 * k),
        (-vw * 0.42, ped_y1, 0.0, lam_y, 6 * k), (vw * 0.42, ped_y1, 0.0, lam_y, 6 * k),
        (0.0, lam_y, 0.0, lam_y + 28 * k, 7 * k),
    ]
    rel = (z - an.levels[post_lab][1]) / an.level_height(post_lab)
    if rel > -0.1:  # transverse processes at the upper part of the posterior arch
        tp = (an.vert_w + (24 if post_lab == _L3 else 17) * k)
        parts += [(side * vw * 0.42, canal_y, side * tp, canal_y + 4 * k, 5.5 * k) for side in (-1.0, 1.0)]
    for x0, y0, x1, y1, w in parts:
        cv.paint(capsule(x0, y0, x1, y1, w), Tissue.CORTICAL, vert=post_lab)
    for x0, y0, x1, y1, w in parts:
        cv.paint(capsule(x0, y0, x1, y1, w - 3.0), Tissue.TRABECULAR, (Tissue.CORTICAL,), vert=post_lab)


def _paint_ribs(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Lower ribs in the lateral wall above L2 (the reason muscle area drops cranially)."""
    u = an.u_of_z(z)
    if u < 1.3:
        return
    c = _contours(an, z, np.linspace(-np.pi, np.pi, 8))
    n = 1 + int((u - 1.3) * 2.0)
    for side in (-1.0, 1.0):
        for i in range(n):
            phi = side * (2.3 - 0.35 * i - 0.1 * (u - 1.3))
            cr = _contours(an, z, np.array([phi]))
            rr = float(cr["r_f"][0]) - 7.0 * an.s
            x, y = rr * math.sin(phi), c["yc"] - rr * math.cos(phi)
            cv.paint(ellipse(x, y, 6.0 * an.k, 4.0 * an.k, phi), Tissue.CORTICAL)
            cv.paint(ellipse(x, y, 4.0 * an.k, 2.2 * an.k, phi), Tissue.TRABECULAR, (Tissue.CORTICAL,))


def _paint_table(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Curved CT table under the back: shell plus foam core, only in air."""
    y_back = body_extent(an, [z])[3]
    y_top = y_back + 2.0

    def shell(X, Y):
        top = y_top - 0.0006 * X**2
        return (Y >= top) & (Y <= top + 25.0) & (np.abs(X) <= 230.0)

    def core(X, Y):
        top = y_top - 0.0006 * X**2
        return (Y >= top + 2.5) & (Y <= top + 22.5) & (np.abs(X) <= 227.0)

    bbox = (-230.0, 230.0, y_top - 35.0, y_top + 41.0)
    cv.paint((shell, bbox), Tissue.TABLE, (Tissue.AIR,))
    cv.paint((core, bbox), Tissue.TABLE_FOAM, (Tissue.TABLE,))


# ----------------------------------------------------------------------------------- intensities
def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], coarse: int) -> np.ndarray:
    """Unit-variance random field with features about shape/coarse pixels wide."""
    from scipy.ndimage import zoom

    small = rng.standard_normal((coarse, coarse)).astype(np.float32)
    f = zoom(small, (shape[0] / coarse, shape[1] / coarse), order=3, mode="reflect")[: shape[0], : shape[1]]
    return f / max(float(f.std()), 1e-6)


def tissue_to_hu(an: Anatomy, lab: np.ndarray, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """HU image from a label map: tissue means, textures, blur (reconstruction kernel), noise."""
    from scipy.ndimage import gaussian_filter

    lut = np.zeros(max(int(t) for t in Tissue) + 1, np.float32)
    tex = np.zeros_like(lut)
    for t in Tissue:
        lut[t] = an.hu[int(t)]
        tex[t] = an.texture.get(int(t), 0.0)
    img = lut[lab]
    shape = lab.shape
    low = _smooth_field(rng, shape, 12)
    img += tex[lab] * low
    mid = _smooth_field(rng, shape, max(8, shape[0] // 8))
    fec = lab == Tissue.FECES
    if fec.any():  # mottled stool with gas bubbles
        img[fec] += np.where(mid[fec] < -1.1, an.hu[int(Tissue.GAS)] - an.hu[int(Tissue.FECES)], 0.0)
    trab = lab == Tissue.TRABECULAR
    img[trab] += 20.0 * mid[trab]
    sy, sx = grid.spacing
    img = gaussian_filter(img, (an.blur_mm / sy, an.blur_mm / sx), truncate=3.0)
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.6, truncate=3.0)
    img += noise * (an.noise_sigma / max(float(noise.std()), 1e-6))
    if an.circular_fov:  # outside the reconstruction circle scanners store padding
        Y, X = np.ogrid[: shape[0], : shape[1]]
        rr = ((Y - (shape[0] - 1) / 2) / (shape[0] / 2)) ** 2 + ((X - (shape[1] - 1) / 2) / (shape[1] / 2)) ** 2
        img[rr > 1.0] = -1024.0
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


# ----------------------------------------------------------------------------------- SMA targeting
def tune_muscle_scale(an: Anatomy, z: float = 0.0, resolution_mm: float = 1.5, iterations: int = 5) -> None:
    """Set an.s so that the muscle area at z matches an.target_sma_cm2 (coarse grid, fast)."""
    for _ in range(iterations):
        x0, x1, y0, y1 = body_extent(an, [z])
        xs = np.arange(x0 - 5, x1 + 5, resolution_mm)
        ys = np.arange(y0 - 5, y1 + 5, resolution_mm)
        lab, _ = render_labels(an, z, xs, ys)
        area = np.count_nonzero(lab == Tissue.MUSCLE) * resolution_mm**2 / 100.0
        ratio = an.target_sma_cm2 / max(area, 1.0)
        an.s *= ratio ** (1 / 1.6)
        if abs(ratio - 1.0) < 0.005:
            break


def sample_anatomy(rng: np.random.Generator, sex: str | None = None, sarcopenic: bool | None = None) -> Anatomy:
    """Draw one patient and tune its muscle scale so the L3 muscle area hits the drawn target SMA."""
    an = _draw_anatomy(rng, sex, sarcopenic)
    tune_muscle_scale(an)
    return an


# ----------------------------------------------------------------------------------- drop-in writer
@dataclass
class DropinCase:
    """One case of a drop-in dataset, before it is written (also what tests compare against)."""

    case_id: str
    phantom: object  # PhantomSlice or phantom_volume.PhantomVolume
    flipped: bool  # stored RAS-like: direction diag(-1, -1, 1), array flipped in x and y
    z_spacing_mm: float
    origin_z_mm: float


def dropin_case(seed: int, index: int, matrix: int = 512, volumes: bool = False, case_prefix: str = "case") -> DropinCase:
    """Case `index` of the dataset `seed`: sexes alternate, sarcopenic every other pair; independent of n_cases."""
    rng = np.random.default_rng([seed, index])
    sex = "M" if index % 2 == 0 else "F"
    sarcopenic = (index // 2) % 2 == 1
    flipped = index % 3 == 1
    if volumes:
        from dataset_conversion.phantom_volume import generate_phantom_volume

        ph: object = generate_phantom_volume(rng, matrix=matrix, sex=sex, sarcopenic=sarcopenic)
        dz = float(ph.spacing_mm[0])  # type: ignore[attr-defined]
    else:
        ph = generate_phantom_slice(rng, sex=sex, matrix=matrix, sarcopenic=sarcopenic)
        dz = float(rng.choice([2.5, 3.0, 5.0]))
    return DropinCase(f"{case_prefix}_{index:03d}", ph, flipped, dz, float(rng.uniform(-600.0, -100.0)))


def to_sitk(array_zyx: np.ndarray, spacing_zyx: tuple[float, float, float], flipped: bool, origin_z: float):
    """SimpleITK image of an LPS-layout array; `flipped` stores it RAS-like with the same physical anatomy."""
    import SimpleITK as sitk

    sz, sy, sx = spacing_zyx
    nz, ny, nx = array_zyx.shape
    origin = np.array([-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, origin_z])
    if flipped:
        array_zyx = array_zyx[:, ::-1, ::-1]
        origin = origin + np.array([(nx - 1) * sx, (ny - 1) * sy, 0.0])
        direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    else:
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    img.SetSpacing((sx, sy, sz))
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetDirection(direction)
    return img


def write_dropin_dataset(out_dir: Path, n_cases: int, seed: int = 0, matrix: int = 512,
                         volumes: bool = False, case_prefix: str = "case") -> Path:
    """Write the folder a user would drop: images/, masks/, (vertebrae/), clinical.csv, truth.csv.

    Never writes into an existing non-empty folder. Deterministic for a given seed; case i is the
    same whatever n_cases is. Volume cases hold the muscle mask on the L3 slice only.
    """
    import SimpleITK as sitk

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SarcoError("folder exists and is not empty; the phantom writer never overwrites",
                         path=out_dir, fix="give a new or empty output folder")
    if n_cases < 1:
        raise SarcoError(f"n_cases must be at least 1, got {n_cases}")
    for sub in ("images", "masks") + (("vertebrae",) if volumes else ()):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    clinical, truth = [], []
    for i in range(n_cases):
        case = dropin_case(seed, i, matrix, volumes, case_prefix)
        ph = case.phantom
        if volumes:
            sz, sy, sx = ph.spacing_mm  # type: ignore[attr-defined]
            ct = ph.ct_hu  # type: ignore[attr-defined]
            mask = np.zeros_like(ph.muscle_mask)  # type: ignore[attr-defined]
            li = ph.l3_slice_index  # type: ignore[attr-defined]
            mask[li] = ph.muscle_mask[li]  # type: ignore[attr-defined]
            sitk.WriteImage(to_sitk(ph.vertebra_labels, (sz, sy, sx), case.flipped, case.origin_z_mm),  # type: ignore[attr-defined]
                            str(out_dir / "vertebrae" / f"{case.case_id}.nii.gz"), True)
        else:
            sy, sx = ph.spacing_mm  # type: ignore[attr-defined]
            sz = case.z_spacing_mm
            ct, mask = ph.ct_hu[None], ph.muscle_mask[None]  # type: ignore[attr-defined]
        spacing = (sz, sy, sx)
        sitk.WriteImage(to_sitk(ct.astype(np.int16), spacing, case.flipped, case.origin_z_mm),
                        str(out_dir / "images" / f"{case.case_id}.nii.gz"), True)
        sitk.WriteImage(to_sitk(mask.astype(np.uint8), spacing, case.flipped, case.origin_z_mm),
                        str(out_dir / "masks" / f"{case.case_id}.nii.gz"), True)
        sma = float(np.count_nonzero(mask)) * sy * sx / 100.0
        clinical.append([case.case_id, ph.sex, f"{ph.height_m:.3f}", f"{ph.weight_kg:.1f}", ph.age])  # type: ignore[attr-defined]
        row = [case.case_id, repr(sma), int(sma < _SMA_CUTOFF_CM2[ph.sex]), repr(sy), repr(sx)]  # type: ignore[attr-defined]
        truth.append(row + ([ph.l3_slice_index] if volumes else []))  # type: ignore[attr-defined]
    _write_csv(out_dir / "clinical.csv", ["case_id", "sex", "height_m", "weight_kg", "age"], clinical)
    head = ["case_id", "true_sma_cm2", "sarcopenic_truth", "spacing_y_mm", "spacing_x_mm"]
    _write_csv(out_dir / "truth.csv", head + (["l3_slice_index"] if volumes else []), truth)
    return out_dir


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)

