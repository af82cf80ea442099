"""Family A, the demo's training family: a patient (anatomy_a), its tissues (render_a), a scanner (scanner_a).

Why a thin module: it fixes the order of the random draws (patient, slice position, grid, noise), so
a seed always gives the same phantom whichever module a piece of the model lives in.
"""

from __future__ import annotations

import math

import numpy as np

from dataset_conversion.phantoms.anatomy_a import _L3, Anatomy, Tissue, draw_anatomy
from dataset_conversion.phantoms.common import VERTEBRA_LABELS, PhantomSlice, PhantomVolume
from dataset_conversion.phantoms.render_a import body_composition_labels, render_labels, tune_muscle_scale
from dataset_conversion.phantoms.scanner_a import choose_grid, tissue_to_hu
from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.errors import SarcoError


def sample_anatomy(rng: np.random.Generator, sex: str | None = None, sarcopenic: bool | None = None,
                   wide_rng: np.random.Generator | None = None) -> Anatomy:
    """Draw one patient and tune its muscle scale so the L3 muscle area hits the drawn target SMA.

    wide_rng: widen the patient (`widen_a`, the "A-wide" family) with draws from this generator.
    """
    an = draw_anatomy(rng, sex, sarcopenic)
    if wide_rng is not None:
        from dataset_conversion.phantoms.widen_a import widen_anatomy

        widen_anatomy(an, wide_rng)
    tune_muscle_scale(an)
    return an


def _grid(an: Anatomy, rng: np.random.Generator, wide_rng: np.random.Generator | None, matrix: int,
          spacing_mm: tuple[float, float] | None, zs: list[float] | None = None):
    if wide_rng is None:
        return choose_grid(an, rng, matrix, spacing_mm, zs=zs)
    from dataset_conversion.phantoms.widen_a import wide_grid

    return wide_grid(an, rng, wide_rng, matrix, spacing_mm, zs=zs)


def generate_phantom_slice(
    rng: np.random.Generator,
    sex: str | None = None,
    matrix: int = 512,
    spacing_mm: tuple[float, float] | None = None,
    sarcopenic: bool | None = None,
    wide_rng: np.random.Generator | None = None,
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
        wide_rng: domain-randomise anatomy and scanner (`widen_a`; the "A-wide" family) from this
            generator; None (default) is family A exactly.
    """
    an = sample_anatomy(rng, sex=sex, sarcopenic=sarcopenic, wide_rng=wide_rng)
    z = float(rng.uniform(-0.2, 0.2)) * an.level_height(_L3)  # the reader's slice is near mid-L3
    grid = _grid(an, rng, wide_rng, matrix, spacing_mm)
    lab, _ = render_labels(an, z, grid.xs, grid.ys)
    ct = tissue_to_hu(an, lab, grid, rng)
    mask = (lab == Tissue.MUSCLE).astype(np.uint8) * np.uint8(MUSCLE_LABEL)
    tissues = body_composition_labels(an, z, lab, grid.xs, grid.ys)
    return PhantomSlice(ct, mask, tissues, grid.spacing, an.sex, an.height_m, an.weight_kg, an.age,
                        anatomy=lab, anatomy_names={int(t): t.name.lower() for t in Tissue})


def generate_phantom_volume(
    rng: np.random.Generator,
    n_slices: int | None = None,
    slice_spacing_mm: float | None = None,
    matrix: int = 128,
    sex: str | None = None,
    sarcopenic: bool | None = None,
    spacing_mm: tuple[float, float] | None = None,
    wide_rng: np.random.Generator | None = None,
) -> PhantomVolume:
    """Draw a patient and render axial slices from the top of T12 to S1.

    Args:
        n_slices: number of slices; None covers T12 top to S1 (about 45-60 slices at 4-5 mm).
            A given count is centred on the middle of that span (L3 stays inside for n_slices >= 9).
        slice_spacing_mm: distance between slices; None draws 3, 4 or 5 mm.
        matrix, spacing_mm: in-plane size and (row, column) spacing, as in generate_phantom_slice.
        sarcopenic: forces the class of the L3 slice's muscle area (144 / 92 cm² cutoffs).
        wide_rng: as in generate_phantom_slice.
    """
    an = sample_anatomy(rng, sex=sex, sarcopenic=sarcopenic, wide_rng=wide_rng)
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
    grid = _grid(an, rng, wide_rng, matrix, spacing_mm, zs=[float(zs[0]), 0.0, float(zs[-1])])
    shape = (n, len(grid.ys), len(grid.xs))
    ct = np.empty(shape, np.int16)
    mask = np.empty(shape, np.uint8)
    vert = np.empty(shape, np.uint8)
    tissues = np.empty(shape, np.uint8)
    for i, z in enumerate(zs):
        lab, vert[i] = render_labels(an, float(z), grid.xs, grid.ys)
        ct[i] = tissue_to_hu(an, lab, grid, rng)
        mask[i] = (lab == Tissue.MUSCLE) * np.uint8(MUSCLE_LABEL)
        tissues[i] = body_composition_labels(an, float(z), lab, grid.xs, grid.ys)
    sy, sx = grid.spacing
    return PhantomVolume(ct, mask, tissues, vert, l3, (dz, sy, sx), an.sex, an.height_m, an.weight_kg, an.age)
