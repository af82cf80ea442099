"""Synthetic abdominal CT volumes from T12 to S1 with vertebra labels and muscle on every slice.

Why: automatic L3 slice selection (the reference study's open problem) needs volumes whose L3 is
known exactly. One patient from ``phantom.sample_anatomy`` is rendered at every z, so the muscle
area changes along the spine as in real scans: psoas grows caudally, ribs replace the lateral wall
cranially, iliac wings with iliacus and gluteus appear at L5/S1. Arrays are LPS, (z, y, x), with
z index increasing towards Superior (index 0 is the most caudal slice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dataset_conversion.phantom import (
    VERTEBRA_LABELS,
    Tissue,
    choose_grid,
    render_labels,
    sample_anatomy,
    tissue_to_hu,
)
from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.errors import SarcoError


@dataclass
class PhantomVolume:
    """A T12→S1 phantom volume; l3_slice_index is the slice nearest the middle of the L3 body."""

    ct_hu: np.ndarray  # int16 (z, y, x), HU
    muscle_mask: np.ndarray  # uint8 (z, y, x), muscle on every slice
    vertebra_labels: np.ndarray  # uint8 (z, y, x), TotalSegmentator numbers (26 S1 ... 32 T12), 0 elsewhere
    l3_slice_index: int
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    sex: str
    height_m: float
    weight_kg: float
    age: int

    def muscle_area_cm2(self) -> np.ndarray:
        """Muscle area of every slice (cm²), in z order."""
        sy, sx = self.spacing_mm[1], self.spacing_mm[2]
        return self.muscle_mask.reshape(len(self.muscle_mask), -1).sum(axis=1) * sy * sx / 100.0

    @property
    def true_sma_cm2(self) -> float:
        """SMA on the L3 slice: what a clinician annotates and what truth.csv reports."""
        return float(self.muscle_area_cm2()[self.l3_slice_index])


def generate_phantom_volume(
    rng: np.random.Generator,
    n_slices: int | None = None,
    slice_spacing_mm: float | None = None,
    matrix: int = 128,
    sex: str | None = None,
    sarcopenic: bool | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> PhantomVolume:
    """Draw a patient and render axial slices from the top of T12 to S1.

    Args:
        n_slices: number of slices; None covers T12 top to S1 (about 45-60 slices at 4-5 mm).
            A given count is centred on the middle of that span (L3 stays inside for n_slices >= 9).
        slice_spacing_mm: distance between slices; None draws 3, 4 or 5 mm.
        matrix, spacing_mm: in-plane size and (row, column) spacing, as in generate_phantom_slice.
        sarcopenic: forces the class of the L3 slice's muscle area (144 / 92 cm² cutoffs).
    """
    an = sample_anatomy(rng, sex=sex, sarcopenic=sarcopenic)
    dz = float(slice_spacing_mm) if slice_spacing_mm is not None else float(rng.choice([3.0, 4.0, 5.0]))
    if dz <= 0:
        raise SarcoError(f"slice spacing must be positive, got {slice_spacing_mm}")
    z_top = an.levels[VERTEBRA_LABELS["T12"]][0] + 4.0
    z_bot = an.levels[VERTEBRA_LABELS["S1"]][1] + 6.0
    if n_slices is None:
        n = int(math.ceil((z_top - z_bot) / dz)) + 1
        z0 = z_bot
    else:
        if n_slices < 1:
            raise SarcoError(f"n_slices must be at least 1, got {n_slices}")
        n = int(n_slices)
        z0 = 0.5 * (z_top + z_bot) - (n - 1) / 2 * dz
    z0 += float(rng.uniform(-0.5, 0.5)) * dz  # the slice grid does not hit mid-L3 exactly
    zs = z0 + dz * np.arange(n)
    l3 = int(np.argmin(np.abs(zs)))  # L3 body centre is z = 0 in the anatomy frame
    if abs(zs[l3]) > 0.5 * an.level_height(VERTEBRA_LABELS["L3"]):
        raise SarcoError(f"{n} slices at {dz} mm do not reach the middle of L3; ask for more slices")
    grid = choose_grid(an, rng, matrix, spacing_mm, zs=[float(zs[0]), 0.0, float(zs[-1])])
    shape = (n, len(grid.ys), len(grid.xs))
    ct = np.empty(shape, np.int16)
    mask = np.empty(shape, np.uint8)
    vert = np.empty(shape, np.uint8)
    for i, z in enumerate(zs):
        lab, vert[i] = render_labels(an, float(z), grid.xs, grid.ys)
        ct[i] = tissue_to_hu(an, lab, grid, rng)
        mask[i] = (lab == Tissue.MUSCLE) * np.uint8(MUSCLE_LABEL)
    sy, sx = grid.spacing
    return PhantomVolume(ct, mask, vert, l3, (dz, sy, sx), an.sex, an.height_m, an.weight_kg, an.age)
