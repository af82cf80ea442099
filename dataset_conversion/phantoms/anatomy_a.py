"""Family A's patient model: every random anatomical and intensity choice, drawn once into an Anatomy.

Why a module of its own: the draw order is what makes a seed reproducible, so drawing stays apart
from the deterministic geometry (``render_a``) and the scanner (``scanner_a``).
Frame (mm): X towards the patient's Left, Y towards Posterior, origin at the centre of the L3
vertebral body, z towards Superior (0 = middle of L3), as ``sarco_nn.constants.CANONICAL_ORIENTATION``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from dataset_conversion.phantoms.common import SMA_CUTOFF_CM2, SMA_MARGIN_CM2, SMA_RANGE_CM2, VERTEBRA_LABELS
from sarco_nn.errors import SarcoError


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
    ARM_MUSCLE = 22  # muscle of an arm in the field of view (widened A only): muscle HU, never trunk SMA
    ARM_FAT = 23  # subcutaneous fat of an arm: not the trunk's SAT


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
    # domain randomisation (`widen_a`, the opt-in "A-wide" family); the defaults leave family A as it was
    arms: list[dict] = field(default_factory=list)
    sharpen: tuple[float, float] = (0.0, 1.0)  # unsharp-mask amount and sigma (mm) of a sharp kernel

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
    lo, hi = SMA_RANGE_CM2[sex]
    cut = SMA_CUTOFF_CM2[sex]
    if sarcopenic is True:
        hi = cut - SMA_MARGIN_CM2
    elif sarcopenic is False:
        lo = cut + SMA_MARGIN_CM2
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


def draw_anatomy(rng: np.random.Generator, sex: str | None, sarcopenic: bool | None) -> Anatomy:
    """Draw one patient: habitus, muscle target, organ layout, contrast phase and noise."""
    if sex is None:
        sex = "M" if rng.random() < 0.5 else "F"
    if sex not in ("M", "F"):
        raise SarcoError(f"phantom sex must be 'M' or 'F', got {sex!r}")
    male = sex == "M"
    target = _target_sma(rng, sex, sarcopenic)
    lo, hi = SMA_RANGE_CM2[sex]
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


