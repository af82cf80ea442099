"""Plausibility of a muscle mask at L3: the reasons why its SMA must not become a diagnosis.

Why: an empty or near-empty mask measures 0 (or a few) cm², which is below every sarcopenia
cut-off, so without this check a failed segmentation reads as "sarcopenic: yes". Every command
that turns a mask into a flag (`sarco measure`, `sarco predict`, `sarco evaluate`) asks
:func:`mask_reasons` and withholds the flag (``unknown``) while a blocking reason stands.

The floor is physiological and deliberately far BELOW the disease range: low SMA is sarcopenia
itself, so a floor near a cut-off would hide exactly the patients the tool is for.

- Cut-offs in use run from SMI 38.5 cm²/m² (Prado et al. 2008, Lancet Oncol 9:629, women) to
  SMA 92 cm² (Derstine et al. 2018, Sci Rep 8:11369, women).
- Severely cachectic cancer patients reach SMI values in the low 20s cm²/m² (distributions in
  Martin et al. 2013, J Clin Oncol 31:1539, n = 1473; Prado et al. 2008). At a height of
  1.40 m, SMI 20 cm²/m² is 39 cm².

:data:`SMA_FLOOR_CM2` = 30 cm² sits below all of these: an adult L3 SMA under 30 cm² is a
segmentation failure (or not an L3 slice), never a measurement of a patient.

:data:`SMA_CEILING_CM2` = 500 cm² guards the other side, where a wrong number reads as "not
sarcopenic": healthy men average about 180 cm² at L3 (SD about 35; Derstine et al. 2018), so
500 cm² is some 9 SD above them and beyond any muscular athlete. A larger "SMA" is a mask of the
whole body, a wrong label or a wrong pixel spacing in the header (e.g. 9 mm "pixels").
"""

from __future__ import annotations

from typing import Iterable

from sarco_nn.constants import DEFAULT_LEVEL
from sarco_nn.status import Reason, Status, shown_against

__all__ = ["SMA_FLOOR_CM2", "SMA_CEILING_CM2", "MAX_LEVEL_SPAN_MM", "mask_reasons", "labels_in", "unknown_label_reason",
           "level_span_reason"]

#: Smallest SMA (cm²) accepted as a measurement of an adult at L3 (sources in the module docstring).
SMA_FLOOR_CM2: float = 30.0
#: Largest SMA (cm²) accepted as a measurement of a person at L3 (reasoning in the module docstring).
SMA_CEILING_CM2: float = 500.0
#: Largest head-foot distance (mm) between the first and last labelled slice of a mask measured as ONE
#: level: an adult lumbar vertebra with its disc is about 35-40 mm tall, so slices further apart (a
#: whole-volume segmentation, e.g. TotalSegmentator's) lie at several levels and cannot all be L3.
MAX_LEVEL_SPAN_MM: float = 50.0


def level_span_reason(labelled_slices: Iterable[int], spacing_z_mm: float | None,
                      level: str = DEFAULT_LEVEL, fix: str | None = None) -> Reason | None:
    """Why the slices of a 3-D mask measured slice by slice cannot all be at `level`, or None.

    `labelled_slices` are the stored indices of the slices holding muscle, `spacing_z_mm` the distance
    between slices. Blocks the flag: a T11 slice measured against an L3 cut-off is no diagnosis.
    fix: the advice closing the message (None: `sarco measure`'s, --slice or --vertebrae); `sarco convert`
    warns with the same rule and its own advice."""
    slices = sorted(set(labelled_slices))
    if len(slices) < 2 or not spacing_z_mm:
        return None
    span = (slices[-1] - slices[0]) * float(spacing_z_mm)
    if span <= MAX_LEVEL_SPAN_MM:
        return None
    return Reason("slices_span_levels",
                  f"mask holds muscle on {len(slices)} slices spanning {span:.0f} mm (slices {slices[0]}..{slices[-1]}): "
                  f"more than one vertebral level (a lumbar vertebra with its disc is about 40 mm tall), so they "
                  f"cannot all be at {level}; "
                  + (fix or f"give the {level} slice (--slice N) or vertebra labels (--vertebrae)"))


