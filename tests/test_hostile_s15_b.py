"""Session 15, helper b: predict-merge's stale rows and tables, evaluate on merged / self / formula-named
folders with skipped cases visible, QC reason wording, --l3-slice with --l3-from (HOSTILE_FINDINGS #170-)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import make_image, phantom_array, write
from sarco_nn.batch import JOURNAL_FILE, RESULTS_FILE, TABLES_RECORD, Journal, part_of, read_results
from sarco_nn.batch_merge import merge_parts
from sarco_nn.errors import SarcoError
from sarco_nn.inference import KEY_COLUMN, PATH_COLUMNS, RESULT_COLUMNS, RUN_FILE


def _merge(parts: list[Path], out: Path, **kwargs):
    return merge_parts(parts, out, RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS, **kwargs)


def _scans(folder: Path, names: list[str]) -> None:
    for name in names:
        write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), folder / name)


def test_merge_leaves_out_an_earlier_batchs_rows_left_in_a_part_folder_with_one_warning(tmp_path, monkeypatch):
    # before: part 0's folder, reused for batch B, still held batch A's rows; merge took them as B's patients
    from test_batch import _fake_model_predict

    import sarco_nn.inference as inference
    from sarco_nn.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    _scans(tmp_path / "batch_a", [f"old_{i}.nii.gz" for i in range(6)])
    new = [f"new_{i}.nii.gz" for i in range(6)]
    _scans(tmp_path / "batch_b", new)
    _fake_model_predict(monkeypatch, tmp_path)
    inference.predict(ws, tmp_path / "batch_a", tmp_path / "p0", device="cpu", progress=False, part=0, parts=2,
                      io_workers=1)
    stale = len(read_results(tmp_path / "p0" / RESULTS_FILE, KEY_COLUMN))
    assert stale >= 1
    for part in (0, 1):  # batch B, the same -o folders
        _fake_model_predict(monkeypatch, tmp_path)
        inference.predict(ws, tmp_path / "batch_b", tmp_path / f"p{part}", device="cpu", progress=False, part=part,
                          parts=2, io_workers=1)
    merged = _merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all")
    rows = read_results(merged.results_csv, KEY_COLUMN)
    assert sorted(Path(k).name for k in rows) == sorted(new)  # batch B only
    assert merged.n_rows == len(new)
    [line] = [w for w in merged.warnings if "left out" in w]
    assert f"left out {stale} row(s)" in line and f"part 0: {stale}" in line and "earlier batch" in line
    assert len(read_results(tmp_path / "p0" / RESULTS_FILE, KEY_COLUMN)) == stale + sum(
        part_of(n, 2) == 0 for n in new)  # the part folder itself is never changed by merge


def _part(folder: Path, part: int, cases: list[str], tables: dict | None) -> None:
    folder.mkdir(parents=True)
    run = {"model": "m", "part": part, "parts": 2,
           "inputs": {"folder": "/in", "n_listed": 2, "listing": "x", "cases": {f"/in/{c}": c for c in cases}}}
    if tables is not None:
        run[TABLES_RECORD] = tables
    (folder / RUN_FILE).write_text(json.dumps(run))
    for case in cases:
        Journal(folder / JOURNAL_FILE).append(f"/in/{case}", {"case_id": case, "input": f"/in/{case}", "status": "ok"})


def test_merge_refuses_parts_given_different_clinical_files_naming_the_parts(tmp_path):
    # before: --clinical enters per case, not the settings, so parts of two clinical.csv merged silently
    _part(tmp_path / "p0", 0, ["a"], {"clinical": "120:aaaa1111bbbb2222", "l3_csv": None})
    _part(tmp_path / "p1", 1, ["b"], {"clinical": "121:cccc3333dddd4444", "l3_csv": None})
    with pytest.raises(SarcoError, match=r"different --clinical files \(part\(s\) 0: file aaaa1111; part\(s\) 1: "
                                         r"file cccc3333") as refused:
        _merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all")
    assert "Fix:" in str(refused.value) and not (tmp_path / "all").exists()
    _part(tmp_path / "q1", 1, ["b"], {"clinical": None, "l3_csv": None})  # given to one part only
    with pytest.raises(SarcoError, match=r"part\(s\) 1: not given"):
        _merge([tmp_path / "p0", tmp_path / "q1"], tmp_path / "all")
    _part(tmp_path / "r1", 1, ["b"], {"clinical": "120:aaaa1111bbbb2222", "l3_csv": None})  # the same table
    assert _merge([tmp_path / "p0", tmp_path / "r1"], tmp_path / "all").n_rows == 2
    _part(tmp_path / "s1", 1, ["b"], None)  # an earlier sarco's run file: not compared
    assert _merge([tmp_path / "p0", tmp_path / "s1"], tmp_path / "all2").n_rows == 2


def test_run_records_record_the_tables_by_content_not_path(tmp_path):
    from types import SimpleNamespace

    from sarco_nn.batch import file_identity, run_settings_in
    from sarco_nn.predict_settings import run_records

    model = SimpleNamespace(folder=tmp_path / "model")
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("case_id,sex,height_m\na,M,1.8\n")
    records = run_records(model, thresholds="paper", l3_csv=None, l3_from=None, clinical_csv=clinical)
    assert records[TABLES_RECORD] == {"clinical": file_identity(clinical, by="content"), "l3_csv": None}
    assert run_records(model, thresholds="paper", l3_csv=None, l3_from=None, clinical_csv=None)[TABLES_RECORD] == {
        "clinical": None, "l3_csv": None}
    assert TABLES_RECORD not in run_settings_in(records)  # a record: a rerun never compares it


def _predict_two_parts(tmp_path: Path, monkeypatch, out: str, tables: list[Path], option: str, n: int = 6) -> list[Path]:
    """`sarco predict --part I --parts 2` of one batch (a fake model), part I given `tables[I]` as `option`."""
    from test_batch import _fake_model_predict

    import sarco_nn.inference as inference
    from sarco_nn.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    if not (tmp_path / "scans").exists():
        _scans(tmp_path / "scans", [f"scan_{i}.nii.gz" for i in range(n)])
    folders = []
    for part, table in enumerate(tables):
        _fake_model_predict(monkeypatch, tmp_path)
        inference.predict(ws, tmp_path / "scans", tmp_path / f"{out}{part}", device="cpu", progress=False, part=part,
                          parts=2, io_workers=1, **{option: table})
        folders.append(tmp_path / f"{out}{part}")
    return folders


def test_merge_refuses_parts_given_different_l3_csv_files_end_to_end(tmp_path, monkeypatch):
    tables = []
    for part, slice_ in ((0, 0), (1, 1)):
        tables.append(tmp_path / f"l3_{part}.csv")
        tables[-1].write_text("case_id,l3_slice\n" + "".join(f"scan_{i},{slice_}\n" for i in range(6)))
    parts = _predict_two_parts(tmp_path, monkeypatch, "p", tables, "l3_csv")
    with pytest.raises(SarcoError, match=r"different --l3-csv files"):
        _merge(parts, tmp_path / "all")


def test_merge_refuses_parts_given_different_clinical_files_end_to_end(tmp_path, monkeypatch):
    """The same batch, one part's clinical.csv edited between the runs: SMI and flags would come from two
    tables in one results.csv, so merge refuses, naming --clinical; the same table on both merges."""
    tables = []
    for part, height in ((0, 1.70), (1, 1.80)):
        tables.append(tmp_path / f"clinical_{part}.csv")
        tables[-1].write_text("case_id,sex,height_m\n" + "".join(f"scan_{i},F,{height}\n" for i in range(4)))
    parts = _predict_two_parts(tmp_path, monkeypatch, "p", tables, "clinical_csv", n=4)
    with pytest.raises(SarcoError, match=r"different --clinical files"):
        _merge(parts, tmp_path / "all")
    _merge(_predict_two_parts(tmp_path, monkeypatch, "q", [tables[0]] * 2, "clinical_csv"), tmp_path / "merged")
    assert (tmp_path / "merged" / "results.csv").exists()


# ---------------------------------------------------------------------------- sarco evaluate
def _mask(path: Path, rows: tuple[int, int] = (40, 40)) -> Path:
    import numpy as np
    import SimpleITK as sitk

    array = np.zeros((1, 128, 128), np.uint8)
    array[0, 20:20 + rows[0], 20:20 + rows[1]] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _cases_csv(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "cases.csv", newline="", encoding="utf-8") as handle:
        return {r["case_id"]: r for r in csv.DictReader(handle)}


def test_evaluate_reads_a_predict_merge_folder_like_one_predict_folder(tmp_path):
    # before: the merged folder holds no masks (they stay in the part folders): "no predicted masks found"
    from sarco_nn.evaluation.evaluate import evaluate_folder

    sizes = {"a": (60, 62), "b": (40, 41), "c": (70, 70)}
    for case, size in sizes.items():
        _mask(tmp_path / "ref" / f"{case}.nii.gz", (60, 60) if case == "a" else size)
    for part, cases in ((0, ["a", "b"]), (1, ["c"])):
        folder = tmp_path / f"p{part}"
        folder.mkdir()
        (folder / RUN_FILE).write_text(json.dumps({"model": "m", "part": part, "parts": 2}))
        for case in cases:
            _mask(folder / "masks" / f"{case}.nii.gz", sizes[case])
            _mask(tmp_path / "single" / "masks" / f"{case}.nii.gz", sizes[case])  # the same, as one predict folder
            Journal(folder / JOURNAL_FILE).append(f"/in/{case}", {"case_id": case, "input": f"/in/{case}",
                                                                   "status": "ok", "mask": f"masks/{case}.nii.gz"})
    (tmp_path / "single" / RESULTS_FILE).write_text("case_id\n")
    _merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all")
    merged = evaluate_folder(tmp_path / "all", tmp_path / "ref", None, tmp_path / "report_all")
    single = evaluate_folder(tmp_path / "single", tmp_path / "ref", None, tmp_path / "report_single")
    assert merged["n_cases"] == 3 and merged["n_cases_skipped"] == 0
    for key in ("dice_mean", "sma_mae_cm2", "sma_bias_cm2"):
        assert merged[key] == pytest.approx(single[key])
    assert _cases_csv(tmp_path / "report_all")["a"]["dice"] == _cases_csv(tmp_path / "report_single")["a"]["dice"]
    (tmp_path / "p1" / "masks" / "c.nii.gz").unlink()  # a part folder cleaned up: its case is skipped, saying why
    again = evaluate_folder(tmp_path / "all", tmp_path / "ref", None, tmp_path / "report_again")
    assert again["skipped_cases"] == ["c"]
    row = _cases_csv(tmp_path / "report_again")["c"]
    assert row["status"] == "failed" and "c.nii.gz" in row["reasons"] and "not found" in row["reasons"]


def test_evaluate_exits_1_and_counts_skipped_cases_in_its_summary_line(tmp_path):
    # before: an unpaired reference was one warning line among many and the exit status was 0
    from typer.testing import CliRunner

    from sarco_nn.cli import app

    for case in ("a", "b"):
        _mask(tmp_path / "pred" / f"{case}.nii.gz")
        _mask(tmp_path / "ref" / f"{case}.nii.gz")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"),
                                      "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    _mask(tmp_path / "ref" / "lost.nii.gz")  # predict failed for it: no mask
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"),
                                      "-o", str(tmp_path / "report2")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("cases: ")]
    assert line.startswith("cases: 2 ") and "skipped 1 (not evaluated, failed rows in cases.csv: lost)" in line
    assert (tmp_path / "report2" / "report.md").is_file()  # the report is still written
    assert _cases_csv(tmp_path / "report2")["lost"]["reasons"].startswith("unpaired: a reference mask without")


def test_evaluate_refuses_the_predictions_given_as_their_own_reference(tmp_path):
    import os

    from sarco_nn.errors import InputError
    from sarco_nn.evaluation.evaluate import evaluate_folder

    for case in ("a", "b"):
        _mask(tmp_path / "out" / "masks" / f"{case}.nii.gz")
    (tmp_path / "out" / RESULTS_FILE).write_text("case_id\n")
    for given in (tmp_path / "out", tmp_path / "out" / "masks"):  # the predict folder or its masks/
        with pytest.raises(InputError, match="the predictions and the reference masks are one folder") as refused:
            evaluate_folder(given, tmp_path / "out" / "masks", None, tmp_path / "report")
        assert "\n" not in str(refused.value) and "Fix:" in str(refused.value)
    _mask(tmp_path / "ref" / "a.nii.gz", (30, 30))
    os.link(tmp_path / "out" / "masks" / "b.nii.gz", tmp_path / "ref" / "b.nii.gz")  # one case's file itself
    summary = evaluate_folder(tmp_path / "out", tmp_path / "ref", None, tmp_path / "report")
    assert summary["n_cases"] == 1 and summary["skipped_cases"] == ["b"]
    assert "reference mask itself" in _cases_csv(tmp_path / "report")["b"]["reasons"]


# ---------------------------------------------------------------------------- QC wording
def test_the_border_entropy_reason_states_no_share_above_100_percent():
    # before: "the model is unsure about 130% of the muscle area" (the unsure band lies on both sides)
    from sarco_nn.review.qc import score_values

    [reason] = [r for r in score_values({"entropy_area_ratio": 1.3}).reasons if r.code == "qc_border_entropy"]
    assert "%" not in reason.message and "1.30 bit of border entropy per muscle pixel" in reason.message


@pytest.mark.parametrize("sma, code, word", [(29.996, "sma_below_floor", "below"), (500.004, "sma_above_ceiling",
                                                                                      "above")])
def test_the_floor_and_ceiling_reasons_print_a_value_on_the_side_they_state(sma, code, word):
    # before: "SMA 30.00 cm² ... is below the physiological floor of 30 cm²" (the rule is a strict <)
    from types import SimpleNamespace

    from sarco_nn.mask_checks import mask_reasons

    [reason] = mask_reasons(SimpleNamespace(n_pixels=100, sma_cm2=sma), (1.0, 1.0), label=1)
    assert reason.code == code and f"SMA {sma} cm²" in reason.message and f"is {word} the physiological" in reason.message
    assert mask_reasons(SimpleNamespace(n_pixels=100, sma_cm2=30.0), (1.0, 1.0), label=1) == []  # 30 is no "below"
    assert mask_reasons(SimpleNamespace(n_pixels=100, sma_cm2=500.0), (1.0, 1.0), label=1) == []


# ---------------------------------------------------------------------------- --l3-slice with --l3-from
def test_l3_slice_beside_a_per_case_l3_source_is_refused_in_one_line(tmp_path):
    # before: --l3-slice silently won over --l3-from (and --l3-csv) for every volume
    from conftest import sarco_inprocess

    from sarco_nn.api import PredictOptions

    with pytest.raises(SarcoError, match=r"--l3-slice 40 with --l3-from: .* would never be read"):
        PredictOptions(l3_slice=40, l3_from=tmp_path)
    with pytest.raises(SarcoError, match=r"with --l3-csv and --l3-from"):
        PredictOptions(l3_slice=40, l3_csv=tmp_path / "l3.csv", l3_from=tmp_path)
    assert PredictOptions(l3_slice=40).l3_slice == 40 and PredictOptions(l3_from=tmp_path).l3_slice is None
    (tmp_path / "scans").mkdir()
    result = sarco_inprocess("predict", "-i", tmp_path / "scans", "-o", tmp_path / "out", "--l3-slice", "40",
                             "--l3-from", tmp_path, "-w", tmp_path / "ws")
    [line] = result.stderr.strip().splitlines()
    assert result.code == 2 and line.startswith("error: --l3-slice 40 with --l3-from") and "Fix:" in line
    assert not (tmp_path / "out").exists()
