"""Family B's patient model ("site B"): habitus, layered body wall, back muscles, organs, bowel, arms.

Why a second, independent design: a model tuned on family A can learn A's drawing habits instead of
muscle. B is written without A's code: the body is a star-shaped outline built from control radii,
the tissue layers are distances from the skin and from the fascia on the pixel grid (not polar
bands), muscles are blobs with interpolated radii, and the cohort spans cachectic to obese patients,
myosteatosis, arms beside the trunk and organs that touch the muscles. All random choices are drawn
here into a :class:`PatientB`; ``render_b`` draws nothing.

Frame (mm): x towards the patient's Left, y towards Posterior, origin at the centre of the trunk
outline, z towards Superior with z = 0 the middle of L3. Along z the model is simpler than at L3:
vertebral bodies and discs follow drawn levels (T12..S1), psoas / quadratus / erector change size,
organs and bowel are ellipsoids, the trunk outline stays the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from dataset_conversion.phantoms.common import SMA_CUTOFF_CM2
from sarco_nn.errors import SarcoError

#: Family B's own SMA ranges (cm²) and class margin around the shared cut-offs: wider than A's, as a
#: second site's cohort would be (cachectic to very muscular).
SMA_RANGE_B_CM2: dict[str, tuple[float, float]] = {"M": (85.0, 215.0), "F": (55.0, 150.0)}
SMA_MARGIN_B_CM2 = 6.0
HABITUS: tuple[str, ...] = ("cachectic", "lean", "average", "overweight", "obese")
N_CONTROL = 16  # control radii per outline


class TissueB(IntEnum):
    """Family B's rendered tissues (only MUSCLE is trunk skeletal muscle; ARM_MUSCLE is not SMA)."""

    OUTSIDE = 0
    SKIN = 1
    SAT = 2
    FASCIA = 3  # linea alba and fascial sheets: muscle-like HU, not muscle
    MUSCLE = 4
    IMAT = 5
    VAT = 6
    LIVER = 7
    SPLEEN = 8
    KIDNEY = 9
    AORTA = 10
    IVC = 11
    SMALL_VESSEL = 12
    BOWEL_WALL = 13
    BOWEL_FLUID = 14
    BOWEL_GAS = 15
    STOOL = 16
    ORAL_CONTRAST = 17
    CORTEX = 18
    MARROW = 19
    CANAL = 20
    ARM_SKIN = 21
    ARM_FAT = 22
    ARM_MUSCLE = 23
    ARM_BONE = 24
    TABLE = 25
    PAD = 26
    PANCREAS = 27
    DISC = 28


@dataclass
class Blob:
    """Star-shaped region: radius at angle t (from the rotated +x axis) linearly interpolated from radii."""

    cx: float
    cy: float
    radii: np.ndarray
    rot: float = 0.0

    def extent(self, scale: float = 1.0) -> tuple[float, float, float, float]:
        r = float(self.radii.max()) * scale
        return self.cx - r, self.cx + r, self.cy - r, self.cy + r

    def inside(self, X: np.ndarray, Y: np.ndarray, scale: float = 1.0) -> np.ndarray:
        dx, dy = X - self.cx, Y - self.cy
        t = np.mod(np.arctan2(dy, dx) - self.rot, 2 * np.pi)
        k = len(self.radii)
        r = np.interp(t, np.linspace(0.0, 2 * np.pi, k + 1), np.append(self.radii, self.radii[0]))
        return dx * dx + dy * dy <= (r * scale) ** 2


@dataclass
class Arm:
    """An arm lying beside the trunk: skin, fat, a ring of (non-trunk) muscle, humerus."""

    cx: float
    cy: float
    radius: float
    fat_mm: float
    bone_r: float


@dataclass
class ZBlob:
    """A blob with an ellipsoidal extent along z (bowel, organs): it shrinks away from z0."""

    kind: str
    blob: Blob
    z0: float
    z_half: float
    wall_mm: float = 0.0
    content: str = ""
    level: float = 0.0  # gas-fluid level (fraction of the radius, 0 = centre), for content "level"

    def scale_at(self, z: float) -> float:
        t = (z - self.z0) / self.z_half
        return math.sqrt(1.0 - t * t) if abs(t) < 1.0 else 0.0


