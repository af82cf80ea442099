"""Reproducible training: presets fix epochs x iterations (no wall-clock stop) and one seed gives one model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sarco_nn.presets import available_presets, load_preset, training_settings
from sarco_nn.training.trainers import seed_everything
from conftest import sarco_subprocess


def test_every_shipped_preset_fixes_its_iteration_count_and_seed():
    for name in available_presets():
        training = load_preset(name)["training"]
        assert training.get("time_budget_s") is None, f"preset {name} stops on a wall-clock budget"
        assert int(training["num_epochs"]) > 0 and int(training["iterations_per_epoch"]) > 0
        assert isinstance(training.get("seed"), int)
    cpu = training_settings(load_preset("cpu"), "smit")
    # 97 x 10 is what the former 8-minute budget reached on 2 idle cores (the demo's training length)
    assert (cpu["num_epochs"], cpu["iterations_per_epoch"]) == (97, 10)
    assert cpu["deterministic_data"] is True


def test_seed_everything_fixes_numpy_python_and_torch():
    import random

    seed_everything(5)
    first = (np.random.rand(3), random.random(), torch.rand(3))
    seed_everything(5)
    again = (np.random.rand(3), random.random(), torch.rand(3))
    assert np.array_equal(first[0], again[0]) and first[1] == again[1] and torch.equal(first[2], again[2])
    seed_everything(6)
    assert not torch.equal(torch.rand(3), first[2])


def _final_weights(workspace: Path) -> dict[str, torch.Tensor]:
    (ckpt,) = workspace.rglob("checkpoint_final.pth")
    return torch.load(ckpt, map_location="cpu", weights_only=False)["network_weights"]


@pytest.mark.slow
def test_same_command_twice_gives_the_same_model(tmp_path: Path):
    """Two trainings from one plan (smoke preset, nnU-Net's data-loader workers allowed) end with the same weights."""
    from dataset_conversion.phantom import write_dropin_dataset

    drop = write_dropin_dataset(tmp_path / "drop", n_cases=4, seed=0, matrix=96)
    first = tmp_path / "ws1"
    for args in (["convert", drop, "--name", "Repro", "-w", first], ["plan", "--preset", "smoke", "-w", first]):
        result = sarco_subprocess(*args, cwd=tmp_path, timeout=600)
        assert result.code == 0, result.output[-2000:]
    second = tmp_path / "ws2"
    shutil.copytree(first, second)
    for ws in (first, second):
        result = sarco_subprocess("train", "all", "--trainer", "smit", "--device", "cpu", "-w", ws, cwd=tmp_path,
                                  timeout=600, env={"nnUNet_n_proc_DA": "2"})
        assert result.code == 0, result.output[-2000:]
    a, b = _final_weights(first), _final_weights(second)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, f"weights differ by up to {worst}"
