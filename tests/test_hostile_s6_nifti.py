"""Hostile inputs, session 6 (HOSTILE_FINDINGS.md, h5): a NIfTI mask whose qform and sform disagree.

ITK (sarco) reads the qform, nibabel / FSL the sform: with qform 1 mm and sform 0.8 mm pixels the SMA is
1.56× what another tool reports from the same file. The CT's disagreement was a review reason; the
mask's (measured without --image) gave status ok and a flag.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from conftest import sarco_inprocess


def _mask(path, sform_mm: float, qform_mm: float) -> None:
    arr = np.zeros((200, 200, 1), np.uint8)
    arr[20:140, 20:140, 0] = 1  # 14 400 px: 144 cm² at 1 mm, 92.16 cm² at 0.8 mm
    img = nib.Nifti1Image(arr, np.diag([sform_mm, sform_mm, 5.0, 1.0]))
    img.set_qform(np.diag([qform_mm, qform_mm, 5.0, 1.0]), code=1)
    img.set_sform(np.diag([sform_mm, sform_mm, 5.0, 1.0]), code=2)
    nib.save(img, str(path))


def test_a_mask_whose_qform_and_sform_disagree_is_reviewed_without_a_flag(tmp_path):
    _mask(tmp_path / "m.nii.gz", sform_mm=0.8, qform_mm=1.0)
    obj = json.loads(sarco_inprocess("measure", tmp_path / "m.nii.gz", "--sex", "F", "--json").stdout)
    assert obj["status"] == "review" and obj["sarcopenic"] == "unknown", obj
    assert "qform_sform_disagree" in [r["code"] for r in obj["reasons"]]


def test_a_mask_whose_qform_and_sform_agree_is_ok(tmp_path):
    _mask(tmp_path / "m.nii.gz", sform_mm=0.8, qform_mm=0.8)
    obj = json.loads(sarco_inprocess("measure", tmp_path / "m.nii.gz", "--sex", "F", "--json").stdout)
    assert obj["status"] == "ok" and obj["sarcopenic"] is False and obj["sma_cm2"] == 92.16, obj
