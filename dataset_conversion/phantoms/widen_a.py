"""Domain randomisation of family A (the opt-in "A-wide" family): A's own patient and scanner, widened.

Why: a model trained on family A alone labelled arm muscle, organs at muscle HU and wide air as
muscle on other sites' scans. This module widens what A's own models can express: habitus from
cachectic to obese, myosteatosis, contrast phases from native (organs at muscle HU) to arterial
(vessels far above it), bowel against the abdominal wall, arms beside the trunk, smooth to sharp
kernels, noise from standard to low dose, pixels 0.5-1.0 mm (often non-square), wide air around a
body off the field's centre, circular reconstruction fields and truncation.

Written from family A's parameters only: family B (the external test site) is neither imported
nor copied, so a model trained on A-wide is still scored on a site it never saw.
Every draw comes from its own generator (`wide_rng`), after A's draws of the same patient: plain
family A never calls this module, so its output stays byte for byte what it was.
"""

from __future__ import annotations

import math

import numpy as np

from dataset_conversion.phantoms.anatomy_a import Anatomy, Tissue
from dataset_conversion.phantoms.render_a import body_extent
from dataset_conversion.phantoms.scanner_a import Grid, choose_grid

__all__ = ["widen_anatomy", "wide_grid"]

#: Pixel spacing range (mm, at a 512 matrix; proportionally coarser for smaller matrices).
SPACING_MM: tuple[float, float] = (0.5, 1.0)


def widen_anatomy(an: Anatomy, rng: np.random.Generator) -> None:
    """Widen one drawn patient in place (before its muscle scale is tuned, so SMA targets still hold)."""
    _habitus(an, rng)
    _myosteatosis(an, rng)
    _contrast_phase(an, rng)
    _bowel_against_the_wall(an, rng)
    _arms(an, rng)
    _kernel_and_noise(an, rng)


def _habitus(an: Anatomy, rng: np.random.Generator) -> None:
    """Cachectic (almost no fat, a narrow trunk) to obese (thick fat, a wide visceral compartment)."""
    kind = rng.choice(["cachectic", "as drawn", "obese"], p=[0.25, 0.4, 0.35])
    if kind == "cachectic":
        fat, trunk, weight = rng.uniform(0.12, 0.45), rng.uniform(0.86, 0.97), 0.8
    elif kind == "obese":
        fat, trunk, weight = rng.uniform(1.4, 2.5), rng.uniform(1.05, 1.25), 1.3
    else:
        return
    an.fat = tuple(float(f * fat) for f in an.fat)
    an.half_width *= float(trunk)
    an.y_ant *= float(trunk)
    an.weight_kg = round(an.weight_kg * weight, 1)


def _myosteatosis(an: Anatomy, rng: np.random.Generator) -> None:
    """Fatty muscle: low muscle HU (down to 0 HU) and more intramuscular fat flecks."""
    if rng.random() >= 0.25:
        return
    an.hu[int(Tissue.MUSCLE)] = float(rng.uniform(0.0, 22.0))
    for _ in range(int(rng.integers(4, 14))):
        an.speckles.append((str(rng.choice(["paraL", "paraR", "psoasL", "psoasR"])), *rng.uniform(-0.8, 0.8, 2),
                            float(rng.uniform(0.8, 3.0))))


def _contrast_phase(an: Anatomy, rng: np.random.Generator) -> None:
    """Native scans with organs and bowel at the patient's muscle HU, or strong portal / arterial phases."""
    phase = rng.choice(["as drawn", "native, organs at muscle HU", "portal", "arterial"], p=[0.25, 0.3, 0.25, 0.2])
    hu, muscle = an.hu, an.hu[int(Tissue.MUSCLE)]
    organs = (Tissue.LIVER, Tissue.SPLEEN, Tissue.KIDNEY, Tissue.BOWEL_WALL, Tissue.VESSEL)
    if phase == "native, organs at muscle HU":
        for t in organs:
            hu[int(t)] = float(muscle + rng.normal(0.0, 5.0))
    elif phase == "portal":
        for t, (lo, hi) in zip(organs, ((100, 145), (105, 145), (150, 230), (80, 125), (150, 210))):
            hu[int(t)] = float(rng.uniform(lo, hi))
    elif phase == "arterial":
        for t, (lo, hi) in zip(organs, ((65, 95), (90, 160), (170, 290), (70, 115), (250, 420))):
            hu[int(t)] = float(rng.uniform(lo, hi))


def _bowel_against_the_wall(an: Anatomy, rng: np.random.Generator) -> None:
    """Some small-bowel loops pushed outwards until they meet the wall muscles (bowel paints only into fat)."""
    for lp in an.bowel[2:]:  # the first two are the colon on the flanks
        if rng.random() < 0.35:
            push = float(rng.uniform(1.1, 1.45))
            lp["x"] *= push
            lp["y"] = min((lp["y"] + an.vert_d + 12.0) * push - an.vert_d - 12.0, -an.vert_d * 0.3)


