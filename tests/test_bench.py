"""The benches run (dry runs at tiny sizes on CPU): their timings are not asserted, their tables are."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PYTHON": sys.executable, "nnUNet_def_n_proc": "1"}


def test_gpu_suite_refuses_a_machine_without_gpu_in_one_line():
    import torch

    if torch.cuda.is_available():  # on a GPU machine the same call is the measurement itself
        return
    result = subprocess.run([str(ROOT / "bench" / "gpu_suite.sh"), "--only", "unet"], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--device cpu" in result.stderr


@pytest.mark.slow
def test_gpu_suite_dry_run_on_cpu_prints_every_row(tmp_path):
    out = tmp_path / "table.json"
    result = subprocess.run([str(ROOT / "bench" / "gpu_suite.sh"), "--device", "cpu", "--tiny", "--precisions", "bf16",
                             "--json", str(out)], env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    kinds = [r["what"].split(" (")[0] for r in rows]
    assert kinds == ["SMIT Trans-Small train iteration", "nnU-Net default U-Net train iteration",
                     "SMIT pretraining step 2-D", "SMIT pretraining step 3-D", "predict network work per case",
                     "predict network work per case"]
    assert rows[-1]["what"].endswith("mirrorings batched per fold")
    assert all(r["seconds"] > 0 for r in rows)
    assert "| measurement | time | peak GPU memory |" in result.stdout and "dry run" in result.stdout


@pytest.mark.slow
def test_inference_bench_tiny_breaks_down_each_configuration_and_resumes(tiny_model, tmp_path, capsys):
    """The plumbing of every arm, on the suite's tiny model (the bench's own one-iteration training is
    the same `train_fold` call the training tests make): rows, table, one JSON per arm, resume."""
    out = tmp_path / "rows.json"
    args = ["--tiny", "--presets", "smoke", "--from-workspace", str(tiny_model.workspace), "--work",
            str(tmp_path / "work"), "--json", str(out)]
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "inference_bench.py"), *args], env=_env(),
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    stages = ("read", "l3", "network", "post", "write")
    assert [(r["config"], r["input"], r["io_workers"]) for r in rows] == [
        (c, k, 1) for c in ("1 fold", "5 folds", "5 folds + mirroring") for k in ("slice", "volume")] + [
        ("5 folds, sarco predict", k, io) for io in (1, 2) for k in ("slice", "volume")]
    for r in rows[:6]:
        assert all(r[s] >= 0 for s in stages) and r["network"] > 0 and r["write"] > 0
        assert r["total"] == pytest.approx(sum(r[s] for s in stages))
    for r in rows[6:]:
        assert all(r[s] is None for s in stages) and r["total"] > 0 and r["n"] == 1
    assert len(list((tmp_path / "work" / "results").glob("smoke__*.json"))) == 10
    assert "| preset | ensemble | input | io workers |" in result.stdout
    arm_line = re.compile(r"^  smoke__\S+: [0-9.]+ s per case$", re.M)
    assert len(arm_line.findall(result.stdout)) == 10

    # a second run measures nothing again: every arm is read back from its JSON (in-process: fast)
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("inference_bench", ROOT / "bench" / "inference_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    saved_env, saved_cwd, saved_threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    try:
        os.chdir(tmp_path)
        assert bench.main([*args[:-1], str(tmp_path / "again.json")]) == 0
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
    assert json.loads((tmp_path / "again.json").read_text()) == rows
    assert not arm_line.search(capsys.readouterr().out), "an arm was measured again"
