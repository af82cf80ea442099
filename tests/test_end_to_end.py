"""One tiny run through the real CLI: phantoms → convert → plan → train (SMIT) → predict → evaluate.

Uses the `smoke` preset (3 mm, 64² patches, two tiny epochs): it checks plumbing and the
measurement contract, not accuracy (accuracy lives in `make demo` and bench/).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import write_dropin_dataset
from helpers import accepted_and_measured
from sarco_nn.ct_checks import body_region
from sarco_nn.presets import PRESET_DIR
from sarco_nn.trunk import MAX_OUTSIDE_TRUNK_SHARE

SARCO = [sys.executable, "-m", "sarco_nn.cli"]
pytestmark = pytest.mark.slow


def sarco(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([*SARCO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"sarco {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    write_dropin_dataset(root / "drop", n_cases=8, seed=1, matrix=128)
    write_dropin_dataset(root / "held", n_cases=3, seed=2, matrix=128, case_prefix="held")
    sarco("convert", "drop", "--name", "E2E", "-w", "ws", cwd=root)
    sarco("plan", "--preset", "smoke", "-w", "ws", cwd=root)
    sarco("train", "all", "-w", "ws", cwd=root)
    return root


def test_plan_bakes_ct_window_and_patient_splits(trained: Path):
    pre = trained / "ws" / "nnUNet_preprocessed" / "Dataset501_E2E"
    plans = json.loads((pre / "sarcoPlans_smoke.json").read_text())
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"]) == (-175.0, 250.0)
    assert (props["mean"], props["std"]) == (-175.0, 425.0)
    config = plans["configurations"]["2d"]
    assert list(plans["configurations"]) == ["2d"]
    assert all(p % 32 == 0 and p <= 64 for p in config["patch_size"])
    splits = json.loads((pre / "splits_final.json").read_text())
    assert len(splits) == 5
    assert sorted(c for s in splits for c in s["val"]) == sorted(f"E2E_{i:04d}" for i in range(1, 9))


def test_predict_writes_masks_on_input_grid_and_exact_sma(trained: Path):
    sarco("predict", "-i", "held/images", "-o", "pred", "--clinical", "held/clinical.csv", "-w", "ws", cwd=trained)
    with open(trained / "pred" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["held_000", "held_001", "held_002"]
    for row in rows:
        assert accepted_and_measured(row), row["reasons"]
        assert row["trainer"] == "SarcoSMITTrainer" and row["folds"] == "all"
        image = sitk.ReadImage(str(trained / "held" / "images" / f"{row['case_id']}.nii.gz"))
        mask = sitk.ReadImage(str(trained / "pred" / row["mask"]))
        assert mask.GetSize() == image.GetSize()
        assert np.allclose(mask.GetOrigin(), image.GetOrigin()) and np.allclose(mask.GetDirection(), image.GetDirection())
        sy, sx = image.GetSpacing()[1], image.GetSpacing()[0]
        expected = float((sitk.GetArrayFromImage(mask) == 1).sum()) * sx * sy / 100.0
        assert float(row["sma_cm2"]) == pytest.approx(expected, abs=0.006)
        assert float(row["spacing_x_mm"]) == pytest.approx(sx, abs=1e-4)
        # a flag, or none because the (barely trained) model's mask is implausible: then a review reason says so
        assert row["sarcopenic"] in {"yes", "no"} or (row["sarcopenic"] == "unknown" and row["status"] == "review")
        # the trunk rule (predict's default): nothing is labelled apart from the body; the muscle it removed
        # is in outside_trunk_cm2, and a share above MAX_OUTSIDE_TRUNK_SHARE (this model labels air as
        # muscle) is a review with muscle_outside_trunk
        plane = np.squeeze(sitk.GetArrayFromImage(image))
        assert not (np.squeeze(sitk.GetArrayFromImage(mask))[~body_region(plane)] != 0).any()
        outside, kept = float(row["outside_trunk_cm2"]), float(row["sma_cm2"])
        much_outside = outside > MAX_OUTSIDE_TRUNK_SHARE * (outside + kept)
        assert ("muscle_outside_trunk" in row["reasons"]) == much_outside, (outside, kept, row["reasons"])
        assert (trained / "pred" / row["overlay"]).stat().st_size > 1000

    # a restarted run with the same model skips finished cases and keeps the results
    before = (trained / "pred" / "results.csv").read_text()
    masks_before = {p.name: p.stat().st_mtime_ns for p in (trained / "pred" / "masks").iterdir()}
    sarco("predict", "-i", "held/images", "-o", "pred", "--clinical", "held/clinical.csv", "-w", "ws", cwd=trained)
    assert (trained / "pred" / "results.csv").read_text() == before
    assert {p.name: p.stat().st_mtime_ns for p in (trained / "pred" / "masks").iterdir()} == masks_before


def test_evaluate_reports_against_reference(trained: Path):
    if not (trained / "pred" / "results.csv").exists():
        sarco("predict", "-i", "held/images", "-o", "pred", "-w", "ws", cwd=trained)
    out = sarco("evaluate", "pred", "--reference", "held/masks", "--clinical", "held/clinical.csv", "-o", "report",
                cwd=trained)
    summary = json.loads((trained / "report" / "summary.json").read_text())
    assert summary["n_cases"] == 3
    assert "held_001" in out.stdout  # per-case table


def test_baseline_trainer_and_model_choice(trained: Path):
    sarco("train", "all", "--trainer", "nnunet", "-w", "ws", cwd=trained)
    ambiguous = sarco("predict", "-i", "held/images", "-o", "pred_unet", "-w", "ws", cwd=trained, check=False)
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.count("error:") == 1 and "--trainer" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    sarco("predict", "-i", "held/images", "-o", "pred_unet", "--trainer", "nnunet", "--fast", "-w", "ws", cwd=trained)
    with open(trained / "pred_unet" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["trainer"] for r in rows} == {"SarcoUNetTrainer"} and {r["tta"] for r in rows} == {"no"}


def test_retraining_a_finished_fold_is_refused(trained: Path):
    result = sarco("train", "all", "-w", "ws", cwd=trained, check=False)
    assert result.returncode == 2 and "--continue" in result.stderr


def test_crossval_folds_postprocessing_and_ensemble(trained: Path):
    sarco("train", "0", "--trainer", "smit", "-w", "ws", cwd=trained)
    sarco("train", "1", "--trainer", "smit", "--val-best", "-w", "ws", cwd=trained)
    model = trained / "ws" / "nnUNet_results" / "Dataset501_E2E" / "SarcoSMITTrainer__sarcoPlans_smoke__2d"
    assert (model / "fold_0" / "validation" / "summary.json").exists()
    assert json.loads((model / "fold_1" / "sarco_provenance.json").read_text())["val_best"] is True
    assert (model / "fold_1" / "validation" / "summary.json").exists()
    out = sarco("postprocess", "--trainer", "smit", "-w", "ws", cwd=trained)
    assert "cross-validation Dice" in out.stdout
    decision = json.loads((model / "crossval_results_folds_0_1" / "postprocessing.json").read_text())
    assert "postprocessing_fns" in decision
    sarco("predict", "-i", "held/images", "-o", "pred_cv", "--trainer", "smit", "--fast", "-w", "ws", cwd=trained)
    with open(trained / "pred_cv" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["folds"] for r in rows} == {"0+1"} and all(accepted_and_measured(r) for r in rows)
    evaluation = sarco("evaluate", "--crossval", "--trainer", "smit", "-w", "ws", cwd=trained)
    assert "fold 0" in evaluation.stdout and "fold 1" in evaluation.stdout


def test_predict_on_whole_volumes_finds_l3_from_vertebra_masks(trained: Path):
    write_dropin_dataset(trained / "vol", n_cases=2, seed=5, matrix=128, volumes=True)
    sarco("predict", "-i", "vol/images", "-o", "pred_vol", "--l3-from", "vol/vertebrae", "--trainer", "smit",
          "-w", "ws", cwd=trained)
    with open(trained / "pred_vol" / "results.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    with open(trained / "vol" / "truth.csv", newline="") as f:
        truth = {r["case_id"]: int(r["l3_slice_index"]) for r in csv.DictReader(f)}
    for case, row in rows.items():
        assert accepted_and_measured(row) and row["l3_method"] == "vertebrae"
        assert abs(int(row["slice_index"]) - truth[case]) <= 3
        assert (trained / "pred_vol" / row["l3_thumbnail"]).is_file()
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(trained / "pred_vol" / row["mask"])))
        image = sitk.ReadImage(str(trained / "vol" / "images" / f"{case}.nii.gz"))
        assert mask.shape == sitk.GetArrayFromImage(image).shape
        assert set(np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]) <= {int(row["slice_index"])}

    # the evaluator compares the chosen level with the annotated one, then the same model at the annotated slice
    sarco("evaluate", "pred_vol", "--reference", "vol/masks", "-o", "report_vol", cwd=trained)
    with open(trained / "report_vol" / "annotated_l3.csv", newline="") as f:
        assert {r["case_id"]: int(r["l3_slice"]) for r in csv.DictReader(f)} == truth
    sarco("predict", "-i", "vol/images", "-o", "pred_annot", "--l3-csv", "report_vol/annotated_l3.csv",
          "--trainer", "smit", "-w", "ws", cwd=trained)
    out = sarco("evaluate", "pred_vol", "--reference", "vol/masks", "--at-annotated", "pred_annot", "-o", "report_vol",
                cwd=trained)
    with open(trained / "report_vol" / "cases.csv", newline="") as f:
        cases = {r["case_id"]: r for r in csv.DictReader(f)}
    for case, row in rows.items():
        assert int(cases[case]["l3_slice_ref"]) == truth[case]
        if cases[case]["l3_error_slices"]:  # empty when the tiny model predicted no muscle at all
            assert int(cases[case]["l3_slice_pred"]) == int(row["slice_index"])
            assert abs(int(cases[case]["l3_error_slices"])) == abs(int(row["slice_index"]) - truth[case])
        assert cases[case]["sma_pred_annotated_cm2"] != ""
    assert "at the annotated slice" in out.stdout or "L3 level" not in out.stdout


def test_preset_file_with_deep_supervision_trains_and_predicts(trained: Path):
    preset = json.loads((PRESET_DIR / "smoke.json").read_text())
    preset["name"] = "smokeds"
    preset["trainer_overrides"]["smit"]["deep_supervision"] = True
    (trained / "smokeds.json").write_text(json.dumps(preset))
    sarco("plan", "E2E", "--preset", "smokeds.json", "-w", "ws", cwd=trained)
    out = sarco("train", "all", "--preset", "smokeds", "-w", "ws", cwd=trained)
    assert "fold all done" in out.stdout
    model = trained / "ws" / "nnUNet_results" / "Dataset501_E2E" / "SarcoSMITTrainer__sarcoPlans_smokeds__2d"
    # nnU-Net's plans dump stays in the training log, off the console
    assert "global plan.json settings" not in out.stdout
    assert any("global plan.json settings" in log.read_text() for log in (model / "fold_all").glob("training_log_*.txt"))
    plans = json.loads((model / "plans.json").read_text())
    assert plans["sarco"]["preset"]["trainer_overrides"]["smit"]["deep_supervision"] is True
    sarco("predict", "-i", "held/images", "-o", "pred_ds", "--preset", "smokeds", "--trainer", "smit", "-w", "ws",
          cwd=trained)
    with open(trained / "pred_ds" / "results.csv", newline="") as f:
        assert all(accepted_and_measured(r) for r in csv.DictReader(f))


def test_nnunetv2_train_runs_a_sarco_trainer_and_its_time_budget_ends_cleanly(trained: Path):
    """nnU-Net's own CLI with `-tr SarcoResEncTrainer` (found through nnUNet_extTrainer): the wall-clock
    budget stops training after one epoch without a traceback, and the fold is complete."""
    from sarco_nn.training.trainers import OVERRIDES_ENV
    from sarco_nn.workspace import TRAINER_DIR

    ws = trained / "ws"
    env = {**os.environ, "nnUNet_raw": str(ws / "nnUNet_raw"), "nnUNet_preprocessed": str(ws / "nnUNet_preprocessed"),
           "nnUNet_results": str(ws / "nnUNet_results"), "nnUNet_extTrainer": str(TRAINER_DIR),
           "nnUNet_def_n_proc": "1", "nnUNet_compile": "f",
           OVERRIDES_ENV: json.dumps({"time_budget_s": 0.01, "num_epochs": 50})}
    code = ("import sys; from nnunetv2.run.run_training import run_training_entry; "
            "sys.argv = ['nnUNetv2_train', '501', '2d', '0', '-tr', 'SarcoResEncTrainer', '-p', 'sarcoPlans_smoke', "
            "'-device', 'cpu']; run_training_entry()")
    result = subprocess.run([sys.executable, "-c", code], cwd=trained, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    fold = ws / "nnUNet_results" / "Dataset501_E2E" / "SarcoResEncTrainer__sarcoPlans_smoke__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").exists() and (fold / "validation" / "summary.json").exists()
    assert json.loads((fold / "sarco_progress.json").read_text())["epochs_done"] == 1
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "Time budget of 0.01 s reached after 1 epochs" in log