@dataclass
class PatientB:
    """Every random anatomical choice for one family-B patient (mm, HU)."""

    sex: str
    age: int
    height_m: float
    weight_kg: float
    habitus: str
    target_sma_cm2: float
    outline: Blob  # skin outline of the trunk about (0, 0)
    back_y: float  # the supine back is flattened at this y
    skin_mm: float
    sat_mm: np.ndarray  # SAT thickness at N_CONTROL angles (angle 0 = patient left, pi/2 = posterior)
    rectus_mm: float
    wall_mm: tuple[float, float, float]  # external oblique, internal oblique, transversus
    plane_mm: float  # fat plane between the wall layers
    linea_alba_mm: float
    rectus_half_angle: float  # rad from the anterior midline
    wall_end_angle: float  # where the lateral wall stops posteriorly (rad from anterior midline)
    spine: tuple[float, float, float, float]  # centre y, half width, half depth, cortex
    back_muscles: list[Blob] = field(default_factory=list)  # erector + multifidus, right then left
    psoas: list[Blob] = field(default_factory=list)
    ql: list[Blob] = field(default_factory=list)
    muscle_scale: float = 1.0
    fat_clefts: list[Blob] = field(default_factory=list)  # IMAT inside muscles (myosteatosis)
    organs: list[ZBlob] = field(default_factory=list)
    bowel: list[ZBlob] = field(default_factory=list)
    arms: list[Arm] = field(default_factory=list)
    posterior_imat_x: float = 60.0  # |x| limit of the intermuscular back compartment
    levels: dict[int, tuple[float, float]] = field(default_factory=dict)  # vertebra -> (z_top, z_bottom) of its body

    @property
    def bmi(self) -> float:
        return self.weight_kg / self.height_m**2


