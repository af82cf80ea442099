"""`sarco predict` writes review.html for every batch, and DICOM SEGs only when asked (--dicom-seg)."""

from __future__ import annotations

import csv

import pytest

from conftest import sarco_inprocess

pytestmark = pytest.mark.slow  # needs the tiny trained model


def test_predict_writes_review_html_and_opt_in_dicom_seg(tiny_model, tmp_path):
    hd = pytest.importorskip("highdicom")
    from test_review_dicom_seg import _series

    scans = tmp_path / "scans"
    _series(scans / "dicom_case", rows=96, cols=96)
    out = tmp_path / "out"
    result = sarco_inprocess("predict", "-i", scans, "-o", out, "--l3-slice", 2, "--device", "cpu",
                             "-w", tiny_model.workspace)
    assert result.code == 0, result.output
    page = (out / "review.html").read_text(encoding="utf-8")
    assert "dicom_case" in page
    assert not (out / "dicom_seg").exists()  # identity-carrying output only on request

    result = sarco_inprocess("predict", "-i", scans, "-o", out, "--l3-slice", 2, "--device", "cpu",
                             "--dicom-seg", "-w", tiny_model.workspace)
    assert result.code == 0, result.output
    with open(out / "dicom_seg" / "dicom_seg.csv", newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    seg = hd.seg.segread(str(out / row["dicom_seg"]))
    assert seg.PatientName == "Doe^Jane" and row["note"] == ""
