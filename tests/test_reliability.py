"""Every item of the bad-input corpus gets a clear answer from every command that reads it.

The contract (issue #6): `sarco convert`, `sarco predict` and `sarco evaluate` answer a bad input
with one `error:` line that names the file and says what to do, never a traceback, and never an
SMA computed from it. Commands run through `sarco_nn.cli.main` (the `sarco` entry point) in this
process; one subprocess per command checks the real console script too.
"""

from __future__ import annotations

import atexit
import csv
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from bad_inputs import NON_UTF8_NAME, BadInput, corpus, dropin, good_slice, write_clinical
from conftest import CliResult, sarco_inprocess, sarco_subprocess
from helpers import DATA, accepted_and_measured, write

_ROOT = Path(tempfile.mkdtemp(prefix="sarco_bad_inputs_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
CORPUS: list[BadInput] = corpus(_ROOT)
BY_KIND = {kind: [i for i in CORPUS if i.kind == kind]
           for kind in ("image", "mask", "clinical", "implausible", "entry", "good")}
#: What `sarco convert` must refuse (entries of a predict batch and odd-but-valid inputs are not its input).
CONVERT_REFUSES = [i for i in CORPUS if i.kind in ("image", "implausible", "mask", "clinical")]

#: Masks `sarco evaluate` rightly accepts: an empty prediction is a result (Dice 0, listed as a
#: problem), and an extra label beside muscle (IMAT, say) is not muscle and is not counted.
EVALUATE_ACCEPTS = {"mask_empty", "mask_undeclared_label"}


def _one_clear_error(result: CliResult, item: BadInput, code: int = 2) -> str:
    """The line, after asserting exit code, a single `error:` line naming the file, no traceback."""
    assert "Traceback" not in result.output, result.output
    assert result.code == code, f"exit {result.code}:\n{result.output}"
    errors = result.error_lines()
    assert len(errors) == 1, f"expected one error: line, got {errors}\n{result.output}"
    line = errors[0]
    assert item.path.name in line, f"the error does not name {item.path.name}: {line}"
    assert re.search(item.problem, line, re.IGNORECASE), f"{item.name}: {line}"
    assert "Fix:" in line or "fix" in line.lower(), f"the error does not say what to do: {line}"
    return line


def test_corpus_covers_the_issue_list():
    names = {i.name for i in CORPUS}
    wanted = {"four_d", "nan_voxels", "inf_voxels", "sagittal_volume", "png_as_nifti", "text_as_nifti",
              "truncated_nifti", "mask_undeclared_label", "mask_other_size", "mask_empty", "clinical_missing_column",
              "clinical_unknown_sex", "clinical_height_cm", "clinical_duplicate_id", "clinical_latin1",
              # issue #14, and generated DICOM (present in a fresh clone without ../shared/data)
              "all_air_slice", "pixels_9mm", "qform_sform_disagree", "dicom_pixel_spacing_5", "dangling_link",
              "loop_link", "analyze_pair", "empty_case_id", "long_name", "dollar_name", "extensionless_dicom",
              "gen_dicom_rescale_stripped", "gen_dicom_mr", "gen_dicom_sagittal", "gen_dicom_gantry_tilt",
              "gen_dicom_missing_slice", "gen_dicom_not_a_volume", "gen_dicom_mixed_series", "gen_dicom_truncated"}
    if DATA.is_dir():
        wanted |= {"dicom_truncated", "dicom_corrupt_pixels", "dicom_missing_slice", "dicom_inconsistent_spacing",
                   "dicom_mixed_series", "dicom_mr", "dicom_sagittal", "dicom_rescale_overflow"}
    assert wanted <= names, wanted - names
    assert all(os.path.lexists(i.path) for i in CORPUS)


# ------------------------------------------------------------------------------------ convert


@pytest.mark.parametrize("item", CONVERT_REFUSES, ids=str)
def test_convert_refuses_with_one_line_naming_the_file(item, tmp_path):
    drop = dropin(item, tmp_path)
    result = sarco_inprocess("convert", drop, "--name", "Bad", "-w", tmp_path / "ws")
    _one_clear_error(result, item)
    raw = tmp_path / "ws" / "nnUNet_raw"
    assert not raw.is_dir() or not any(raw.iterdir()), "a refused conversion left a dataset behind"


def test_convert_subprocess_prints_no_traceback(tmp_path):
    item = next(i for i in CORPUS if i.name == "truncated_nifti")
    result = sarco_subprocess("convert", dropin(item, tmp_path), "--name", "Bad", "-w", tmp_path / "ws")
    _one_clear_error(result, item)


def test_convert_handles_a_non_utf8_file_name(tmp_path):
    """A name that is not UTF-8 is converted (the pseudonym is ASCII) or refused in one line; never a crash."""
    drop = tmp_path / "drop"
    image, mask = good_slice()
    # SimpleITK itself cannot write such a name (it aborts the process): write, then rename
    os.rename(write(image, drop / "images" / "x.nii.gz"), drop / "images" / f"{NON_UTF8_NAME}.nii.gz")
    os.rename(write(mask, drop / "masks" / "x.nii.gz"), drop / "masks" / f"{NON_UTF8_NAME}.nii.gz")
    write_clinical(drop / "clinical.csv", [], "case_id,sex,height_m\nother,M,1.8\n")
    result = sarco_inprocess("convert", drop, "--name", "Names", "-w", tmp_path / "ws")
    assert "Traceback" not in result.output
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    assert "missing from clinical.csv" in result.output


# ------------------------------------------------------------------------------------ predict


def _predict_batch(tmp_path: Path, items: list[BadInput], good: Path) -> Path:
    batch = tmp_path / "batch"
    batch.mkdir()
    for item in items:
        if item.path.is_symlink():
            os.symlink(os.readlink(item.path), batch / item.path.name)
        elif item.path.is_dir():
            shutil.copytree(item.path, batch / item.path.name)
        else:
            shutil.copyfile(item.path, batch / item.path.name)
            companion = item.path.with_suffix(".img")
            if item.path.suffix == ".hdr" and companion.exists():
                shutil.copyfile(companion, batch / companion.name)
    shutil.copyfile(good, batch / good.name)
    return batch


def _read_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_predict_batch_records_every_bad_scan_and_goes_on(tiny_model, tmp_path):
    """One night's batch: every bad scan becomes a failed row (reason naming the file) and an
    errors.log line, the good scan is still measured, and the exit code is non-zero."""
    items = [i for i in BY_KIND["image"] if i.path.suffix != ".jpg"]  # a .jpg is not a scan in a folder
    good = sorted((tiny_model.held / "images").iterdir())[0]
    batch = _predict_batch(tmp_path, items, good)
    out = tmp_path / "pred"
    result = sarco_inprocess("predict", "-i", batch, "-o", out, "--fast", "--device", "cpu", "-w", tiny_model.workspace)
    assert "Traceback" not in result.output
    assert result.code == 1, result.output
    rows = _read_rows(out / "results.csv")
    good_id = good.name[: -len(".nii.gz")]
    assert accepted_and_measured(rows[good_id]) and float(rows[good_id]["sma_cm2"]) > 0
    log = (out / "errors.log").read_text(encoding="utf-8")
    wrong = []
    for item in items:
        row = rows.get(item.case_id)
        if row is None or row["status"] != "failed" or row["sma_cm2"] or row["mask"]:
            wrong.append(f"{item.name}: {row}")
        elif item.path.name not in row["reasons"] or not re.search(item.problem, row["reasons"], re.I):
            wrong.append(f"{item.name}: reason {row['reason']!r}")
        elif "unexpected" in row["reasons"]:
            wrong.append(f"{item.name}: not a clean error: {row['reason']}")
        if f" {item.case_id}: " not in log:
            wrong.append(f"{item.name}: not in errors.log")
    assert not wrong, "\n".join(wrong)
    assert not list((out / "masks").glob("*")) or {p.name for p in (out / "masks").iterdir()} == {good.name}


@pytest.mark.slow
def test_predict_batch_answers_implausible_inputs_odd_entries_and_odd_names(tiny_model, tmp_path):
    """Issue #14: every entry of the folder gets a row. Implausible geometry → `review`, flag unknown;
    links, Analyze pairs and an empty case id → `failed` naming the entry; odd but valid names and an
    extension-less DICOM file → measured (`ok`)."""
    items = BY_KIND["implausible"] + BY_KIND["entry"] + BY_KIND["good"]
    good = sorted((tiny_model.held / "images").iterdir())[0]
    batch = _predict_batch(tmp_path, items, good)
    out = tmp_path / "pred"
    result = sarco_inprocess("predict", "-i", batch, "-o", out, "--fast", "--device", "cpu", "-w", tiny_model.workspace)
    assert "Traceback" not in result.output and result.code == 1, result.output
    rows = _read_rows(out / "results.csv")
    wrong = []
    for item in items:
        row = rows.get(item.case_id)
        if row is None or (row["status"] != item.expect and not (item.expect == "ok" and accepted_and_measured(row))):
            wrong.append(f"{item.name}: expected {item.expect}, got {row}")
        elif item.expect != "ok" and not re.search(item.problem, row["reasons"], re.I):
            wrong.append(f"{item.name}: reasons {row['reasons']!r}")
        elif item.expect == "review" and (row["sarcopenic"] != "unknown" or not row["mask"]):
            wrong.append(f"{item.name}: a review row keeps its mask and gives no flag: {row}")
        elif item.expect == "ok" and not (float(row["sma_cm2"]) > 0 and (out / row["overlay"]).is_file()):
            wrong.append(f"{item.name}: not measured: {row}")
        elif item.expect == "ok" and len(Path(row["mask"]).name.encode()) >= 200:
            wrong.append(f"{item.name}: output name too long for a temporary name: {row['mask']}")
    assert not wrong, "\n".join(wrong)
    assert len(rows) == len(items) + 1  # the .img of the Analyze pair is part of its .hdr row


@pytest.mark.slow
def test_predict_single_bad_scan_gives_one_error_line_naming_it(tiny_model, tmp_path):
    """`sarco predict -i bad.nii.gz`: exit 1 and one `error:` line naming the file (the console script)."""
    item = next(i for i in CORPUS if i.name == "nan_voxels")
    result = sarco_subprocess("predict", "-i", item.path, "-o", tmp_path / "pred", "--fast", "--device", "cpu",
                              "-w", tiny_model.workspace)
    _one_clear_error(result, item, code=1)


@pytest.mark.parametrize("item", BY_KIND["clinical"], ids=str)
def test_predict_refuses_a_bad_clinical_csv_before_any_work(item, tmp_path):
    image, _ = good_slice()
    scan = write(image, tmp_path / "A.nii.gz")
    result = sarco_inprocess("predict", "-i", scan, "-o", tmp_path / "pred", "--clinical", item.path,
                             "-w", tmp_path / "no_model_needed")
    _one_clear_error(result, item)
    assert not (tmp_path / "pred").exists()


def test_predict_unknown_file_type_is_named(tmp_path):
    item = next(i for i in CORPUS if i.name == "unknown_suffix")
    (tmp_path / "ws").mkdir()
    result = sarco_inprocess("predict", "-i", item.path.parent / "does_not_exist.nii.gz", "-o", tmp_path / "p",
                             "-w", tmp_path / "ws")
    assert result.code == 2 and len(result.error_lines()) == 1 and "does_not_exist.nii.gz" in result.output


# ----------------------------------------------------------------------------------- evaluate


def _evaluate_pair(tmp_path: Path, prediction: Path | None, case_id: str = "A", clinical: Path | None = None,
                   n_good: int = 0) -> CliResult:
    """Reference = good masks; predictions = `prediction` for case_id plus n_good good ones."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    _, mask = good_slice()
    for k in range(n_good):
        write(mask, pred / f"good{k}.nii.gz")
        write(mask, ref / f"good{k}.nii.gz")
    if prediction is not None:
        pred.mkdir(exist_ok=True)
        shutil.copyfile(prediction, pred / f"{case_id}.nii.gz")
        write(mask, ref / f"{case_id}.nii.gz")
    args = ["evaluate", pred, "--reference", ref, "-o", tmp_path / "report"]
    if clinical is not None:
        args += ["--clinical", clinical]
    return sarco_inprocess(*args)


@pytest.mark.parametrize("item", [i for i in BY_KIND["mask"] if i.name not in EVALUATE_ACCEPTS], ids=str)
def test_evaluate_refuses_a_bad_prediction_mask(item, tmp_path):
    result = _evaluate_pair(tmp_path, item.path, case_id=item.case_id)
    _one_clear_error(result, item)
    assert not (tmp_path / "report" / "cases.csv").exists()


def test_evaluate_skips_a_bad_case_names_it_and_scores_the_rest(tmp_path):
    item = next(i for i in BY_KIND["mask"] if i.name == "mask_255_for_muscle")
    result = _evaluate_pair(tmp_path, item.path, case_id=item.case_id, n_good=2)
    # exit 1: a case was skipped (the report is still written; session 15, HOSTILE #171)
    assert result.code == 1 and "Traceback" not in result.output, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(item.path.name in line and "255" in line for line in warnings), result.stderr
    assert f"skipped 1 (not evaluated, failed rows in cases.csv: {item.case_id})" in result.stdout
    rows = _read_rows(tmp_path / "report" / "cases.csv")
    assert set(rows) == {"good0", "good1", item.case_id}
    assert rows[item.case_id]["status"] == "failed" and not rows[item.case_id]["sma_pred_cm2"]  # no SMA from it


def test_evaluate_empty_prediction_is_a_result_not_an_error(tmp_path):
    item = next(i for i in BY_KIND["mask"] if i.name == "mask_empty")
    result = _evaluate_pair(tmp_path, item.path, case_id=item.case_id, n_good=1)
    assert result.code == 0, result.output
    assert any("empty prediction" in line and item.case_id in line for line in result.stderr.splitlines())
    assert float(_read_rows(tmp_path / "report" / "cases.csv")[item.case_id]["sma_pred_cm2"]) == 0.0


@pytest.mark.parametrize("item", BY_KIND["clinical"], ids=str)
def test_evaluate_with_a_bad_clinical_csv_classifies_what_it_can(item, tmp_path):
    """Lenient clinical.csv: the bad row's case gets no flag (never a wrong one), the good row's case
    is still classified, and a warning names clinical.csv. A file-level problem skips classification."""
    _, mask = good_slice()
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for case_id in ("A", "B"):
        write(mask, pred / f"{case_id}.nii.gz")
        write(mask, ref / f"{case_id}.nii.gz")
    result = sarco_inprocess("evaluate", pred, "--reference", ref, "--clinical", item.path, "-o", tmp_path / "r",
                             "--thresholds", "prado")
    assert result.code == 0 and "Traceback" not in result.output, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(str(item.path) in line and re.search(item.problem, line, re.I) for line in warnings), result.stderr
    rows = _read_rows(tmp_path / "r" / "cases.csv")
    assert rows["B"]["sarcopenic_ref"] == ""  # never a flag from an unusable value
    file_level = item.name in {"clinical_missing_column", "clinical_empty", "clinical_latin1"}
    assert (rows["A"]["sarcopenic_ref"] == "") == file_level


@pytest.mark.slow
def test_predict_batch_survives_a_non_utf8_file_name(tiny_model, tmp_path):
    """A scan whose name is not UTF-8 fails alone (one row, reason naming it); results.csv stays writable."""
    batch = tmp_path / "batch"
    batch.mkdir()
    image, _ = good_slice()
    os.rename(write(image, batch / "x.nii.gz"), batch / f"{NON_UTF8_NAME}.nii.gz")
    good = sorted((tiny_model.held / "images").iterdir())[0]
    shutil.copyfile(good, batch / good.name)
    out = tmp_path / "pred"
    result = sarco_inprocess("predict", "-i", batch, "-o", out, "--fast", "--device", "cpu", "-w", tiny_model.workspace)
    assert result.code == 1 and "Traceback" not in result.output, result.output
    rows = _read_rows(out / "results.csv")
    assert accepted_and_measured(rows[good.name[: -len(".nii.gz")]])
    failed = [row for row in rows.values() if row["status"] == "failed"]
    assert len(failed) == 1 and "not valid UTF-8" in failed[0]["reasons"], rows
