"""Measuring an existing mask the one way: argument checks, input and mask checks, numbers, flag.

`sarco measure` and `sarco_nn.api.measure` both call this module, so a mask measured from a
script gets exactly the numbers, status, reasons and flag rule of the command line: exact BMI
(`thresholds.bmi`), the CT's plausibility (`ct_checks`), the mask's (`mask_checks`), and no
flag at a level the threshold set was not published for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sarco_nn.clinical import height_problem, weight_problem
from sarco_nn.constants import DEFAULT_LEVEL, MUSCLE_HU_GATE, MUSCLE_LABEL, TISSUE_LABELS
from sarco_nn.errors import SarcoError
from sarco_nn.status import FLAG_UNKNOWN, Reason, Status
from sarco_nn.thresholds import DEFAULT_MYOSTEATOSIS_SET, DEFAULT_THRESHOLD_SET, normalise_sex

if TYPE_CHECKING:
    from sarco_nn.body_composition import BodyComposition

__all__ = ["MaskReport", "add_body_composition", "check_measure_options", "check_patient", "composition_at",
           "ct_input_reasons", "mask_file_reasons", "measure_mask", "measure_objects", "resolve_tissue_labels"]


def check_patient(sex: str | None, height: float | None, weight: float | None, label: int,
                  cli: bool = False) -> str | None:
    """The sex code (M/F/None) after refusing values that would give a wrong number silently.

    Errors name `sarco measure`'s flags with `cli`, else `api.measure`'s arguments (height_m, weight_kg).
    """
    api_names = {"height": "height_m", "weight": "weight_kg"}
    opt = (lambda name: f"--{name}") if cli else (lambda name: api_names.get(name, name))
    sex_code = normalise_sex(sex)
    if sex is not None and sex_code is None:
        raise SarcoError(f"{opt('sex')} {sex!r} not understood", fix="use M/F, male/female or man/woman.")
    for name, value, rule in (("height", height, height_problem), ("weight", weight, weight_problem)):
        if value is None:
            continue
        problem = rule(value, opt(name))
        if problem:  # the clinical.csv rule (a unit slip would change SMI, BMI and the flag silently)
            text, _, fix = problem.partition("; ")
            raise SarcoError(text, fix=fix + ".")
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


def _refuse_implausible_spacing(image, path: Path | str) -> None:
    """`ct_checks.spacing_reason` as the one-line refusal of a command that writes no failed row."""
    from sarco_nn.ct_checks import reason_error, spacing_reason

    reason = spacing_reason(image, path)
    if reason is not None:
        raise reason_error(reason, path)


def mask_file_reasons(mask: Path | str) -> list[Reason]:
    """The mask file's own header facts (`ct_checks.file_reasons`): a NIfTI mask whose qform and sform
    give other voxel sizes has an area that depends on the reader (ITK: qform, nibabel/FSL: sform), so
    it is a review with the flag withheld, as the same CT is."""
    from sarco_nn.ct_checks import file_reasons

    return file_reasons(mask)


def measure_objects(mask_img, ct_img, ts, sex_code: str | None, height: float | None, weight: float | None, *,
                    label: int = MUSCLE_LABEL, slice_index: int | None = None, hu_gate: bool = False,
                    mask_name: str | None = None, ct_name: str | None = None, level: str | None = None,
                    input_reasons=(), scaling: str | None = None) -> list[dict]:
    """One result object per measured slice: numbers, status, reasons and the flag (or "unknown").

    scaling: how the mask file's header scaled its labels (`image_io.label_scaling_note`), for its messages."""
    return _measure_objects(mask_img, ct_img, ts, sex_code, height, weight, label=label, slice_index=slice_index,
                            hu_gate=hu_gate, mask_name=mask_name, ct_name=ct_name, level=level,
                            input_reasons=input_reasons, scaling=scaling)[0]