def _radii(rng: np.random.Generator, a: float, b: float, jitter: float, n: int = N_CONTROL) -> np.ndarray:
    """Control radii of an ellipse with semi-axes a (x) and b (y), jittered smoothly."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    base = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    noise = rng.normal(0.0, jitter, n)
    noise = (noise + np.roll(noise, 1) + np.roll(noise, -1)) / 3.0  # neighbouring radii move together
    return base * (1.0 + noise)


def _habitus(rng: np.random.Generator, sex: str) -> tuple[str, float]:
    habitus = str(rng.choice(HABITUS, p=[0.12, 0.2, 0.28, 0.22, 0.18]))
    lo, hi = {"cachectic": (14.5, 18.5), "lean": (18.5, 22.0), "average": (22.0, 26.0),
              "overweight": (26.0, 30.0), "obese": (30.0, 46.0)}[habitus]
    return habitus, float(rng.uniform(lo, hi))


def _target(rng: np.random.Generator, sex: str, sarcopenic: bool | None, habitus: str) -> float:
    lo, hi = SMA_RANGE_B_CM2[sex]
    cut = SMA_CUTOFF_CM2[sex]
    if habitus == "cachectic":
        hi = min(hi, cut + 15.0)
    if sarcopenic is True:
        hi = min(hi, cut - SMA_MARGIN_B_CM2)
    elif sarcopenic is False:
        lo = max(lo, cut + SMA_MARGIN_B_CM2)
    return float(rng.uniform(lo, max(hi, lo + 1.0)))


def draw_patient(rng: np.random.Generator, sex: str | None = None, sarcopenic: bool | None = None) -> PatientB:
    """Draw one family-B patient (muscle_scale still 1: ``render_b.fit_muscle_scale`` sets it)."""
    if sex is None:
        sex = "M" if rng.random() < 0.5 else "F"
    if sex not in ("M", "F"):
        raise SarcoError(f"phantom sex must be 'M' or 'F', got {sex!r}")
    male = sex == "M"
    habitus, bmi = _habitus(rng, sex)
    height = float(np.clip(rng.normal(1.75 if male else 1.62, 0.075), 1.42, 2.05))
    age = int(np.clip(rng.normal(62, 14), 19, 95))
    target = _target(rng, sex, sarcopenic, habitus)
    frame = height / 1.7
    fat_excess = max(bmi - 20.0, 0.0)
    # trunk size: a skeletal frame plus visceral bulk (men) and subcutaneous fat (women) with BMI
    visceral = (1.6 if male else 0.9) * rng.uniform(0.6, 1.4)
    inner_a = frame * (118.0 + 3.0 * visceral * fat_excess) * rng.uniform(0.94, 1.06)
    inner_b = frame * (78.0 + 2.4 * visceral * fat_excess) * rng.uniform(0.92, 1.08)
    subq = (0.9 if male else 1.45) * rng.uniform(0.6, 1.4)
    sat_ant = float(np.clip(3.0 + 2.1 * subq * fat_excess, 2.0, 95.0))
    t = np.linspace(0.0, 2 * np.pi, N_CONTROL, endpoint=False)
    # angle 0 = left, pi/2 = posterior, 3pi/2 = anterior: anterior and lateral fat is thicker than at the back
    profile = 0.55 + 0.45 * np.clip(-np.sin(t), 0.0, 1.0) + 0.25 * np.abs(np.cos(t))
    sat = sat_ant * profile * rng.uniform(0.85, 1.15, N_CONTROL)
    if habitus == "obese" and rng.random() < 0.5:  # pannus: extra anterior fat
        sat = sat * (1.0 + 0.5 * np.clip(-np.sin(t), 0.0, 1.0) ** 3)
    sat = np.maximum(sat, 1.5)
    outline = Blob(0.0, 0.0, _radii(rng, inner_a, inner_b, 0.025) + sat, 0.0)
    back_y = float(outline.radii[N_CONTROL // 4]) * rng.uniform(0.9, 0.97)
    sx = 1.0 if male else 0.85
    rectus = 10.0 * sx * rng.uniform(0.75, 1.25)
    w = np.array([5.5, 6.5, 3.5]) * sx * rng.uniform(0.7, 1.3, 3)
    wall = (float(w[0]), float(w[1]), float(w[2]))
    spine_y = back_y - sat[N_CONTROL // 4] - frame * rng.uniform(52.0, 62.0)
    vw, vd = frame * 24.0 * rng.uniform(0.92, 1.08), frame * 17.5 * rng.uniform(0.92, 1.08)
    p = PatientB(
        sex=sex, age=age, height_m=round(height, 3), weight_kg=round(bmi * height**2, 1), habitus=habitus,
        target_sma_cm2=target, outline=outline, back_y=back_y, skin_mm=float(rng.uniform(1.2, 3.2)), sat_mm=sat,
        rectus_mm=rectus, wall_mm=wall, plane_mm=float(rng.uniform(0.7, 2.0)),
        linea_alba_mm=float(rng.uniform(3.0, 14.0)), rectus_half_angle=float(rng.uniform(0.45, 0.75)),
        wall_end_angle=float(rng.uniform(2.0, 2.5)), spine=(spine_y, vw, vd, float(rng.uniform(1.0, 2.2))),
    )
    _draw_back(rng, p, frame, sx)
    _draw_myosteatosis(rng, p)
    _draw_viscera(rng, p, frame, inner_a, inner_b)
    _draw_arms(rng, p, frame, bmi)
    p.levels = _draw_levels(rng, frame)
    return p


#: TotalSegmentator numbers of the vertebrae family B spans (S1 ... T12).
LEVELS_B: dict[str, int] = {"S1": 26, "L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31, "T12": 32}


def _draw_levels(rng: np.random.Generator, frame: float) -> dict[int, tuple[float, float]]:
    """Vertebral body spans along z with L3's centre at z = 0: bodies ~26-31 mm, discs ~7-12 mm."""
    body = {lb: frame * rng.uniform(25.0, 31.0) for lb in LEVELS_B.values()}
    disc = {lb: frame * rng.uniform(7.0, 12.0) for lb in LEVELS_B.values()}
    l3 = LEVELS_B["L3"]
    spans = {l3: (body[l3] / 2, -body[l3] / 2)}
    for lb in range(l3 + 1, max(LEVELS_B.values()) + 1):  # cranial
        bottom = spans[lb - 1][0] + disc[lb]
        spans[lb] = (bottom + body[lb], bottom)
    for lb in range(l3 - 1, min(LEVELS_B.values()) - 1, -1):  # caudal
        top = spans[lb + 1][1] - disc[lb]
        spans[lb] = (top, top - body[lb])
    return spans


