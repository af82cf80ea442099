"""Batch integrity end to end (issues #14, #16): results keyed by input identity, reruns that keep
earlier rows, cluster parts merged into one results.csv, and -o refused where it would do harm."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess

pytestmark = pytest.mark.slow

COMPARED = ("case_id", "status", "sma_cm2", "muscle_hu_mean", "slice_index", "input")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _predict(tiny_model, inputs: Path, out: Path, *extra) -> object:
    return sarco_inprocess("predict", "-i", inputs, "-o", out, "--fast", "--device", "cpu",
                           "-w", tiny_model.workspace, *extra)


def test_a_second_batch_under_the_same_output_keeps_earlier_rows_and_never_reuses_a_name(tiny_model, tmp_path):
    held = sorted((tiny_model.held / "images").iterdir())
    first, second = tmp_path / "monday", tmp_path / "tuesday"
    first.mkdir()
    second.mkdir()
    shutil.copyfile(held[0], first / "patient.nii.gz")
    shutil.copyfile(held[1], first / "other.nii.gz")
    shutil.copyfile(held[2], second / "patient.nii.gz")  # another scan, the same name
    out = tmp_path / "out"
    assert _predict(tiny_model, first, out).code == 0
    monday = {r["input"]: r for r in _rows(out / "results.csv")}
    result = _predict(tiny_model, second, out)
    assert result.code == 0, result.output
    rows = _rows(out / "results.csv")
    assert len(rows) == 3, rows  # nothing dropped
    by_input = {r["input"]: r for r in rows}
    for key, row in monday.items():
        assert {c: by_input[key][c] for c in COMPARED} == {c: row[c] for c in COMPARED}
    patients = [r for r in rows if r["case_id"] == "patient"]
    assert len(patients) == 2 and patients[0]["mask"] != patients[1]["mask"]
    assert patients[0]["sma_cm2"] != patients[1]["sma_cm2"], "the second scan inherited the first one's SMA"
    tuesday = by_input[str(second / "patient.nii.gz")]
    assert "duplicate_case_id" in tuesday["reasons"] and tuesday["status"] in ("review", "failed"), tuesday

    # a changed file under a known path is measured again; an unchanged one is not
    mask = out / monday[str(first / "other.nii.gz")]["mask"]
    stamp = mask.stat().st_mtime_ns
    image = sitk.ReadImage(str(held[2]))
    sitk.WriteImage(image, str(first / "patient.nii.gz"))
    assert _predict(tiny_model, first, out).code == 0
    again = {r["input"]: r for r in _rows(out / "results.csv")}
    assert mask.stat().st_mtime_ns == stamp
    assert again[str(first / "patient.nii.gz")]["sma_cm2"] == by_input[str(second / "patient.nii.gz")]["sma_cm2"]


def test_parts_predicted_apart_and_merged_equal_one_run(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    shutil.copytree(tiny_model.held / "images", scans)
    whole = _predict(tiny_model, scans, tmp_path / "whole")
    assert whole.code == 0, whole.output
    parts = [tmp_path / f"part{k}" for k in range(2)]
    for k, folder in enumerate(parts):
        result = _predict(tiny_model, scans, folder, "--part", str(k), "--parts", "2")
        assert result.code == 0, result.output
    sizes = [len(_rows(p / "results.csv")) for p in parts]
    assert sum(sizes) == 3
    merged = sarco_inprocess("predict-merge", *parts, "-o", tmp_path / "all")
    assert merged.code == 0, merged.output
    rows = {r["input"]: r for r in _rows(tmp_path / "all" / "results.csv")}
    straight = {r["input"]: r for r in _rows(tmp_path / "whole" / "results.csv")}
    assert {k: {c: r[c] for c in COMPARED} for k, r in rows.items()} == \
           {k: {c: r[c] for c in COMPARED} for k, r in straight.items()}
    for row in rows.values():
        assert (tmp_path / "all" / row["mask"]).is_file()
    page = (tmp_path / "all" / "review.html").read_text(encoding="utf-8")  # one page for the merged batch
    assert all(row["case_id"] in page for row in rows.values())
    # a part folder is its own resumable run: a rerun measures nothing again
    stamp = {p: (parts[0] / r["mask"]).stat().st_mtime_ns for p, r in
             ((r["input"], r) for r in _rows(parts[0] / "results.csv"))}
    assert _predict(tiny_model, scans, parts[0], "--part", "0", "--parts", "2").code == 0
    assert {p: (parts[0] / r["mask"]).stat().st_mtime_ns for p, r in
            ((r["input"], r) for r in _rows(parts[0] / "results.csv"))} == stamp
    wrong = _predict(tiny_model, scans, parts[0], "--part", "1", "--parts", "2")
    assert wrong.code == 2 and "part 0/2" in wrong.output


def test_output_inside_the_input_folder_or_the_workspace_is_refused(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    shutil.copytree(tiny_model.held / "images", scans)
    before = sorted(p.name for p in scans.iterdir())
    for out in (scans / "results", tiny_model.workspace / "nnUNet_raw" / "pred"):
        result = _predict(tiny_model, scans, out)
        assert result.code == 2 and len(result.error_lines()) == 1 and "inside" in result.output, result.output
        assert not out.exists()
    assert sorted(p.name for p in scans.iterdir()) == before


def test_an_all_air_slice_never_gets_a_number(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    air = sitk.GetImageFromArray((np.random.default_rng(0).normal(-1000, 15, (1, 128, 128))).astype(np.int16))
    air.SetSpacing((0.8, 0.8, 1.0))
    sitk.WriteImage(air, str(scans / "air.nii.gz"))
    result = _predict(tiny_model, scans, tmp_path / "out")
    assert result.code == 1 and "Traceback" not in result.output
    (row,) = _rows(tmp_path / "out" / "results.csv")
    assert row["status"] == "failed" and row["reasons"].startswith("no_body") and row["sma_cm2"] == ""


def test_overwrite_with_other_settings_recomputes_the_finished_cases(tiny_model, tmp_path):
    """`--overwrite` into a folder of other settings (here another threshold set) must not keep the
    earlier run's rows as this run's: every case is predicted again under the new settings."""
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copyfile(sorted((tiny_model.held / "images").iterdir())[0], scans / "patient.nii.gz")
    out = tmp_path / "out"
    assert _predict(tiny_model, scans, out).code == 0
    assert {r["threshold_set"] for r in _rows(out / "results.csv")} == {"paper"}
    result = _predict(tiny_model, scans, out, "--thresholds", "prado", "--overwrite")
    assert result.code == 0, result.output
    assert {r["threshold_set"] for r in _rows(out / "results.csv")} == {"prado"}


def test_a_changed_clinical_record_is_measured_again_and_an_identical_rerun_is_not(tiny_model, tmp_path):
    """Results are keyed by what they were computed from: a corrected height must give the new SMI
    (and flag) on a rerun into the same folder, with a note saying why; an identical rerun redoes nothing."""
    scans = tmp_path / "scans"
    shutil.copytree(tiny_model.held / "images", scans)
    clinical = tmp_path / "clinical.csv"
    shutil.copyfile(tiny_model.held / "clinical.csv", clinical)
    out = tmp_path / "out"
    assert _predict(tiny_model, scans, out, "--clinical", clinical).code == 0
    first = {r["case_id"]: r for r in _rows(out / "results.csv")}
    stamps = {c: (out / r["mask"]).stat().st_mtime_ns for c, r in first.items()}
    same = _predict(tiny_model, scans, out, "--clinical", clinical)
    assert same.code == 0 and "measured again" not in same.output, same.output
    assert {c: (out / r["mask"]).stat().st_mtime_ns for c, r in first.items()} == stamps

    with open(clinical, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, records = reader.fieldnames, list(reader)
    changed = records[0]["case_id"]
    records[0]["height_m"] = "2.00"
    with open(clinical, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
    result = _predict(tiny_model, scans, out, "--clinical", clinical)
    assert result.code == 0, result.output
    assert "1 finished case(s) of this folder are measured again: clinical record changed (1)" in result.output
    again = {r["case_id"]: r for r in _rows(out / "results.csv")}
    assert float(again[changed]["height_m"]) == 2.0
    assert abs(float(again[changed]["smi_cm2_m2"]) - float(again[changed]["sma_cm2"]) / 4.0) < 0.01
    assert again[changed]["smi_cm2_m2"] != first[changed]["smi_cm2_m2"]
    assert {c: (out / r["mask"]).stat().st_mtime_ns for c, r in first.items() if c != changed} == \
           {c: s for c, s in stamps.items() if c != changed}, "unchanged cases were measured again"


def test_a_model_retrained_in_place_is_other_settings(tiny_model, tmp_path):
    """The model folder's name is not its identity: new weights under the same name must not keep
    the earlier weights' rows (refused, naming the change; --overwrite measures every case again)."""
    import torch

    ws = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, ws, ignore=shutil.ignore_patterns("nnUNet_preprocessed"))
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copyfile(sorted((tiny_model.held / "images").iterdir())[0], scans / "patient.nii.gz")
    out = tmp_path / "out"
    args = ["predict", "-i", scans, "-o", out, "--fast", "--device", "cpu", "-w", ws]
    assert sarco_inprocess(*args).code == 0
    (checkpoint,) = ws.glob("nnUNet_results/*/*/fold_all/checkpoint_final.pth")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = state["network_weights"]
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 0.01
    torch.save(state, checkpoint)
    refused = sarco_inprocess(*args)
    assert refused.code == 2 and len(refused.error_lines()) == 1, refused.output
    assert "model_files" in refused.output and "--overwrite" in refused.output
    redone = sarco_inprocess(*args, "--overwrite")
    assert redone.code == 0 and "computed with other settings (1)" in redone.output, redone.output