def _measure_objects(mask_img, ct_img, ts, sex_code: str | None, height: float | None, weight: float | None, *,
                     label: int, slice_index: int | None, hu_gate: bool, mask_name: str | None,
                     ct_name: str | None, level: str | None, input_reasons,
                     scaling: str | None = None,
                     composition: Callable[[int | None], BodyComposition] | None = None,
                     ) -> tuple[list[dict], int, list[bool], list[BodyComposition | None]]:
    """`measure_objects`, the mask's number of axial slices, per object whether a flag may be given
    (`Verdict.flag_allowed`: the body composition's myosteatosis flag follows it) and its body
    composition (None without `composition`), from the one reoriented stack.

    `input_reasons` are the CT's own (`sarco_nn.ct_checks`); they join every slice's verdict.
    `composition`: the body composition of a stored slice index; its reasons (`tissue_layout`) join that
    slice's verdict before the flag is decided.

    The flag is withheld ("unknown") when the mask is empty, lacks the label or is implausibly
    small (`sarco_nn.mask_checks`), or when the threshold set cannot decide (sex, height, BMI),
    or when the set was not published for `level` (then `threshold` says so; areas only).
    """
    import SimpleITK as sitk

    from sarco_nn.errors import SarcoError
    from sarco_nn.mask_checks import labels_in, level_span_reason, mask_reasons
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
        if scaling and others:  # the header, not the label value, is the cause
            raise SarcoError(f"{mask_name}: no slice contains label {label}{found}: {scaling}")
        raise SarcoError(f"{mask_name}: no slice contains label {label}{found}", fix="check --label, or give --slice N.")
    stack = axial_stack(mask_img, mask_name)
    spacing = stack.spacing_yx_mm
    bmi = exact_bmi(height, weight)
    # every labelled slice measured as `level`: refused as a diagnosis when they span several levels
    span = level_span_reason([m.slice_index for m in results], stack.spacing_z_mm, level or DEFAULT_LEVEL) \
        if slice_index is None else None
    objects, allowed, compositions = [], [], []
    for m in results:
        verdict = Verdict()
        verdict.extend(input_reasons)
        if span is not None:
            verdict.add(span)
        verdict.extend(mask_reasons(m, spacing, label=label, labels_present=present, level=level, scaling=scaling))
        comp = None if composition is None else composition(m.slice_index)
        if comp is not None:
            verdict.extend(comp.reasons)
        compositions.append(comp)
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
        allowed.append(verdict.flag_allowed)
    return objects, int(stack.array.shape[0]), allowed, compositions


@dataclass(frozen=True)
class MaskReport:
    """What measuring one mask file gives: one object per (slice, level), the CT's own reasons, the mask's slice count.

    `objects` are the dicts `sarco measure --json` prints (with the body composition when asked);
    `n_mask_slices` is 1 for a 2-D mask (or a one-slice volume), which decides the JSON shape.
    """

    objects: list[dict]
    input_reasons: list[Reason] = field(default_factory=list)
    n_mask_slices: int = 1


def check_measure_options(image: Path | str | None, hu_gate: bool, level: str | Sequence[str] | None,
                          hu_convention: str | None, cli: bool = False) -> tuple[list[str], str]:
    """(levels, HU convention) after refusing contradicting options, before any file is read.

    `level` is one level or several (each checked, canonical spelling, each once, in the order
    given; None or empty: L3). `cli` names the options as `sarco measure` flags (``--hu-gate``)
    instead of API arguments.
    """
    from sarco_nn.body_composition import check_convention, check_level

    gate, conv, with_ct = ("--hu-gate", "--hu-convention", "pass it with --image CT.") if cli else (
        "hu_gate", "hu_convention", "pass it as image=CT.")
    if hu_gate and image is None:
        raise SarcoError(f"{'--hu-gate' if cli else 'the HU gate'} needs the CT", fix=with_ct)
    levels: list[str] = []
    for name in [level] if level is None or isinstance(level, str) else list(level) or [None]:
        checked = check_level(name)  # a wrong level is refused before any file is read
        if checked not in levels:
            levels.append(checked)
    convention = check_convention(hu_convention or ("alberta" if hu_gate else "label"))
    if hu_gate and convention != "alberta":
        raise SarcoError(f"{gate} contradicts {conv} {convention}", fix="drop one of them.")
    if convention == "alberta" and image is None:
        raise SarcoError("the alberta HU convention needs the CT", fix=with_ct)
    return levels, convention


