"""`make demo` end to end, at plumbing scale: the README's first command must keep working.

The real demo trains the `cpu` preset for ~8 minutes; here the same Makefile target runs with the
`smoke` preset and a handful of phantoms, so every step (both phantom families, convert, plan,
train, predict, evaluate internal and external, the side-by-side table) is exercised in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_runs_every_step_and_shows_internal_and_external(tmp_path):
    demo = tmp_path / "demo"
    venv = Path(sys.prefix)
    (venv / "bin" / "sarco").touch()  # the venv running the tests is current: no reinstall
    result = subprocess.run(
        ["make", "-C", str(REPO), "demo", f"DEMO={demo}", f"VENV={venv}", "DEMO_PRESET=smoke",
         "DEMO_TRAIN_CASES=6", "DEMO_TEST_CASES=2", "DEMO_EXTERNAL_CASES=2", "DEMO_TISSUES=4"],
        capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    table = (demo / "internal_vs_external.md").read_text(encoding="utf-8")
    assert "internal (family A)" in table and "external (family B)" in table
    for report in ("report", "report_external"):
        assert (demo / report / "summary.json").is_file() and (demo / report / "report.md").is_file()
    assert (demo / "predictions" / "review.html").is_file()
    # the four-tissue demo (DEMO_TISSUES=4; the muscle-only default shares every other step): every tissue
    # from the model, evaluated per tissue
    import csv

    rows = list(csv.DictReader((demo / "predictions" / "results.csv").open(encoding="utf-8")))
    assert rows and all(r[f"{t}_source"] == "model" for r in rows for t in ("imat", "vat", "sat"))
    for report in ("report", "report_external"):
        text = (demo / report / "report.md").read_text(encoding="utf-8")
        assert all(f"## Tissue: {name}" in text for name in ("Skeletal muscle", "IMAT", "VAT", "SAT"))
    assert "| SAT Dice (mean, per tissue) |" in table and "| IMAT Dice (mean, per tissue) |" in table


def _fake_venv(tmp_path: Path) -> Path:
    """A VENV whose sarco is newer than pyproject.toml, so `make demo` installs nothing."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("python", "sarco"):
        (venv / "bin" / name).write_text("#!/bin/sh\nexit 0\n")
        (venv / "bin" / name).chmod(0o755)
    return venv


@pytest.mark.parametrize("tissues, keep", [("4", True), ("1", False)])
def test_demo_tissues_chooses_four_tissue_or_muscle_only_conversion(tissues, keep, tmp_path):
    result = subprocess.run(["make", "-n", "-C", str(REPO), "demo", f"DEMO={tmp_path / 'd'}", f"DEMO_TISSUES={tissues}",
                             f"VENV={_fake_venv(tmp_path)}"], capture_output=True, text=True, timeout=60)
    convert = next(line for line in result.stdout.splitlines() if " convert " in line)
    assert ("--keep-tissues" in convert) is keep
    default = subprocess.run(["make", "-n", "-C", str(REPO), "demo", f"VENV={_fake_venv(tmp_path)}"],
                             capture_output=True, text=True, timeout=60).stdout
    assert "--keep-tissues" not in default  # muscle only unless asked (the wider four-tissue model: README)


def test_demo_refuses_another_tissue_count_before_touching_the_demo_folder(tmp_path):
    demo = tmp_path / "d"
    demo.mkdir()
    (demo / "keep.txt").write_text("x")
    result = subprocess.run(["make", "-C", str(REPO), "demo", f"DEMO={demo}", "DEMO_TISSUES=3",
                             f"VENV={_fake_venv(tmp_path)}"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DEMO_TISSUES must be 1" in result.stderr
    assert (demo / "keep.txt").is_file()
