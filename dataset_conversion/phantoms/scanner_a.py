"""Family A's scanner: field of view and pixel grid, then HU from labels (texture, kernel blur, noise).

Why apart from the anatomy: what a scanner does to a patient (grid, reconstruction, noise) is a
different set of choices from the patient, and family B replaces exactly this part with its own model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dataset_conversion.phantoms.anatomy_a import Anatomy, Tissue
from dataset_conversion.phantoms.render_a import body_extent
from sarco_nn.errors import SarcoError


@dataclass
class Grid:
    """Pixel centres in the anatomy frame: xs (columns, towards Left), ys (rows, towards Posterior)."""

    xs: np.ndarray
    ys: np.ndarray

    @property
    def spacing(self) -> tuple[float, float]:
        return (float(self.ys[1] - self.ys[0]), float(self.xs[1] - self.xs[0]))


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
        lut[t] = an.hu.get(int(t), -1000.0)  # tissues a patient lacks (arms) never occur in its labels
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
    amount, sigma_mm = an.sharpen
    if amount > 0:  # sharp reconstruction kernel: unsharp mask, overshoot at edges
        img = img + amount * (img - gaussian_filter(img, (sigma_mm / sy, sigma_mm / sx), truncate=3.0))
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.6, truncate=3.0)
    img += noise * (an.noise_sigma / max(float(noise.std()), 1e-6))
    if an.circular_fov:  # outside the reconstruction circle scanners store padding
        Y, X = np.ogrid[: shape[0], : shape[1]]
        rr = ((Y - (shape[0] - 1) / 2) / (shape[0] / 2)) ** 2 + ((X - (shape[1] - 1) / 2) / (shape[1] / 2)) ** 2
        img[rr > 1.0] = -1024.0
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


