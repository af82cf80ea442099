"""Body composition of one axial slice: skeletal muscle, IMAT, VAT and SAT, their indices and flags.

Why a module of its own: clinicians read muscle beside fat (sarcopenic obesity) and muscle
attenuation (myosteatosis); every number here comes from the same helpers as the SMA
(`measure.measure_slice` for muscle, `measure.area_exact` for every area), so the muscle area of a
body-composition result IS the SMA `sarco measure`/`predict` report under the same HU rule.

Conventions (one place each):
  * Tissue mask values: `constants.TISSUE_LABELS` (muscle 1, IMAT 2, VAT 3, SAT 4) unless a
    labels.json says otherwise. A tissue missing from the label map is "absent" (area undefined,
    None), a tissue in the map with no pixel measures 0 cm² (HU mean/SD undefined, None).
  * HU rule: `constants.HU_CONVENTIONS` — "label" (every labelled pixel counts) or "alberta"
    (muscle within −29…150 HU, adipose within −190…−30 HU, both bounds inclusive; Mitsiopoulos
    1998). SMA excludes IMAT (Alberta protocol): the labels are disjoint, and a derived IMAT pixel
    is never a counted muscle pixel.
  * Derived IMAT (muscle-only mask + CT): adipose-HU pixels (−190…−30) inside the muscle envelope
    (the muscle mask with holes up to `DERIVED_IMAT_MAX_HOLE_CM2` filled), not counted as muscle;
    its source is "derived".
  * HU mean is exact (integer-valued CT: the exact fraction sum/n, rounded once); SD is the
    population SD (ddof = 0) over the same pixels.
  * Indices: SMI, VATI, SATI = area / height² (cm²/m², exact); VAT/SAT ratio; total adipose area
    = IMAT + VAT + SAT (cm², needs all three); IMAT % of SMA = 100 · IMAT / SMA.
  * Muscle attenuation for myosteatosis: mean HU of the muscle-labelled pixels within the gate
    the threshold set assumes (Martin 2013: −29…150 HU), whatever the area convention.
  * Layout: a labelled tissue lying mostly on the wrong side of the muscle wall (SAT inside it, VAT
    or IMAT outside: `tissue_layout`) makes the slice's `reasons` a `tissue_layout` review; the
    areas stay those of the labels given.
  * Level: T12…L5. A flag (sarcopenia or myosteatosis) is given only when the threshold set was
    published for that level (`ThresholdSet.levels`); otherwise areas only, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sarco_nn.constants import (
    ADIPOSE_HU_GATE,
    ADIPOSE_TISSUES,
    DEFAULT_HU_CONVENTION,
    DEFAULT_LEVEL,
    DERIVED_IMAT_MAX_HOLE_CM2,
    HU_CONVENTIONS,
    LEVELS,
    MUSCLE_HU_GATE,
    TISSUE_LABELS,
)
from sarco_nn.cases import range_cell
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.image_io import check_same_grid
from sarco_nn.measure import area_exact, axial_stack, label_mask, measure_slice
from sarco_nn.status import Reason
from sarco_nn.tissue_layout import layout_reason
from sarco_nn.thresholds import ThresholdSet, exact, smi_exact

TISSUES: tuple[str, ...] = ("muscle", *ADIPOSE_TISSUES)

#: Source of a tissue's pixels: its own label (a given mask), a predicting model's label, derived
#: from the HU rule, or not available.
SOURCE_LABEL, SOURCE_MODEL, SOURCE_DERIVED, SOURCE_ABSENT = "label", "model", "derived", "absent"


@dataclass
class TissueMeasure:
    """Area and attenuation of one tissue on one slice; `area` is exact (cm²), None when absent."""

    tissue: str
    source: str
    n_pixels: int | None
    area: Fraction | None
    hu_mean: Fraction | float | None
    hu_sd: float | None

    @property
    def area_cm2(self) -> float | None:
        return None if self.area is None else float(self.area)


@dataclass
class BodyComposition:
    """Every tissue of one axial slice plus the indices derived from them."""

    level: str
    slice_index: int | None
    hu_convention: str
    tissues: dict[str, TissueMeasure]
    height_m: float | None = None
    muscle_attenuation: Fraction | float | None = None  # mean muscle HU within attenuation_gate
    attenuation_gate: tuple[float, float] = MUSCLE_HU_GATE
    notes: list[str] = field(default_factory=list)
    #: why the slice's tissue labels cannot be right (`tissue_layout`): the caller's verdict takes them
    reasons: list[Reason] = field(default_factory=list)

    def index(self, tissue: str) -> float | None:
        """area / height² (cm²/m²) exactly, rounded once; None without a height or the tissue."""
        area = self.tissues[tissue].area
        if area is None or self.height_m is None:
            return None
        return float(smi_exact(area, self.height_m))

    @property
    def vat_sat_ratio(self) -> float | None:
        vat, sat = self.tissues["vat"].area, self.tissues["sat"].area
        return None if vat is None or sat is None or sat == 0 else float(vat / sat)

    @property
    def total_adipose_cm2(self) -> float | None:
        areas = [self.tissues[t].area for t in ADIPOSE_TISSUES]
        return None if any(a is None for a in areas) else float(sum(areas))

    @property
    def imat_pct_of_sma(self) -> float | None:
        imat, sma = self.tissues["imat"].area, self.tissues["muscle"].area
        return None if imat is None or sma is None or sma == 0 else float(100 * imat / sma)

    def to_dict(self) -> dict:
        """Flat, column-ready result (the results.csv / --json names; units in the README)."""
        conv = HU_CONVENTIONS[self.hu_convention]
        out: dict = {
            "level": self.level,
            "slice_index": self.slice_index,
            "hu_convention": self.hu_convention,
            "muscle_hu_range": hu_range_text(conv["muscle"]),
            "adipose_hu_range": hu_range_text(conv["adipose"]),
        }
        for name in TISSUES:
            t = self.tissues[name]
            out[f"{name}_area_cm2"] = t.area_cm2
            out[f"{name}_hu_mean"] = None if t.hu_mean is None else float(t.hu_mean)
            out[f"{name}_hu_sd"] = t.hu_sd
            out[f"{name}_source"] = t.source
        out.update({
            "smi_cm2_m2": self.index("muscle"),
            "vati_cm2_m2": self.index("vat"),
            "sati_cm2_m2": self.index("sat"),
            "vat_sat_ratio": self.vat_sat_ratio,
            "total_adipose_cm2": self.total_adipose_cm2,
            "imat_pct_of_sma": self.imat_pct_of_sma,
            "muscle_attenuation_hu": None if self.muscle_attenuation is None else float(self.muscle_attenuation),
            "muscle_attenuation_hu_range": hu_range_text(self.attenuation_gate),
        })
        return out


def check_level(level: str | None) -> str:
    """The level in canonical spelling (T12…L5); a one-line error for anything else."""
    text = (level or DEFAULT_LEVEL).strip().upper()
    if text not in LEVELS:
        raise SarcoError(f"level {level!r} is not supported", fix=f"use one of {', '.join(LEVELS)}.")
    return text


def check_convention(convention: str | None) -> str:
    name = (convention or DEFAULT_HU_CONVENTION).strip().lower()
    if name not in HU_CONVENTIONS:
        raise SarcoError(f"HU convention {convention!r} is unknown", fix=f"use one of {', '.join(HU_CONVENTIONS)}.")
    return name


def model_tissue_labels(dataset_labels: dict | None) -> dict[str, int]:
    """{tissue: value} a trained model segments, from its dataset.json "labels" (muscle always 1).

    Why: a four-tissue model (`sarco convert --keep-tissues`) predicts IMAT/VAT/SAT itself, so
    predict fills those columns from the model ("model") instead of deriving IMAT or leaving VAT
    and SAT absent; a muscle-only model's map is {"muscle": 1}. Names other than the tissues
    (background, anything else a dataset carries) are ignored.
    """
    labels = {"muscle": TISSUE_LABELS["muscle"]}
    for name, value in (dataset_labels or {}).items():
        if name in TISSUES and name != "muscle" and not isinstance(value, (list, tuple)):
            labels[name] = int(value)
    if dataset_labels and int(dataset_labels.get("muscle", TISSUE_LABELS["muscle"])) != TISSUE_LABELS["muscle"]:
        raise SarcoError(f"the model's dataset.json gives muscle label {dataset_labels['muscle']}, not 1",
                         fix="retrain from a dataset written by `sarco convert` (muscle is always label 1).")
    return labels


def hu_stats(values: np.ndarray) -> tuple[Fraction | float | None, float | None]:
    """(mean, population SD) of HU values; exact for integer-valued CT; (None, None) when empty."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        return None, None
    if np.all(values == np.rint(values)) and np.all(np.abs(values) < 2**31):
        ints = values.astype(np.int64)
        total, squares = int(ints.sum()), int((ints * ints).sum())  # exact: |HU| < 2^31, n·HU² < 2^63
        mean = Fraction(total, n)
        variance = Fraction(n * squares - total * total, n * n)
        return mean, math.sqrt(variance)
    mean_f = math.fsum(values.tolist()) / n
    return mean_f, float(np.sqrt(np.mean((values - mean_f) ** 2)))


