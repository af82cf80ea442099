"""Hostile-user pass, session 15 helper e (HOSTILE_FINDINGS #200-): a non-finite height named for what it
is, a predict-merge folder whose every row failed, an earlier run's ``-29..150`` range cells."""

from __future__ import annotations

import csv
from pathlib import Path
import math

import numpy as np
import pytest

from conftest import sarco_inprocess
from helpers import make_image, muscle_of, phantom_array, write
from sarco_nn.errors import InputError


# --------------------------------------------------------------------------- #200 non-finite height/weight
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_height_or_weight_is_called_not_finite(value):
    from sarco_nn.clinical import height_problem, weight_problem

    for problem in (height_problem(value), weight_problem(value)):  # before: inf "looks like centimetres"
        assert "not a finite number" in problem and "centimetres" not in problem and "positive" not in problem


def test_measure_height_inf_is_one_line_saying_not_finite(tmp_path):
    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    mask = write(make_image(muscle_of(hu), spacing=(0.8, 0.8)), tmp_path / "mask.nii.gz")
    result = sarco_inprocess("measure", mask, "--height", "1e309")  # typer reads it as inf
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code != 0 and len(lines) == 1, result.output
    assert "--height inf is not a finite number" in lines[0] and "centimetres" not in lines[0]


# --------------------------------------------------------------------------- #201 merge folder, every row failed
def test_evaluate_of_a_results_folder_without_any_mask_names_its_results_csv(tmp_path):
    from sarco_nn.evaluation.evaluate import evaluate_folder

    hu = phantom_array(nz=1, ny=64, nx=64)
    (tmp_path / "ref").mkdir()
    write(make_image(muscle_of(hu).astype(np.uint8)), tmp_path / "ref" / "p01.nii.gz")
    merged = tmp_path / "all"  # what predict-merge writes when every scan failed: results.csv, no mask
    merged.mkdir()
    (merged / "results.csv").write_text("case_id,status,reasons,mask\np01,failed,unreadable: x,\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        evaluate_folder(merged, tmp_path / "ref", None, tmp_path / "report")
    assert "results.csv names no mask" in str(info.value)  # before: "run `sarco predict` first" (it was run)
    assert "sarco predict` first" not in str(info.value)
    (merged / "results.csv").unlink()
    with pytest.raises(InputError, match="run `sarco predict` first"):  # a folder predict never wrote: as before
        evaluate_folder(merged, tmp_path / "ref", None, tmp_path / "report")


# --------------------------------------------------------------------------- #202 an earlier run's range cells
def test_a_resumed_or_merged_results_csv_rewrites_an_earlier_runs_range_cells(tmp_path):
    from sarco_nn.batch import read_results, write_rows
    from sarco_nn.cases import current_range_cell, starts_like_formula

    columns = ["case_id", "input", "hu_gate", "muscle_hu_range", "muscle_attenuation_hu_range", "note"]
    old = tmp_path / "results.csv"  # as sarco wrote it before the [low, high] form (HOSTILE #130)
    old.write_text("case_id,input,hu_gate,muscle_hu_range,muscle_attenuation_hu_range,note\n"
                   "p01,a.nii.gz,-29..150,-29..150,-29.5..150,1..2\np02,b.nii.gz,off,\"[-29, 150]\",,\n", encoding="utf-8")
    write_rows(tmp_path, columns, "input", read_results(old, "input"))  # what a resume's fold and merge write
    with open(old, newline="", encoding="utf-8") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert rows["p01"]["hu_gate"] == "[-29, 150]" and rows["p01"]["muscle_hu_range"] == "[-29, 150]"
    assert rows["p01"]["muscle_attenuation_hu_range"] == "[-29.5, 150]"
    assert rows["p01"]["note"] == "1..2"  # no range column: unchanged
    assert rows["p02"]["hu_gate"] == "off" and rows["p02"]["muscle_hu_range"] == "[-29, 150]"
    assert not any(starts_like_formula(v) for r in rows.values() for v in r.values() if v)
    assert current_range_cell("hu_gate", "-29..150") == "[-29, 150]"


# --------------------------------------------------------------------------- #203 merge -o through a symlink
def test_merge_into_a_folder_reached_through_a_symlink_points_at_the_parts_masks(tmp_path, monkeypatch):
    import json
    import os

    from sarco_nn.batch import JOURNAL_FILE, Journal, read_results
    from sarco_nn.batch_merge import merge_parts
    from sarco_nn.inference import KEY_COLUMN, PATH_COLUMNS, RESULT_COLUMNS, RUN_FILE

    work, elsewhere = tmp_path / "work", tmp_path / "disk" / "space"
    elsewhere.mkdir(parents=True)
    for part, case in ((0, "a"), (1, "c")):
        folder = work / "out" / f"p{part}"
        (folder / "masks").mkdir(parents=True)
        (folder / "masks" / f"{case}.nii.gz").write_bytes(b"x")
        (folder / RUN_FILE).write_text(json.dumps({"model": "/m", "part": part, "parts": 2}))
        Journal(folder / JOURNAL_FILE).append(f"/in/{case}", {"case_id": case, "input": f"/in/{case}", "status": "ok",
                                                              "mask": f"masks/{case}.nii.gz"})
    os.symlink(elsewhere, work / "link")
    monkeypatch.chdir(work)  # relative paths as typed: predict-merge out/p0 out/p1 -o link/all
    merged = merge_parts([Path("out/p0"), Path("out/p1")], Path("link/all"), RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                         PATH_COLUMNS)
    for key, case, part in (("/in/a", "a", 0), ("/in/c", "c", 1)):
        mask = Path("link/all") / read_results(merged.results_csv, KEY_COLUMN)[key]["mask"]
        assert mask.is_file() and mask.samefile(work / "out" / f"p{part}" / "masks" / f"{case}.nii.gz")  # before: no file


def test_l3_slice_beside_a_locator_is_refused_and_copied_references_are_warned(tmp_path):
    """#207: `--l3-slice N --locator model` never ran the locator (refused now, like the other pairs);
    lead, on #209's list: a copy of the reference folder given as predictions scores Dice 1, warned."""
    import shutil

    import SimpleITK as sitk

    from sarco_nn.errors import SarcoError
    from sarco_nn.evaluation.evaluate import IDENTICAL_TO_REFERENCE, evaluate_folder
    from sarco_nn.predict_options import PredictOptions

    with pytest.raises(SarcoError, match="the locator would never run"):
        PredictOptions(l3_slice=3, locator="model")
    assert PredictOptions(l3_slice=3).l3_slice == 3

    ref = tmp_path / "ref"
    ref.mkdir()
    for i, rows in enumerate((30, 40)):
        array = np.zeros((1, 96, 96), np.uint8)
        array[0, 20:20 + rows, 20:60] = 1
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(image, str(ref / f"c{i}.nii.gz"))
    shutil.copytree(ref, tmp_path / "copy")
    summary = evaluate_folder(tmp_path / "copy", ref, None, tmp_path / "report")
    assert summary["problems"][IDENTICAL_TO_REFERENCE] == ["c0", "c1"] and summary["dice_mean"] == 1.0
    one = tmp_path / "one_differs"
    shutil.copytree(ref, one)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(one / "c1.nii.gz")))
    array[0, 20, 20] = 0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(one / "c1.nii.gz"))
    assert IDENTICAL_TO_REFERENCE not in evaluate_folder(one, ref, None, tmp_path / "report2")["problems"]
