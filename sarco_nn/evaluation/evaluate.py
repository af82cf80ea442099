"""`sarco evaluate`: predictions vs reference masks → every figure a clinical paper reports.

Two entry points, the CLI being a thin layer over them:
  evaluate_folder(pred_dir, reference_dir, clinical_csv, out_dir, …)  one folder of predictions
  evaluate_crossval(workspace, dataset, out_dir, …)                    nnU-Net's fold_k/validation
Both return the summary dict that is also written to summary.json.

Each case is measured through `sarco_nn.measure`, the same code path as `sarco measure` and
`sarco predict`. Problems with single cases (missing reference, unreadable file, unknown sex,
missing height for an SMI set) are collected per kind, listed in the summary and the report, and
the remaining cases are still evaluated.

Rules that change a number (also written into summary.json["rules"] and the report):
- Labels: each side is read with its own label map: references with the drop's labels.json
  (in the reference folder or beside it) or `--label`; predictions with sarco's MUSCLE_LABEL.
- Slices: Dice, IoU, HD95, MSD and FP/FN areas compare both masks AT THE REFERENCE'S
  (annotated) SLICE; the predicted SMA is measured at the prediction's own level (end to end:
  localization + segmentation), as `sarco predict` reports it.
- An empty reference (no muscle voxel) cannot be truth: that case is left out of every
  statistic and listed (cases.csv keeps its row, `in_statistics` = no).
- An empty (all-zero) or implausibly small prediction (`sarco_nn.mask_checks`) is the model's
  failure and counts against it: Dice 0, HD95/MSD = the slice diagonal, its SMA in the
  agreement, and its withheld flag ("unknown") scored as a wrong answer (a false negative when
  the reference is sarcopenic, a false positive otherwise). A file holding values but none of
  the muscle label (only 255) is a wrong file, not a result: skipped and listed (issue #6).
  The wording users read is `RULES["failed_prediction"]` (summary.json, report.md).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarco_nn.cases import (LABELS_FILE, case_id_for_entry, csv_safe, index_by_case, muscle_label_for,
                            read_labels_json)
from sarco_nn.clinical import missing_row_name, missing_rows
from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.evaluation import report, tissues
from sarco_nn.evaluation.agreement import REL_TOL, agreement
from sarco_nn.evaluation.classification import Confusion
from sarco_nn.evaluation.localization import level_summary, predicted_level
from sarco_nn.evaluation.metrics import HD95_DEFINITION, segmentation_metrics
from sarco_nn.evaluation.threshold_impact import IMPACT_PERCENTS, at_risk_counts, case_impact
from sarco_nn.image_io import IMAGE_SUFFIXES as READABLE_SUFFIXES
from sarco_nn.image_io import check_same_grid, label_scaling_note, read_image, read_label_image
from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.ct_checks import refuse_unless_ct
from sarco_nn.mask_checks import SMA_FLOOR_CM2, labels_in, mask_reasons, unknown_label_reason
from sarco_nn.mask_measurement import mask_file_reasons
from sarco_nn.measure import axial_stack, measure_slice, smi
from sarco_nn.status import FLAG_UNKNOWN, Reason, Status, Verdict
from sarco_nn.thresholds import DEFAULT_THRESHOLD_SET, ThresholdSet, sarcopenia_set

#: Mask file endings: every file format `image_io` reads (NIfTI, MHA/MHD, NRRD).
MASK_ENDINGS: tuple[str, ...] = READABLE_SUFFIXES

#: The rules that change a number, as written into summary.json and the report.
RULES: dict[str, str] = {
    "hd95": f"HD95 = {HD95_DEFINITION}; MSD = mean of both directions' surface distances",
    "overlap_slice": "Dice/IoU/HD95/MSD/FP/FN compare both masks at the reference's (annotated) slice; "
                     "the predicted SMA is measured at the prediction's own level (end to end)",
    "empty_reference": "a reference without muscle is left out of every statistic and listed",
    "failed_prediction": "an empty (all-zero, or no muscle at the measured slice) or implausible prediction (SMA below "
                         f"{SMA_FLOOR_CM2:g} cm²) counts against the model: Dice 0, HD95/MSD = slice diagonal, "
                         "SMA kept in the agreement, withheld flag scored as wrong; a prediction file holding "
                         f"values but no voxel of the muscle label {MUSCLE_LABEL} (e.g. only 255) is a wrong file, "
                         "not a result: its case is skipped and listed, in no statistic",
    "cutoffs": "sarcopenic = value strictly below the cut-off, compared in exact decimal arithmetic "
               "(BMI and SMI from the entered height and weight)",
    "undefined_statistics": f"ICC/Pearson on data whose spread is below {REL_TOL:g} of its magnitude: undefined",
    "tissues": tissues.TISSUE_RULE,
    "tissue_layout": tissues.LAYOUT_RULE,
}
#: Number of worst cases (largest |SMA error|) drawn as overlays.
N_WORST = 5
#: Folder name where `sarco predict` writes its masks inside its output folder.
PREDICT_MASK_FOLDER = "masks"
#: Annotated L3 slice per volume (case_id,l3_slice), written beside cases.csv for `sarco predict --l3-csv`.
ANNOTATED_L3_CSV = "annotated_l3.csv"
_FOLD_RE = re.compile(r"^fold_(\d+)$")


@dataclass
class CaseInput:
    case_id: str
    prediction: Path
    reference: Path
    image: Path | None = None
    fold: str = "all"
    annotated_prediction: Path | None = None  # the same model's mask made at the annotated L3 slice


@dataclass
class _Problems:
    """kind -> case ids (or "case: detail"); ordered as first seen."""

    items: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: case id -> (kind, reason) of each case left out of the evaluation (a `failed` row in cases.csv)
    skipped: dict[str, tuple[str, Reason]] = field(default_factory=dict)

    def add(self, kind: str, case: str) -> None:
        if case not in self.items[kind]:
            self.items[kind].append(case)

    def skip(self, kind: str, case_id: str, code: str, message: str, detail: str | None = None) -> None:
        """Leave `case_id` out of every statistic, listed under `kind` and as a `failed` row of cases.csv
        (so a case never drops out of the report unseen, and the command can exit non-zero)."""
        self.add(kind, case_id if detail is None else f"{case_id}: {detail}")
        self.skipped.setdefault(case_id, (kind, Reason(code, message, Status.FAILED)))

    def drop(self, kind: str) -> None:
        """Forget a kind that is no problem in this evaluation (crossval: untrained folds' references)."""
        self.items.pop(kind, None)
        self.skipped = {c: v for c, v in self.skipped.items() if v[0] != kind}

    def skipped_rows(self) -> list[dict]:
        """One cases.csv row per skipped case: status failed, the reason, in no statistic."""
        return [{"case_id": csv_safe(case_id), **Verdict([reason]).columns(), "in_statistics": False}
                for case_id, (_, reason) in sorted(self.skipped.items())]

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.items.items() if v}