def derived_imat(muscle: np.ndarray, ct2d: np.ndarray, spacing_yx_mm: tuple[float, float],
                 exclude: np.ndarray | None = None) -> np.ndarray:
    """Adipose-HU pixels inside the muscle envelope (muscle with holes ≤ DERIVED_IMAT_MAX_HOLE_CM2 filled).

    `exclude`: pixels that may not become IMAT (counted muscle, other tissues' labels).
    """
    muscle = np.asarray(muscle, dtype=bool)
    holes = ndimage.binary_fill_holes(muscle) & ~muscle
    labelled, n = ndimage.label(holes)
    envelope = muscle.copy()
    if n:
        sizes = np.bincount(labelled.ravel())
        limit = exact(DERIVED_IMAT_MAX_HOLE_CM2)
        small = [i for i in range(1, n + 1) if area_exact(int(sizes[i]), spacing_yx_mm) <= limit]
        envelope |= np.isin(labelled, small)
    lo, hi = ADIPOSE_HU_GATE
    fat = (ct2d >= lo) & (ct2d <= hi)
    out = envelope & fat
    if exclude is not None:
        out &= ~np.asarray(exclude, dtype=bool)
    return out


def measure_composition_slice(
    mask2d: np.ndarray,
    spacing_yx_mm: tuple[float, float],
    ct2d_hu: np.ndarray | None = None,
    labels: dict[str, int] | None = None,
    convention: str | None = None,
    level: str | None = None,
    height_m: float | None = None,
    derive_imat: bool | None = None,
    slice_index: int | None = None,
    attenuation_gate: tuple[float, float] = MUSCLE_HU_GATE,
    label_source: str = SOURCE_LABEL,
) -> BodyComposition:
    """Body composition of one 2-D slice.

    labels: {tissue: mask value}; default `constants.TISSUE_LABELS`. Names other than the four
      tissues are ignored; a tissue not named is "absent".
    derive_imat: derive IMAT from the HU rule (needs the CT); None = when the map names no IMAT.
    label_source: what a labelled tissue's `source` says: "label" (a given mask) or "model"
      (`sarco predict`'s segmentation); derived IMAT stays "derived" either way.
    """
    if label_source not in (SOURCE_LABEL, SOURCE_MODEL):
        raise SarcoError(f"internal: label source {label_source!r} is not 'label' or 'model'")
    labels = dict(TISSUE_LABELS if labels is None else labels)
    if "muscle" not in labels:
        raise SarcoError("the label map names no 'muscle'", fix='give e.g. {"muscle": 1, "imat": 2, "vat": 3, "sat": 4}.')
    tissue_values = [v for k, v in labels.items() if k in TISSUES]
    if len(set(tissue_values)) != len(tissue_values) or 0 in tissue_values:
        raise SarcoError(f"the label map {labels} gives two tissues one value (or a tissue the background 0)",
                         fix="give every tissue its own positive value.")
    convention = check_convention(convention)
    level = check_level(level)
    gates = HU_CONVENTIONS[convention]
    if convention != "label" and ct2d_hu is None:
        raise SarcoError(f"the {convention} HU convention needs the CT", fix="pass the CT with --image.")
    if derive_imat is None:
        derive_imat = "imat" not in labels and ct2d_hu is not None
    if derive_imat and ct2d_hu is None:
        raise SarcoError("deriving IMAT from the HU rule needs the CT", fix="pass the CT with --image.")
    ct = None if ct2d_hu is None else np.asarray(ct2d_hu, dtype=np.float64)

    # muscle: the one SMA path
    m = measure_slice(mask2d, spacing_yx_mm, ct2d_hu, label=labels["muscle"], hu_gate=gates["muscle"])
    muscle_label = label_mask(mask2d, labels["muscle"])
    counted_muscle = muscle_label if gates["muscle"] is None else muscle_label & _in_gate(ct, gates["muscle"])
    tissues: dict[str, TissueMeasure] = {
        "muscle": _tissue("muscle", label_source, counted_muscle, ct, spacing_yx_mm, expect_pixels=m.n_pixels)
    }
    for name in ADIPOSE_TISSUES:
        if name in labels:
            selected = label_mask(mask2d, labels[name])
            if gates["adipose"] is not None:
                selected = selected & _in_gate(ct, gates["adipose"])
            tissues[name] = _tissue(name, label_source, selected, ct, spacing_yx_mm)
        elif name == "imat" and derive_imat:
            others = np.zeros(muscle_label.shape, dtype=bool)
            for other, value in labels.items():
                if other != "muscle":
                    others |= label_mask(mask2d, value)
            selected = derived_imat(muscle_label, ct, spacing_yx_mm, exclude=counted_muscle | others)
            tissues[name] = _tissue(name, SOURCE_DERIVED, selected, ct, spacing_yx_mm)
        else:
            tissues[name] = TissueMeasure(name, SOURCE_ABSENT, None, None, None, None)
    attenuation = None
    if ct is not None:
        attenuation, _ = hu_stats(ct[muscle_label & _in_gate(ct, attenuation_gate)])
    # where the labelled tissues lie (the label positions, not the HU-gated pixels): one rule for measure and predict
    layout = layout_reason(mask2d, labels, spacing_yx_mm, "prediction" if label_source == SOURCE_MODEL else "mask")
    return BodyComposition(level, slice_index, convention, tissues, height_m, attenuation,
                           (float(attenuation_gate[0]), float(attenuation_gate[1])),
                           reasons=[layout] if layout else [])