def mask_reasons(measurement, spacing_yx_mm: tuple[float, float], *, label: int,
                 labels_present: Iterable[int] | None = None, what: str = "mask",
                 floor_cm2: float = SMA_FLOOR_CM2, ceiling_cm2: float = SMA_CEILING_CM2,
                 level: str | None = None, scaling: str | None = None) -> list[Reason]:
    """Reasons (status `review`, each blocking the flag) why `measurement` is not a patient's SMA.

    measurement: a `sarco_nn.measure.Measurement` (its `n_pixels`, `sma_cm2`).
    spacing_yx_mm: in-plane spacing (row, column) in mm, for the messages (pixel area).
    label: the muscle value looked for; labels_present: the values the mask file holds (all its
      slices), to tell "muscle saved under another value" from "nothing segmented".
    what: "mask", "prediction" or "reference", named in the messages.
    level: the vertebral level measured (None: L3), named in the messages.
    scaling: how the file's header scaled its stored values (`image_io.label_scaling_note`), or None;
      when given, "label absent" names it as the cause and its fix instead of --label.
    Returns [] for a plausible mask.
    """
    level = level or DEFAULT_LEVEL
    values = None if labels_present is None else sorted({int(v) for v in labels_present})
    if values is not None and label not in values:
        others = [v for v in values if v != 0]
        if others:
            fix = (f": {scaling}" if scaling else
                   f"; give the muscle value with --label (or labels.json), or save muscle as {label}")
            return [Reason("label_absent",
                           f"{what} holds label value(s) {others[:5]} but none of the muscle label {label}{fix}",
                           Status.REVIEW, True)]
    if measurement.n_pixels == 0:
        return [Reason("empty_mask", f"{what} has no muscle pixel (label {label}) on the measured slice; "
                       "check the slice and the segmentation", Status.REVIEW, True)]
    if measurement.sma_cm2 < floor_cm2:
        pixel_mm2 = float(spacing_yx_mm[0]) * float(spacing_yx_mm[1])
        return [Reason("sma_below_floor",
                       f"{what} SMA {shown_against(measurement.sma_cm2, floor_cm2)} cm² ({measurement.n_pixels} pixels "
                       f"of {pixel_mm2:.3g} mm²) is below the physiological floor of {floor_cm2:g} cm² for an adult at {level}: a failed or "
                       f"partial segmentation, or the slice is not at {level}; review the mask", Status.REVIEW, True)]
    if measurement.sma_cm2 > ceiling_cm2:
        pixel_mm2 = float(spacing_yx_mm[0]) * float(spacing_yx_mm[1])
        return [Reason("sma_above_ceiling",
                       f"{what} SMA {shown_against(measurement.sma_cm2, ceiling_cm2)} cm² ({measurement.n_pixels} pixels "
                       f"of {pixel_mm2:.3g} mm²) is above the physiological ceiling of {ceiling_cm2:g} cm² for a person at {level}: a wrong pixel "
                       "spacing in the header, a wrong label or a mask of the whole body; review the mask and the "
                       "spacing", Status.REVIEW, True)]
    return []


def unknown_label_reason(labels_present: Iterable[int], known: Iterable[int], *, declared: bool,
                         what: str = "mask") -> Reason | None:
    """A `review` reason (blocking the flag) when the mask holds values that name no known tissue.

    Why: a multi-organ label map (TotalSegmentator's `total` task: 1 = spleen, 2/3 = kidneys, ...)
    has a value 1 too; measured as muscle it gave the spleen's area as "SMA", status ok and a
    sarcopenia flag. known: the values of the labels.json in use (`declared`), else sarco's
    tissue values (muscle, IMAT, VAT, SAT).
    """
    unknown = sorted({int(v) for v in labels_present} - {int(v) for v in known} - {0})
    if not unknown:
        return None
    listed = ", ".join(map(str, unknown[:8])) + (f", ... ({len(unknown)} values)" if len(unknown) > 8 else "")
    values = ", ".join(map(str, sorted({int(v) for v in known} - {0})))
    known_text = f"the labels.json in use ({values})" if declared else f"sarco's tissue values ({values})"
    return Reason("unknown_labels",
                  f"{what} holds label value(s) {listed} that {known_text} do not name: a multi-organ "
                  "segmentation (e.g. TotalSegmentator, where 1 = spleen)? What was measured as muscle may be "
                  "another structure; give a muscle-only mask, or a labels.json (--labels) naming every value",
                  Status.REVIEW, True)


def labels_in(array) -> list[int]:
    """The distinct integer values of a mask array (float masks rounded, as the measurement does)."""
    import numpy as np

    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    return [int(v) for v in np.unique(array)]
