"""Hostile new user of the batch path (session 7, HOSTILE_FINDINGS.md #43-#50): parts killed midway
and merged, a half-written journal line, merge into a part folder, Ctrl-C outside the case loop,
--dicom-seg on anonymised DICOM and on NIfTI, --clinical with a part.

The fast tests build part folders as predict writes them (`batch.inputs_record`); the slow ones run
the real `sarco` on the suite's tiny model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import sarco_inprocess, sarco_subprocess
from dicom_factory import write_series
from helpers import make_image, phantom_array, tree_digest, write
from sarco_nn.batch import (FINGERPRINT_COLUMN, INPUTS_RECORD, JOURNAL_FILE, RESULTS_FILE, Journal, inputs_record,
                            part_of, settings_digest)
from sarco_nn.batch_merge import NOT_PREDICTED, merge_parts
from sarco_nn.errors import Interrupted, SarcoError
from sarco_nn.inference import KEY_COLUMN, PATH_COLUMNS, RESULT_COLUMNS, RUN_FILE, TEST_SIGNAL_ENV

SETTINGS = {"model": "/m"}


def _part(folder: Path, part: int, parts: int, cases: list[str], finished: list[str], listed: list[str] | None = None,
          record: bool = True) -> Path:
    """A part folder as `sarco predict --part` leaves it: the run file (with its inputs record unless
    `record` is False, as an earlier sarco wrote it) and one journal line per finished case."""
    folder.mkdir(parents=True)
    run = {**SETTINGS, "part": part, "parts": parts}
    if record:
        run[INPUTS_RECORD] = inputs_record("/in", listed if listed is not None else [f"{c}.nii.gz" for c in "abcdef"],
                                           {f"/in/{c}.nii.gz": c for c in cases})
    (folder / RUN_FILE).write_text(json.dumps(run))
    digest = settings_digest(SETTINGS)
    for case in finished:
        Journal(folder / JOURNAL_FILE).append(f"/in/{case}.nii.gz", {
            "case_id": case, "input": f"/in/{case}.nii.gz", "status": "ok", "sma_cm2": "150.00",
            "mask": f"masks/{case}.nii.gz", FINGERPRINT_COLUMN: f"{digest}.00000000"})
    return folder


def _merge(folders: list[Path], out: Path, **kw):
    return merge_parts(folders, out, RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS, **kw)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


# ------------------------------------------------------------------ #43 a killed part, merged
def test_merge_names_the_part_that_lacks_cases_instead_of_merging_its_finished_rows_only(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 2, ["a", "b", "c"], ["a", "b", "c"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d", "e", "f"], ["d"])  # killed after its first case
    with pytest.raises(SarcoError, match=r"incomplete batch: part 1 of 2 lacks 2 of 3 case\(s\) \(e, f\)"):
        _merge([p0, p1], tmp_path / "all")
    assert not (tmp_path / "all" / RESULTS_FILE).exists()  # nothing that reads like a finished study

    merged = _merge([p0, p1], tmp_path / "all", allow_incomplete=True)
    assert merged.missing == {1: ["e", "f"]} and merged.n_missing == 2 and merged.n_rows == 6
    assert any("part 1 of 2 lacks 2 of 3" in w for w in merged.warnings)
    rows = _rows(merged.results_csv)
    assert {c: rows[c]["status"] for c in "ef"} == {"e": "failed", "f": "failed"}
    assert rows["e"]["reasons"].startswith(f"{NOT_PREDICTED}: part 1 of 2") and rows["e"]["sma_cm2"] == ""
    assert rows["d"]["status"] == "ok" and rows["d"]["sma_cm2"] == "150.00"


def test_a_half_written_journal_line_is_a_missing_case_never_a_row(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d", "e"], ["d"])
    torn = json.dumps({"key": "/in/e.nii.gz", "row": {"case_id": "e", "input": "/in/e.nii.gz", "status": "ok",
                                                      "sma_cm2": "999.00"}})
    with open(p1 / JOURNAL_FILE, "ab") as handle:
        handle.write(torn[: len(torn) // 2].encode())  # SIGKILL in the middle of the write
    with pytest.raises(SarcoError, match=r"part 1 of 2 lacks 1 of 2 case\(s\) \(e\)"):
        _merge([p0, p1], tmp_path / "all")
    rows = _rows(_merge([p0, p1], tmp_path / "all", allow_incomplete=True).results_csv)
    assert rows["e"]["status"] == "failed" and "999" not in json.dumps(rows)


def test_merge_only_reads_the_part_folders(tmp_path):
    """A part may still be running: merge must not fold (and empty) its journal under it."""
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d"], ["d"])
    before = {p: tree_digest(p) for p in (p0, p1)}
    _merge([p0, p1], tmp_path / "all")
    assert {p: tree_digest(p) for p in (p0, p1)} == before


def test_merge_into_a_part_folder_or_another_predict_output_is_refused(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d"], ["d"])
    for out in (p1, p1 / "masks"):
        with pytest.raises(SarcoError, match="inside the part folder"):
            _merge([p0, p1], out)
    other = _part(tmp_path / "other", 0, 1, ["x"], ["x"])
    with pytest.raises(SarcoError, match=r"a `sarco predict` output folder"):
        _merge([p0, p1], other)
    assert not (p1 / RESULTS_FILE).exists() and not (p1 / "masks" / RESULTS_FILE).exists()
    (tmp_path / "all").mkdir()  # an earlier merge's folder, caught by `predict-merge out/* -o out/all`
    with pytest.raises(SarcoError, match="also given as a part folder"):
        _merge([tmp_path / "all", p0, p1], tmp_path / "all")


def test_parts_that_listed_different_inputs_are_an_incomplete_batch(tmp_path):
    """Scans added to the input folder after part 0 ran: part 0 may lack some of its share."""
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"], listed=["a.nii.gz", "d.nii.gz"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d"], ["d"], listed=["a.nii.gz", "d.nii.gz", "g.nii.gz"])
    with pytest.raises(SarcoError, match=r"listed different inputs \(part\(s\) 0: 2 input\(s\) in /in; part\(s\) 1: 3"):
        _merge([p0, p1], tmp_path / "all")


def test_a_part_of_an_earlier_sarco_without_inputs_record_merges_with_a_warning(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"], record=False)
    p1 = _part(tmp_path / "p1", 1, 2, ["d"], ["d"])
    merged = _merge([p0, p1], tmp_path / "all")
    assert merged.n_rows == 2 and merged.missing == {}
    assert any("part(s) 0: the run file records no inputs" in w for w in merged.warnings)


def test_predict_merge_command_refuses_an_incomplete_batch_or_says_how_many_are_missing(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d", "e"], ["d"])
    refused = sarco_inprocess("predict-merge", p0, p1, "-o", tmp_path / "all")
    assert refused.code == 2 and len(refused.error_lines()) == 1 and "part 1 of 2 lacks 1 of 2" in refused.output
    allowed = sarco_inprocess("predict-merge", p0, p1, "-o", tmp_path / "all", "--allow-incomplete")
    assert allowed.code == 1 and "merged 3 row(s) of 2 part(s), 1 of them not predicted" in allowed.stdout
    assert "warning: incomplete batch: part 1 of 2 lacks 1 of 2" in allowed.stderr


# ------------------------------------------------------------------ #44 Ctrl-C outside the case loop
def _run_app_raising(exc: BaseException, monkeypatch, capsys, resuming: bool = True) -> tuple[int, str]:
    import typer

    from sarco_nn.commands.runner import resumes, run_app

    app = typer.Typer()

    def work() -> None:
        raise exc

    app.command()(resumes()(work) if resuming else work)

    monkeypatch.setattr(sys, "argv", ["sarco"])
    with pytest.raises(SystemExit) as stopped:
        run_app(app)
    return stopped.value.code, capsys.readouterr().err


def test_ctrl_c_while_a_model_loads_is_one_line_not_a_silent_exit(monkeypatch, capsys):
    """typer turns Ctrl-C into a silent exit 130: the user saw nothing (predict said more only inside its case loop)."""
    code, err = _run_app_raising(KeyboardInterrupt(), monkeypatch, capsys)
    assert code == 130 and err.strip() == "interrupted (Ctrl-C): run the same command again to resume"
    # a command that does not resume (measure, evaluate, convert ...) says so (#90)
    code, err = _run_app_raising(KeyboardInterrupt(), monkeypatch, capsys, resuming=False)
    assert code == 130 and err.strip() == "interrupted (Ctrl-C): this command does not resume; run it again to start over"


def test_ctrl_c_in_the_case_loop_exits_130_like_any_other_ctrl_c(monkeypatch, capsys):
    code, err = _run_app_raising(Interrupted("interrupted after 4 of 30 case(s)", "out", "run it again"),
                                 monkeypatch, capsys)
    assert code == 130 and err.strip().startswith("error: out: interrupted after 4 of 30 case(s)")


# ------------------------------------------------------------------ #45/#46 --dicom-seg
def _anonymised(ds, k) -> None:
    """What the real TotalSegmentator series looks like: the dataset's own UIDs blanked, the file meta's kept."""
    ds.SOPInstanceUID, ds.SOPClassUID = "", ""


def test_seg_of_a_series_whose_instance_uids_survive_only_in_the_file_meta(tmp_path):
    hd = pytest.importorskip("highdicom", reason="the dicom-seg extra (highdicom) is part of the test extra")
    import pydicom
    import SimpleITK as sitk

    from sarco_nn.image_io import read_image
    from sarco_nn.review.dicom_seg import write_dicom_seg

    series = write_series(tmp_path / "series", phantom_array(nz=3, ny=32, nx=32), edit=_anonymised)
    metas = {pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID for p in series.iterdir()}
    image = read_image(series)
    mask = sitk.GetImageFromArray(np.pad(np.ones((1, 8, 8), np.uint8), ((1, 1), (4, 20), (4, 20))))
    mask.CopyInformation(image)
    result = write_dicom_seg(series, mask, tmp_path / "seg.dcm")  # the default policy refuses made-up UIDs
    seg = hd.seg.segread(str(result.path))
    refs = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == metas and result.generated_uids == [] and seg.NumberOfFrames == 1


def _nifti_scans(folder: Path, names: list[str]) -> Path:
    for name in names:
        write(make_image(phantom_array(nz=1, ny=48, nx=48)[0], spacing=(0.8, 0.8)), folder / f"{name}.nii.gz")
    return folder


def test_dicom_seg_on_nifti_input_is_refused_before_any_model_is_loaded(tmp_path):
    scans = _nifti_scans(tmp_path / "scans", ["a", "b"])
    result = sarco_inprocess("predict", "-i", scans, "-o", tmp_path / "out", "--dicom-seg", "-w", tmp_path / "ws")
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    assert "--dicom-seg: none of the 2 input(s) is DICOM (a.nii.gz, b.nii.gz)" in result.output
    assert not (tmp_path / "out").exists()


def test_the_seg_line_says_what_was_written_made_up_or_skipped(tmp_path):
    pytest.importorskip("highdicom", reason="the dicom-seg extra (highdicom) is part of the test extra")
    import SimpleITK as sitk

    from sarco_nn.image_io import read_image
    from sarco_nn.review.dicom_seg import seg_summary, write_batch_segs

    def no_study(ds, k):
        ds.StudyInstanceUID = ""

    out = tmp_path / "out"
    cases = []
    for name, edit in (("good", None), ("nostudy", no_study)):
        series = write_series(tmp_path / name, phantom_array(nz=1, ny=32, nx=32), edit=edit)
        mask = sitk.GetImageFromArray(np.ones((1, 32, 32), np.uint8))
        mask.CopyInformation(read_image(series))
        write(mask, out / "masks" / f"{name}.nii.gz")
        cases.append((series, {"case_id": name, "input": str(series), "status": "ok", "mask": f"masks/{name}.nii.gz"}))
    nifti = _nifti_scans(tmp_path / "nifti", ["plain"]) / "plain.nii.gz"
    cases.append((nifti, {"case_id": "plain", "input": str(nifti), "status": "ok", "mask": "masks/plain.nii.gz"}))
    write_batch_segs(out, cases)
    line = seg_summary(out, [row for _, row in cases])
    assert line.startswith(f"dicom-seg: 2 SEG(s) in {out / 'dicom_seg'}")
    assert "1 with made-up UIDs (missing in the source), so they will not attach to the original series in PACS " \
           "(nostudy)" in line
    assert "1 not written: the input is not DICOM (plain)" in line


# ------------------------------------------------------------------ #47 --clinical with a part
def test_the_clinical_warning_of_a_part_names_only_that_parts_scans(tmp_path):
    names = [f"s{k}" for k in range(8)]
    scans = _nifti_scans(tmp_path / "scans", names)
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("case_id,sex,height_m\nnobody,M,1.80\n")
    mine = sorted(n for n in names if part_of(f"{n}.nii.gz", 2) == 0)
    assert 0 < len(mine) < len(names)
    result = sarco_inprocess("predict", "-i", scans, "-o", tmp_path / "out", "--clinical", clinical,
                             "--part", "0", "--parts", "2", "-w", tmp_path / "ws")
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert f"no row for {len(mine)} case(s): {', '.join(mine)};" in warning


# ------------------------------------------------------------------ end to end (tiny model)
def _predict(tiny_model, scans: Path, out: Path, *extra, env: dict | None = None):
    return sarco_subprocess("predict", "-i", scans, "-o", out, "--fast", "--device", "cpu", "-w",
                            tiny_model.workspace, *extra, env=env)


@pytest.mark.slow
def test_a_part_killed_midway_is_named_by_merge_then_resumes_and_merges_cleanly(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    shutil.copytree(tiny_model.held / "images", scans)
    names = sorted(p.name for p in scans.iterdir())
    shares = {k: [n for n in names if part_of(n, 2) == k] for k in (0, 1)}
    big = max(shares, key=lambda k: len(shares[k]))
    assert len(shares[big]) >= 2
    folders = [tmp_path / f"part{k}" for k in (0, 1)]
    assert _predict(tiny_model, scans, folders[1 - big], "--part", str(1 - big), "--parts", "2").code == 0
    killed = _predict(tiny_model, scans, folders[big], "--part", str(big), "--parts", "2",
                      env={TEST_SIGNAL_ENV: "KILL:1"})
    assert killed.code != 0
    with open(folders[big] / JOURNAL_FILE, "ab") as handle:  # and a torn line, as a kill mid-write leaves
        handle.write(b'{"key": "' + str(scans / shares[big][-1]).encode() + b'", "row": {"case_id"')
    run = json.loads((folders[big] / RUN_FILE).read_text())[INPUTS_RECORD]
    assert sorted(run["cases"].values()) == [n[: -len(".nii.gz")] for n in shares[big]] and run["n_listed"] == len(names)

    refused = sarco_subprocess("predict-merge", *folders, "-o", tmp_path / "all")
    lacking = len(shares[big]) - 1
    assert refused.code == 2 and len(refused.error_lines()) == 1, refused.output
    assert f"part {big} of 2 lacks {lacking} of {len(shares[big])} case(s)" in refused.output

    assert _predict(tiny_model, scans, folders[big], "--part", str(big), "--parts", "2").code == 0  # resumed
    merged = sarco_subprocess("predict-merge", *folders, "-o", tmp_path / "all")
    assert merged.code == 0 and f"merged {len(names)} row(s) of 2 part(s): " in merged.stdout, merged.output
    rows = _rows(tmp_path / "all" / RESULTS_FILE)
    assert sorted(rows) == [n[: -len(".nii.gz")] for n in names]
    assert all(r["status"] != "failed" and r["sma_cm2"] for r in rows.values())
    assert all((tmp_path / "all" / r["mask"]).is_file() for r in rows.values())


@pytest.mark.slow
def test_dicom_seg_of_a_dicom_input_reads_back_referencing_its_series_and_the_line_names_the_nifti(tiny_model, tmp_path):
    hd = pytest.importorskip("highdicom", reason="the dicom-seg extra (highdicom) is part of the test extra")
    import pydicom
    import SimpleITK as sitk

    held = sorted((tiny_model.held / "images").iterdir())
    image = sitk.ReadImage(str(held[0]))
    scans = tmp_path / "scans"
    series = write_series(scans / "dicom_case", sitk.GetArrayFromImage(image).astype(float),
                          spacing_yx=image.GetSpacing()[1::-1])
    shutil.copyfile(held[1], scans / "nifti_case.nii.gz")
    result = _predict(tiny_model, scans, tmp_path / "out", "--dicom-seg")
    assert result.code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("dicom-seg:"))
    assert line.startswith("dicom-seg: 1 SEG(s)") and "1 not written: the input is not DICOM (nifti_case)" in line
    rows = _rows(tmp_path / "out" / RESULTS_FILE)
    seg = hd.seg.segread(str(tmp_path / "out" / rows["dicom_case"]["dicom_seg"]))
    source = pydicom.dcmread(next(series.iterdir()))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert os.path.getsize(tmp_path / "out" / rows["dicom_case"]["dicom_seg"]) > 0


def test_one_input_folder_mounted_at_two_paths_is_one_batch(tmp_path):
    """Cluster nodes mount /shared as /mnt/shared: --part splits by names relative to -i, so must merge."""
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d"], ["d"])
    run = json.loads((p1 / RUN_FILE).read_text())
    run[INPUTS_RECORD]["folder"] = "/mnt/in"
    (p1 / RUN_FILE).write_text(json.dumps(run))
    assert _merge([p0, p1], tmp_path / "all").n_rows == 2