def predicted_composition(seg2d: np.ndarray, spacing_yx_mm: tuple[float, float], ct2d_hu: np.ndarray,
                          dataset_labels: dict | None, hu_gate: bool, height_m: float | None,
                          level: str = DEFAULT_LEVEL) -> BodyComposition:
    """What `sarco predict` reports for one predicted slice: every tissue the model segments is
    measured from its prediction (source "model"); with a muscle-only model IMAT is derived from
    the HU rule inside the muscle envelope ("derived") and VAT/SAT are "absent".

    dataset_labels: the model's dataset.json "labels"; hu_gate: the run's --hu-gate (alberta
    convention), else every predicted pixel counts ("label" convention).
    """
    return measure_composition_slice(seg2d, spacing_yx_mm, ct2d_hu, labels=model_tissue_labels(dataset_labels),
                                     convention="alberta" if hu_gate else "label", level=level,
                                     height_m=height_m, label_source=SOURCE_MODEL)


def measure_composition_image(
    mask: sitk.Image,
    ct: sitk.Image | None = None,
    labels: dict[str, int] | None = None,
    convention: str | None = None,
    level: str | None = None,
    height_m: float | None = None,
    slice_index: int | None = None,
    derive_imat: bool | None = None,
    *,
    mask_name: str | None = None,
    ct_name: str | None = None,
    attenuation_gate: tuple[float, float] = MUSCLE_HU_GATE,
) -> list[BodyComposition]:
    """Body composition of a 2-D mask, one given stored slice, or every slice holding a tissue label.

    Slice choice and orientation are exactly `measure.measure_image`'s (same `axial_stack`).
    attenuation_gate: the HU range the mean muscle attenuation is taken within (a myosteatosis set's
    `hu_gate`; its cut-offs assume it).
    """
    labels = dict(TISSUE_LABELS if labels is None else labels)
    stack = axial_stack(mask, mask_name)
    ct_stack = None
    if ct is not None:
        check_same_grid(ct, mask, mask_name or "mask", ct_name)
        ct_stack = axial_stack(ct, ct_name)
    n_slices = stack.array.shape[0]
    if slice_index is not None:
        if not 0 <= slice_index < n_slices:
            raise InputError(f"slice {slice_index} is outside the mask's {n_slices} slice(s) (valid: 0..{n_slices - 1})",
                             path=mask_name, fix="give --slice as an index along the image's own slice axis.")
        chosen = [stack.canonical_index(slice_index)]
    elif n_slices == 1:
        chosen = [0]
    else:
        values = [v for k, v in labels.items() if k in TISSUES]
        held = np.isin(np.rint(stack.array) if np.issubdtype(stack.array.dtype, np.floating) else stack.array,
                       values).any(axis=(1, 2))
        chosen = sorted(np.flatnonzero(held).tolist(), key=lambda z: stack.stored_indices[z])
    return [
        measure_composition_slice(stack.array[z], stack.spacing_yx_mm,
                                  None if ct_stack is None else ct_stack.array[z], labels, convention, level,
                                  height_m, derive_imat, stack.stored_indices[z], attenuation_gate)
        for z in chosen
    ]


