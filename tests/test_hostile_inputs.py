"""A hostile new user's inputs (HOSTILE_FINDINGS.md): each once gave a traceback or a silently wrong
number; now one clear line, or a `review` row that withholds the flag."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from helpers import square_label_map


def test_measure_on_a_multi_organ_label_map_withholds_the_flag(tmp_path):
    # TotalSegmentator `total`: 1 = spleen, 2/3 = kidneys, 5 = liver. The "SMA" of value 1 is a spleen.
    square_label_map(tmp_path / "organs.nii.gz", {1: 80, 2: 30, 3: 30, 5: 50})
    result = sarco_inprocess("measure", tmp_path / "organs.nii.gz", "--sex", "M", "--json")
    assert result.code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["status"] == "review" and obj["sarcopenic"] == "unknown"
    assert [r["code"] for r in obj["reasons"]] == ["unknown_labels"]
    assert "5" in obj["reasons"][0]["message"]
    assert "imat_area_cm2" not in obj  # kidneys (2, 3) are not taken for IMAT / VAT


def test_measure_with_a_labels_json_naming_every_value_is_ok(tmp_path):
    square_label_map(tmp_path / "m.nii.gz", {1: 100, 7: 20})
    (tmp_path / "labels.json").write_text('{"muscle": 1, "bone": 7}')
    obj = json.loads(sarco_inprocess("measure", tmp_path / "m.nii.gz", "--sex", "M", "--json").stdout)
    assert obj["status"] == "ok" and obj["reasons"] == [] and obj["sarcopenic"] is True  # 100 cm² < 144


def test_output_path_that_is_a_file_gives_one_line_not_a_traceback(tmp_path):
    square_label_map(tmp_path / "case_a.nii.gz", {1: 100})
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    square_label_map(tmp_path / "pred" / "case_a.nii.gz", {1: 100})
    square_label_map(tmp_path / "ref" / "case_a.nii.gz", {1: 100})
    a_file = tmp_path / "report.txt"
    a_file.write_text("keep me")
    result = sarco_inprocess("evaluate", tmp_path / "pred", "--reference", tmp_path / "ref", "-o", a_file)
    assert result.code == 2 and len(result.error_lines()) == 1 and str(a_file) in result.error_lines()[0], result.output
    assert a_file.read_text() == "keep me"


def test_predict_into_a_file_is_refused_before_any_model_is_loaded(tmp_path):
    square_label_map(tmp_path / "scan.nii.gz", {1: 100})
    a_file = tmp_path / "results.csv"
    a_file.write_text("keep me")
    result = sarco_inprocess("predict", "-i", tmp_path / "scan.nii.gz", "-o", a_file, "-w", tmp_path / "ws")
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    assert str(a_file) in result.error_lines()[0] and "folder" in result.error_lines()[0]
    assert a_file.read_text() == "keep me" and not (tmp_path / "ws").exists()


def test_plan_in_an_empty_workspace_says_so_and_creates_nothing(tmp_path):
    result = sarco_inprocess("plan", "--preset", "smoke", "-w", tmp_path / "nows")
    assert result.code == 2 and "no dataset in workspace" in result.output, result.output
    assert not (tmp_path / "nows").exists()


def test_predict_warns_before_running_when_clinical_has_no_row_for_a_scan(tmp_path):
    square_label_map(tmp_path / "case_000.nii.gz", {1: 100})
    (tmp_path / "clinical.csv").write_text("case_id,sex,height_m\nCASE_000,F,1.6\n")
    result = sarco_inprocess("predict", "-i", tmp_path / "case_000.nii.gz", "-o", tmp_path / "out",
                             "--clinical", tmp_path / "clinical.csv", "-w", tmp_path / "ws")
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "case_000 (the CSV has 'CASE_000')" in warning[0], result.output


def test_predict_warns_of_clinical_gaps_from_its_own_discovery_and_one_csv_read(tmp_path, monkeypatch, capsys):
    """The warning was computed by the CLI, which discovered every scan and read clinical.csv once
    more before predict did both itself; predict (api and CLI alike) now warns from its own."""
    import sarco_nn.clinical
    import sarco_nn.inference
    from sarco_nn import api
    from sarco_nn.errors import SarcoError

    calls = {"discover": 0, "read": 0}
    discover, read = sarco_nn.inference.discover_scans, sarco_nn.clinical.read_clinical_csv

    def counted_discover(*args, **kwargs):
        calls["discover"] += 1
        return discover(*args, **kwargs)

    def counted_read(*args, **kwargs):
        calls["read"] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(sarco_nn.inference, "discover_scans", counted_discover)
    monkeypatch.setattr(sarco_nn.clinical, "read_clinical_csv", counted_read)
    (tmp_path / "scans").mkdir()
    for name in ("case_000", "case_001"):
        square_label_map(tmp_path / "scans" / f"{name}.nii.gz", {1: 100})
    csv_path = tmp_path / "scans" / "clinical.csv"  # beside the scans: a table, not a case
    csv_path.write_text("case_id,sex,height_m\nCase_001,F,1.6\n")
    result = sarco_inprocess("predict", "-i", tmp_path / "scans", "-o", tmp_path / "out",
                             "--clinical", csv_path, "-w", tmp_path / "ws")
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "no row for 2 case(s): case_001 (the CSV has 'Case_001')" in warning[0], result.output
    assert calls == {"discover": 1, "read": 1}, calls

    capsys.readouterr()
    with pytest.raises(SarcoError):  # an empty workspace: no model, after the warning
        api.predict(tmp_path / "scans", tmp_path / "out2", api.PredictOptions(clinical_csv=csv_path),
                    workspace=tmp_path / "ws")
    assert "no row for 2 case(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_rerun_with_a_corrected_clinical_csv_recomputes_the_patient_facts(tiny_model, tmp_path):
    """A finished row was kept on resume although clinical.csv had changed: the earlier (missing)
    sex and height stood as this run's answer, flag unknown / the old flag."""
    import csv
    import shutil

    from conftest import sarco_subprocess

    images = tmp_path / "images"
    shutil.copytree(tiny_model.held / "images", images)
    first = sorted(p.name.split(".")[0] for p in images.iterdir())[0]
    empty = tmp_path / "clinical_v1.csv"
    empty.write_text("case_id,sex,height_m\n" + f"{first},,\n")
    fixed = tmp_path / "clinical_v2.csv"
    fixed.write_text("case_id,sex,height_m\n" + f"{first},F,1.62\n")
    out = tmp_path / "out"
    args = ["predict", "-i", images, "-o", out, "--fast", "--device", "cpu", "-w", tiny_model.workspace]
    assert sarco_subprocess(*args, "--clinical", empty).code in (0, 1)
    again = sarco_subprocess(*args, "--clinical", fixed)
    assert again.code in (0, 1), again.output
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        row = {r["case_id"]: r for r in csv.DictReader(handle)}[first]
    assert row["status"] != "failed", row["reasons"]
    assert (row["sex"], float(row["height_m"])) == ("F", 1.62) and row["smi_cm2_m2"] != ""


