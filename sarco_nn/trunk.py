"""Tissue outside the trunk is not trunk tissue: predicted labels are kept only inside the trunk.

SMA at L3 is the muscle of the trunk. Arms in the field of view (arms down on a trauma or PET-CT
scan, a patient who cannot raise them) lie apart from the trunk on the slice, and a network trained
on scans without arms labels their muscle as skeletal muscle (measured on site-B phantoms: 5.6 cm²
of false muscle per case, mean |SMA error| 20.5 % -> 14.4 % with this rule; `bench/results/
external_validation`). The trunk is the largest body region of the slice (`ct_checks.body_region`),
so a rule of anatomy, not of the training data, removes them. An arm pressed against the trunk
joins its region and is kept: the rule never removes tissue connected to the trunk. It is
`sarco predict`'s default (`constants.DEFAULT_TRUNK_ONLY`); `--keep-outside-trunk` counts everything.

On the real CT of ../shared/data (TotalSegmentator's example, T11-L2) the rule keeps 100 % of the
reference skeletal muscle, subcutaneous and torso fat (tests/test_trunk.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.ct_checks import body_region
from sarco_nn.status import Reason

__all__ = ["MAX_OUTSIDE_TRUNK_SHARE", "TrunkRestriction", "restrict_to_trunk"]

#: Above this share of the predicted muscle lying outside the trunk region the slice is unusual
#: (the "trunk" may be something else: a table, a truncated body cut in two): a person looks first.
MAX_OUTSIDE_TRUNK_SHARE: float = 0.25


@dataclass(frozen=True)
class TrunkRestriction:
    """A segmentation restricted to the trunk, and what was removed."""

    segmentation: np.ndarray
    muscle_removed_cm2: float
    muscle_removed_share: float  # of the predicted muscle before the restriction

    def reasons(self) -> list[Reason]:
        """A review reason when much of the muscle lay outside the trunk region."""
        if self.muscle_removed_share <= MAX_OUTSIDE_TRUNK_SHARE:
            return []
        return [Reason("muscle_outside_trunk",
                       f"{self.muscle_removed_share:.0%} of the predicted muscle ({self.muscle_removed_cm2:.1f} cm²) "
                       f"lay outside the largest body region and was not counted; check the overlay "
                       f"(predict --keep-outside-trunk counts it)")]


def restrict_to_trunk(segmentation: np.ndarray, ct_hu: np.ndarray, spacing_yx_mm: tuple[float, float]) -> TrunkRestriction:
    """Set every label outside the trunk (the largest body region of `ct_hu`) to background.

    `segmentation` and `ct_hu` are one axial plane (y, x) on the same grid; the input is not modified.
    """
    segmentation = np.asarray(segmentation)
    if segmentation.shape != np.shape(ct_hu):
        raise ValueError(f"segmentation {segmentation.shape} and CT {np.shape(ct_hu)} differ in shape")
    trunk = body_region(ct_hu)
    outside = ~trunk & (segmentation != 0)
    muscle = segmentation == MUSCLE_LABEL
    removed = int((outside & muscle).sum())
    restricted = np.where(trunk, segmentation, 0).astype(segmentation.dtype)
    pixel_cm2 = float(spacing_yx_mm[0]) * float(spacing_yx_mm[1]) / 100.0
    return TrunkRestriction(restricted, removed * pixel_cm2, removed / int(muscle.sum()) if muscle.any() else 0.0)