def _draw_back(rng: np.random.Generator, p: PatientB, frame: float, sx: float) -> None:
    """Erector spinae + multifidus, psoas and quadratus lumborum on each side, relative to the spine."""
    sy, vw, vd, _ = p.spine
    for side in (-1.0, 1.0):  # right (x < 0) first
        a, b = 33.0 * sx * rng.uniform(0.85, 1.15), 26.0 * sx * rng.uniform(0.85, 1.15)
        p.back_muscles.append(Blob(side * (a * 0.92 + 3.0), sy + vd + 9.0 * frame + b, _radii(rng, a, b, 0.06),
                                   side * rng.uniform(-0.15, 0.25)))
        pa, pb = 15.0 * sx * rng.uniform(0.8, 1.2), 19.0 * sx * rng.uniform(0.8, 1.2)
        p.psoas.append(Blob(side * (vw + pa * 0.8), sy - vd * 0.1, _radii(rng, pa, pb, 0.08), side * rng.uniform(0.2, 0.7)))
        qa, qb = 16.0 * sx * rng.uniform(0.75, 1.25), 8.5 * sx * rng.uniform(0.75, 1.25)
        p.ql.append(Blob(side * (vw + 2 * pa + qa * 0.55), sy + vd * 0.9, _radii(rng, qa, qb, 0.08),
                         side * rng.uniform(0.2, 0.8)))
    p.posterior_imat_x = vw + 30.0 * frame


def _draw_myosteatosis(rng: np.random.Generator, p: PatientB) -> None:
    """Fat clefts inside the back muscles and psoas: more with age and in cachexia or obesity."""
    rate = 1.0 + 0.06 * max(p.age - 40, 0) + (3.0 if p.habitus in ("cachectic", "obese") else 0.0)
    for _ in range(int(rng.poisson(rate))):
        host = p.back_muscles[int(rng.integers(2))] if rng.random() < 0.8 else p.psoas[int(rng.integers(2))]
        ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.7) * float(host.radii.mean())
        r = rng.uniform(0.8, 3.0)
        p.fat_clefts.append(Blob(host.cx + rr * math.cos(ang), host.cy + rr * math.sin(ang),
                                 _radii(rng, r * rng.uniform(1.0, 2.5), r, 0.1, 8), rng.uniform(0, np.pi)))