# ---------------------------------------------------------------------------- discovery
def list_masks(folder: Path, problems: _Problems | None = None) -> dict[str, Path]:
    """case id -> mask file for every mask file in `folder` (not recursive), by `sarco_nn.cases`'
    one case-id rule; two files giving one case id are refused (InputError naming both).

    With `problems`, a file whose name the rule refuses (a formula character first, an empty id) is
    a skipped case (a `failed` row naming the reason) instead of refusing every other case."""
    folder = Path(folder)
    return index_by_case(_named_by_the_rule(sorted(_mask_files(folder)), problems), folder)


def _named_by_the_rule(paths: list[Path], problems: _Problems | None) -> list[Path]:
    """`paths` whose names give a case id; the others skipped into `problems` (None: kept, so refused)."""
    if problems is None:
        return paths
    kept = []
    for path in paths:
        entry = case_id_for_entry(path)
        if entry.error is None:
            kept.append(path)
        else:
            problems.skip("file name gives no usable case id (case skipped)", entry.case_id, "unreadable",
                          str(entry.error))
    return kept


def _prediction_folder(pred_dir: Path) -> Path:
    """Accept the masks folder itself or `sarco predict`'s output folder (which has masks/)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError("prediction folder not found", path=pred_dir, fix="give the folder of predicted masks.")
    inner = pred_dir / PREDICT_MASK_FOLDER
    if inner.is_dir() and not _mask_files(pred_dir):
        return inner
    return pred_dir


def _mask_files(folder: Path) -> list[Path]:
    """The mask files of `folder` (not recursive, hidden entries left out), in no order."""
    return [p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")
            and p.name.lower().endswith(MASK_ENDINGS)]


def list_predictions(pred_dir: Path, problems: _Problems | None = None) -> dict[str, Path]:
    """case id -> predicted mask of a masks folder, a `sarco predict` output folder (its masks/), or a
    `sarco predict-merge` output folder: that one holds no masks, its results.csv names each row's
    mask in its part's folder (`mask`, relative to it), so those files are taken, named by the same
    case-id rule as in a single predict folder. A row whose mask file is gone is a skipped case."""
    folder = _prediction_folder(Path(pred_dir))
    results = folder / "results.csv"
    if _mask_files(folder) or (folder / PREDICT_MASK_FOLDER).is_dir() or not results.is_file():
        return list_masks(folder, problems)
    import csv

    with open(results, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if (r.get("mask") or "").strip()]
    paths = []
    for row in rows:
        path = folder / row["mask"]
        if path.is_file():
            paths.append(path)
        elif problems is not None:
            problems.skip("predicted mask named in results.csv not found (case skipped)", row.get("case_id") or
                          path.name, "unreadable", f"mask {path} named in {results} not found (a part folder "
                          "moved or deleted?); give the part folders where predict-merge found them")
    return index_by_case(_named_by_the_rule(paths, problems), folder)


def _no_predictions(pred_dir: Path) -> None:
    """Refuse a prediction folder with no mask: "run predict first" unless its results.csv says it ran
    (a predict-merge folder whose every row failed: rerunning predict alike would not help; HOSTILE #201)."""
    results = next((f / "results.csv" for f in (pred_dir, _prediction_folder(pred_dir)) if (f / "results.csv").is_file()),
                   None)
    if results is not None:
        raise InputError(f"no predicted masks: {results} names no mask (every case failed?)", path=pred_dir,
                         fix="read the status and reasons columns of that results.csv; fix those inputs and "
                             "predict them again.")
    raise InputError("no predicted masks (*.nii.gz) found", path=pred_dir, fix="run `sarco predict` first.")


def find_image(images_dir: Path | None, case_id: str) -> Path | None:
    """<case>.nii.gz or nnU-Net's <case>_0000.nii.gz (any accepted ending) in images_dir."""
    if images_dir is None:
        return None
    return list_masks(Path(images_dir)).get(case_id)


def _pair_cases(predictions: dict[str, Path], references: dict[str, Path], images_dir: Path | None,
                folds: dict[str, str] | None, problems: _Problems,
                annotated: dict[str, Path] | None = None) -> list[CaseInput]:
    cases = []
    images = list_masks(Path(images_dir)) if images_dir is not None else {}
    for case_id, pred in predictions.items():
        if case_id not in references:
            problems.skip("prediction without reference mask", case_id, "unpaired",
                          "a prediction without a reference mask of the same case id: not evaluated")
            continue
        if _same_file(pred, references[case_id]):
            problems.skip("prediction is the reference file itself (case skipped)", case_id, "unpaired",
                          f"the prediction {pred} is the reference mask itself: it would score Dice 1")
            continue
        image = images.get(case_id)
        if images_dir is not None and image is None:
            problems.add("CT image not found (no HU, overlay without CT)", case_id)
        if annotated is not None and case_id not in annotated:
            problems.add("no prediction at the annotated slice (--at-annotated)", case_id)
        cases.append(CaseInput(case_id, pred, references[case_id], image, (folds or {}).get(case_id, "all"),
                               (annotated or {}).get(case_id)))
    for case_id in references:
        if case_id not in predictions:
            problems.skip("reference mask without prediction", case_id, "unpaired",
                          "a reference mask without a prediction of the same case id (predict failed, or "
                          "was not run for it): not evaluated")
    return cases


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:
        return False


def _read_clinical(clinical_csv: Path | None, problems: _Problems) -> dict | None:
    """{case_id: ClinicalRecord}, or None when there is no usable clinical.csv (listed as a problem)."""
    if clinical_csv is None:
        problems.add("no clinical.csv given: sex/height unknown, classification skipped", "all cases")
        return None
    from sarco_nn.clinical import read_clinical_csv
    from sarco_nn.errors import ClinicalDataError

    try:  # lenient: one bad row must not cost the classification of every other case
        records = read_clinical_csv(Path(clinical_csv), strict=False)
    except ClinicalDataError as exc:  # segmentation and SMA agreement are still worth reporting
        problems.add("clinical.csv unusable, classification skipped", str(exc))
        return None
    for problem in records.problems:
        problems.add(f"{clinical_csv}: values ignored (those cases not classified)", problem)
    return records


# ---------------------------------------------------------------------------- one case
def _annotated_slice(ref_stack, label: int, case_id: str) -> int | None:
    """Canonical index of the one annotated L3 slice of this case; None when no slice holds muscle."""
    n = ref_stack.array.shape[0]
    if n == 1:
        return 0
    labelled = np.flatnonzero((ref_stack.array == label).any(axis=(1, 2)))
    if len(labelled) == 1:
        return int(labelled[0])
    if len(labelled) == 0:
        return None
    raise InputError(f"reference of case {case_id} is labelled on {len(labelled)} slices; "
                     "evaluation expects one annotated L3 slice per case")


def _require_label(values: list[int], label: int, path: Path, side: str) -> None:
    """A mask with voxels but none of `label` (e.g. muscle saved as 255) is a wrong file, not a result:
    refused (issue #6) rather than scored as empty."""
    others = [v for v in values if v not in (0, label)]
    if others and label not in values:
        message = f"{side} mask holds label value(s) {others[:5]} but no voxel of the muscle label {label}"
        scaling = label_scaling_note(path)
        if scaling:  # scl_slope 2 read muscle 1 as 2: the header is the cause (its note ends with the fix)
            raise InputError(f"{message}: {scaling}", path=path)
        fix = (f"give the reference's muscle value with --label or labels.json (e.g. --label {others[0]})"
               if side == "reference" else f"save muscle as {label} (0 = background), as `sarco predict` does")
        raise InputError(message, path=path, fix=fix + ".")


def _read_mask_stack(path: Path, ref_img=None, ref_path: Path | None = None, label: int | None = None,
                     side: str = "prediction"):
    """(image, axial stack, label values present) of a mask holding `label`, checked against the
    reference's grid when given."""
    import SimpleITK as sitk

    img = read_label_image(path)
    if label is not None:
        _require_label(labels_in(sitk.GetArrayViewFromImage(img)), label, path, side)
    if ref_img is not None:
        check_same_grid(ref_img, img, path, ref_path)
    return img, axial_stack(img, str(path)), labels_in(sitk.GetArrayViewFromImage(img))


def _percent_error(pred: float, ref: float) -> float:
    return (pred - ref) / ref * 100.0 if ref > 0 else math.nan


def _scored_flag(pred, ref, withheld: bool):
    """The predicted flag as the statistics score it: a withheld flag is the wrong answer."""
    if ref is None:
        return None
    return (not ref) if withheld else pred


def _evaluate_case(case: CaseInput, clinical: dict | None, ts: ThresholdSet, ref_label: int, problems: _Problems,
                   pred_label: int = MUSCLE_LABEL, ref_tissue_labels: dict[str, int] | None = None,
                   multi_tissue: bool | None = None) -> dict:
    ref_img, ref_stack, ref_values = _read_mask_stack(case.reference, label=ref_label, side="reference")
    _, pred_stack, pred_values = _read_mask_stack(case.prediction, ref_img, case.reference, pred_label)
    z_found = _annotated_slice(ref_stack, ref_label, case.case_id)
    z = 0 if z_found is None else z_found
    level = predicted_level(ref_stack, pred_stack, z, pred_label) if z_found is not None else None
    z_pred = level.pred_slice if level is not None else z
    spacing = ref_stack.spacing_yx_mm
    ct = None
    if case.image is not None:
        try:
            ct_img = read_image(case.image)
            refuse_unless_ct(ct_img, case.image)  # HU from a non-CT (halved, windowed, a mask) would be reported
            check_same_grid(ct_img, ref_img, case.reference, case.image)
            ct = axial_stack(ct_img, str(case.image)).array
        except SarcoError as exc:
            problems.add("CT image unusable (no HU for this case)", f"{case.case_id}: {exc}")
    ref2d = ref_stack.array[z] == ref_label
    pred_overlap = pred_stack.array[z] == pred_label      # overlap metrics: at the reference's slice
    pred_level = pred_stack.array[z_pred] == pred_label   # SMA: at the prediction's own level
    seg = segmentation_metrics(pred_overlap, ref2d, spacing)
    m_ref = measure_slice(ref2d.astype(np.uint8), spacing, None if ct is None else ct[z], label=1)
    m_pred = measure_slice(pred_level.astype(np.uint8), spacing, None if ct is None else ct[z_pred], label=1)
    sma_annotated = _sma_at_annotated_slice(case, ref_img, z, pred_label, spacing)
    carried = tissues.carried_tissues(ref_tissue_labels, pred_values, multi_tissue)
    if not ref_tissue_labels and tissues.holds_tissues(ref_values) and tissues.holds_tissues(pred_values):
        problems.add("per-tissue evaluation skipped: the reference masks hold tissue values (2-4) but no labels.json "
                     "names them; put one in the reference folder, e.g. "
                     '{"muscle": 1, "imat": 2, "vat": 3, "sat": 4}', case.case_id)
    tissue_columns = tissues.case_tissue_metrics(ref_stack.array[z], pred_stack.array[z], carried, spacing,
                                                 None if ct is None else ct[z]) if m_ref.n_pixels else {}
    ref_layout = pred_layout = None
    if tissue_columns:  # a per-tissue evaluation: are the labels where the tissues can lie (tissues.LAYOUT_RULE)?
        layout_columns, ref_layout, pred_layout = tissues.case_layout(ref_stack.array[z], pred_stack.array[z],
                                                                      ref_tissue_labels, spacing)
        tissue_columns.update(layout_columns)

    ref_reasons = mask_reasons(m_ref, spacing, label=ref_label, labels_present=ref_values, what="reference")
    known = (set(ref_tissue_labels.values()) if ref_tissue_labels
             else {ref_label, *(v for k, v in TISSUE_LABELS.items() if k != "muscle")})
    foreign = unknown_label_reason(ref_values, known, declared=bool(ref_tissue_labels), what="reference")
    ref_reasons += [foreign] if foreign else []  # a multi-organ map is no muscle truth (its 1 may be the spleen)
    ref_reasons += mask_file_reasons(case.reference)  # qform/sform disagree: its area depends on the reader
    ref_reasons += [ref_layout] if ref_layout else []  # a swapped label in the truth: kept, listed
    pred_reasons = mask_reasons(m_pred, spacing, label=pred_label, labels_present=pred_values, what="prediction")
    in_statistics = m_ref.n_pixels > 0
    verdict = Verdict()
    if not in_statistics:
        verdict.add(Reason("empty_reference", "reference has no muscle voxel: left out of the statistics "
                           f"(label {ref_label}; check labels.json or --label)", Status.REVIEW, True))
        problems.add("empty reference mask (left out of the statistics)", case.case_id)
    else:
        verdict.extend(ref_reasons)  # a tiny reference stays in (it is the truth given), but is listed
        for reason in ref_reasons:
            problems.add(f"reference {reason.code} (kept; check the annotation)", case.case_id)
    verdict.extend(pred_reasons)
    withheld = bool(pred_reasons)
    if pred_layout is not None:  # in the verdict and listed, but kept in every statistic (tissues.LAYOUT_RULE)
        verdict.add(pred_layout)
        problems.add("prediction tissue_layout: tissue labels on the wrong side of the muscle wall (kept in every "
                     "statistic; sarco predict would withhold its flags)", case.case_id)
    if withheld and in_statistics:
        problems.add("failed prediction: empty prediction or SMA below the floor (counted against the model)",
                     f"{case.case_id}: {pred_reasons[0].code}")

    record = None if clinical is None else clinical.get(case.case_id)
    if clinical is not None and record is None:  # named as predict names it: 'CASE_000' in the CSV for case_000 (#8)
        for missing, near in missing_rows(clinical, [case.case_id]):
            problems.add("no row in clinical.csv", missing_row_name(missing, near))
    sex = getattr(record, "sex", None)
    height = getattr(record, "height_m", None)
    bmi = getattr(record, "bmi", None)
    smi_ref, smi_pred = smi(m_ref.sma_cm2, height), smi(m_pred.sma_cm2, height)
    flag_ref = ts.is_sarcopenic(sex, m_ref.sma_cm2, smi_ref, bmi, height_m=height) if in_statistics else None
    flag_pred = None if withheld else ts.is_sarcopenic(sex, m_pred.sma_cm2, smi_pred, bmi, height_m=height)
    scored = _scored_flag(flag_pred, flag_ref, withheld)
    reason = ts.why_undecidable(sex, m_ref.sma_cm2, smi_ref, bmi)
    if reason and record is not None:
        problems.add(f"{reason}: not classified under '{ts.name}'", case.case_id)
    impact = case_impact(ts, sex, m_ref.sma_cm2, smi_ref, bmi)
    sma_err = m_pred.sma_cm2 - m_ref.sma_cm2
    notes = [n for n, on in (("empty prediction", seg.prediction_empty), ("empty reference", seg.reference_empty)) if on]
    if level is not None and level.error_slices:
        notes.append(f"predicted at another level ({level.error_slices:+d} slices): overlap metrics at the "
                     "reference's slice, predicted SMA at the prediction's level")
    return {
        "case_id": case.case_id,
        "fold": case.fold,
        **verdict.columns(),
        "in_statistics": in_statistics,
        "sex": sex,
        "height_m": height,
        "bmi": None if bmi is None else float(bmi),
        **seg.to_dict(),
        "overlap_slice": ref_stack.stored_indices[z],
        "sma_pred_slice": ref_stack.stored_indices[z_pred],
        "sma_ref_cm2": m_ref.sma_cm2,
        "sma_pred_cm2": m_pred.sma_cm2,
        "sma_error_cm2": sma_err,
        "sma_error_percent": _percent_error(m_pred.sma_cm2, m_ref.sma_cm2),
        **(level.columns(ref_stack) if level is not None else {}),
        "sma_pred_annotated_cm2": sma_annotated,
        "sma_error_annotated_percent": None if sma_annotated is None else _percent_error(sma_annotated, m_ref.sma_cm2),
        "smi_ref_cm2_m2": smi_ref,
        "smi_pred_cm2_m2": smi_pred,
        "smi_error_cm2_m2": None if smi_ref is None else smi_pred - smi_ref,
        "hu_ref": m_ref.muscle_hu_mean,
        "hu_pred": m_pred.muscle_hu_mean,
        "hu_error": None if m_ref.muscle_hu_mean is None or m_pred.muscle_hu_mean is None
        else m_pred.muscle_hu_mean - m_ref.muscle_hu_mean,
        "threshold": ts.describe(sex, bmi),
        "sarcopenic_ref": flag_ref,
        "sarcopenic_pred": FLAG_UNKNOWN if withheld else flag_pred,
        "sarcopenic_clinical": getattr(record, "sarcopenic", None),
        "flag_correct": None if flag_ref is None or scored is None else flag_ref == scored,
        "flip_k_percent": impact.flip_k,
        "distance_to_cutoff_percent": impact.distance_to_cutoff_percent,
        "note": "; ".join(notes),
        **tissue_columns,
        "_pred_scored": scored,  # the flag the confusion matrix counts (withheld = wrong); not in cases.csv
        "_pred_withheld": withheld,
        "_slice": z,  # canonical slices, for the overlays (not written to cases.csv)
        "_pred_slice": z_pred,
    }


def _sma_at_annotated_slice(case: CaseInput, ref_img, z: int, label: int, spacing) -> float | None:
    """SMA of the model's mask made at the annotated slice (`--at-annotated`), to separate the
    localization's share of the error from the segmentation's."""
    if case.annotated_prediction is None:
        return None
    _, stack, _ = _read_mask_stack(case.annotated_prediction, ref_img, case.reference)
    return measure_slice((stack.array[z] == label).astype(np.uint8), spacing, None, label=1).sma_cm2


# ---------------------------------------------------------------------------- aggregation
def _nanmean(values) -> float:
    arr = np.array([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _nanstat(values, fn) -> float:
    arr = np.array([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(fn(arr)) if arr.size else math.nan


def _agreement_keys(prefix: str, unit: str, pred, ref) -> dict:
    a = agreement(pred, ref)
    u = f"_{unit}" if unit else ""
    return {
        f"{prefix}_n": a.n,
        f"{prefix}_mae{u}": a.mae,
        f"{prefix}_mape_percent": a.mape_percent,
        f"{prefix}_bias{u}": a.bias,
        f"{prefix}_sd_diff{u}": a.sd_diff,
        f"{prefix}_loa_low{u}": a.loa_low,
        f"{prefix}_loa_high{u}": a.loa_high,
        f"{prefix}_icc": a.icc_2_1,
        f"{prefix}_icc_2_1": a.icc_2_1,
        f"{prefix}_icc_3_1": a.icc_3_1,
        f"{prefix}_pearson_r": a.pearson_r,
    }


def _confusion(rows: list[dict], truth_key: str = "sarcopenic_ref") -> Confusion:
    """Confusion of the predicted flags against `truth_key`; a withheld flag is scored as the wrong answer."""
    predicted = [_scored_flag(None if r["_pred_withheld"] else r["sarcopenic_pred"], r[truth_key], r["_pred_withheld"])
                 for r in rows]
    return Confusion.from_flags(predicted, [r[truth_key] for r in rows])


def _fold_row(fold: str, rows: list[dict]) -> dict:
    rows = [r for r in rows if r["in_statistics"]]
    abs_pct = [abs(r["sma_error_percent"]) for r in rows if not math.isnan(r["sma_error_percent"])]
    confusion = _confusion(rows)
    return {
        "fold": fold,
        "n": len(rows),
        "dice_mean": _nanmean(r["dice"] for r in rows),
        "sma_abs_error_percent_mean": _nanmean(abs_pct),
        "sma_abs_error_percent_max": max(abs_pct) if abs_pct else math.nan,
        "n_classified": confusion.n,
        "accuracy": (confusion.tp + confusion.tn) / confusion.n if confusion.n else math.nan,
    }


def _fold_sort_key(fold: str):
    return (0, int(fold)) if fold.isdigit() else (1, fold)


def summarise(rows: list[dict], ts: ThresholdSet, label: int, problems: dict) -> dict:
    """The summary.json content (stable keys; see the README of the evaluator).

    Statistics are over the cases whose reference holds muscle (`in_statistics`); the others are
    counted and listed in `excluded_from_statistics` (module docstring: the rules).
    """
    all_rows = rows
    rows = [r for r in all_rows if r["in_statistics"]]
    excluded = [r["case_id"] for r in all_rows if not r["in_statistics"]]
    confusion = _confusion(rows)
    cls = confusion.summary()
    with_clinical = [r for r in rows if r["sarcopenic_clinical"] is not None]
    vs_clinical = None
    if with_clinical:
        vs_clinical = _confusion(with_clinical, "sarcopenic_clinical").summary()
    flip_ks = [r["flip_k_percent"] for r in rows]
    impact = at_risk_counts(flip_ks)
    sma_agreement = _agreement_keys("sma", "cm2", [r["sma_pred_cm2"] for r in rows], [r["sma_ref_cm2"] for r in rows])
    mape = sma_agreement["sma_mape_percent"]
    observed = {"k_percent": None, "cases_at_risk": None,
                "flags_changed": sum(1 for r in rows if r["flag_correct"] is False)}
    if not math.isnan(mape):
        k = min(max(1, math.ceil(mape)), max(IMPACT_PERCENTS))
        observed.update(k_percent=k, cases_at_risk=impact[k])
    folds = sorted({r["fold"] for r in rows}, key=_fold_sort_key)
    ranked = sorted((r for r in rows if not math.isnan(r["sma_error_percent"])),
                    key=lambda r: abs(r["sma_error_percent"]), reverse=True)
    abs_pct = [abs(r["sma_error_percent"]) for r in ranked]
    failed = [r for r in rows if r["_pred_withheld"]]
    return {
        "n_cases": len(all_rows),
        "n_cases_in_statistics": len(rows),
        "n_excluded_from_statistics": len(excluded),
        "excluded_from_statistics": excluded,
        "n_failed_predictions": len(failed),
        "failed_predictions": [r["case_id"] for r in failed],
        "n_flags_withheld_scored_wrong": sum(1 for r in failed if r["sarcopenic_ref"] is not None),
        "rules": dict(RULES),
        "hd95_definition": HD95_DEFINITION,
        "n_cases_classified": confusion.n,
        "threshold_set": ts.name,
        "threshold_metric": ts.metric,
        "label": label,
        "hu_gate": None,
        "dice_mean": _nanmean(r["dice"] for r in rows),
        "dice_std": _nanstat([r["dice"] for r in rows], np.std),
        "dice_median": _nanstat([r["dice"] for r in rows], np.median),
        "dice_min": _nanstat([r["dice"] for r in rows], np.min),
        "iou_mean": _nanmean(r["iou"] for r in rows),
        "hd95_mean_mm": _nanmean(r["hd95_mm"] for r in rows),
        "hd95_median_mm": _nanstat([r["hd95_mm"] for r in rows], np.median),
        "msd_mean_mm": _nanmean(r["msd_mm"] for r in rows),
        "fp_mean_cm2": _nanmean(r["fp_cm2"] for r in rows),
        "fn_mean_cm2": _nanmean(r["fn_cm2"] for r in rows),
        "n_empty_prediction": sum(1 for r in rows if r["prediction_empty"]),
        "n_empty_reference": sum(1 for r in all_rows if r["reference_empty"]),
        **sma_agreement,
        "sma_abs_error_percent_max": max(abs_pct) if abs_pct else math.nan,
        **_agreement_keys("smi", "cm2_m2", [r["smi_pred_cm2_m2"] for r in rows], [r["smi_ref_cm2_m2"] for r in rows]),
        **_agreement_keys("hu", "", [r["hu_pred"] for r in rows], [r["hu_ref"] for r in rows]),
        **{k: v for k, v in cls.items() if k not in ("n", "tp", "fp", "tn", "fn")},
        "confusion": {k: cls[k] for k in ("tp", "fp", "tn", "fn")},
        "classification_vs_clinical": vs_clinical,
        "threshold_impact": {str(k): v for k, v in impact.items()},
        "threshold_impact_observed": observed,
        "folds": [_fold_row(f, [r for r in rows if r["fold"] == f]) for f in folds] if len(folds) > 1 else [],
        "pooled": _fold_row("pooled", rows),
        "worst_cases": [r["case_id"] for r in ranked[:N_WORST]],
        "l3": level_summary(rows),
        "tissues": tissues.tissue_summary(rows),
        **tissues.layout_summary(rows),
        "problems": problems,
    }


# ---------------------------------------------------------------------------- orchestration
#: The warning for an evaluation in which every prediction equals its reference voxel for voxel.
IDENTICAL_TO_REFERENCE = "every prediction equals its reference voxel for voxel (were copies of the references given as predictions?)"


def _warn_if_every_prediction_is_its_reference(rows: list[dict], problems: _Problems) -> None:
    """Dice exactly 1 on every scored case means identical masks: a copy of the reference folder given as
    predictions scores perfectly without being the same files (which `evaluate_folder` refuses). No model
    does that on real data, so say so, without changing any statistic."""
    scored = [r for r in rows if r.get("dice") is not None and math.isfinite(r["dice"])]
    if scored and all(r["dice"] == 1.0 for r in scored):
        for r in scored:
            problems.add(IDENTICAL_TO_REFERENCE, r["case_id"])


def evaluate_cases(cases: list[CaseInput], clinical: dict | None, out_dir: Path, thresholds: str = DEFAULT_THRESHOLD_SET,
                   label: int = MUSCLE_LABEL, problems: _Problems | None = None, extra: dict | None = None,
                   pred_label: int = MUSCLE_LABEL, label_source: str = "sarco default",
                   ref_tissue_labels: dict[str, int] | None = None) -> dict:
    """Evaluate paired cases, write cases.csv / summary.json / report.md / plots, return the summary.

    label: muscle value in the REFERENCE masks (from labels.json or --label; `label_source` says
    which); pred_label: muscle value in the predictions (sarco's own MUSCLE_LABEL).
    extra: keys added to the summary (e.g. dataset and model of a cross-validation).
    ref_tissue_labels: the reference's full label map (labels.json / dataset.json): tissues other
    than muscle it names are evaluated per tissue against multi-tissue predictions (`tissues`).
    """
    ts = sarcopenia_set(thresholds)
    problems = problems or _Problems()
    rows, inputs = [], {}
    for case in cases:
        try:
            row = _evaluate_case(case, clinical, ts, label, problems, pred_label, ref_tissue_labels)
        except SarcoError as exc:
            problems.skip("unreadable or inconsistent files (case skipped)", case.case_id, "unreadable", str(exc),
                          str(exc))
            continue
        rows.append(row)
        inputs[case.case_id] = case
    _compare_every_case_per_tissue(rows, inputs, clinical, ts, label, problems, pred_label, ref_tissue_labels)
    if not rows:
        listing = "; ".join(f"{k}: {', '.join(v)}" for k, v in problems.as_dict().items())
        raise SarcoError(f"no case could be evaluated ({listing or 'no predictions found'})",
                         fix="check that predictions and reference masks share case names and geometry.")
    _warn_if_every_prediction_is_its_reference(rows, problems)
    summary = summarise(rows, ts, label, problems.as_dict())
    skipped = problems.skipped_rows()
    summary.update(label_prediction=pred_label, label_source=label_source, n_cases_skipped=len(skipped),
                   skipped_cases=[r["case_id"] for r in skipped])
    out_dir = Path(out_dir)
    summary.update(extra or {})
    summary["report_dir"] = str(out_dir.resolve())
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _write_plots(rows, summary, inputs, label, pred_label, out_dir, ref_tissue_labels)
    summary["plots"] = plots
    report.write_cases_csv([*rows, *skipped], out_dir / "cases.csv")  # a skipped case: a failed row, why
    annotated_levels = [r for r in rows if r.get("l3_slice_ref") is not None]
    if annotated_levels:  # lets `sarco predict --l3-csv` segment the annotated slices, for --at-annotated
        report.write_csv(out_dir / ANNOTATED_L3_CSV, ("case_id", "l3_slice"),
                         [{"case_id": r["case_id"], "l3_slice": r["l3_slice_ref"]} for r in annotated_levels])
    report.write_summary_json(summary, out_dir / "summary.json")
    report.write_report_md(summary, rows, out_dir / "report.md", plots)
    return report.clean_json(summary)


def _compare_every_case_per_tissue(rows: list[dict], inputs: dict[str, CaseInput], clinical: dict | None,
                                   ts: ThresholdSet, label: int, problems: _Problems, pred_label: int,
                                   ref_tissue_labels: dict[str, int] | None) -> None:
    """Once one prediction is multi-tissue, every case is compared per tissue (`tissues.TISSUE_RULE`).

    Why: deciding per case left a case whose prediction held muscle only (the model found no fat)
    out of the tissue statistics: VAT Dice 1.000 over 2 cases instead of 0.667 over 3, unsaid."""
    if not any(tissues.carries_tissues(r) for r in rows):
        return
    for row in rows:
        if row["in_statistics"] and not tissues.carries_tissues(row):
            again = _evaluate_case(inputs[row["case_id"]], clinical, ts, label, problems, pred_label,
                                   ref_tissue_labels, multi_tissue=True)
            row.update({k: again[k] for k in (*tissues.ALL_CASE_COLUMNS, "status", "reasons") if k in again})
            problems.add("prediction holds muscle only beside multi-tissue predictions: its other tissues count "
                         "as not predicted (Dice 0 where the reference has them)", row["case_id"])


def _write_plots(rows: list[dict], summary: dict, inputs: dict[str, CaseInput], label: int, pred_label: int,
                 out_dir: Path, ref_tissue_labels: dict[str, int] | None = None) -> dict:
    plots: dict[str, str] = {}
    rows = [r for r in rows if r["in_statistics"]] or rows  # the plots show what the statistics count
    pairs = [(r["sma_pred_cm2"], r["sma_ref_cm2"]) for r in rows]
    pred, ref = zip(*pairs)
    report.plot_bland_altman(pred, ref, out_dir / "bland_altman_sma.png", "SMA", "cm²",
                             summary["sma_bias_cm2"], summary["sma_loa_low_cm2"], summary["sma_loa_high_cm2"])
    plots["Bland–Altman SMA"] = "bland_altman_sma.png"
    report.plot_scatter(pred, ref, out_dir / "scatter_sma.png", "SMA", "cm²")
    plots["predicted vs reference SMA"] = "scatter_sma.png"
    smi_pairs = [(r["smi_pred_cm2_m2"], r["smi_ref_cm2_m2"]) for r in rows if r["smi_ref_cm2_m2"] is not None]
    if len(smi_pairs) >= 2:
        sp, sr = zip(*smi_pairs)
        report.plot_scatter(sp, sr, out_dir / "scatter_smi.png", "SMI", "cm²/m²")
        plots["predicted vs reference SMI"] = "scatter_smi.png"
    dice_by_fold: dict[str, list[float]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: _fold_sort_key(r["fold"])):
        dice_by_fold[r["fold"]].append(r["dice"])
    report.plot_fold_dice(dict(dice_by_fold), out_dir / "dice_per_fold.png")
    plots["Dice per fold"] = "dice_per_fold.png"
    plots.update(tissues.write_plots(rows, summary.get("tissues"), out_dir))  # one per tissue section
    by_id = {r["case_id"]: r for r in rows}
    for case_id in summary["worst_cases"]:
        row, case = by_id[case_id], inputs[case_id]
        ref_stack = axial_stack(read_label_image(case.reference))
        pred_stack = axial_stack(read_label_image(case.prediction))
        z = row["_slice"]  # the overlap slice, where the title's Dice was computed
        ct2d = None
        if case.image is not None and row["hu_ref"] is not None:
            ct2d = axial_stack(read_image(case.image)).array[z]
        name = f"worst_{len([p for p in plots if p.startswith('worst')]) + 1}_{_safe(case_id)}.png"
        title = (f"{case_id} (fold {row['fold']}): SMA ref {row['sma_ref_cm2']:.1f} cm², "
                 f"pred {row['sma_pred_cm2']:.1f} cm² ({row['sma_error_percent']:+.1f} %), Dice {row['dice']:.3f}")
        carried = tissues.carried_tissues(ref_tissue_labels, labels_in(pred_stack.array))
        if carried:  # a multi-tissue evaluation: every tissue, in predict's overlay colours
            _tissue_overlay(ct2d, ref_stack.array[z], pred_stack.array[z], carried, ref_stack.spacing_yx_mm,
                            title, out_dir / "overlays" / name)
        else:
            report.plot_overlay(ct2d, ref_stack.array[z] == label, pred_stack.array[z] == pred_label,
                                ref_stack.spacing_yx_mm, title, out_dir / "overlays" / name)
        plots[f"worst case {case_id}"] = f"overlays/{name}"
    return plots


def _tissue_overlay(ct2d: np.ndarray | None, ref2d: np.ndarray, pred2d: np.ndarray,
                    carried: dict[str, tuple[int, int]], spacing_yx_mm, title: str, path: Path) -> None:
    """Worst-case overlay of a multi-tissue evaluation (`overlay.save_overlay`, one Okabe–Ito colour
    per tissue): the prediction filled, each reference tissue outlined in its colour."""
    from sarco_nn.overlay import DISPLAY_WINDOW_HU, save_overlay

    background = ct2d if ct2d is not None else np.full(ref2d.shape, DISPLAY_WINDOW_HU[0])  # no CT: black
    save_overlay(background, pred2d, spacing_yx_mm, path, title + "\nfilled: prediction, outlines: reference",
                 reference=ref2d, tissues={t: p for t, (_, p) in carried.items()},
                 reference_tissues={t: r for t, (r, _) in carried.items()})


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def evaluate_folder(pred_dir, reference_dir, clinical_csv, out_dir, thresholds: str = DEFAULT_THRESHOLD_SET,
                    images_dir=None, folds: dict[str, str] | None = None, label: int | None = None,
                    annotated_dir=None) -> dict:
    """Evaluate a folder of predicted masks against reference masks with the same case names.

    pred_dir: the masks folder, or `sarco predict`'s output folder (its masks/ is used).
    reference_dir: reference masks, <case>.nii.gz. clinical_csv: read with
    `sarco_nn.clinical.read_clinical_csv` (None: classification skipped). images_dir: optional CT
    (<case>.nii.gz or <case>_0000.nii.gz) for mean HU and overlays. folds: case -> fold label.
    annotated_dir: predictions of the same model made at the annotated slices (`sarco predict
    --l3-csv <report>/annotated_l3.csv`), for the SMA error without the localization's share.
    label: muscle value in the reference masks; None: the drop's labels.json (in reference_dir or
    beside it), else sarco's MUSCLE_LABEL. Predictions are read with MUSCLE_LABEL.
    Returns the summary (also written to out_dir/summary.json).
    """
    sarcopenia_set(thresholds)  # a myosteatosis set given as --thresholds: refused before any file is read
    reference_dir = Path(reference_dir)
    if not reference_dir.is_dir():
        raise InputError("reference mask folder not found", path=reference_dir, fix="pass --reference MASKS_DIR.")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise InputError("image folder not found", path=images_dir, fix="pass --images with the CT folder.")
    from sarco_nn.batch import check_output_location

    # the report never lands among the files it reads (a rerun would take report files for masks)
    check_output_location(Path(out_dir), references=[reference_dir, *([Path(images_dir)] if images_dir else [])])
    if _same_file(_prediction_folder(Path(pred_dir)), reference_dir):
        raise InputError("the predictions and the reference masks are one folder: every case would score Dice 1",
                         path=reference_dir, fix="give --reference the manual masks, and PRED_DIR the predictions.")
    problems = _Problems()
    predictions = list_predictions(Path(pred_dir), problems)
    if not predictions and not problems.skipped:
        _no_predictions(Path(pred_dir))
    clinical = _read_clinical(clinical_csv, problems)
    annotated = None
    if annotated_dir is not None:
        annotated = list_predictions(Path(annotated_dir))
        if not annotated:
            raise InputError("no predicted masks (*.nii.gz) found", path=annotated_dir,
                             fix=f"run `sarco predict --l3-csv REPORT/{ANNOTATED_L3_CSV}` into that folder first.")
    cases = _pair_cases(predictions, list_masks(reference_dir, problems), images_dir and Path(images_dir), folds,
                        problems, annotated)
    ref_label, source = muscle_label_for(reference_dir, label)
    ref_tissues = read_labels_json(source) if source.endswith(LABELS_FILE) else None
    return evaluate_cases(cases, clinical, Path(out_dir), thresholds, ref_label, problems, label_source=source,
                          ref_tissue_labels=ref_tissues)


def crossval_model_dirs(workspace, dataset: str | int | None = None) -> tuple[str, list[Path]]:
    """(dataset name, result folders Trainer__Plans__config that hold fold_k/validation)."""
    from sarco_nn.workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    name = ws.dataset_name(dataset)
    root = ws.results / name
    models = sorted(p for p in root.glob("*__*__*") if p.is_dir()
                    and any(_FOLD_RE.match(f.name) and (f / "validation").is_dir() for f in p.iterdir()))
    return name, models


def evaluate_crossval(workspace=None, dataset: str | int | None = None, out_dir=None,
                      thresholds: str = DEFAULT_THRESHOLD_SET, trainer: str | None = None,
                      label: int | None = None) -> dict:
    """Evaluate nnU-Net's cross-validation predictions per fold and pooled.

    Predictions: nnUNet_results/<Dataset>/<Trainer>__<Plans>__<config>/fold_k/validation/<case>.nii.gz
    (a case's fold is the fold folder it is found in); references: nnUNet_raw/<Dataset>/labelsTr;
    CT: imagesTr/<case>_0000.nii.gz; clinical: nnUNet_raw/<Dataset>/clinical.csv.
    trainer: the result folder name Trainer__Plans__config (or a part of it) when several exist.
    out_dir: default <model folder>/sarco_evaluation.
    """
    sarcopenia_set(thresholds)  # refused before the model folders are searched
    from sarco_nn.workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    name, models = crossval_model_dirs(ws, dataset)
    if trainer is not None:
        from sarco_nn.model_store import match_model_folders  # the one model-lookup rule

        models = match_model_folders(models, trainer)
    if not models:
        raise SarcoError(f"no cross-validation predictions (fold_k/validation) for {name} in {ws.results / name}",
                         fix="train the folds first (`sarco train 0` … `sarco train 4`).")
    if len(models) > 1:
        raise SarcoError(f"several trained models for {name}: {', '.join(m.name for m in models)}",
                         fix="choose one with --trainer.")
    model_dir = models[0]
    problems = _Problems()
    predictions: dict[str, Path] = {}
    folds: dict[str, str] = {}
    fold_dirs = sorted((f for f in model_dir.iterdir() if _FOLD_RE.match(f.name) and (f / "validation").is_dir()),
                       key=lambda f: int(_FOLD_RE.match(f.name).group(1)))
    for fold_dir in fold_dirs:
        fold = _FOLD_RE.match(fold_dir.name).group(1)
        for case_id, path in list_masks(fold_dir / "validation", problems).items():
            if case_id in predictions:
                problems.add("case predicted in several folds (first fold kept)", f"{case_id}: fold {fold}")
                continue
            predictions[case_id] = path
            folds[case_id] = fold
    raw = ws.raw / name
    labels_dir = raw / "labelsTr"
    if not labels_dir.is_dir():
        raise InputError("reference labels not found", path=labels_dir, fix="convert the dataset with `sarco convert`.")
    clinical_csv = raw / "clinical.csv"
    clinical = _read_clinical(clinical_csv if clinical_csv.is_file() else None, problems)
    references = list_masks(labels_dir, problems)
    # A crossval covers only the folds trained so far: untrained cases are not "missing predictions".
    cases = _pair_cases(predictions, references, raw / "imagesTr" if (raw / "imagesTr").is_dir() else None,
                        folds, problems)
    problems.drop("reference mask without prediction")
    out = Path(out_dir) if out_dir is not None else model_dir / "sarco_evaluation"
    ref_label = MUSCLE_LABEL if label is None else int(label)  # labelsTr: `sarco convert` writes muscle as 1
    return evaluate_cases(cases, clinical, out, thresholds, ref_label, problems,
                          extra={"dataset": name, "model": model_dir.name}, ref_tissue_labels=_dataset_labels(raw),
                          label_source="--label" if label is not None else "labelsTr (sarco convert)")


def _dataset_labels(raw: Path) -> dict[str, int] | None:
    """The label map of a converted dataset (dataset.json "labels"), for the per-tissue evaluation."""
    import json

    try:
        labels = json.loads((raw / "dataset.json").read_text(encoding="utf-8")).get("labels") or {}
    except (OSError, ValueError):
        return None
    return {k: int(v) for k, v in labels.items() if k != "background" and isinstance(v, int)} or None
