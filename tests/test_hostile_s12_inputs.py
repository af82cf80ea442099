"""Hostile inputs, session 12 (HOSTILE_FINDINGS.md #113+, h3): evaluate, the review page, the api."""

from __future__ import annotations

import math

from sarco_nn.evaluation.tissues import console_line, tissue_summary


def _row(dice: float, ref: float, pred: float) -> dict:
    return {"vat_dice": dice, "vat_area_ref_cm2": ref, "vat_area_pred_cm2": pred, "vat_area_error_cm2": pred - ref,
            "vat_hu_error": None}


def test_a_tissue_absent_from_every_reference_and_prediction_has_no_dice_not_a_perfect_one():
    """#113: VAT absent in every case (an annotation protocol without VAT) was summarised as Dice 1.000, n 3."""
    vat = tissue_summary([_row(1.0, 0.0, 0.0) for _ in range(3)])["vat"]
    assert vat["n"] == 3 and vat["dice_n"] == 0 and vat["dice_mean"] is None
    assert "VAT n/a (absent in every case)" in console_line({"vat": vat})


def test_both_empty_cases_leave_the_dice_summary_cases_holding_the_tissue_count():
    vat = tissue_summary([_row(1.0, 0.0, 0.0), _row(0.5, 10.0, 6.0), _row(0.0, 4.0, 0.0)])["vat"]
    assert vat["dice_n"] == 2 and math.isclose(vat["dice_mean"], 0.25) and vat["dice_min"] == 0.0
    assert vat["n"] == 3 and math.isclose(vat["area_agreement_cm2"]["bias"], (0 - 4 - 4) / 3)


def test_review_page_of_a_folder_named_like_a_placeholder_and_hostile_case_ids(tmp_path):
    """#114: an output folder named "{{ROWS}}" put every patient's row JSON into the page's <title> and <h1>
    (the placeholders were filled one after another). Case ids that try to close the script stay data."""
    import csv
    import json
    import re

    from sarco_nn.review.gallery import write_review_html

    out = tmp_path / "{{ROWS}}"
    out.mkdir()
    ids = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(2)>", "{{TITLE}}", "é日本\u202egpj",
           "x" * 3000]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["case_id", "status", "overlay"])
        writer.writeheader()
        writer.writerows({"case_id": c, "status": "review", "overlay": f"overlays/{c}.png"} for c in ids)
    page = write_review_html(out).read_text(encoding="utf-8")
    assert re.findall(r"<title>(.*?)</title>", page) == ["sarco review: {{ROWS}}"]
    assert len(re.findall(r"<script\b", page, re.I)) == 3  # the two JSON blocks and the page's own script
    block = page.split('<script id="rows" type="application/json">')[1].split("</script>")[0]
    rows = json.loads(block)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert not any(set(r["overlay"]) & set('<>"\' ') for r in rows)  # percent-encoded in the image URL


def test_api_measure_refuses_arguments_of_the_wrong_type_in_one_line(tmp_path):
    """#115: height_m="1.7" or level=3 gave a TypeError deep in the library, slice_index=0.7 "0.7 is not in list",
    label=1.5 measured label 1 silently, hu_gate="no" meant True."""
    import numpy as np
    import pytest
    import SimpleITK as sitk

    from sarco_nn import api
    from sarco_nn.errors import SarcoError

    mask = np.zeros((40, 40), np.uint8)
    mask[5:35, 5:35] = 1
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "m.nii.gz"))
    path = tmp_path / "m.nii.gz"
    for kwargs, named in (({"height_m": "1.7"}, "height_m='1.7' is str, not a number"),
                          ({"level": 3}, "level=3 is int"), ({"slice_index": 0.7}, "slice_index=0.7 is float"),
                          ({"label": 1.5}, "label=1.5 is float, not a whole number"),
                          ({"hu_gate": "no"}, "hu_gate='no' is str, not True or False")):
        with pytest.raises(SarcoError, match=named.replace("(", r"\(")):
            api.measure(path, **kwargs)
    with pytest.raises(SarcoError, match="mask=None"):
        api.measure(None)
    [m] = api.measure(str(path), slice_index=np.int64(0), label=np.uint8(1), height_m=np.float32(1.7), sex="M",
                      hu_gate=np.False_, level=("L3",))  # numpy scalars and a tuple of levels are fine
    assert m.sma_cm2 == 30 * 30 / 100 and abs(m.smi_cm2_m2 - 9.0 / float(np.float32(1.7)) ** 2) < 1e-3


