"""Family B's scanner and protocol ("site B"): field of view, table, contrast phase, image formation.

Why its own model: what differs between hospitals is mostly here. The protocol draws a display field
of view that may crop the patient or leave wide air around a small one, 0.5-1.0 mm (sometimes
non-square) pixels, a circular reconstruction field padded with a vendor's fill value, a table
and mattress of one of several builds, non-contrast / arterial / portal-venous phase, slice
thickness (partial volume: the HU of several planes averaged), a reconstruction kernel applied as an
MTF in the frequency domain (smooth … sharp, with edge overshoot), ramp-shaped quantum noise whose
level follows dose and patient size, beam-hardening cupping and streaks from dense structures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dataset_conversion.phantoms.anatomy_b import PatientB, TissueB

#: Reconstruction kernels: (MTF 10 % frequency in cycles/mm, edge-enhancement boost).
KERNELS: dict[str, tuple[float, float]] = {"smooth": (0.3, 0.0), "standard": (0.45, 0.25),
                                          "sharp": (0.65, 0.9), "very_sharp": (0.85, 1.6)}
PHASES: tuple[str, ...] = ("non_contrast", "arterial", "portal_venous")
THICKNESSES_MM: tuple[float, ...] = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)


@dataclass
class ProtocolB:
    """One scan's acquisition and reconstruction choices (mm, HU)."""

    spacing: tuple[float, float]  # (row = y, column = x)
    centre: tuple[float, float]  # field-of-view centre (x, y) in the patient frame
    circle: bool
    pad_hu: int
    kernel: str
    noise_sd: float
    thickness_mm: float
    phase: str
    table: str  # "curved", "flat" or "none"
    table_hu: float
    table_mm: float
    mattress_mm: float
    cupping_hu: float
    streak_hu: float
    hu: dict[int, tuple[float, float]] = field(default_factory=dict)  # tissue -> (mean, texture sd)

    def plane_offsets(self) -> np.ndarray:
        """z offsets (mm) whose HU are averaged into one slice: the partial volume of a thick slice."""
        if self.thickness_mm <= 1.25:
            return np.zeros(1)
        half = 0.4 * self.thickness_mm
        return np.linspace(-half, half, 3)


def _quantise(v: float) -> float:
    """Multiples of 1/1024 mm survive NIfTI's float32 pixdim exactly (truth.csv must match the file)."""
    return round(v * 1024) / 1024


def draw_protocol(rng: np.random.Generator, p: PatientB, matrix: int, extent: tuple[float, float, float, float],
                  spacing_mm: tuple[float, float] | None = None) -> ProtocolB:
    """Draw the site's protocol for this patient; `extent` is (x0, x1, y0, y1) of the trunk and arms."""
    x0, x1, y0, y1 = extent
    width = x1 - x0
    scale = 512.0 / matrix
    mode = rng.choice(["fit", "wide", "tight"], p=[0.55, 0.25, 0.2])
    fov = {"fit": width * rng.uniform(1.02, 1.3), "wide": 500.0 * rng.uniform(0.95, 1.0),
           "tight": width * rng.uniform(0.78, 0.97)}[str(mode)]
    if spacing_mm is None:
        sx = float(np.clip(fov / matrix, 0.5 * scale, 1.0 * scale))
        sy = sx if rng.random() < 0.7 else float(np.clip(sx * rng.uniform(0.8, 1.2), 0.5 * scale, 1.0 * scale))
        sy, sx = _quantise(sy), _quantise(sx)
    else:
        sy, sx = (float(v) for v in spacing_mm)
    cy = 0.5 * (y0 + y1) + rng.uniform(-15.0, 45.0)  # patients lie off the isocentre, usually low
    kernel = str(rng.choice(list(KERNELS), p=[0.2, 0.4, 0.28, 0.12]))
    dose = rng.choice(["low", "reduced", "standard"], p=[0.25, 0.35, 0.4])
    noise = {"low": rng.uniform(22.0, 40.0), "reduced": rng.uniform(13.0, 22.0), "standard": rng.uniform(6.0, 13.0)}[str(dose)]
    noise *= math.exp((width - 340.0) / 260.0)  # larger patients: fewer photons
    table = str(rng.choice(["curved", "flat", "none"], p=[0.55, 0.35, 0.1]))
    proto = ProtocolB(
        spacing=(sy, sx), centre=(float(rng.normal(0.0, 12.0)), float(cy)), circle=bool(rng.random() < 0.6),
        pad_hu=int(rng.choice([-1024, -2048, -3024])), kernel=kernel, noise_sd=float(np.clip(noise, 5.0, 70.0)),
        thickness_mm=float(rng.choice(THICKNESSES_MM)), phase=str(rng.choice(PHASES, p=[0.4, 0.2, 0.4])),
        table=table, table_hu=float(rng.uniform(-200.0, 500.0)),
        table_mm=float(rng.uniform(4.0, 14.0) if table == "flat" else rng.uniform(15.0, 40.0)),
        mattress_mm=float(rng.choice([0.0, rng.uniform(10.0, 60.0)])), cupping_hu=float(rng.uniform(0.0, 30.0)),
        streak_hu=float(rng.choice([0.0, rng.uniform(15.0, 90.0)], p=[0.4, 0.6])),
    )
    proto.hu = tissue_hu(rng, p, proto.phase)
    return proto


