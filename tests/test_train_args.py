"""Command arguments are checked before anything runs: folds, epochs/iterations, presets, raw datasets,
and `check-weights` judges a file against the same network `train --pretrained` loads it into."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sarco_nn.errors import SarcoError
from sarco_nn.planning import check_raw_dataset
from sarco_nn.presets import PRESET_DIR, load_preset
from sarco_nn.training.run import check_positive, parse_fold

ROOT = Path(__file__).resolve().parents[1]


def _sarco(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "sarco_nn.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize("fold, expected", [("0", 0), ("4", 4), ("all", "all"), (" ALL ", "all"), (3, 3)])
def test_folds_zero_to_four_and_all_are_accepted(fold, expected):
    assert parse_fold(fold) == expected


@pytest.mark.parametrize("fold", ["7", "5", "-1", "abc", "", "0.5", "5fold"])
def test_other_folds_are_refused(fold):
    with pytest.raises(SarcoError, match="does not exist"):
        parse_fold(fold)


@pytest.mark.parametrize("value", [0, -1])
def test_epochs_and_iterations_must_be_positive(value):
    with pytest.raises(SarcoError, match="must be a positive"):
        check_positive("--epochs", value)
    check_positive("--epochs", None)
    check_positive("--epochs", 1)


def test_train_refuses_bad_folds_and_epochs_in_one_line_touching_nothing(tmp_path):
    _one_line_error(_sarco("train", "7", "-w", "ws", cwd=tmp_path), "'7'", "0, 1, 2, 3, 4")
    _one_line_error(_sarco("train", "abc", "-w", "ws", cwd=tmp_path), "'abc'")
    _one_line_error(_sarco("train", "3", "--epochs", "-1", "-w", "ws", cwd=tmp_path), "--epochs -1")
    _one_line_error(_sarco("train", "3", "--iterations", "0", "-w", "ws", cwd=tmp_path), "--iterations 0")
    _one_line_error(_sarco("train", "0", "--num-gpus", "2", "--device", "cpu", "-w", "ws", cwd=tmp_path), "--num-gpus")
    assert not (tmp_path / "ws").exists()  # refused before the workspace was created, so no checkpoint either


@pytest.mark.parametrize("field, value, words", [
    ("target_spacing_mm", "1,0", "target_spacing_mm '1,0'"),
    ("target_spacing_mm", -1, "target_spacing_mm -1"),
    ("target_spacing_mm", 0, "target_spacing_mm 0"),
    ("target_spacing_mm", True, "target_spacing_mm True"),
    ("max_patch_size", [256, -2], "max_patch_size"),
    ("batch_size", 0, "batch_size 0"),
    ("name", "../x", "name"),
])
def test_presets_with_bad_fields_are_refused_naming_the_file(tmp_path, field, value, words):
    preset = json.loads((PRESET_DIR / "cpu.json").read_text())
    preset[field] = value
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    with pytest.raises(SarcoError) as info:
        load_preset(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_preset_training_lengths_must_be_positive(tmp_path):
    preset = json.loads((PRESET_DIR / "smoke.json").read_text())
    preset["training"]["num_epochs"] = -1
    path = tmp_path / "neg.json"
    path.write_text(json.dumps(preset))
    with pytest.raises(SarcoError, match="training.num_epochs -1"):
        load_preset(path)


def test_plan_command_refuses_a_bad_preset_spacing_in_one_line(tmp_path):
    preset = json.loads((PRESET_DIR / "cpu.json").read_text())
    preset["target_spacing_mm"] = "1,0"
    (tmp_path / "comma.json").write_text(json.dumps(preset))
    _one_line_error(_sarco("plan", "--preset", "comma.json", "-w", "ws", cwd=tmp_path), "comma.json", "target_spacing_mm")


def test_plan_on_a_raw_folder_without_dataset_json_is_one_line(tmp_path):
    raw = tmp_path / "ws" / "nnUNet_raw" / "Dataset501_Broken"
    (raw / "imagesTr").mkdir(parents=True)
    with pytest.raises(SarcoError, match="no dataset.json"):
        check_raw_dataset(raw)
    _one_line_error(_sarco("plan", "--preset", "smoke", "-w", "ws", cwd=tmp_path), "Dataset501_Broken", "dataset.json")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "muscle": 1},
                                                  "numTraining": 1, "file_ending": ".nii.gz"}))
    with pytest.raises(SarcoError, match="no training images"):
        check_raw_dataset(raw)


def test_check_weights_judges_against_the_network_train_pretrained_loads_into(tmp_path):
    """An encoder of the cpu preset's SMIT: check-weights (reading the file, or --preset cpu) and the
    network the SMIT trainer builds for the cpu plans both match every key; Trans-Small does not."""
    import typer
    from typer.testing import CliRunner

    from sarco_nn.commands.check_weights_cmd import check_weights
    from sarco_nn.models.pretrained import export_encoder, load_pretrained_encoder
    from sarco_nn.models.smit import build_smit_for_plans
    from sarco_nn.presets import smit_network_config

    cpu_config = smit_network_config(load_preset("cpu"))
    path = tmp_path / "encoder.pt"
    export_encoder(build_smit_for_plans(1, 2, [256, 256], False, cpu_config), path, dims=2)  # what pretrain writes
    trainer_network = build_smit_for_plans(1, 2, [256, 256], False, cpu_config)  # SarcoSMITTrainer's, cpu plans
    trained = load_pretrained_encoder(trainer_network, path)
    assert trained.fraction_matched == 1.0

    app = typer.Typer()
    app.command()(check_weights)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    for extra in ([], ["--preset", "cpu"]):
        res = runner.invoke(app, ["check-weights", str(path), "--json", *extra])
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        assert report["loadable"] and report["fraction_matched"] == 1.0
        assert len(report["matched"]) == len(trained.matched)
    res = runner.invoke(app, ["check-weights", str(path), "--json", "--preset", "default"])
    assert res.exit_code == 1 and json.loads(res.stdout)["loadable"] is False