def measure_mask(mask: Path | str, *, image: Path | str | None = None, slice_index: int | None = None,
                 label: int | None = None, sex: str | None = None, height_m: float | None = None,
                 weight_kg: float | None = None, hu_gate: bool = False, thresholds: str = DEFAULT_THRESHOLD_SET,
                 tissues: bool = False, labels_file: Path | str | None = None,
                 level: str | Sequence[str] = DEFAULT_LEVEL, vertebrae: Path | str | None = None,
                 hu_convention: str | None = None, myosteatosis: str = DEFAULT_MYOSTEATOSIS_SET,
                 cli: bool = False) -> MaskReport:
    """Everything `sarco measure` / `api.measure` do: check the options, read, measure, add body composition.

    The alberta convention (``--hu-gate``, or ``hu_convention="alberta"``) gates the SMA path too.
    Several levels need `vertebrae` (`sarco_nn.levels.level_slices`): one object per (slice, level),
    each with ``level`` and ``level_source``; a flag only where `thresholds` was published for that level.
    `label` None: the muscle value of the labels.json in use (`muscle_label`), else MUSCLE_LABEL.
    """
    from sarco_nn.image_io import label_scaling_note, read_image, read_label_image
    from sarco_nn.levels import level_slices
    from sarco_nn.thresholds import get_threshold_set, sarcopenia_set

    ts = sarcopenia_set(thresholds)
    label = muscle_label(Path(mask), labels_file, label, cli=cli)
    sex_code = check_patient(sex, height_m, weight_kg, label, cli=cli)
    levels, convention = check_measure_options(image, hu_gate, level, hu_convention, cli=cli)
    mask_img = read_label_image(mask)
    ct_img = read_image(image) if image is not None else None
    if ct_img is None:  # the mask's spacing makes the SMA: the CT's one spacing rule judges it
        _refuse_implausible_spacing(mask_img, mask)
    input_reasons = [*ct_input_reasons(ct_img, image), *mask_file_reasons(mask)]
    mask_name, ct_name = str(mask), None if image is None else str(image)
    tissue_labels = resolve_tissue_labels(mask_img, Path(mask), labels_file, label, force=tissues)
    unknown = _unknown_labels(mask_img, Path(mask), labels_file, label)
    slice_reasons = [*input_reasons, *([unknown] if unknown else [])]
    plan = level_slices(levels, mask_img, vertebrae, slice_index=slice_index, mask_name=mask_name)
    objects: list[dict] = []
    n_slices = 1
    scaling = label_scaling_note(mask)  # the header is read once, not per level
    myo_set = None if tissue_labels is None else get_threshold_set(myosteatosis)
    for at in plan:
        if at.error is not None:
            objects.append({"level": at.level, "level_source": at.source, "error": at.error})  # filled below
            continue
        compose = None if myo_set is None else partial(
            composition_at, mask_img, ct_img, tissue_labels, convention, at.level, height_m,
            myo_set.hu_gate or MUSCLE_HU_GATE, mask_name=mask_name, ct_name=ct_name)
        found, n_slices, allowed, comps = _measure_objects(
            mask_img, ct_img, ts, sex_code, height_m, weight_kg, label=label, slice_index=at.slice_index,
            hu_gate=convention == "alberta", mask_name=mask_name, ct_name=ct_name, level=at.level,
            input_reasons=slice_reasons, scaling=scaling, composition=compose)
        if myo_set is not None:
            add_body_composition(found, comps, sex_code, height_m, weight_kg, myo_set, flag_allowed=allowed)
        objects += [{**o, "level": at.level, "level_source": at.source} for o in found]
    return MaskReport(_with_failed_levels(objects, ts.name), list(input_reasons), n_slices)


def _with_failed_levels(objects: list[dict], threshold_set: str) -> list[dict]:
    """`objects` with each level `level_slices` could not place as a `failed` object of the measured ones'
    keys: no number (None), flags unknown, its reason code and one-line message with the fix."""
    template = next(o for o in objects if "error" not in o)  # level_slices refuses when no level is placed
    out = []
    for o in objects:
        error = o.get("error")
        if error is None:
            out.append(o)
            continue
        failed = dict.fromkeys(template)
        failed.update(sarcopenic=FLAG_UNKNOWN, threshold_set=threshold_set, threshold="", status=Status.FAILED.value,
                      reasons=[{"code": error.reason_code, "message": str(error)}],
                      level=o["level"], level_source=o["level_source"])
        if "myosteatosis" in failed:
            failed["myosteatosis"] = FLAG_UNKNOWN
        out.append(failed)
    return out


def _declared_labels(mask_path: Path, labels_file: Path | str | None) -> dict[str, int] | None:
    """The labels.json in use: --labels FILE, else the drop's (`cases.labels_json_for`), else None."""
    from sarco_nn.cases import labels_json_for, read_labels_json

    beside = labels_json_for(Path(mask_path).parent)
    if labels_file is not None:
        return read_labels_json(Path(labels_file))
    return read_labels_json(beside) if beside is not None else None


def muscle_label(mask_path: Path, labels_file: Path | str | None, label: int | None, cli: bool = False) -> int:
    """The value measured as muscle: the labels.json in use names it; an explicit `label` must agree.

    Without this the SMA path counted value 1 whatever labels.json said (muscle 2, IMAT 1 gave IMAT's
    area as SMA, status ok); a --label contradicting the declared map is refused, not chosen silently.
    """
    declared = _declared_labels(mask_path, labels_file)
    if declared is None:
        return MUSCLE_LABEL if label is None else int(label)
    if label is not None and int(label) != declared["muscle"]:
        opt = "--label" if cli else "label"
        raise SarcoError(f"{opt} {label} contradicts the labels.json in use, which declares muscle "
                         f"{declared['muscle']} ({labels_file or _labels_path(mask_path)})",
                         fix=f"drop {opt}, or correct the labels.json.")
    return declared["muscle"]


