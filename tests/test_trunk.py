"""Tissue outside the trunk is not counted (sarco_nn.trunk): arms in the field of view are not SMA.

Checked on generated slices (exact areas), on the real CT of ../shared/data where present, and end to
end through `sarco predict` with and without --keep-outside-trunk."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarco_nn.constants import MUSCLE_LABEL, TISSUE_LABELS
from sarco_nn.trunk import MAX_OUTSIDE_TRUNK_SHARE, restrict_to_trunk

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalsegmentator"


def _disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def _slice_with_arm(gap: int):
    """A trunk (disc r=60 of fat, a muscle ring, an air-filled bowel loop inside) and an arm disc
    (r=15, muscle) `gap` pixels from the trunk's skin; air elsewhere."""
    shape = (200, 260)
    trunk = _disc(shape, 100, 100, 60)
    arm = _disc(shape, 100, 100 + 60 + gap + 15, 15)
    ct = np.full(shape, -1000.0)
    ct[trunk] = -100.0
    ring = trunk & ~_disc(shape, 100, 100, 45)
    ct[ring] = 50.0
    ct[_disc(shape, 100, 90, 8)] = -950.0  # bowel gas inside the body stays body (holes filled)
    ct[arm] = 50.0
    seg = np.zeros(shape, np.uint8)
    seg[ring] = MUSCLE_LABEL
    seg[arm] = MUSCLE_LABEL
    seg[_disc(shape, 100, 100, 30) & ~_disc(shape, 100, 90, 8)] = TISSUE_LABELS["vat"]
    return ct, seg, ring, arm


def test_an_arm_apart_from_the_trunk_is_removed_exactly():
    ct, seg, ring, arm = _slice_with_arm(gap=6)
    before = seg.copy()
    result = restrict_to_trunk(seg, ct, (0.8, 0.7))
    assert np.array_equal(seg, before), "the input segmentation must not be modified"
    out = result.segmentation
    assert not (out[arm] != 0).any()
    assert np.array_equal(out[~arm], seg[~arm]), "nothing inside the trunk may change"
    assert result.muscle_removed_cm2 == pytest.approx(arm.sum() * 0.8 * 0.7 / 100.0)
    assert result.muscle_removed_share == pytest.approx(arm.sum() / (arm.sum() + ring.sum()))
    assert result.reasons() == []  # an arm is a small share of the muscle: no review


def test_an_arm_touching_the_trunk_is_kept():
    ct, seg, _, _ = _slice_with_arm(gap=-2)
    result = restrict_to_trunk(seg, ct, (1.0, 1.0))
    assert np.array_equal(result.segmentation, seg)
    assert result.muscle_removed_cm2 == 0.0


def test_most_muscle_outside_the_trunk_asks_for_review():
    ct, seg, ring, arm = _slice_with_arm(gap=6)
    seg[ring] = 0  # muscle only in the "arm": the largest region holds none
    result = restrict_to_trunk(seg, ct, (1.0, 1.0))
    assert result.muscle_removed_share == pytest.approx(1.0) and MAX_OUTSIDE_TRUNK_SHARE < 1.0
    assert [r.code for r in result.reasons()] == ["muscle_outside_trunk"]


def test_an_all_air_slice_removes_everything_without_error():
    ct = np.full((64, 64), -1000.0)
    seg = np.ones((64, 64), np.uint8)
    result = restrict_to_trunk(seg, ct, (1.0, 1.0))
    assert not result.segmentation.any() and result.muscle_removed_share == 1.0


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this clone (the generated cases above cover the rule)")
@pytest.mark.parametrize("tissue", ["skeletal_muscle", "subcutaneous_fat", "torso_fat"])
def test_real_ct_reference_tissue_lies_in_the_trunk(tissue):
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED / "example_ct_sm.nii.gz"))).astype(float)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED / "example_seg_tissue_types" / f"{tissue}.nii.gz"))) > 0
    kept = total = 0
    for z in range(ct.shape[0]):
        if not ref[z].any():
            continue
        seg = ref[z].astype(np.uint8) * MUSCLE_LABEL
        kept += int((restrict_to_trunk(seg, ct[z], (1.0, 1.0)).segmentation != 0).sum())
        total += int(ref[z].sum())
    assert total > 1000 and kept == total


def test_the_trunk_rule_is_predicts_default_with_an_explicit_opt_out(monkeypatch):
    """One default (sarco_nn.constants.DEFAULT_TRUNK_ONLY): the api, the library and the command
    line count tissue only inside the trunk unless --keep-outside-trunk is given."""
    from typer.testing import CliRunner

    from sarco_nn import api, cli
    from sarco_nn.predict_options import PredictOptions

    assert api.PredictOptions is PredictOptions  # the library's `predict` runs with these very options
    assert PredictOptions().trunk_only is True
    seen: list[bool] = []
    monkeypatch.setattr(api, "predict", lambda inputs, out, options, **kw: (
        seen.append(options.trunk_only), api.PredictResult(Path(out) / "results.csv", 0))[1])
    for flag, expected in (([], True), (["--keep-outside-trunk"], False), (["--trunk-only"], True)):
        result = CliRunner().invoke(cli.app, ["predict", "-i", "s", "-o", "o", *flag])
        assert result.exit_code == 0, result.output
        assert seen[-1] is expected, flag


@pytest.mark.slow  # needs the tiny trained model
def test_predict_does_not_count_an_arm_and_the_option_does(tiny_model, tmp_path):
    """End to end: a held-out phantom with an arm added beside the trunk. The default run's mask has
    nothing outside the trunk and its outside_trunk_cm2 is what the --keep-outside-trunk run counted there."""
    from sarco_nn import api
    from sarco_nn.ct_checks import body_region

    src = sorted((tiny_model.held / "images").glob("*.nii.gz"))[0]
    image = sitk.ReadImage(str(src))
    ct = sitk.GetArrayFromImage(image).astype(np.int16)
    plane = ct[0] if ct.ndim == 3 else ct
    body = body_region(plane)
    cols = np.nonzero(body.any(axis=0))[0]
    cy = int(np.nonzero(body.any(axis=1))[0].mean())
    cx = min(int(cols.max()) + 12, plane.shape[1] - 8)
    arm = _disc(plane.shape, cy, cx, 6) & ~body
    plane[arm] = 55  # muscle HU, apart from the trunk
    images = tmp_path / "images"
    images.mkdir()
    out_image = sitk.GetImageFromArray(ct)
    out_image.CopyInformation(image)
    sitk.WriteImage(out_image, str(images / src.name))
    runs = {}
    for name, trunk_only in (("trunk", True), ("all", False)):
        out = tmp_path / name
        api.predict(images, out, api.PredictOptions(device="cpu", progress=False, trunk_only=trunk_only),
                    workspace=tiny_model.workspace)
        row = next(csv.DictReader(open(out / "results.csv", newline="", encoding="utf-8")))
        mask = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["mask"]))))
        runs[name] = (row, mask)
    (row, mask), (row_all, mask_all) = runs["trunk"], runs["all"]
    trunk = body_region(plane)
    assert not (mask[~trunk] != 0).any()
    assert np.array_equal(mask[trunk], mask_all[trunk])
    sp = image.GetSpacing()
    outside_all = float(((mask_all == MUSCLE_LABEL) & ~trunk).sum()) * sp[0] * sp[1] / 100.0
    assert float(row["outside_trunk_cm2"]) == pytest.approx(outside_all, abs=0.006)
    assert row_all["outside_trunk_cm2"] == ""
    assert float(row_all["sma_cm2"]) == pytest.approx(float(row["sma_cm2"]) + outside_all, abs=0.011)
