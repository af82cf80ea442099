"""Interrupted work resumes, inputs are never touched, another model's results are never overwritten.

Real `sarco` subprocesses are killed with SIGKILL (no cleanup handler runs) and restarted with the
same arguments; the resumed outputs must equal those of an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_popen, sarco_subprocess
from helpers import tree_digest
from sarco_nn.batch import JOURNAL_FILE
from sarco_nn.inference import TEST_SIGNAL_ENV
from sarco_nn.status import is_finished

pytestmark = pytest.mark.slow

#: results.csv columns that must agree between a resumed and an uninterrupted run.
COMPARED = ("case_id", "status", "sma_cm2", "muscle_hu_mean", "slice_index", "spacing_y_mm", "spacing_x_mm", "mask")


def _kill_when(process, ready, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"process ended (exit {process.returncode}) before it could be killed")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("the awaited output never appeared")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its worker processes, no cleanup
    process.wait(timeout=30)


def _ok(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [row["case_id"] for row in csv.DictReader(handle) if is_finished(row["status"])]
    except (OSError, KeyError):
        return []


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case_id"]: {k: row[k] for k in COMPARED} for row in csv.DictReader(handle)}


def _journalled(out: Path) -> list[str]:
    """Case ids a run has journalled as finished (its results.csv is folded only at the end)."""
    path = out / JOURNAL_FILE
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line)["row"]["case_id"] for line in lines if is_finished(json.loads(line)["row"]["status"])]


def test_killed_predict_resumes_and_equals_an_uninterrupted_run(tiny_model, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_model.held / "images", images)
    before = tree_digest(images)
    args = ["-i", images, "--fast", "--device", "cpu", "--clinical", tiny_model.held / "clinical.csv",
            "-w", tiny_model.workspace]
    resumed = tmp_path / "resumed"
    masks = resumed / "masks"
    # SIGKILL at a known state: right after the first case was journalled (no timer to race)
    killed = sarco_subprocess("predict", "-o", resumed, *args, env={TEST_SIGNAL_ENV: "KILL:1"})
    assert killed.code == -signal.SIGKILL, killed.output
    finished = {f"{case}.nii.gz" for case in _journalled(resumed)}
    n_cases = len(list(images.iterdir()))
    assert len(finished) == 1 < n_cases, "the run was not interrupted midway"
    assert _ok(resumed / "results.csv") == [], "results.csv is folded only at the end (or on resume)"
    stamps = {name: (masks / name).stat().st_mtime_ns for name in finished}

    again = sarco_subprocess("predict", "-o", resumed, *args)
    assert again.code == 0, again.output
    assert {name: (masks / name).stat().st_mtime_ns for name in finished} == stamps, "finished cases were redone"
    assert not [p.name for p in masks.iterdir() if p.name.startswith(".")], "a partial file was left behind"

    straight = tmp_path / "straight"
    once = sarco_subprocess("predict", "-o", straight, *args)
    assert once.code == 0, once.output
    assert _rows(resumed / "results.csv") == _rows(straight / "results.csv")
    for mask in (straight / "masks").iterdir():
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(masks / mask.name)))
        assert np.array_equal(a, b), mask.name
    assert tree_digest(images) == before, "predict modified its inputs"

    assert not (resumed / JOURNAL_FILE).exists(), "the journal is folded into results.csv at the end"

    # the same folder with other settings (another model's results) is refused unless --overwrite
    other = sarco_subprocess("predict", "-o", resumed, *[a for a in args if a != "--fast"])
    assert other.code == 2 and len(other.error_lines()) == 1 and "--overwrite" in other.output, other.output
    assert _rows(resumed / "results.csv") == _rows(straight / "results.csv")


def test_ctrl_c_prints_one_line_and_the_rerun_finishes(tiny_model, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_model.held / "images", images)
    args = ["predict", "-i", images, "-o", tmp_path / "out", "--fast", "--device", "cpu", "-w", tiny_model.workspace]
    interrupted = sarco_subprocess(*args, env={TEST_SIGNAL_ENV: "INT:1"})
    assert "Traceback" not in interrupted.output and interrupted.code == 130, interrupted.output
    assert len(interrupted.error_lines()) == 1 and "interrupted after 1 of 3" in interrupted.output
    assert len(_ok(tmp_path / "out" / "results.csv")) == 1  # folded on the way out
    again = sarco_subprocess(*args)
    assert again.code == 0 and len(_ok(tmp_path / "out" / "results.csv")) == 3, again.output


def test_a_killed_overwrite_run_resumed_without_overwrite_keeps_no_row_of_the_earlier_settings(tiny_model, tmp_path):
    """`--overwrite` with other settings (prado thresholds) killed after one case, then the same
    command without --overwrite: the earlier run's paper rows look finished but belong to other
    settings (their computed_from says so), so they are measured again; the killed run's case is not."""
    images = tmp_path / "images"
    shutil.copytree(tiny_model.held / "images", images)
    out = tmp_path / "out"
    args = ["predict", "-i", images, "-o", out, "--fast", "--device", "cpu", "-w", tiny_model.workspace]
    first = sarco_subprocess(*args)
    assert first.code == 0, first.output
    killed = sarco_subprocess(*args, "--thresholds", "prado", "--overwrite", env={TEST_SIGNAL_ENV: "KILL:1"})
    assert killed.code == -signal.SIGKILL, killed.output
    (done,) = _journalled(out)
    with open(out / JOURNAL_FILE, encoding="utf-8") as handle:
        mask = out / json.loads(handle.readline())["row"]["mask"]
    stamp = mask.stat().st_mtime_ns
    resumed = sarco_subprocess(*args, "--thresholds", "prado")
    assert resumed.code == 0, resumed.output
    assert "2 finished case(s) of this folder are measured again: computed with other settings (2)" in resumed.output
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {r["threshold_set"] for r in rows} == {"prado"}, rows
    assert mask.stat().st_mtime_ns == stamp, f"{done}, finished by the killed run, was measured again"


