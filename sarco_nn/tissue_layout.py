"""Do a slice's tissue labels lie where that tissue can lie? A review reason when they cannot.

Why: a four-tissue mask whose labels are swapped or shifted measures every area correctly for the
labels given, so its indices are wrong with status ok: VAT and SAT swapped gave VAT/SAT 1.086 for
0.921, the SAT ring saved as IMAT gave IMAT 171 % of SMA (HOSTILE_FINDINGS #104, #105). Areas
cannot tell; where the tissues lie can.

The anatomy, and the one geometric summary used for it: on an axial slice the skeletal muscles
(abdominal wall, psoas, quadratus lumborum, paraspinal) form a wall around the abdominal cavity.
The wall is often open (linea alba, the gaps between the lateral wall and the back muscles), so
holes are not filled; the **convex hull of the muscle pixels** (through their centres) bridges the
gaps and stands for "inside the muscle wall":

- VAT lies in the abdominal cavity, inside the wall: mostly inside the hull.
- IMAT lies within and between the muscles (inside their fascia, `body_composition.derived_imat`'s
  envelope): inside the hull, except the fat along the muscles' outer edge that the hull through
  pixel centres leaves out.
- SAT lies between the skin and the wall: outside the hull, except where the hull bridges a
  concave stretch of the wall (the flanks between the lateral wall and the back muscles).

The rule (:func:`layout_reason`, :func:`implausible`): a labelled tissue is implausible when the share
of its area on the wrong side of the hull exceeds :data:`WRONG_SIDE_LIMIT` (VAT or SAT: more than half,
most of it; IMAT: more than a quarter, since nearly all of it lies inside), that wrong-side area is at
least :data:`MIN_MISPLACED_CM2` (a few stray pixels never decide) and, for IMAT only, it outweighs the
slice's labelled SAT: IMAT outside the hull can only be fat along the muscles' outer edge, a rim beneath
the SAT (a one-pixel strip on a coarse grid: up to 43 % of family B's IMAT at 4 mm pixels); more of it
than there is SAT (none left, when the SAT ring was saved as IMAT) is the SAT layer itself. These are
majorities of the anatomy, not published cut-offs (none exists). Margins, measured with
`bench/tissue_layout_margins.py` (30 L3 slices per family, seed 7, at 512² and at 128²; every slice of
8 T12-S1 volumes per family at 128²; the real CT's tissue segmentation, TotalSegmentator's skeletal
muscle, torso fat as VAT and subcutaneous fat as SAT of `example_ct_sm`, 30 slices T11-L2):

- normal, flagged 0 of 90 + 90 phantom slices, 0 of 1638 volume slices (A, A-wide 526 each, B 586), 0 of
  30 real slices. Share inside the hull: VAT ≥ 0.954 (B, 128²; ≥ 0.997 at 512², ≥ 0.991 real); SAT
  ≤ 0.036 at 512² (A; ≤ 0.152 on volume slices, A-wide; ≤ 0.146 real); IMAT ≥ 0.900 at 512² (A) and
  ≥ 0.570 at 128² (B), where its outside area is at most 0.354 of the SAT area (A-wide, 128²).
- planted, flagged 30 of 30 per family and grid, every volume slice, and 30 of 30 real slices: VAT/SAT
  swapped (VAT inside ≤ 0.152, SAT ≥ 0.954), SAT saved as IMAT (IMAT inside ≤ 0.674, no SAT left), IMAT/SAT swapped, muscle/SAT
  swapped (all of "SAT" inside the hull of the SAT ring).
- missed: SAT saved as IMAT where the SAT is much thinner than the IMAT (under about a third of it, less
  than a quarter of the new "IMAT" then lies outside; an A-wide phantom, seed 0 case 1 at 256²: SAT 4.2 cm²
  beside IMAT 21.4 cm², 23 % outside): its IMAT error is that SAT area.

A mask that labels the arms' muscle and fat as trunk muscle and SAT (no phantom does; measured once by
relabelling the phantoms' own arm tissues, seed 7 at 512²) put up to 0.58 of SAT inside the hull (A-wide,
5 of the 14 slices with arms flagged; B 0 of 13, at most 0.49): it is rightly looked at, since arm muscle
counted as SMA is no L3 SMA either, and the message names that cause too.

Not judged: a tissue the label map does not name or the slice does not hold (a muscle-only mask),
derived IMAT (inside the envelope by construction), a slice whose muscle has no hull (fewer than
three pixels, or all on one line; `mask_checks` reports such a mask already). The reason is
`review` and blocks the flags: a label map that puts fat on the wrong side of the muscle wall may
have given muscle a wrong value too (muscle and SAT swapped puts all of "SAT" inside the hull). The
numbers stay reported, for the labels as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.status import Reason, Status

__all__ = ["MIN_MISPLACED_CM2", "WRONG_SIDE_LIMIT", "TissueSide", "implausible", "layout_reason", "muscle_hull_sides"]

#: Largest share of a tissue's area that may lie on the wrong side of the muscle wall's hull
#: ("inside" for SAT, "outside" for VAT and IMAT). Reasons and measured margins: module docstring.
WRONG_SIDE_LIMIT: dict[str, float] = {"imat": 0.25, "vat": 0.5, "sat": 0.5}

#: Smallest wrong-side area (cm²) that can make a tissue implausible: a few stray pixels (a model's
#: speck of "SAT" inside the abdomen) never do. 2 cm² is about 300 pixels of 0.8 mm.
MIN_MISPLACED_CM2: float = 2.0

_WRONG_SIDE = {"imat": "outside", "vat": "outside", "sat": "inside"}


@dataclass(frozen=True)
class TissueSide:
    """Where one labelled tissue lies relative to the convex hull of the muscle pixels."""

    tissue: str
    value: int
    area_cm2: float
    inside_share: float

    @property
    def wrong_share(self) -> float:
        return self.inside_share if _WRONG_SIDE[self.tissue] == "inside" else 1.0 - self.inside_share

    @property
    def wrong_cm2(self) -> float:
        return self.wrong_share * self.area_cm2


def implausible(side: TissueSide, sat_cm2: float) -> bool:
    """The rule of the module docstring for one tissue; `sat_cm2`: the slice's labelled SAT (0 without)."""
    if side.wrong_share <= WRONG_SIDE_LIMIT[side.tissue] or side.wrong_cm2 < MIN_MISPLACED_CM2:
        return False
    return side.tissue != "imat" or side.wrong_cm2 > sat_cm2  # IMAT's rim outside the hull lies beneath the SAT