def _arms(an: Anatomy, rng: np.random.Generator) -> None:
    """Arms down beside the trunk (no arms-up positioning): one or both, touching it or a few cm away."""
    if rng.random() >= 0.55:
        return
    sides = (-1.0, 1.0) if rng.random() < 0.8 else (float(rng.choice([-1.0, 1.0])),)
    fat_scale = float(np.clip(an.fat[1] / 25.0, 0.2, 2.5))
    for side in sides:
        muscle = float(rng.uniform(26.0, 42.0) * an.k)
        an.arms.append({
            "side": side, "gap": float(rng.choice([rng.uniform(-3.0, 2.0), rng.uniform(2.0, 40.0)])),
            "dy": float(rng.uniform(-0.25, 0.2)), "muscle": muscle, "fat": float(rng.uniform(3.0, 14.0) * fat_scale),
            "aspect": float(rng.uniform(0.85, 1.2)), "rot": float(rng.uniform(0, math.pi)),
            "bone": float(rng.uniform(9.0, 13.0) * an.k), "bone_shift": float(rng.uniform(0.0, 0.35)),
        })
    an.hu[int(Tissue.ARM_MUSCLE)] = float(an.hu[int(Tissue.MUSCLE)] + rng.normal(3.0, 5.0))
    an.hu[int(Tissue.ARM_FAT)] = float(an.hu[int(Tissue.SUBCUT_FAT)] + rng.normal(0.0, 5.0))
    an.texture[int(Tissue.ARM_MUSCLE)] = 5.0
    an.texture[int(Tissue.ARM_FAT)] = 7.0


def _kernel_and_noise(an: Anatomy, rng: np.random.Generator) -> None:
    """Smooth, standard or sharp (unsharp-masked) kernels; noise from a standard to a low-dose protocol."""
    kernel = rng.choice(["smooth", "standard", "sharp"], p=[0.3, 0.35, 0.35])
    if kernel == "smooth":
        an.blur_mm = float(rng.uniform(0.8, 1.6))
    elif kernel == "sharp":
        an.blur_mm = float(rng.uniform(0.2, 0.4))
        an.sharpen = (float(rng.uniform(0.6, 1.6)), float(rng.uniform(0.8, 1.5)))
    an.noise_sigma = float(math.exp(rng.uniform(math.log(5.0), math.log(45.0))))
    an.circular_fov = bool(rng.random() < 0.6)


def _snap(v: float, lo: float, hi: float) -> float:
    """Spacing on multiples of 1/1024 mm (exact in NIfTI's float32 pixdim, so truth.csv matches the file)."""
    return min(max(round(v * 1024), math.ceil(lo * 1024)), math.floor(hi * 1024)) / 1024


def wide_grid(an: Anatomy, rng: np.random.Generator, wide_rng: np.random.Generator, matrix: int,
              spacing_mm: tuple[float, float] | None, zs: list[float] | None = None) -> Grid:
    """A's field-of-view choice (`choose_grid`) on a wider spacing range, then the body moved off centre.

    Spacing 0.5-1.0 mm (x 512/matrix), non-square in half the cases; a field fitted around trunk and
    arms (tight to loose: wide air) or drawn freely (small spacings truncate large patients); in a third
    of the cases the body sits off centre: wide air on one side, truncation on the other.
    """
    scale = 512.0 / matrix
    lo, hi = SPACING_MM[0] * scale, SPACING_MM[1] * scale
    if spacing_mm is None:
        x0, x1, y0, y1 = body_extent(an, zs)
        width = (x1 - x0) + sum(2 * (a["muscle"] + a["fat"] + an.skin) + max(a["gap"], 0.0) for a in an.arms)
        if wide_rng.random() < 0.55:  # fitted: tight (arms or flanks cut) to loose (wide air)
            sx = width * wide_rng.uniform(0.92, 1.7) / matrix
        else:  # a zoomed reconstruction: small pixels, large patients truncated
            sx = wide_rng.uniform(lo, 0.85 * hi)
        sx = min(max(sx, lo), hi)
        sy = sx
        if wide_rng.random() < 0.5:  # non-square pixels: one axis 5-20 % finer
            finer = sx * wide_rng.uniform(0.8, 0.95)
            sy, sx = (finer, sx) if wide_rng.random() < 0.5 else (sx, finer)
        spacing_mm = (_snap(sy, lo, hi), _snap(sx, lo, hi))
    grid = choose_grid(an, rng, matrix, spacing_mm, zs)
    if wide_rng.random() < 0.33:
        sy, sx = grid.spacing
        dx = wide_rng.uniform(-0.2, 0.2) * matrix * sx
        dy = wide_rng.uniform(-0.05, 0.25) * matrix * sy  # field mostly moved down: wide air below body and table
        grid = Grid(grid.xs + dx, grid.ys + dy)
    return grid