def _labels_path(mask_path: Path) -> Path | None:
    from sarco_nn.cases import labels_json_for

    return labels_json_for(Path(mask_path).parent)


def _known_values(declared: dict[str, int] | None, label: int) -> set[int]:
    """The label values that name a tissue: the declared map's, else sarco's tissues with muscle = `label`."""
    if declared is not None:
        return set(declared.values())
    return {label, *(v for k, v in TISSUE_LABELS.items() if k != "muscle" and v != label)}


def _unknown_labels(mask_img, mask_path: Path, labels_file: Path | str | None, label: int) -> Reason | None:
    """`mask_checks.unknown_label_reason` for this mask file and its labels.json (if any)."""
    import SimpleITK as sitk

    from sarco_nn.mask_checks import labels_in, unknown_label_reason

    present = labels_in(sitk.GetArrayViewFromImage(mask_img))
    if label not in present:  # mask_checks' label_absent says it, with the values found
        return None
    declared = _declared_labels(mask_path, labels_file)
    return unknown_label_reason(present, _known_values(declared, label), declared=declared is not None)


def resolve_tissue_labels(mask_img, mask_path: Path, labels_file: Path | str | None, label: int,
                          force: bool) -> dict[str, int] | None:
    """The tissue label map for body composition, or None when only the SMA is asked for.

    --labels FILE wins; else the drop's labels.json (`cases.labels_json_for`; a tissue it names but the mask lacks
    measures 0 cm²); else TISSUE_LABELS with muscle = --label, keeping only the values the mask holds.
    Without --tissues/--labels, body composition is reported only when the mask holds the muscle
    value and at least one other tissue value of that map (a multi-tissue mask).
    """
    import SimpleITK as sitk

    from sarco_nn.cases import labels_json_for, read_labels_json
    from sarco_nn.mask_checks import labels_in

    beside = labels_json_for(Path(mask_path).parent)
    if labels_file is not None:
        labels = read_labels_json(Path(labels_file))
    elif beside is not None:
        labels = read_labels_json(beside)
    else:
        labels = {**TISSUE_LABELS, "muscle": label}
        labels = {k: v for k, v in labels.items() if k == "muscle" or v != label}
    present = set(labels_in(sitk.GetArrayViewFromImage(mask_img)))
    others = {v for k, v in labels.items() if k in TISSUE_LABELS and k != "muscle"}
    # a mask with values no tissue names (a multi-organ map: 2/3 = kidneys) is no tissue map by default
    foreign = beside is None and bool(present - set(labels.values()) - {0})
    if not (force or labels_file is not None or (labels["muscle"] in present and present & others and not foreign)):
        return None
    if labels_file is None and beside is None:
        # no declared map: a tissue value the mask does not hold is "absent" (not 0 cm²); IMAT then derivable
        labels = {k: v for k, v in labels.items() if k == "muscle" or v in present}
    return labels


def composition_at(mask_img, ct_img, labels: dict[str, int], convention: str, level: str, height: float | None,
                   attenuation_gate: tuple[float, float], slice_index: int | None, *, mask_name: str | None = None,
                   ct_name: str | None = None) -> BodyComposition:
    """The body composition of one stored slice of the mask (`body_composition.measure_composition_image`)."""
    from sarco_nn.body_composition import measure_composition_image

    return measure_composition_image(mask_img, ct_img, labels, convention, level, height, slice_index,
                                     mask_name=mask_name, ct_name=ct_name, attenuation_gate=attenuation_gate)[0]


def add_body_composition(objects: list[dict], compositions: Sequence[BodyComposition], sex_code: str | None,
                         height: float | None, weight: float | None, myo_set, *,
                         flag_allowed: Sequence[bool]) -> None:
    """Add every tissue (areas cm², HU mean/SD, indices) and the myosteatosis flag to each slice's object.

    compositions: per object, its slice's body composition (`composition_at`; its reasons are already in
    the object's verdict). flag_allowed: per object, `Verdict.flag_allowed` of its measurement: the
    myosteatosis flag is withheld exactly where the sarcopenia flag is (predict's rule; a no_bone review
    kept the sarcopenia flag but lost this one)."""
    from sarco_nn.body_composition import result_columns
    from sarco_nn.thresholds import bmi as exact_bmi

    bmi = exact_bmi(height, weight)
    for i, (o, comp) in enumerate(zip(objects, compositions, strict=True)):
        row = result_columns(comp, myo_set, sex_code, bmi, withheld=not flag_allowed[i], unknown=FLAG_UNKNOWN,
                             digits={"area": 4, "hu": 2})
        o.update({k: v for k, v in row.items() if k not in o})  # shared keys (SMI, muscle HU) are the SMA path's