def inside_hull(muscle: np.ndarray, points: np.ndarray, margin_px: float = 0.0) -> np.ndarray | None:
    """Which `points` (n, 2 pixel coordinates) lie in the convex hull of the muscle pixel centres, grown
    by `margin_px` pixels; None when the muscle has no 2-D hull (under three pixels, or all on one line)."""
    from scipy.spatial import ConvexHull, QhullError

    coords = np.argwhere(muscle).astype(np.float64)
    if len(coords) < 3:
        return None
    try:
        hull = ConvexHull(coords)
    except QhullError:  # collinear: no area to be inside of
        return None
    normals, offsets = hull.equations[:, :2], hull.equations[:, 2]
    return np.all(points @ normals.T + offsets <= margin_px + 1e-9, axis=1)


def muscle_hull_sides(mask2d: np.ndarray, labels: Mapping[str, int] | None,
                      spacing_yx_mm: tuple[float, float]) -> list[TissueSide]:
    """Each labelled adipose tissue (IMAT, VAT, SAT) the slice holds, with its share inside the hull
    of the muscle label; [] when the muscle has no hull or no such tissue is labelled."""
    from sarco_nn.measure import label_mask

    if np.ndim(mask2d) != 2:  # a (1, y, x) stack's hull is flat in 3-D: it read as "nothing to judge"
        raise ValueError(f"tissue_layout: mask2d must be one axial slice (y, x), not shape {np.shape(mask2d)}")
    labels = dict(TISSUE_LABELS if labels is None else labels)
    if "muscle" not in labels:
        return []
    present = [(t, int(labels[t]), label_mask(mask2d, labels[t])) for t in _WRONG_SIDE if t in labels]
    present = [(t, v, sel) for t, v, sel in present if sel.any()]
    if not present:
        return []
    muscle = label_mask(mask2d, labels["muscle"])
    pixel_cm2 = float(spacing_yx_mm[0]) * float(spacing_yx_mm[1]) / 100.0
    sides = []
    for tissue, value, selected in present:
        inside = inside_hull(muscle, np.argwhere(selected).astype(np.float64))
        if inside is None:
            return []
        sides.append(TissueSide(tissue, value, int(selected.sum()) * pixel_cm2, float(inside.mean())))
    return sides


def layout_reason(mask2d: np.ndarray, labels: Mapping[str, int] | None, spacing_yx_mm: tuple[float, float],
                  what: str = "mask") -> Reason | None:
    """`tissue_layout` (review, flags withheld) when a labelled tissue lies mostly where it cannot
    (the rule: module docstring); None for a plausible slice or one with nothing to judge.

    what: the message's first word; "prediction" (a model's output) gets the model's fix, any other
    ("mask", `sarco evaluate`'s "reference") the label-map fix."""
    sides = muscle_hull_sides(mask2d, labels, spacing_yx_mm)
    sat_cm2 = sum(s.area_cm2 for s in sides if s.tissue == "sat")
    wrong = [s for s in sides if implausible(s, sat_cm2)]
    if not wrong:
        return None
    found = ", ".join(f"{s.tissue.upper()} (value {s.value}, {s.area_cm2:.1f} cm²) {s.wrong_share:.0%} "
                      f"{_WRONG_SIDE[s.tissue]}" for s in wrong)
    expected = ", ".join(f"{k} {v}" for k, v in TISSUE_LABELS.items())
    fix = (f"check the mask's label values against the labels.json in use (sarco's: {expected})" if what != "prediction"
           else "look at the overlay; where every scan shows it, check the labels of the model's training data "
                "(its dataset.json, the drop's labels.json)")
    return Reason("tissue_layout",
                  f"{what}: tissue labels on the wrong side of the muscle wall (the convex hull of the muscle label; "
                  f"SAT lies outside it, VAT inside, IMAT within the muscles): {found}: labels swapped "
                  f"or mislabelled, or arm muscle labelled as trunk muscle; the areas are those of the labels as "
                  f"given. Fix: {fix}", Status.REVIEW, True)
