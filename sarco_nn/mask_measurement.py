"""Measuring an existing mask the one way: argument checks, input and mask checks, numbers, flag.

`sarco measure` and `sarco_nn.api.measure` both call this module, so a mask measured from a
script gets exactly the numbers, status, reasons and flag rule of the command line: exact BMI
(`thresholds.bmi`), the CT's plausibility (`ct_checks`), the mask's (`mask_checks`), and no
flag at a level the threshold set was not published for.
"""

from __future__ import annotations

from pathlib import Path

from sarco_nn.constants import MUSCLE_HU_GATE, MUSCLE_LABEL
from sarco_nn.errors import SarcoError
from sarco_nn.status import FLAG_UNKNOWN, Reason
from sarco_nn.thresholds import normalise_sex

__all__ = ["check_patient", "ct_input_reasons", "measure_objects"]


def check_patient(sex: str | None, height: float | None, weight: float | None, label: int,
                  cli: bool = False) -> str | None:
    """The sex code (M/F/None) after refusing values that would give a wrong number silently."""
    opt = (lambda name: f"--{name}") if cli else (lambda name: name)
    sex_code = normalise_sex(sex)
    if sex is not None and sex_code is None:
        raise SarcoError(f"{opt('sex')} {sex!r} not understood", fix="use M/F, male/female or man/woman.")
    for name, value in (("height", height), ("weight", weight)):
        if value is not None and not value > 0:
            raise SarcoError(f"{opt(name)} {value} must be positive", fix="height in metres (e.g. 1.62), weight in kg.")
    if height is not None and height > 3.0:
        raise SarcoError(f"{opt('height')} {height} looks like centimetres", fix="give the height in metres, e.g. 1.62.")
    if label <= 0:  # 0 is the background: its "area" is everything that is not labelled
        raise SarcoError(f"{opt('label')} {label} is not a tissue label (0 is the background)",
                         fix="give the mask value of muscle, e.g. label 1.")
    return sex_code


def ct_input_reasons(ct_img, image: Path | str | None) -> list[Reason]:
    """The CT's own reasons (`sarco_nn.ct_checks`); a CT that is not a CT of a body is refused."""
    if ct_img is None:
        return []
    from sarco_nn.ct_checks import file_reasons, refuse_unless_ct

    return [*file_reasons(image), *refuse_unless_ct(ct_img, image)]


def measure_objects(mask_img, ct_img, ts, sex_code: str | None, height: float | None, weight: float | None, *,
                    label: int = MUSCLE_LABEL, slice_index: int | None = None, hu_gate: bool = False,
                    mask_name: str | None = None, ct_name: str | None = None, level: str | None = None,
                    input_reasons=()) -> list[dict]:
    """One result object per measured slice: numbers, status, reasons and the flag (or "unknown").

    `input_reasons` are the CT's own (`sarco_nn.ct_checks`); they join every slice's verdict.

    The flag is withheld ("unknown") when the mask is empty, lacks the label or is implausibly
    small (`sarco_nn.mask_checks`), or when the threshold set cannot decide (sex, height, BMI),
    or when the set was not published for `level` (then `threshold` says so; areas only).
    """
    import SimpleITK as sitk

    from sarco_nn.errors import SarcoError
    from sarco_nn.mask_checks import labels_in, mask_reasons
    from sarco_nn.body_composition import level_note
    from sarco_nn.measure import axial_stack, measure_image, smi
    from sarco_nn.status import Verdict
    from sarco_nn.thresholds import bmi as exact_bmi

    results = measure_image(mask_img, ct_img, label=label, slice_index=slice_index,
                            hu_gate=MUSCLE_HU_GATE if hu_gate else None, mask_name=mask_name, ct_name=ct_name)
    present = labels_in(sitk.GetArrayViewFromImage(mask_img))
    if not results:
        others = [v for v in present if v != 0]
        found = f" (it holds {others[:5]})" if others else " (it is empty)"
        raise SarcoError(f"{mask_name}: no slice contains label {label}{found}", fix="check --label, or give --slice N.")
    spacing = axial_stack(mask_img, mask_name).spacing_yx_mm
    bmi = exact_bmi(height, weight)
    objects = []
    for m in results:
        verdict = Verdict()
        verdict.extend(input_reasons)
        verdict.extend(mask_reasons(m, spacing, label=label, labels_present=present))
        smi_value = smi(m.sma_cm2, height)
        at_level = ts.applies_at(level)
        flag = (ts.is_sarcopenic(sex_code, m.sma_cm2, smi_value, bmi, height_m=height)
                if verdict.flag_allowed and at_level else None)
        objects.append({
            "sma_cm2": round(m.sma_cm2, 4),
            "smi_cm2_m2": None if smi_value is None else round(smi_value, 4),
            "muscle_hu_mean": None if m.muscle_hu_mean is None else round(m.muscle_hu_mean, 2),
            "slice_index": m.slice_index,
            "hu_gate": None if m.hu_gate is None else list(m.hu_gate),
            "n_pixels": m.n_pixels,
            "sarcopenic": FLAG_UNKNOWN if flag is None else flag,
            "threshold_set": ts.name,
            "threshold": ts.describe(sex_code, bmi) if at_level else level_note(ts, level),
            "status": verdict.status.value,
            "reasons": [{"code": r.code, "message": r.message} for r in verdict.reasons],
        })
    return objects


