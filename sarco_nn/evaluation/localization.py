"""L3 level agreement: at which slice the prediction was made vs the annotated slice.

For whole volumes `sarco predict` writes the mask on the slice its L3 localizer chose, so a
prediction volume carries its own level. Comparing it with the reference's annotated slice gives
the localization error in slices and mm, and the SMA at the predicted level against the SMA at
the annotated level is the error a user gets end to end (localization + segmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sarco_nn.measure import AxialStack


@dataclass(frozen=True)
class LevelAgreement:
    """Canonical slice indices (0 = most inferior) and the signed error (positive = too superior)."""

    ref_slice: int
    pred_slice: int
    error_slices: int | None  # None: the prediction does not commit to one level (empty or 3-D)
    error_mm: float | None

    def columns(self, ref: AxialStack) -> dict:
        """cases.csv columns: slice indices as the user's viewer counts them (stored order)."""
        return {
            "l3_slice_ref": ref.stored_indices[self.ref_slice],
            "l3_slice_pred": None if self.error_slices is None else ref.stored_indices[self.pred_slice],
            "l3_error_slices": self.error_slices,
            "l3_error_mm": self.error_mm,
        }


def predicted_level(ref: AxialStack, pred: AxialStack, ref_slice: int, label: int) -> LevelAgreement | None:
    """The level of `pred` against the annotated `ref_slice`; None for single-slice images.

    A prediction on exactly one slice commits to that level. An empty prediction, or one drawn on
    several slices including the annotated one (a 3-D segmentation), has no level of its own and
    is measured at the annotated slice. Several slices without the annotated one: the nearest.
    """
    n = ref.array.shape[0]
    if n == 1:
        return None
    labelled = np.flatnonzero((pred.array == label).any(axis=(1, 2)))
    if len(labelled) == 0 or (len(labelled) > 1 and ref_slice in labelled):
        return LevelAgreement(ref_slice, ref_slice, None, None)
    pred_slice = int(labelled[np.argmin(np.abs(labelled - ref_slice))])
    error = pred_slice - ref_slice
    spacing = ref.spacing_z_mm
    return LevelAgreement(ref_slice, pred_slice, error, None if spacing is None else error * spacing)


def level_summary(rows: list[dict]) -> dict | None:
    """Localization figures over the cases that were volumes with a committed level (None: no such case)."""
    located = [r for r in rows if r.get("l3_error_slices") is not None]
    if not located:
        return None
    slices = np.array([abs(r["l3_error_slices"]) for r in located], dtype=float)
    mm = np.array([abs(r["l3_error_mm"]) for r in located if r["l3_error_mm"] is not None], dtype=float)
    annotated = [abs(r["sma_error_annotated_percent"]) for r in located
                 if r.get("sma_error_annotated_percent") is not None and not math.isnan(r["sma_error_annotated_percent"])]
    predicted = [abs(r["sma_error_percent"]) for r in located if not math.isnan(r["sma_error_percent"])]
    return {
        "n": len(located),
        "error_slices_mean_abs": float(slices.mean()),
        "error_slices_max_abs": float(slices.max()),
        "within_1_slice": int((slices <= 1).sum()),
        "error_mm_mean_abs": float(mm.mean()) if mm.size else math.nan,
        "error_mm_median_abs": float(np.median(mm)) if mm.size else math.nan,
        "error_mm_max_abs": float(mm.max()) if mm.size else math.nan,
        "sma_abs_error_percent_at_predicted_level": float(np.mean(predicted)) if predicted else math.nan,
        "sma_abs_error_percent_at_annotated_level": float(np.mean(annotated)) if annotated else math.nan,
        "n_with_annotated_level_prediction": len(annotated),
    }
