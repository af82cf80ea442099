"""results.csv of `sarco predict`, recomputed from the masks it wrote (issue #13, point 3).

Independent oracle: the written mask file is read back with SimpleITK, its muscle pixels counted
with numpy, and SMA / SMI / mean HU / the `paper` flag recomputed with Python's Decimal from the
file's own spacing and clinical.csv — nothing of sarco's measurement code is used here.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_subprocess

#: The `paper` set (reference study): SMA < 144 cm² (men), < 92 cm² (women), strictly below.
PAPER_CUTOFFS_CM2 = {"M": Decimal("144"), "F": Decimal("92")}


def _clinical(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_every_number_in_results_csv_follows_from_the_mask_it_wrote(tiny_model, tmp_path):
    out = tmp_path / "pred"
    result = sarco_subprocess("predict", "-i", tiny_model.held / "images", "-o", out, "--fast",
                              "--clinical", tiny_model.held / "clinical.csv", "--device", "cpu",
                              "-w", tiny_model.workspace, cwd=tiny_model.root)
    assert result.code == 0, result.output[-3000:]
    clinical = _clinical(tiny_model.held / "clinical.csv")
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(clinical)
    for row in rows:
        assert row["status"] in ("ok", "review", "failed"), row
        if row["status"] == "failed":
            assert row["sma_cm2"] == "" and row["sarcopenic"] == "" and row["reasons"]
            continue
        mask_image = sitk.ReadImage(str(out / row["mask"]))
        mask = sitk.GetArrayFromImage(mask_image)
        ct = sitk.GetArrayFromImage(sitk.ReadImage(row["input"])).astype(np.float64)
        assert mask.shape == ct.shape  # written on the input's own grid
        sx, sy = (Decimal(repr(v)) for v in mask_image.GetSpacing()[:2])
        n = int(np.count_nonzero(mask == 1))
        sma = Decimal(n) * sx * sy / 100
        assert Decimal(row["sma_cm2"]) == sma.quantize(Decimal("0.01")), row
        height = Decimal(clinical[row["case_id"]]["height_m"])
        assert Decimal(row["smi_cm2_m2"]) == (sma / height**2).quantize(Decimal("0.01")), row
        if n:
            assert float(row["muscle_hu_mean"]) == pytest.approx(ct[mask == 1].mean(), abs=0.051)
        blocking = ("empty_mask", "label_absent", "sma_below_floor", "sma_above_ceiling")
        if any(code in row["reasons"] for code in blocking):
            assert row["sarcopenic"] == "unknown" and row["status"] == "review", row
        if row["sarcopenic"] == "unknown":  # sex is known for every phantom: only a reason withholds it
            assert row["status"] == "review" and row["reasons"], row
        else:
            sex = clinical[row["case_id"]]["sex"]
            assert row["sarcopenic"] == ("yes" if sma < PAPER_CUTOFFS_CM2[sex] else "no"), row
        if row["qc_score"]:
            assert 0.0 <= float(row["qc_score"]) <= 1.0
