"""Convert a dropped folder (images + L3 masks + clinical.csv) into an nnU-Net v2 raw dataset.

Input (read only, never modified)::

    drop_dir/images/<case>.nii.gz | .mha | .nrrd | <case>/ (one DICOM series per folder)
    drop_dir/masks/<case>.<any SimpleITK format>   muscle = 1 (or as declared in labels.json)
    drop_dir/labels.json                           optional: {"muscle": 1, "imat": 2, ...}
    drop_dir/clinical.csv                          case_id, sex, height_m[, weight_kg, age, sarcopenic]

Output: raw_root/DatasetNNN_<name>/ with imagesTr, labelsTr, dataset.json, clinical.csv (pseudonymous
ids) and manifest.csv (pseudonym → source case; this file re-identifies: keep it private).

Every case goes through `sarco_nn.image_io` (the reader `sarco predict` uses too), is reoriented to
LPS, and each annotated axial slice becomes one 2-D training case on exactly the image's grid. All
problems are collected and reported together; the dataset folder appears only when everything
converted (it is written to a temporary folder and renamed at the end).

Tissues: by default only muscle is kept (label 1; every other declared label becomes background).
With `keep_tissues=True` the tissues labels.json names among `constants.TISSUE_LABELS` (imat, vat,
sat) are kept too, remapped to those values (muscle stays 1), and dataset.json lists them, so one
multi-label nnU-Net model learns all four; a declared name outside that map is refused.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn import __version__
from sarco_nn.atomic import pid_alive
from sarco_nn.cases import case_entries, case_id_from_path, read_labels_json, same_id_hint
from sarco_nn.clinical import ClinicalRecord, missing_row_name, missing_rows, read_clinical_csv, write_clinical_csv
from sarco_nn.constants import CHANNEL_NAMES, FILE_ENDING, LABELS, MUSCLE_LABEL, SLICE_AXIS_SPACING_MM, TISSUE_LABELS
from sarco_nn.ct_checks import file_reasons, reason_error, refuse_unless_ct
from sarco_nn.errors import ClinicalDataError, InputError, SarcoError
from sarco_nn.image_io import (
    check_same_grid,
    extract_axial_slice,
    read_image,
    read_label_image,
    require_axial,
    to_canonical,
)

#: Bumped whenever the converter's output for the same input changes.
CONVERTER_VERSION = "1"

MANIFEST_COLUMNS = (
    "pid", "source_case_id", "image_path", "mask_path", "slice_index", "n_slices", "z_mm",
    "spacing_x_mm", "spacing_y_mm", "source_spacing_z_mm", "annotated_slices",
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ConversionResult:
    dataset_dir: Path
    dataset_name: str
    n_cases: int
    notes: list[str] = field(default_factory=list)
    #: converted, but what the dataset will teach or score may not be what was meant (printed as warnings)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Case:
    case_id: str
    image: Path
    mask: Path


def convert_dropin(drop_dir: Path | str, raw_root: Path | str, name: str, dataset_id: int,
                   overwrite: bool = False, keep_tissues: bool = False) -> ConversionResult:
    """Convert `drop_dir` into raw_root/Dataset{dataset_id:03d}_{name}; raise one InputError listing all problems.

    keep_tissues: keep IMAT/VAT/SAT as labelled in labels.json (remapped to TISSUE_LABELS), not only muscle.
    """
    drop_dir, raw_root = Path(drop_dir), Path(raw_root)
    dataset_name = _check_target(raw_root, name, dataset_id, overwrite)
    problems: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    cases = _pair_cases(drop_dir, problems)
    remap = {}
    try:
        muscle_value, allowed_values = _read_label_map(drop_dir / "labels.json")
    except InputError as error:
        problems.append(str(error))
        muscle_value, allowed_values = MUSCLE_LABEL, {0, MUSCLE_LABEL}
    else:
        try:  # a name it cannot keep is one problem; the values labels.json declares stay declared
            remap = _tissue_remap(drop_dir / "labels.json") if keep_tissues else {}
        except InputError as error:
            problems.append(str(error))
    clinical = _read_clinical(drop_dir / "clinical.csv", cases, problems, notes)

    raw_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(raw_root)
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset_name}{STAGING_MARK}{os.getpid()}-", dir=raw_root))
    try:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        manifest: list[dict] = []
        clinical_out: list[ClinicalRecord] = []
        for number, case in enumerate(cases, start=1):
            try:
                rows = _convert_case(case, f"{name}_{number:04d}", staging, drop_dir, muscle_value, allowed_values,
                                     remap)
            except SarcoError as error:
                problems.append(f"case {case.case_id!r}: {error}")
                continue
            span = _level_span_warning(case, rows)
            if span is not None:
                warnings.append(span)
            elif len(rows) > 1:
                notes.append(f"case {case.case_id!r}: muscle annotated on {len(rows)} axial slices "
                             f"→ {len(rows)} training cases ({rows[0]['pid']}…); keep them in one fold")
            manifest.extend(rows)
            if case.case_id in clinical:
                record = clinical[case.case_id]
                clinical_out.extend(_with_id(record, row["pid"]) for row in rows)
        if problems:
            raise InputError(_summary(problems, drop_dir))
        _write_metadata(staging, name, drop_dir, manifest, clinical_out, _dataset_labels(remap))
        target = raw_root / dataset_name
        if target.exists():  # only reachable with overwrite=True (checked above)
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as error:  # a full disk or an unwritable workspace: one line, nothing left behind
        raise SarcoError(f"cannot write the converted dataset ({error.strerror or error})", raw_root,
                         "free disk space in the workspace, then run convert again") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ConversionResult(dataset_dir=target, dataset_name=dataset_name, n_cases=len(manifest), notes=notes,
                            warnings=warnings)


# ------------------------------------------------------------------------------ input checks


def _check_target(raw_root: Path, name: str, dataset_id: int, overwrite: bool) -> str:
    if not _NAME_RE.match(name):
        raise InputError(f"dataset name {name!r} is not usable", None,
                         "use letters, digits, '_' and '-' only (it becomes part of folder and file names)")
    if not 1 <= int(dataset_id) <= 999:
        raise InputError(f"dataset id {dataset_id} outside 1..999", None, "nnU-Net dataset ids have three digits")
    dataset_name = f"Dataset{int(dataset_id):03d}_{name}"
    if raw_root.is_dir():
        clashes = sorted(p.name for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*")
                         if p.is_dir() and p.name != dataset_name)
        if clashes:
            raise InputError(f"dataset id {dataset_id} is already used by {clashes[0]}", raw_root,
                             "choose another dataset id")
        namesakes = sorted(p.name for p in raw_root.glob(f"Dataset*_{name}")
                           if p.is_dir() and p.name != dataset_name and re.fullmatch(rf"Dataset\d{{3}}_{re.escape(name)}", p.name))
        if namesakes:  # `--dataset NAME` (plan, train, evaluate) would then mean either
            raise InputError(f"dataset name {name!r} is already used by {namesakes[0]}", raw_root,
                             f"pass --overwrite (without --id) to replace {namesakes[0]} with this drop, or choose "
                             "another --name")
        if (raw_root / dataset_name).exists() and not overwrite:
            raise InputError(f"{dataset_name} already exists", raw_root,
                             "choose another name/id, or pass overwrite=True (--overwrite) to replace it")
    return dataset_name


def _list_entries(folder: Path, problems: list[str], what: str) -> tuple[dict[str, Path], set[str]]:
    """(case id → file or folder, duplicated ids); duplicated ids are problems."""
    if not folder.is_dir():
        problems.append(f"missing folder {folder}: put the {what} there (one per case)")
        return {}, set()
    found: dict[str, list[Path]] = {}
    for entry in case_entries(folder):  # the one case-id rule (sarco_nn.cases); duplicates listed below
        try:
            found.setdefault(case_id_from_path(entry), []).append(entry)
        except InputError as error:
            problems.append(str(error))
    result: dict[str, Path] = {}
    duplicated: set[str] = set()
    for case_id, paths in found.items():
        if len(paths) > 1:
            problems.append(f"case {case_id!r}: duplicate case id in {folder.name}/ "
                            f"({', '.join(p.name for p in paths)}){same_id_hint(p.name for p in paths)}: keep one")
            duplicated.add(case_id)
        else:
            result[case_id] = paths[0]
    return result, duplicated


def _pair_cases(drop_dir: Path, problems: list[str]) -> list[_Case]:
    if not drop_dir.is_dir():
        raise InputError("drop-in folder not found", drop_dir, "give the folder holding images/, masks/ and clinical.csv")
    images, duplicated_images = _list_entries(drop_dir / "images", problems, "CT images")
    masks, duplicated_masks = _list_entries(drop_dir / "masks", problems, "muscle masks")
    for case_id in sorted(set(images) - set(masks) - duplicated_masks):
        problems.append(f"case {case_id!r}: image without mask: add masks/{case_id}.nii.gz or remove the image")
    for case_id in sorted(set(masks) - set(images) - duplicated_images):
        problems.append(f"case {case_id!r}: mask without image: add the image or remove masks/{masks[case_id].name}")
    cases = [_Case(c, images[c], masks[c]) for c in sorted(set(images) & set(masks))]
    if not cases and not problems:
        problems.append("no cases found: put images in images/ and masks in masks/")
    return cases


def _read_label_map(path: Path) -> tuple[int, set[int]]:
    """(muscle value in the masks, all values allowed) from labels.json, default muscle=1 only."""
    if not path.exists():
        return MUSCLE_LABEL, {0, MUSCLE_LABEL}
    labels = read_labels_json(path)  # the one labels.json rule (sarco_nn.cases), shared with evaluate
    values = list(labels.values())
    return labels["muscle"], {0, *values}


def _tissue_remap(path: Path) -> dict[int, int]:
    """{value in the masks: training value} of the non-muscle tissues labels.json names (keep_tissues)."""
    if not path.exists():
        return {}
    labels = read_labels_json(path)
    unknown = sorted(set(labels) - set(TISSUE_LABELS) - {"background"})
    if unknown:
        raise InputError(f"labels.json names {unknown}, which sarco cannot keep as tissues", path,
                         f"name only {', '.join(TISSUE_LABELS)} (others: convert without keeping tissues)")
    return {int(v): TISSUE_LABELS[k] for k, v in labels.items() if k in TISSUE_LABELS and k != "muscle"}


def _dataset_labels(remap: dict[int, int]) -> dict[str, int]:
    """dataset.json "labels": background, muscle 1, then every kept tissue with its TISSUE_LABELS value."""
    kept = set(remap.values())
    return {"background": 0, **{k: v for k, v in TISSUE_LABELS.items() if k == "muscle" or v in kept}}


def _training_labels(mask2d: np.ndarray, muscle2d: np.ndarray, remap: dict[int, int] | None) -> np.ndarray:
    """Training label slice: muscle → 1, kept tissues → their TISSUE_LABELS value, all else 0."""
    out = muscle2d.astype(np.uint8) * MUSCLE_LABEL
    for source, target in (remap or {}).items():
        out[np.asarray(mask2d) == source] = target
    return out


def _read_clinical(path: Path, cases: list[_Case], problems: list[str], notes: list[str]) -> dict[str, ClinicalRecord]:
    if not path.is_file():
        problems.append(f"missing {path.name}: add it with columns case_id,sex,height_m (one row per case)")
        return {}
    try:
        clinical = read_clinical_csv(path)
    except ClinicalDataError as error:
        problems.append(str(error))
        return {}
    for case_id, near in missing_rows(clinical, [c.case_id for c in cases]):  # the one near-id rule (#8)
        rule = " (ids are matched exactly, case-sensitive)" if near else ""
        problems.append(f"case {missing_row_name(repr(case_id), near)}: missing from {path.name}: add a row for "
                        f"it{rule}")
    extra = sorted(set(clinical) - {c.case_id for c in cases})
    if extra:
        notes.append(f"{len(extra)} row(s) of {path.name} have no image and were ignored: {', '.join(extra[:5])}")
    return clinical


# -------------------------------------------------------------------------------- per case


#: Marks a staging folder of a running convert: `.<dataset>.partial-<pid>-<random>` in nnUNet_raw.
STAGING_MARK = ".partial-"


def _remove_stale_staging(raw_root: Path) -> None:
    """Remove staging folders left by a convert that was killed (SIGKILL, power loss): their process
    is gone, so nothing will ever finish them, and nnU-Net must never see a half-written dataset."""
    for folder in raw_root.glob(f".*{STAGING_MARK}*"):
        pid_text = folder.name.split(STAGING_MARK, 1)[1].split("-", 1)[0]
        if folder.is_dir() and (not pid_text.isdigit() or not pid_alive(int(pid_text))):
            shutil.rmtree(folder, ignore_errors=True)


def _convert_case(case: _Case, pid: str, staging: Path, drop_dir: Path, muscle_value: int,
                  allowed_values: set[int], remap: dict[int, int] | None = None) -> list[dict]:
    image = read_image(case.image)
    for reason in [*file_reasons(case.image), *refuse_unless_ct(image, case.image)]:
        if reason.blocks_flag:  # training data must be a plausible CT of a body (#14)
            raise reason_error(reason, case.image)
    require_axial(image, case.image)
    mask = read_label_image(case.mask)
    check_same_grid(image, mask, case.mask)
    values = set(np.unique(sitk.GetArrayViewFromImage(mask)).astype(int).tolist())
    undeclared = sorted(values - allowed_values)
    if undeclared:
        raise InputError(f"mask holds label value(s) {undeclared} not declared", case.mask,
                         "use 1 for muscle, or declare every label in labels.json (e.g. {\"muscle\": 1, \"imat\": 2})")
    canonical_image = to_canonical(image)
    canonical_mask = to_canonical(mask)
    muscle = sitk.GetArrayViewFromImage(canonical_mask) == muscle_value
    annotated = [int(z) for z in np.flatnonzero(muscle.any(axis=(1, 2)))]
    if not annotated:
        raise InputError(f"empty mask: no voxel has the muscle label {muscle_value}", case.mask,
                         "give the L3 muscle annotation (muscle = 1)")

    n_slices = canonical_image.GetSize()[2]
    spacing = canonical_image.GetSpacing()
    rows = []
    for z in annotated:
        slice_pid = pid if len(annotated) == 1 else f"{pid}_s{z:03d}"
        image_slice = extract_axial_slice(canonical_image, z)
        label = sitk.GetImageFromArray(_training_labels(sitk.GetArrayViewFromImage(canonical_mask)[z], muscle[z],
                                                        remap)[None])
        label.CopyInformation(image_slice)  # exactly the image's grid
        try:
            sitk.WriteImage(image_slice, str(staging / "imagesTr" / f"{slice_pid}_0000{FILE_ENDING}"), useCompression=True)
            sitk.WriteImage(label, str(staging / "labelsTr" / f"{slice_pid}{FILE_ENDING}"), useCompression=True)
        except RuntimeError:  # ITK's answer to a full disk or an unwritable folder
            raise SarcoError("cannot write the converted case (disk full or folder not writable)", staging.parent,
                             "free disk space in the workspace, then run convert again") from None
        rows.append({
            "pid": slice_pid, "source_case_id": case.case_id,
            "image_path": _relative(case.image, drop_dir), "mask_path": _relative(case.mask, drop_dir),
            "slice_index": z, "n_slices": n_slices, "z_mm": repr(image_slice.GetOrigin()[2]),
            "spacing_x_mm": repr(spacing[0]), "spacing_y_mm": repr(spacing[1]),
            "source_spacing_z_mm": repr(spacing[2]) if n_slices > 1 else "",
            "annotated_slices": len(annotated),
        })
    return rows


def _level_span_warning(case: _Case, rows: list[dict]) -> str | None:
    """A warning when a case's annotated slices span several vertebral levels (a whole-volume mask).

    Why: each slice becomes an "L3" training case, so the model learns every level and `evaluate
    --crossval` judges T11 slices against L3 cut-offs. Not refused (a model of every level may be
    wanted); the rule is `mask_checks.level_span_reason`, the one `sarco measure` applies (#84)."""
    from sarco_nn.mask_checks import level_span_reason

    spacing_z = float(rows[0]["source_spacing_z_mm"]) if rows and rows[0]["source_spacing_z_mm"] else None
    reason = level_span_reason([int(row["slice_index"]) for row in rows], spacing_z,
                               fix="the model will learn every level as L3, and `sarco evaluate --crossval` will "
                                   "judge each slice against L3 cut-offs. Fix: keep only the L3 slice(s) in the "
                                   "mask for an L3 model")
    if reason is None:
        return None
    return (f"case {case.case_id!r} ({rows[0]['mask_path']}): {len(rows)} training cases "
            f"({rows[0]['pid']}…, kept in one fold): {reason.message}")


# ------------------------------------------------------------------------------------ output


def _with_id(record: ClinicalRecord, pid: str) -> ClinicalRecord:
    return ClinicalRecord(case_id=pid, sex=record.sex, height_m=record.height_m, weight_kg=record.weight_kg,
                          age=record.age, sarcopenic=record.sarcopenic)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write_metadata(staging: Path, name: str, drop_dir: Path, manifest: list[dict],
                    clinical: list[ClinicalRecord], labels: dict[str, int] | None = None) -> None:
    dataset = {
        "channel_names": CHANNEL_NAMES,
        "labels": labels or LABELS,
        "numTraining": len(manifest),
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"L3 skeletal-muscle slices converted by sarco_nn from a drop-in folder ({drop_dir.name})",
        "sarco": {
            "converter_version": CONVERTER_VERSION,
            "sarco_nn_version": __version__,
            "slice_axis_spacing_mm": SLICE_AXIS_SPACING_MM,
            "n_source_cases": len({row["source_case_id"] for row in manifest}),
            # manifest image paths are relative to it: lets `sarco train-l3` find the volumes again
            "source_dir": str(drop_dir.resolve()),
        },
    }
    (staging / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    write_clinical_csv(staging / "clinical.csv", clinical)
    with open(staging / "manifest.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(manifest)


def _summary(problems: list[str], drop_dir: Path) -> str:
    """One line for one problem (the usual case in a batch log), else a header line and a list."""
    if len(problems) == 1:
        return f"{problems[0]} (nothing was converted from {drop_dir}; fix it and run again)"
    lines = [f"{drop_dir}: {len(problems)} problem(s), nothing was converted; fix them all, then run again:"]
    lines.extend(f"  - {p}" for p in problems)
    return "\n".join(lines)
