"""The benches run (dry runs at tiny sizes on CPU): their timings are not asserted, their tables are."""

from __future__ import annotations

import json
import os
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
                     "SMIT pretraining step 2-D", "SMIT pretraining step 3-D", "predict network work per case"]
    assert all(r["seconds"] > 0 for r in rows)
    assert "| measurement | time | peak GPU memory |" in result.stdout and "dry run" in result.stdout


@pytest.mark.slow
def test_inference_bench_tiny_breaks_down_each_configuration(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "inference_bench.py"), "--tiny", "--presets", "smoke",
                             "--work", str(tmp_path / "work"), "--json", str(out)], env=_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["config"], r["input"]) for r in rows] == [
        (c, k) for c in ("1 fold", "5 folds", "5 folds + mirroring") for k in ("slice", "volume")]
    for r in rows:
        assert all(r[s] >= 0 for s in ("read", "l3", "network", "post", "write")) and r["network"] > 0
        assert r["total"] == pytest.approx(sum(r[s] for s in ("read", "l3", "network", "post", "write")))