def sarcopenia_flag(comp: BodyComposition, ts: ThresholdSet, sex: str | None, bmi=None,
                    height_m: float | None = None) -> tuple[bool | None, str | None]:
    """(flag, why none) from the muscle area, only where `ts` was published for the slice's level."""
    if not ts.applies_at(comp.level):
        return None, level_note(ts, comp.level)
    sma = comp.tissues["muscle"].area_cm2
    smi_value = comp.index("muscle")
    why = ts.why_undecidable(sex, sma, smi_value, bmi)
    return ts.is_sarcopenic(sex, sma, smi_value, bmi, height_m=height_m or comp.height_m), why


def myosteatosis_flag(comp: BodyComposition, ts: ThresholdSet, sex: str | None,
                      bmi=None) -> tuple[bool | None, str | None]:
    """(low muscle attenuation?, why none): mean muscle HU within the set's gate < its cut-off (strict)."""
    if ts.kind != "myosteatosis":
        raise SarcoError(f"threshold set {ts.name!r} is not a myosteatosis (muscle_hu) set",
                         fix="use martin_myosteatosis or a file with \"metric\": \"muscle_hu\".")
    if not ts.applies_at(comp.level):
        return None, level_note(ts, comp.level)
    gate = ts.hu_gate or MUSCLE_HU_GATE
    if tuple(map(float, gate)) != tuple(comp.attenuation_gate):
        raise SarcoError(f"muscle attenuation was measured within {hu_range_text(comp.attenuation_gate)} HU but "
                         f"{ts.name} assumes {hu_range_text(gate)} HU",
                         fix="measure with attenuation_gate set to the set's hu_gate (sarco measure does so).")
    if comp.muscle_attenuation is None:
        return None, "no muscle attenuation (needs the CT and muscle pixels within the gate)"
    why = ts.why_undecidable(sex, None, None, bmi)
    if why is not None:
        return None, why
    return ts.is_low(sex, comp.muscle_attenuation, bmi), None


