"""One reason vocabulary across commands: a case predict cannot measure gets the code of the fact
(`not_ct`, `l3_not_in_view`, `l3_no_locator`), the code `sarco measure` gives the same file, not a
catch-all `unreadable`. Runs on the row-making step of predict (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import make_image, muscle_of, phantom_array, write
from sarco_nn.errors import InputError
from sarco_nn.inference import _failure_reason, _prepare_case, _ReadContext, discover_scans


def _predict_reason(scan_path: Path, tmp_path: Path, l3_from: Path | None = None):
    """The failed reason predict writes for this scan (the reader's error, judged as the batch does)."""
    context = _ReadContext(l3_slice=None, l3_rows={}, l3_from=l3_from, locator="auto", l3_rule="centroid",
                           l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
    case = _prepare_case(discover_scans(scan_path)[0], context)
    assert case.error is not None, case.reasons
    return _failure_reason(case.error, tmp_path / "out")


def test_a_ct_not_in_hu_is_not_ct_in_predict_as_in_measure(tmp_path):
    hu = phantom_array(nz=1, ny=64, nx=64)[0].astype(np.float32)
    normalised = write(make_image(((hu + 1000) / 2000).clip(0, 1), spacing=(0.8, 0.8)), tmp_path / "norm.nii.gz")
    mask = write(make_image(muscle_of(hu), spacing=(0.8, 0.8)), tmp_path / "mask.nii.gz")
    reason = _predict_reason(normalised, tmp_path)
    assert reason.code == "not_ct" and reason.status.value == "failed", reason

    from sarco_nn import api

    with pytest.raises(InputError) as refused:
        api.measure(mask, image=normalised)
    assert "[not_ct]" in str(refused.value)  # measure names the same code


def test_a_volume_without_l3_in_view_gets_an_l3_code_not_unreadable(tmp_path):
    volume = write(make_image(phantom_array(nz=6, ny=48, nx=48)), tmp_path / "scans" / "chest.nii.gz")
    labels = np.zeros((6, 48, 48), np.uint8)
    labels[:, 20:28, 20:28] = 21  # T12 only (TotalSegmentator numbering, L3 = 29)
    vertebrae = write(make_image(labels), tmp_path / "vertebrae.nii.gz")
    reason = _predict_reason(volume, tmp_path, l3_from=vertebrae)
    assert reason.code == "l3_not_in_view" and "L3 not in field of view" in reason.message, reason


def test_a_volume_nothing_can_locate_says_so_in_its_code(tmp_path, monkeypatch):
    import sarco_nn.l3.totalseg

    monkeypatch.setattr(sarco_nn.l3.totalseg, "totalsegmentator_problem", lambda: "TotalSegmentator is not installed")
    volume = write(make_image(phantom_array(nz=6, ny=48, nx=48)), tmp_path / "scans" / "abdomen.nii.gz")
    reason = _predict_reason(volume, tmp_path)
    assert reason.code == "l3_no_locator" and "cannot locate L3" in reason.message, reason


def test_a_spacing_in_metres_is_implausible_spacing_in_predict_measure_and_convert_alike(tmp_path):
    # 0.8 mm pixels whose header says 0.0008 (metres): before, predict said "no body", measure gave
    # an SMA of 0.0000 cm² (mask only) or refused it as no_body, convert as "no body"
    from dataset_conversion.convert import convert_dropin
    from sarco_nn import api
    from sarco_nn.status import Status, Verdict

    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    metres = (0.0008, 0.0008)
    scan = write(make_image(hu, spacing=metres), tmp_path / "scans" / "metres.nii.gz")
    mask = write(make_image(muscle_of(hu), spacing=metres), tmp_path / "masks" / "metres.nii.gz")

    context = _ReadContext(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid",
                           l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
    case = _prepare_case(discover_scans(scan)[0], context)
    assert case.error is None and Verdict(case.reasons).status is Status.FAILED
    assert [r.code for r in case.reasons] == ["implausible_spacing"] and "metres.nii.gz" in case.reasons[0].message

    for kwargs in ({}, {"image": scan}):  # the mask alone, and the mask with its CT
        with pytest.raises(InputError) as refused:
            api.measure(mask, **kwargs)
        line = str(refused.value)
        assert "[implausible_spacing]" in line and "metres.nii.gz" in line and "\n" not in line

    drop = tmp_path / "drop"
    write(make_image(hu[None], spacing=(*metres, 2.5)), drop / "images" / "case_a.nii.gz")
    write(make_image(muscle_of(hu)[None], spacing=(*metres, 2.5)), drop / "masks" / "case_a.nii.gz")
    (drop / "clinical.csv").write_text("case_id,sex,height_m\ncase_a,M,1.7\n", encoding="utf-8")
    with pytest.raises(InputError) as refused:
        convert_dropin(drop, tmp_path / "raw", "Metres", 530)
    assert "[implausible_spacing]" in str(refused.value) and "case_a" in str(refused.value)