def test_a_ten_mm_pixel_slice_is_refused_naming_its_file(tmp_path):
    from sarco_nn.errors import InputError
    from sarco_nn.image_io import load_axial_slice

    arr = np.full((1, 64, 64), -1000, np.int16)
    arr[0, 16:48, 16:48] = 40
    arr[0, 30:34, 30:34] = 400
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((10.0, 10.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "coarse.nii.gz"))
    with pytest.raises(InputError) as error:
        load_axial_slice(tmp_path / "coarse.nii.gz")
    assert error.value.path == str(tmp_path / "coarse.nii.gz") and "10.0" in str(error.value)


def test_evaluate_flags_a_multi_organ_reference_instead_of_taking_it_as_truth(tmp_path):
    for side in ("pred", "ref"):
        (tmp_path / side).mkdir()
    square_label_map(tmp_path / "pred" / "c1.nii.gz", {1: 100})
    square_label_map(tmp_path / "ref" / "c1.nii.gz", {1: 60, 5: 60, 6: 40})  # spleen 1, liver 5, stomach 6
    result = sarco_inprocess("evaluate", tmp_path / "pred", "--reference", tmp_path / "ref", "-o", tmp_path / "rep")
    assert result.code == 0, result.output
    import csv

    with open(tmp_path / "rep" / "cases.csv", newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["status"] == "review" and row["reasons"].startswith("unknown_labels: reference holds label value(s) 5, 6")


@pytest.mark.slow
def test_rerun_after_editing_the_threshold_file_is_refused_not_kept(tiny_model, tmp_path):
    """The run was keyed by the --thresholds path: an edited file's new cut-offs never reached the
    finished rows, whose flags stood as this run's answer."""
    import shutil

    from conftest import sarco_subprocess

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sorted((tiny_model.held / "images").iterdir())[0], images)
    cut = tmp_path / "cut.json"
    cut.write_text('{"name": "site", "metric": "sma", "male": 140, "female": 90}')
    args = ["predict", "-i", images, "-o", tmp_path / "out", "--fast", "--device", "cpu", "--thresholds", cut,
            "-w", tiny_model.workspace]
    assert sarco_subprocess(*args).code in (0, 1)
    cut.write_text('{"name": "site", "metric": "sma", "male": 400, "female": 400}')
    again = sarco_subprocess(*args)
    assert again.code == 2 and "another model/settings" in again.output, again.output