def _draw_viscera(rng: np.random.Generator, p: PatientB, frame: float, inner_a: float, inner_b: float) -> None:
    """Organs beside the spine and bowel filling the cavity; some touch psoas and the abdominal wall."""
    sy, vw, vd, _ = p.spine
    z = lambda half: (float(rng.uniform(-half, half)), float(rng.uniform(10.0, 40.0)))  # noqa: E731
    ay = sy - vd - 14.0 * frame
    p.organs.append(ZBlob("aorta", Blob(vw * 0.4, ay, _radii(rng, 10.0, 10.0, 0.02, 8) * frame * rng.uniform(0.85, 1.3)),
                          0.0, 1e4))
    p.organs.append(ZBlob("ivc", Blob(-vw * 0.9, ay + 3.0, _radii(rng, 12.0, 8.0, 0.05, 8) * frame), 0.0, 1e4))
    for side in (-1.0, 1.0):
        if rng.random() < 0.75:  # lower pole of a kidney at L3 (or not)
            ka, kb = 24.0 * frame * rng.uniform(0.6, 1.2), 18.0 * frame * rng.uniform(0.6, 1.2)
            p.organs.append(ZBlob("kidney", Blob(side * (vw + 42.0 * frame), sy - vd * 0.2 + rng.uniform(-8, 10),
                                                 _radii(rng, ka, kb, 0.05), side * rng.uniform(0.3, 1.0)),
                                  *z(25.0)))
    if rng.random() < 0.55:  # inferior liver tip on the right, against the lateral wall
        la, lb = inner_a * rng.uniform(0.25, 0.45), inner_b * rng.uniform(0.3, 0.5)
        p.organs.append(ZBlob("liver", Blob(-inner_a + la * 0.9, rng.uniform(-0.2, 0.3) * inner_b,
                                            _radii(rng, la, lb, 0.07), rng.uniform(-0.4, 0.4)), *z(20.0)))
    if rng.random() < 0.2:
        p.organs.append(ZBlob("spleen", Blob(inner_a * 0.75, sy, _radii(rng, 22.0, 14.0, 0.08), -0.6), *z(15.0)))
    if rng.random() < 0.3:
        p.organs.append(ZBlob("pancreas", Blob(rng.uniform(-20, 20), ay - 18.0, _radii(rng, 28.0, 9.0, 0.1), 0.2),
                              *z(12.0)))
    n = int(rng.integers(18, 40))
    oral = rng.random() < 0.25
    kinds = ["fluid", "gas", "level", "stool", "collapsed", "oral"]
    probs = np.array([0.35, 0.15, 0.15, 0.1, 0.25, 0.0]) if not oral else np.array([0.2, 0.1, 0.1, 0.1, 0.15, 0.35])
    for _ in range(n):
        ang = rng.uniform(-np.pi, 0.0)  # anterior half-plane (y < 0) mostly
        rr = math.sqrt(rng.uniform(0.05, 1.0))
        x = rr * math.cos(ang) * inner_a * 0.85
        y = rr * math.sin(ang) * inner_b * 0.9 + rng.uniform(-5, 25)
        kind = str(rng.choice(kinds, p=probs / probs.sum()))
        r = rng.uniform(3.0, 6.0) if kind == "collapsed" else rng.uniform(6.0, 20.0)
        p.bowel.append(ZBlob("bowel", Blob(x, y, _radii(rng, r * rng.uniform(0.8, 1.4), r, 0.08, 10),
                                           rng.uniform(0, np.pi)), *z(20.0),
                             wall_mm=float(rng.uniform(1.0, 3.5)), content=kind, level=float(rng.uniform(-0.4, 0.4))))
    for side in (-1.0, 1.0):  # colon in the flanks, against the lateral wall
        r = rng.uniform(12.0, 25.0)
        p.bowel.append(ZBlob("bowel", Blob(side * (inner_a - r - rng.uniform(8.0, 20.0)), rng.uniform(-0.3, 0.3) * inner_b,
                                           _radii(rng, r, r * 0.85, 0.08, 10)), 0.0, 1e4,
                             wall_mm=2.0, content=str(rng.choice(["stool", "gas", "level"]))))


def _draw_arms(rng: np.random.Generator, p: PatientB, frame: float, bmi: float) -> None:
    """Arms down beside the trunk in some scans (trauma, PET-CT, immobile patients)."""
    if rng.random() >= 0.35:
        return
    half = float(p.outline.radii[0])
    for side in (-1.0, 1.0):
        r = frame * rng.uniform(33.0, 42.0) * (1.0 + 0.012 * max(bmi - 22.0, 0.0))
        gap = rng.uniform(-0.15, 1.2) * 10.0  # < 0: the arm presses into the flank
        p.arms.append(Arm(side * (half + r + gap), rng.uniform(-0.2, 0.5) * r, r,
                          float(r * rng.uniform(0.15, 0.4)), float(rng.uniform(9.0, 13.0) * frame)))
