"""What every phantom family shares: the truth's cut-offs, vertebra numbering and the result types.

Why: a family's anatomy and scanner are its own, but what it hands to the writer (and what tests
and benches compare) must mean the same for every family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.thresholds import THRESHOLD_SETS

# The generator's truth label uses the reference study's built-in `paper` set (fixed cut-offs, never
# user-edited), taken from the one place the toolkit defines thresholds.
SMA_CUTOFF_CM2: dict[str, float] = {sex: THRESHOLD_SETS["paper"].cutoff_for(sex) for sex in ("M", "F")}
# Target SMA ranges (cm²) per sex: [lo, hi] overall, and the sarcopenic / non-sarcopenic sub-ranges
# keep a margin from the cutoff so that rasterisation never flips the requested class.
SMA_RANGE_CM2: dict[str, tuple[float, float]] = {"M": (108.0, 200.0), "F": (68.0, 140.0)}
SMA_MARGIN_CM2 = 5.0

#: TotalSegmentator vertebra numbering, cranial to caudal.
VERTEBRA_LABELS: dict[str, int] = {"T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}


@dataclass
class PhantomSlice:
    """One synthetic axial L3 slice, LPS array layout (row 0 anterior, column 0 patient right)."""

    ct_hu: np.ndarray  # int16 (rows=y, cols=x), HU
    muscle_mask: np.ndarray  # uint8 same shape, 1 = skeletal muscle
    tissue_mask: np.ndarray  # uint8 same shape, sarco_nn.constants.TISSUE_LABELS (muscle 1, imat 2, vat 3, sat 4)
    spacing_mm: tuple[float, float]  # (row spacing = y, column spacing = x)
    sex: str  # "M" or "F"
    height_m: float
    weight_kg: float
    age: int
    # The family's own tissue map of the slice (its tissue enum: organs, bowel, fascia, arm muscle ...) and
    # the enum's names: what a wrongly labelled pixel really was (bench/external_validation.py). Never written
    # to a drop (the writer stores CT, the four-tissue mask, vertebrae, CSVs); None where a generator does not
    # keep it. Kept always, not opt-in: it is the map the masks are computed from (no extra time), uint8, so
    # 0.25 MiB per 512² slice (family B's a view on a 10 % larger canvas plane): 10-11 MiB for 40 cases
    # beside 40 MiB of CT and masks, and the writer holds one case at a time (measured session 7).
    anatomy: np.ndarray | None = field(default=None, repr=False, compare=False)
    anatomy_names: dict[int, str] | None = field(default=None, repr=False, compare=False)

    @property
    def true_sma_cm2(self) -> float:
        """Exact muscle area: pixel count × row spacing × column spacing (mm² → cm²)."""
        return float(np.count_nonzero(self.muscle_mask)) * self.spacing_mm[0] * self.spacing_mm[1] / 100.0

    @property
    def sarcopenic_truth(self) -> bool:
        return self.true_sma_cm2 < SMA_CUTOFF_CM2[self.sex]

    def tissue_areas_cm2(self) -> dict[str, float]:
        """Exact area of every body-composition tissue (cm²)."""
        return tissue_areas_cm2(self.tissue_mask, self.spacing_mm)


@dataclass
class PhantomVolume:
    """A T12→S1 phantom volume; l3_slice_index is the slice nearest the middle of the L3 body."""

    ct_hu: np.ndarray  # int16 (z, y, x), HU
    muscle_mask: np.ndarray  # uint8 (z, y, x), muscle on every slice
    tissue_mask: np.ndarray  # uint8 (z, y, x), TISSUE_LABELS on every slice
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


def tissue_areas_cm2(mask2d: np.ndarray, spacing_yx_mm: tuple[float, float]) -> dict[str, float]:
    """{tissue: area in cm²} of a TISSUE_LABELS mask: pixel count × row × column spacing (mm² → cm²)."""
    pixel_cm2 = float(spacing_yx_mm[0]) * float(spacing_yx_mm[1]) / 100.0
    return {name: float(np.count_nonzero(mask2d == value)) * pixel_cm2 for name, value in TISSUE_LABELS.items()}