def test_predict_refuses_a_foreign_output_folder(tiny_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's work")
    scan = sorted((tiny_model.held / "images").iterdir())[0]
    result = sarco_subprocess("predict", "-i", scan, "-o", out, "--fast", "-w", tiny_model.workspace)
    assert result.code == 2 and len(result.error_lines()) == 1 and str(out) in result.error_lines()[0], result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_killed_training_resumes_with_continue(tiny_model, tmp_path):
    """SIGKILL after the first epoch's checkpoint_latest, then `sarco train all --continue` finishes."""
    ws = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace / "nnUNet_raw", ws / "nnUNet_raw")
    shutil.copytree(tiny_model.workspace / "nnUNet_preprocessed", ws / "nnUNet_preprocessed")
    raw_before = tree_digest(ws / "nnUNet_raw")
    args = ["train", "all", "--trainer", "smit", "--device", "cpu", "--epochs", "4", "-w", ws]
    fold = ws / "nnUNet_results" / "Dataset501_Tiny" / "SarcoSMITTrainer__sarcoPlans_smoke__2d" / "fold_all"
    process = sarco_popen(*args)
    _kill_when(process, lambda: (fold / "checkpoint_latest.pth").is_file())
    assert not (fold / "checkpoint_final.pth").exists(), "training finished before it was killed"

    resumed = sarco_subprocess(*args, "--continue", timeout=400)
    assert resumed.code == 0, resumed.output
    assert "Epoch 0\n" not in resumed.stdout and "Epoch 3" in resumed.stdout, "training did not resume"
    assert (fold / "checkpoint_final.pth").is_file()
    provenance = json.loads((fold / "sarco_provenance.json").read_text())
    assert provenance["epochs_done"] == 4
    assert tree_digest(ws / "nnUNet_raw") == raw_before