def test_a_dicom_seg_of_a_series_holding_its_scout_references_the_axial_slice(tmp_path):
    """#116: the reader leaves a scout (LOCALIZER) out of the series (#35), the SEG writer did not: highdicom
    refused ("Source images must all be part of the same series and must have the same image dimensions"), so
    every such series got `not written` instead of a SEG."""
    import numpy as np
    import pydicom
    import pytest
    import SimpleITK as sitk

    pytest.importorskip("highdicom")
    from dicom_factory import write_series
    from sarco_nn.image_io import read_image
    from sarco_nn.review.dicom_seg import write_dicom_seg

    hu = np.full((4, 32, 32), -1000.0)
    hu[:, 6:26, 6:26] = 40.0
    write_series(tmp_path / "s", hu, series_uid="1.2.826.0.1.5")

    def scout(ds, k):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    write_series(tmp_path / "s", hu[:1], series_uid="1.2.826.0.1.5", names=lambda k: "SCOUT", edit=scout)
    image = read_image(tmp_path / "s")
    labels = np.zeros(hu.shape, np.uint8)
    labels[2, 8:24, 8:24] = 1
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    result = write_dicom_seg(tmp_path / "s", mask, tmp_path / "seg.dcm", uid_policy="generate")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    [frame] = seg.PerFrameFunctionalGroupsSequence
    referenced = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    assert result.n_frames == 1 and referenced == pydicom.dcmread(tmp_path / "s" / "IM0002").SOPInstanceUID


def test_a_threshold_file_with_a_cut_off_that_flags_everyone_or_no_one_is_refused(tmp_path):
    """#117: SMI 524 (for 52.4) flagged every patient sarcopenic, 0.524 none, a muscle HU cut-off of 4100 every
    patient myosteatotic, status ok. The bounds: the plausible SMA (30-500 cm²), over adult heights for SMI, and
    the set's own HU gate (the mean is taken within it)."""
    import json

    import pytest

    from sarco_nn.errors import InputError
    from sarco_nn.thresholds import THRESHOLD_SETS, cutoff_bounds, load_threshold_file

    assert cutoff_bounds("smi") == pytest.approx((30 / 2.2 ** 2, 500 / 1.2 ** 2))
    for metric, male, every in (("smi", 524, "every"), ("smi", 0.524, "no"), ("sma", 1440, "every"),
                                ("sma", 14.4, "no"), ("muscle_hu", 4100, "every"), ("muscle_hu", -41, "no")):
        path = tmp_path / f"{metric}_{male}.json"
        path.write_text(json.dumps({"metric": metric, "male": male, "female": 38.5}))
        with pytest.raises(InputError, match=f"'male' cut-off {male:g} .* flag {every} patient"):
            load_threshold_file(path)
    edge = tmp_path / "gate.json"  # inside its own, wider gate a cut-off of 160 HU is a real one
    edge.write_text(json.dumps({"metric": "muscle_hu", "male": 160, "female": 33, "hu_gate": [-50, 200]}))
    assert load_threshold_file(edge).hu_gate == (-50.0, 200.0)
    for ts in THRESHOLD_SETS.values():  # every published set lies inside
        low, high = cutoff_bounds(ts.metric)
        assert all(low < b.cutoff < high for bands in ts.bands.values() for b in bands)


def test_api_predict_merge_of_one_path_string_and_evaluate_of_wrong_types_are_one_line(tmp_path):
    """#118: predict_merge("out/p0") merged the characters of the string as part folders ("o/sarco_predict.json:
    not a `sarco predict` output folder"); evaluate(123) and predict(None) were TypeErrors."""
    import pytest

    from sarco_nn import api
    from sarco_nn.errors import SarcoError

    with pytest.raises(SarcoError, match="is one path, not a list of part folders"):
        api.predict_merge(str(tmp_path / "p0"), output=tmp_path / "all")
    with pytest.raises(SarcoError, match="predictions=123 is int"):
        api.evaluate(123, reference=tmp_path, output=tmp_path / "r")
    with pytest.raises(SarcoError, match=r"reference=\[.* is list"):
        api.evaluate(tmp_path, reference=[tmp_path], output=tmp_path / "r")
    with pytest.raises(SarcoError, match="inputs=None"):
        api.predict(None, tmp_path / "out")