def tissue_hu(rng: np.random.Generator, p: PatientB, phase: str) -> dict[int, tuple[float, float]]:
    """(mean, texture sd) per tissue: myosteatosis lowers muscle HU; contrast lifts organs and vessels."""
    low = {"cachectic": 12.0, "obese": 9.0}.get(p.habitus, 0.0)
    muscle = float(np.clip(rng.normal(55.0 - 0.35 * max(p.age - 35, 0) - low, 8.0), 3.0, 68.0))
    fat = float(rng.normal(-104.0, 8.0))
    ph = PHASES.index(phase)

    def by_phase(*means: float, sd: float) -> tuple[float, float]:
        return float(rng.normal(means[ph], sd)), sd * 0.6

    hu = {
        TissueB.OUTSIDE: (-1000.0, 0.0), TissueB.SKIN: (float(rng.normal(25, 10)), 6.0),
        TissueB.SAT: (fat, 8.0), TissueB.VAT: (fat + float(rng.normal(6.0, 3.0)), 10.0),
        TissueB.IMAT: (min(fat + float(rng.normal(18.0, 6.0)), -45.0), 9.0),
        TissueB.FASCIA: (float(rng.normal(70.0, 10.0)), 5.0), TissueB.MUSCLE: (muscle, float(rng.uniform(5.0, 12.0))),
        TissueB.LIVER: by_phase(58.0, 78.0, 118.0, sd=10.0), TissueB.SPLEEN: by_phase(48.0, 115.0, 122.0, sd=10.0),
        TissueB.KIDNEY: by_phase(33.0, 185.0, 170.0, sd=20.0), TissueB.AORTA: by_phase(45.0, 330.0, 175.0, sd=35.0),
        TissueB.IVC: by_phase(42.0, 75.0, 160.0, sd=15.0), TissueB.SMALL_VESSEL: by_phase(42.0, 260.0, 160.0, sd=30.0),
        TissueB.PANCREAS: by_phase(45.0, 115.0, 95.0, sd=10.0), TissueB.BOWEL_WALL: by_phase(40.0, 85.0, 95.0, sd=10.0),
        TissueB.BOWEL_FLUID: (float(rng.normal(12.0, 6.0)), 4.0), TissueB.BOWEL_GAS: (float(rng.normal(-950.0, 20.0)), 15.0),
        TissueB.STOOL: (float(rng.normal(-40.0, 30.0)), 80.0), TissueB.ORAL_CONTRAST: (float(rng.uniform(220.0, 650.0)), 30.0),
        TissueB.CORTEX: (float(np.clip(rng.normal(1000.0 - 4.0 * max(p.age - 40, 0), 90.0), 550.0, 1250.0)), 40.0),
        TissueB.MARROW: (float(np.clip(rng.normal(260.0 - 2.5 * max(p.age - 30, 0), 30.0), 90.0, 300.0)), 35.0),
        TissueB.CANAL: (float(rng.normal(18.0, 5.0)), 3.0), TissueB.ARM_SKIN: (float(rng.normal(25, 10)), 6.0),
        TissueB.ARM_FAT: (fat, 8.0), TissueB.ARM_MUSCLE: (muscle + float(rng.normal(0.0, 4.0)), 8.0),
        TissueB.ARM_BONE: (float(rng.uniform(600.0, 1100.0)), 50.0), TissueB.TABLE: (0.0, 0.0),
        TissueB.PAD: (float(rng.uniform(-750.0, -250.0)), 20.0), TissueB.DISC: (float(rng.normal(85.0, 12.0)), 6.0),
    }
    return {int(k): v for k, v in hu.items()}