#: results.csv / --json columns a body-composition result adds (units: README "Outputs and units").
RESULT_COLUMNS: tuple[str, ...] = (
    "level", "hu_convention", "muscle_hu_range", "adipose_hu_range",
    # muscle area and mean HU are the table's existing `sma_cm2` and `muscle_hu_mean` (same path): not repeated
    *(f"{t}_{k}" for t in TISSUES for k in ("area_cm2", "hu_mean", "hu_sd", "source")
      if f"{t}_{k}" not in ("muscle_area_cm2", "muscle_hu_mean")),
    "vati_cm2_m2", "sati_cm2_m2", "vat_sat_ratio", "total_adipose_cm2", "imat_pct_of_sma",
    "muscle_attenuation_hu", "muscle_attenuation_hu_range", "myosteatosis", "myosteatosis_set", "myosteatosis_threshold",
)


def result_columns(comp: BodyComposition, myo_set: ThresholdSet, sex: str | None, bmi=None, *,
                   withheld: bool = False, unknown: str = "unknown", digits: dict | None = None) -> dict:
    """The RESULT_COLUMNS of one slice for a results table: numbers, myosteatosis flag (or `unknown`).

    withheld: a reason blocks the sarcopenia flag (an implausible mask, a CT whose geometry depends on
    the reader, …), so no myosteatosis flag either; a reason that keeps the flag (no_bone) keeps this one. digits: optional rounding {"area": 4, "hu": 2} for printed output.
    """
    row = {k: v for k, v in comp.to_dict().items() if k in RESULT_COLUMNS}
    if digits:
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = round(value, digits["hu"] if "_hu_" in key or key.endswith("_hu") else digits["area"])
    flag, why = myosteatosis_flag(comp, myo_set, sex, bmi)
    if withheld:
        flag, why = None, "withheld: a reason blocks every flag (see reasons)"
    row.update({
        "myosteatosis": unknown if flag is None else flag,
        "myosteatosis_set": myo_set.name,
        "myosteatosis_threshold": why if flag is None and why else myo_set.describe(sex, bmi),
    })
    return row


