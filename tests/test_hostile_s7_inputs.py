"""Hostile inputs, session 7 (HOSTILE_FINDINGS.md, h1): the findings of sessions 5 and 6 still open.

- #37 a CT stored as int8 (HU clipped or wrapped to -128..127) passed as a CT with a `no_bone` review and
  the flag kept; it is `not_ct` now, in predict and in measure --image;
- #40 DICOM RescaleSlope 0 was read as slope 1 (GDCM), status ok;
- #42 evaluate took a reference whose NIfTI qform and sform disagree without a word (measure did not);
- #41 `sma_below_floor` said "at L3" at --level L4;
- #13 / #16 / #17 / #38 / #39: codes and wording that named no cause or a wrong one.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from dicom_factory import write_series
from helpers import make_image, muscle_of, phantom_array, square_label_map, write
from sarco_nn.errors import InputError
from sarco_nn.status import Reason, Status, Verdict


def _predict_reasons(scan_path: Path, tmp_path: Path) -> list[Reason]:
    """Every reason predict gives this scan before the network runs (the reader's error judged as the batch does)."""
    from sarco_nn.inference import _failure_reason, _prepare_case, _ReadContext, discover_scans

    context = _ReadContext(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid",
                           l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
    case = _prepare_case(discover_scans(scan_path)[0], context)
    return [*case.reasons, *([_failure_reason(case.error, tmp_path / "out")] if case.error is not None else [])]


def _slice_hu() -> np.ndarray:
    return phantom_array(nz=1, ny=64, nx=64)[0]


def _measure_refusal(mask: Path, image: Path) -> str:
    result = sarco_inprocess("measure", mask, "--image", image, "--sex", "M")
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    return result.output


# ------------------------------------------------------------------ #37: a CT stored in 8 bits
@pytest.mark.parametrize("storage", ["clipped", "wrapped"])
def test_a_ct_stored_as_int8_is_not_ct_in_predict_and_in_measure(tmp_path, storage):
    hu = _slice_hu()
    stored = np.clip(hu, -128, 127).astype(np.int8) if storage == "clipped" else hu.astype(np.int8)
    ct = write(make_image(stored, spacing=(0.8, 0.8)), tmp_path / "scans" / "int8.nii.gz")
    mask = write(make_image(muscle_of(hu), spacing=(0.8, 0.8)), tmp_path / "mask.nii.gz")
    reasons = _predict_reasons(ct, tmp_path)
    assert "not_ct" in [r.code for r in reasons], reasons
    assert Verdict(reasons).status is Status.FAILED and not Verdict(reasons).flag_allowed
    assert "8-bit" in next(r.message for r in reasons if r.code == "not_ct")
    out = _measure_refusal(mask, ct)
    assert "[not_ct]" in out and "int8.nii.gz" in out and "8-bit" in out


def test_the_same_ct_stored_as_int16_is_still_accepted(tmp_path):
    from sarco_nn.ct_checks import ct_reasons
    from sarco_nn.image_io import read_image

    ct = write(make_image(_slice_hu(), spacing=(0.8, 0.8)), tmp_path / "int16.nii.gz")
    assert ct_reasons(read_image(ct), ct) == []


# ------------------------------------------------------------------ #13: non-HU CTs in predict
def test_a_raw_0_to_4095_ct_and_a_mask_given_as_ct_are_not_ct_in_predict(tmp_path):
    hu = _slice_hu()
    raw = write(make_image((hu + 1024).clip(0, 4095).astype(np.int16), spacing=(0.8, 0.8)), tmp_path / "a" / "raw.nii.gz")
    as_ct = write(make_image(muscle_of(hu), spacing=(0.8, 0.8)), tmp_path / "b" / "mask_as_ct.nii.gz")
    for scan in (raw, as_ct):
        reasons = _predict_reasons(scan, tmp_path)
        assert [r.code for r in reasons] == ["not_ct"] and reasons[0].status is Status.FAILED, (scan, reasons)


# ------------------------------------------------------------------ #40: RescaleSlope 0
def test_dicom_rescale_slope_zero_is_refused_naming_the_file(tmp_path):
    from sarco_nn.image_io import read_image

    def slope_zero(ds, k):
        if k == 1:
            ds.RescaleSlope = 0
    write_series(tmp_path, phantom_array(nz=3), edit=slope_zero)
    with pytest.raises(InputError, match=r"RescaleSlope 0 in IM0001 is invalid") as refused:
        read_image(tmp_path)
    assert "Fix: re-export" in str(refused.value) and "\n" not in str(refused.value)


def test_dicom_rescale_slope_one_still_reads_exactly(tmp_path):
    from sarco_nn.image_io import read_image

    hu = phantom_array(nz=3)
    write_series(tmp_path, hu)
    assert np.array_equal(np.rint(sitk.GetArrayFromImage(read_image(tmp_path))), hu)


# ------------------------------------------------------------------ #42: evaluate and a reference's qform/sform
def _square_nifti(path: Path, qform_mm: float, sform_mm: float, side: int) -> None:
    arr = np.zeros((200, 200, 1), np.uint8)
    arr[20:20 + side, 20:20 + side, 0] = 1
    img = nib.Nifti1Image(arr, np.diag([sform_mm, sform_mm, 5.0, 1.0]))
    img.set_qform(np.diag([qform_mm, qform_mm, 5.0, 1.0]), code=1)
    img.set_sform(np.diag([sform_mm, sform_mm, 5.0, 1.0]), code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


@pytest.mark.parametrize("ref_sform_mm, disagree", [(0.8, True), (1.0, False)])
def test_evaluate_gives_a_reference_with_disagreeing_qform_and_sform_a_reason(tmp_path, ref_sform_mm, disagree):
    _square_nifti(tmp_path / "pred" / "c1.nii.gz", 1.0, 1.0, side=118)
    _square_nifti(tmp_path / "ref" / "c1.nii.gz", 1.0, ref_sform_mm, side=120)  # ITK reads the qform: 1 mm
    result = sarco_inprocess("evaluate", tmp_path / "pred", "--reference", tmp_path / "ref", "-o", tmp_path / "rep")
    assert result.code == 0, result.output
    with open(tmp_path / "rep" / "cases.csv", newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["in_statistics"] == "yes" and float(row["sma_ref_cm2"]) == 144.0, row  # 120² px of the qform's 1 mm²
    if disagree:
        assert row["status"] == "review" and row["reasons"].startswith("qform_sform_disagree: "), row
        assert "ref/c1.nii.gz" in row["reasons"]
    else:
        assert row["status"] == "ok" and row["reasons"] == "", row


# ------------------------------------------------------------------ #41: the level in the floor message
@pytest.mark.parametrize("level", ["L4", "L3"])
def test_sma_below_floor_names_the_level_measured(tmp_path, level):
    square_label_map(tmp_path / "m.nii.gz", {1: 50})  # 25 cm²: below the 30 cm² floor
    obj = json.loads(sarco_inprocess("measure", tmp_path / "m.nii.gz", "--level", level, "--json").stdout)
    [message] = [r["message"] for r in obj["reasons"] if r["code"] == "sma_below_floor"]
    assert f"for an adult at {level}:" in message and f"not at {level};" in message, message
    assert ("L3" in message) is (level == "L3"), message


# ------------------------------------------------------------------ #16, #17: reader messages
def test_measure_of_a_missing_mask_says_no_such_file(tmp_path):
    result = sarco_inprocess("measure", tmp_path / "missing.nii.gz")
    assert result.code == 2 and "missing.nii.gz: no such file" in result.output, result.output


def test_an_mha_with_zero_element_spacing_is_refused_naming_the_spacing(tmp_path):
    from sarco_nn.image_io import read_image

    path = tmp_path / "zero.mha"
    sitk.WriteImage(make_image(phantom_array(nz=2), spacing=(0.8, 0.8, 3.0)), str(path))
    data = path.read_bytes()
    zero, n = re.subn(rb"ElementSpacing = [^\n]*\n", b"ElementSpacing = 0 0 3\n", data, count=1)
    assert n == 1
    path.write_bytes(zero)
    with pytest.raises(InputError, match=r"zero voxel spacing in the MetaImage header \(ElementSpacing = 0 0 3\)"):
        read_image(path)
    path.write_bytes(data)
    assert read_image(path).GetSpacing() == pytest.approx((0.8, 0.8, 3.0))


# ------------------------------------------------------------------ #38: convert --keep-tissues with a foreign name
def test_keep_tissues_with_an_extra_bone_label_says_only_that(tmp_path):
    from dataset_conversion.convert import convert_dropin

    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    drop = tmp_path / "drop"
    labels = muscle_of(hu)
    labels[(hu < -50) & (hu > -500)] = 4  # fat, declared "sat"
    labels[hu > 600] = 5  # "bone"
    write(make_image(hu, spacing=(0.8, 0.8)), drop / "images" / "p1.nii.gz")
    write(make_image(labels, spacing=(0.8, 0.8)), drop / "masks" / "p1.nii.gz")
    (drop / "labels.json").write_text(json.dumps({"muscle": 1, "sat": 4, "bone": 5}))
    (drop / "clinical.csv").write_text("case_id,sex,height_m\np1,M,1.8\n")
    with pytest.raises(InputError) as refused:
        convert_dropin(drop, tmp_path / "raw", "Bone", 520, keep_tissues=True)
    text = str(refused.value)
    assert "labels.json names ['bone']" in text and "not declared" not in text, text


# ------------------------------------------------------------------ #39: a myosteatosis set's own gate
def test_a_myosteatosis_file_with_its_own_gate_is_measured_within_it(tmp_path):
    mask = np.zeros((120, 120), np.uint8)
    mask[5:85, 5:85] = 1  # 64 x 64 mm muscle (1 mm pixels): 64 cm²
    mask[90:110, :] = 4
    ct = np.full(mask.shape, 45, np.int16)
    ct[5:45, 5:85] = -100  # half the muscle pixels fatty: -100 HU
    ct[mask == 4] = -110
    ct[112:118, 50:60] = 700  # bone
    ct[0:3, :] = -1000  # air
    for array, name in ((mask, "m.nii.gz"), (ct, "c.nii.gz")):
        write(make_image(array, spacing=(1.0, 1.0)), tmp_path / name)
    gate = tmp_path / "fat_gate.json"
    gate.write_text(json.dumps({"name": "fatgate", "metric": "muscle_hu", "male": -50, "female": -50,
                                "hu_gate": [-190, -30]}))
    result = sarco_inprocess("measure", tmp_path / "m.nii.gz", "--image", tmp_path / "c.nii.gz", "--sex", "M",
                             "--height", "1.8", "--weight", "80", "--tissues", "--myosteatosis", gate, "--json")
    assert result.code == 0, result.output
    obj = json.loads(result.stdout)
    in_gate = ct[(mask == 1) & (ct >= -190) & (ct <= -30)]
    assert obj["muscle_attenuation_hu_range"] == "[-190, -30]"
    assert obj["muscle_attenuation_hu"] == pytest.approx(float(in_gate.mean())) and in_gate.size == 40 * 80
    assert obj["myosteatosis"] is True and obj["myosteatosis_set"] == "fatgate"  # -100 < -50


# ------------------------------------------------------------------ #18: height in results.csv
def test_predict_writes_the_height_its_smi_was_computed_with(tmp_path, monkeypatch):
    """results.csv held height_m 1.76 beside an SMI computed with 1.761: the table did not recompute."""
    import sarco_nn.inference as inference
    import sarco_nn.review.fold_ensemble as fold_ensemble
    from sarco_nn.clinical import ClinicalRecord
    from sarco_nn.thresholds import get_threshold_set

    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    scan = inference.discover_scans(write(make_image(hu, spacing=(0.8, 0.8)), tmp_path / "scans" / "p1.nii.gz"))[0]
    monkeypatch.setattr(inference, "_huge_network_grid", lambda *args: None)  # no network, no plans: none needed
    monkeypatch.setattr(fold_ensemble, "preprocess", lambda *args: None)
    context = inference._ReadContext(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid",
                                     l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
    case = inference._prepare_case(scan, context)
    assert case.error is None and case.reasons == [], (case.error, case.reasons)
    muscle = muscle_of(hu)[None]
    probabilities = np.stack([1.0 - muscle, muscle]).astype(np.float32)  # (C, 1, y, x): a certain "model"
    monkeypatch.setattr(fold_ensemble, "predict_folds", lambda *args, **kwargs: fold_ensemble.FoldPrediction(
        probabilities[None], probabilities, muscle.astype(np.uint8)))
    cells, _ = inference._segment_and_measure(
        scan, "p1", case, Verdict(), predictor=None, pp_functions=[], out_dir=tmp_path / "out",
        clinical={"p1": ClinicalRecord("p1", "M", 1.761)}, threshold_set=get_threshold_set("paper"), gate=None,
        slab=1, trunk_only=False)
    assert cells["height_m"] == "1.761", cells["height_m"]
    sma = float(muscle.sum()) * 0.8 * 0.8 / 100.0
    assert float(cells["sma_cm2"]) == pytest.approx(sma, abs=0.005)
    assert float(cells["smi_cm2_m2"]) == pytest.approx(sma / 1.761 ** 2, abs=0.005)
    assert f"{sma / float(cells['height_m']) ** 2:.2f}" == cells["smi_cm2_m2"]  # recomputed from the table's height