def test_formula_names_and_a_junk_file_are_failed_rows_and_the_batch_is_measured(tiny_model, tmp_path):
    """HOSTILE #120/#122 end to end: `=HYPERLINK(1).nii.gz` (a valid CT) is a failed row with a quoted id and the
    case-id rule's line; `notes.txt` beside `notes.txt.nii.gz` neither refuses the batch nor marks the scan."""
    held = sorted((tiny_model.held / "images").iterdir())
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copyfile(held[0], batch / "=HYPERLINK(1).nii.gz")
    shutil.copyfile(held[1], batch / "notes.txt.nii.gz")
    (batch / "notes.txt").write_text("not a scan")
    result = _predict(tiny_model, batch, tmp_path / "out")
    assert result.code == 1, result.output  # a failed row: exit 1, the batch finished
    rows = {Path(r["input"]).name: r for r in _rows(tmp_path / "out" / "results.csv")}
    formula, junk, scan = rows["=HYPERLINK(1).nii.gz"], rows["notes.txt"], rows["notes.txt.nii.gz"]
    assert formula["case_id"] == "'=HYPERLINK(1).nii.gz" and formula["status"] == "failed"
    assert "formula" in formula["reasons"] and "Fix: rename" in formula["reasons"] and formula["sma_cm2"] == ""
    assert junk["status"] == "failed" and "unknown file type" in junk["reasons"]
    assert scan["case_id"] == "notes.txt" and scan["status"] != "failed" and float(scan["sma_cm2"]) > 0
    assert "duplicate_case_id" not in scan["reasons"]
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as handle:
        named = [row[c] for row in csv.DictReader(handle) for c in ("case_id", "input", "reasons", "mask", "overlay")]
    assert not [cell for cell in named if cell.startswith(("=", "+", "-", "@"))]  # what a file name reaches