def level_note(ts: ThresholdSet, level: str) -> str:
    return (f"no {ts.name} cut-off published for {level} (set derived at {', '.join(ts.levels)}); "
            "areas only at this level")


def _tissue(name: str, source: str, selected: np.ndarray, ct: np.ndarray | None,
            spacing_yx_mm: tuple[float, float], expect_pixels: int | None = None) -> TissueMeasure:
    n = int(np.count_nonzero(selected))
    if expect_pixels is not None and n != expect_pixels:  # the muscle selection must be measure_slice's
        raise SarcoError(f"internal: body-composition muscle pixels {n} differ from the SMA path's {expect_pixels}")
    mean, sd = (None, None) if ct is None else hu_stats(ct[selected])
    return TissueMeasure(name, source, n, area_exact(n, spacing_yx_mm), mean, sd)


def _in_gate(ct: np.ndarray | None, gate: tuple[float, float]) -> np.ndarray:
    if ct is None:
        raise SarcoError("an HU gate needs the CT", fix="pass the CT with --image.")
    return (ct >= float(gate[0])) & (ct <= float(gate[1]))


def hu_range_text(gate) -> str | None:
    """An HU range as a table cell, ``[-29, 150]`` (both bounds inclusive), or None: every range cell of
    results.csv and --json alike. Bracketed because a cell starting with ``-`` (``-29..150``) is one a
    spreadsheet may run as a formula (HOSTILE #130): ``[`` is no formula prefix (`cases.FORMULA_PREFIXES`)."""
    return None if gate is None else range_cell(gate[0], gate[1])


__all__ = [
    "RESULT_COLUMNS", "SOURCE_ABSENT", "SOURCE_DERIVED", "SOURCE_LABEL", "SOURCE_MODEL", "TISSUES", "BodyComposition", "model_tissue_labels", "predicted_composition", "result_columns", "TissueMeasure", "check_convention", "check_level", "derived_imat", "hu_stats",
    "hu_range_text", "level_note", "measure_composition_image", "measure_composition_slice", "myosteatosis_flag", "sarcopenia_flag",
]
