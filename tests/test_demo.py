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
         "DEMO_TRAIN_CASES=6", "DEMO_TEST_CASES=2", "DEMO_EXTERNAL_CASES=2"],
        capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    table = (demo / "internal_vs_external.md").read_text(encoding="utf-8")
    assert "internal (family A)" in table and "external (family B)" in table
    for report in ("report", "report_external"):
        assert (demo / report / "summary.json").is_file() and (demo / report / "report.md").is_file()
    assert (demo / "predictions" / "review.html").is_file()