def fov_grid(proto: ProtocolB, matrix: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (xs, ys) of the reconstructed field of view."""
    sy, sx = proto.spacing
    offs = np.arange(matrix) - (matrix - 1) / 2
    return proto.centre[0] + offs * sx, proto.centre[1] + offs * sy


def paint_table(proto: ProtocolB, lab: np.ndarray, xs: np.ndarray, ys: np.ndarray, back_y: float) -> None:
    """Mattress and table under the back, only into air."""
    if proto.table == "none":
        return
    X, Y = xs[None, :], ys[:, None]
    air = lab == TissueB.OUTSIDE
    top = back_y + proto.mattress_mm
    sag = 0.0009 * X**2 if proto.table == "curved" else 0.0 * X
    if proto.mattress_mm > 0:
        lab[air & (Y > back_y - 15.0 - sag) & (Y <= top - sag) & (np.abs(X) < 230.0)] = TissueB.PAD
    board = (Y > top - sag) & (Y <= top - sag + proto.table_mm) & (np.abs(X) < 240.0)
    if proto.table == "curved":  # carbon shell around a foam core
        core = (Y > top - sag + 2.5) & (Y <= top - sag + proto.table_mm - 2.5) & (np.abs(X) < 236.0)
        lab[(lab == TissueB.OUTSIDE) & core] = TissueB.PAD
    lab[(lab == TissueB.OUTSIDE) & board] = TissueB.TABLE


def _band_limited_field(rng: np.random.Generator, shape: tuple[int, int], spacing: tuple[float, float],
                        feature_mm: float) -> np.ndarray:
    """Unit-sd random field with features about `feature_mm` wide (Gaussian-filtered white noise, FFT)."""
    fy = np.fft.fftfreq(shape[0], spacing[0])[:, None]
    fx = np.fft.rfftfreq(shape[1], spacing[1])[None, :]
    h = np.exp(-((fy**2 + fx**2) * (math.pi * feature_mm) ** 2) / 2.0)
    f = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * h, s=shape)
    return f / max(float(f.std()), 1e-9)


def acquire(rng: np.random.Generator, planes: list[np.ndarray], proto: ProtocolB, spacing: tuple[float, float],
            xs: np.ndarray, ys: np.ndarray, body_radius_mm: float) -> np.ndarray:
    """Float HU image on the canvas (xs, ys) from tissue maps of the planes within the slice thickness."""
    shape = planes[0].shape
    n = max(int(t) for t in TissueB) + 1
    mean, tex = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t, (m, s) in proto.hu.items():
        mean[t], tex[t] = m, s
    mean[TissueB.TABLE] = proto.table_hu
    texture = _band_limited_field(rng, shape, spacing, 4.0).astype(np.float32)
    img = np.mean([mean[lab] + tex[lab] * texture for lab in planes], axis=0)
    lab = planes[len(planes) // 2]
    X, Y = xs[None, :], ys[:, None]
    body = (lab != TissueB.OUTSIDE) & (lab != TissueB.TABLE) & (lab != TissueB.PAD)
    rho2 = (X**2 + Y**2) / max(body_radius_mm, 1.0) ** 2
    img -= (proto.cupping_hu * np.clip(1.0 - rho2, 0.0, 1.0) * body).astype(np.float32)
    if proto.streak_hu > 0:
        img += _streaks(rng, lab, X, Y, proto.streak_hu, body_radius_mm) * body
    # reconstruction kernel (MTF with edge overshoot) and ramp-shaped noise, both in the frequency domain
    fc, boost = KERNELS[proto.kernel]
    fy = np.fft.fftfreq(shape[0], spacing[0])[:, None]
    fx = np.fft.rfftfreq(shape[1], spacing[1])[None, :]
    f = np.sqrt(fy**2 + fx**2)
    mtf = np.exp(-((f / fc) ** 2) * 2.3) * (1.0 + boost * (f / fc) ** 2 * np.exp(-((f / fc) ** 2)))
    img = np.fft.irfft2(np.fft.rfft2(img) * mtf, s=shape)
    noise = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * f * mtf, s=shape)
    noise /= max(float(noise.std()), 1e-9)
    sd = proto.noise_sd * np.where(body, 1.0, 0.35)
    return (img + noise * sd).astype(np.float32)


def _streaks(rng: np.random.Generator, lab: np.ndarray, X: np.ndarray, Y: np.ndarray, amp: float,
             body_radius_mm: float) -> np.ndarray:
    """Bright/dark lines through dense structures and lateral photon-starvation bands in wide patients."""
    out = np.zeros(lab.shape, np.float32)
    dense = np.isin(lab, [TissueB.CORTEX, TissueB.ORAL_CONTRAST, TissueB.ARM_BONE])
    if dense.any():
        rows, cols = np.nonzero(dense)
        for _ in range(int(rng.integers(2, 7))):
            i = int(rng.integers(len(rows)))
            x0, y0 = float(X[0, cols[i]]), float(Y[rows[i], 0])
            a = rng.uniform(0.0, np.pi)
            perp = (X - x0) * math.sin(a) - (Y - y0) * math.cos(a)
            out += (amp * rng.choice([-1.0, 1.0]) * np.exp(-(perp**2) / (2 * rng.uniform(0.6, 2.0) ** 2))).astype(np.float32)
    if body_radius_mm > 170.0:  # long lateral paths starve the detector: dark horizontal bands
        for _ in range(int(rng.integers(1, 4))):
            y0 = rng.uniform(-40.0, 60.0)
            out -= (amp * (body_radius_mm - 150.0) / 100.0 * np.exp(-((Y - y0) ** 2) / (2 * 3.0**2))).astype(np.float32)
    return out


def finish(img: np.ndarray, proto: ProtocolB) -> np.ndarray:
    """Stored values: the scanner's -1024 floor, the reconstruction circle's fill (a circle in mm), int16."""
    out = np.clip(np.rint(img), -1024, 3071)
    if proto.circle:
        ny, nx = out.shape
        sy, sx = proto.spacing
        yy, xx = np.ogrid[:ny, :nx]
        radius = min(ny * sy, nx * sx) / 2
        outside = ((yy - (ny - 1) / 2) * sy) ** 2 + ((xx - (nx - 1) / 2) * sx) ** 2 > radius**2
        out[outside] = proto.pad_hu
    return out.astype(np.int16)
