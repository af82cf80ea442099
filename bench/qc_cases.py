"""Held-out cases for bench/qc_bench.py: phantoms of every family, some with a planted failure.

Why its own module: what a case is (family, failure, CT, exact truth) must be the same for every
run and every model, and testable without a model. Each case is drawn by its family's own public
generator at the family's normal matrix (512²) and pixel spacing (A 0.6–1.0 mm, B 0.5–1.0 mm: the
conditions the cpu-preset models are trained on), so a clean case is in-distribution for family A
and "another site" for family B. The truth is always the exact muscle area of the L3 slice of that
patient on the full field of view, whatever was then done to the image.

Planted failures (the CT changes, the truth does not):
``truncated_fov`` the image cut through the muscle (6 % of the muscle's width lost on each side: a
fixed share of the image would miss the body in a wide field of view); ``wrong_level`` the slice 1.2–1.6 L3 body
heights above or below the L3 slice; ``contrast`` +90 HU on every soft tissue; ``noise`` Gaussian,
SD 100 HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Phantom families (dataset_conversion.phantoms.writer.FAMILIES); cases alternate in blocks of len(FAILURES).
FAMILIES: tuple[str, ...] = ("A", "B")
#: One cycle of planted failures; "none" twice, so a third of the cases are clean.
FAILURES: tuple[str, ...] = ("none", "none", "truncated_fov", "wrong_level", "contrast", "noise")
HELD_SEED = 1234  # the training drops use seeds 0-11 (bench/external_validation.py DATA): no shared stream
MATRIX = 512  # both families' normal matrix: 0.5-1.0 mm pixels, as the cpu preset trains on
#: What changes every case when edited: part of the results' signature (bench/qc_bench.py).
CASES_VERSION = 3
#: Share of the muscle's left-right extent a truncated field of view loses on each side.
TRUNCATE_SHARE = 0.06


@dataclass
class HeldCase:
    """One held-out case: the image the model sees and the exact truth of the patient's L3 slice."""

    case_id: str
    family: str  # "A" / "B"
    failure: str  # one of FAILURES
    sex: str
    height_m: float
    ct_hu: np.ndarray  # float32 (y, x), after the planted failure
    spacing_yx_mm: tuple[float, float]
    truth_mask: np.ndarray  # bool (y, x): muscle of the L3 slice on the full, uncut field of view
    true_sma_cm2: float  # truth_mask's pixel count x row x column spacing / 100
    kept_columns: tuple[int, int] | None = None  # truncated_fov: the columns [start, stop) the image keeps


def case_plan(index: int) -> tuple[str, str, str]:
    """(family, failure, sex) of case `index`: every family x failure pair in each 12 cases, both sexes in 24."""
    failure = FAILURES[index % len(FAILURES)]
    family = FAMILIES[(index // len(FAILURES)) % len(FAMILIES)]
    cycle = len(FAILURES) * len(FAMILIES)
    sex = "MF"[(index + index // cycle) % 2]
    return family, failure, sex


def held_case(index: int, seed: int = HELD_SEED, matrix: int = MATRIX) -> HeldCase:
    """Case `index` of the held-out set `seed` (deterministic; independent of how many are drawn)."""
    family, failure, sex = case_plan(index)
    draw = _family_a if family == "A" else _family_b
    ct, spacing, mask, height, rng = draw(index, seed, matrix, sex, failure == "wrong_level")
    ct = ct.astype(np.float32)
    mask = np.asarray(mask) > 0
    kept = None
    if failure == "truncated_fov":
        cols = np.nonzero(mask.any(axis=0))[0]
        margin = TRUNCATE_SHARE * (cols[-1] - cols[0] + 1)
        kept = (int(np.ceil(cols[0] + margin)), int(np.floor(cols[-1] + 1 - margin)))
        ct = ct[:, kept[0]:kept[1]].copy()
    elif failure == "contrast":
        ct[ct > -200] += 90.0
    elif failure == "noise":
        ct += rng.normal(0.0, 100.0, ct.shape).astype(np.float32)
    sy, sx = spacing
    return HeldCase(f"held_{index:04d}", family, failure, sex, float(height), ct, (float(sy), float(sx)), mask,
                    float(np.count_nonzero(mask)) * sy * sx / 100.0, kept)


def _wrong_z(rng: np.random.Generator, l3_body_height_mm: float) -> float:
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(1.2, 1.6)) * l3_body_height_mm


def _family_a(index: int, seed: int, matrix: int, sex: str, wrong_level: bool):
    """Family A exactly as generate_phantom_slice draws it; for a wrong level, the same patient and grid
    with the CT rendered off L3 (the draws up to the L3 labels are generate_phantom_slice's own)."""
    from dataset_conversion.phantoms.family_a import generate_phantom_slice

    rng = np.random.default_rng([seed, index])
    if not wrong_level:
        ph = generate_phantom_slice(rng, sex=sex, matrix=matrix)
        return ph.ct_hu, ph.spacing_mm, ph.muscle_mask, ph.height_m, rng
    from dataset_conversion.phantom import (VERTEBRA_LABELS, Tissue, choose_grid, render_labels, sample_anatomy,
                                            tissue_to_hu)

    l3 = VERTEBRA_LABELS["L3"]
    an = sample_anatomy(rng, sex=sex)
    z = float(rng.uniform(-0.2, 0.2)) * an.level_height(l3)
    grid = choose_grid(an, rng, matrix, None)
    truth, _ = render_labels(an, z, grid.xs, grid.ys)
    wrong, _ = render_labels(an, z + _wrong_z(rng, an.level_height(l3)), grid.xs, grid.ys)
    return tissue_to_hu(an, wrong, grid, rng), grid.spacing, truth == Tissue.MUSCLE, an.height_m, rng


def _family_b(index: int, seed: int, matrix: int, sex: str, wrong_level: bool):
    """Family B exactly as generate_slice draws it (its own stream, as the drop-in writer's); for a wrong
    level, the same patient and protocol imaged off L3 after the L3 slice (whose tissues are the truth)."""
    from dataset_conversion.phantoms import family_b
    from sarco_nn.constants import TISSUE_LABELS

    rng = np.random.default_rng([seed, index, 0xB])
    if not wrong_level:
        ph, _ = family_b.generate_slice(rng, sex=sex, matrix=matrix)
        return ph.ct_hu, ph.spacing_mm, ph.muscle_mask, ph.height_m, rng
    from dataset_conversion.phantoms.anatomy_b import LEVELS_B

    p = family_b.draw_patient(rng, sex=sex)
    family_b.fit_muscle_scale(p)
    proto = family_b.draw_protocol(rng, p, matrix, family_b.trunk_extent(p))
    # family_b keeps its canvas private; generate_slice uses exactly this sequence (tested against it)
    canvas = family_b._Canvas(p, proto, matrix)
    _, lab = canvas.slice(rng, 0.0)
    truth = family_b.composition_mask(lab) == TISSUE_LABELS["muscle"]
    top, bottom = p.levels[LEVELS_B["L3"]]
    ct, _ = canvas.slice(rng, _wrong_z(rng, top - bottom))
    return ct, proto.spacing, truth, p.height_m, rng
