"""SMA / SMI / HU measurement: analytic shapes, orientations, spacing, slice mapping, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import typer
from typer.testing import CliRunner

from sarco_nn.commands.measure_cmd import measure as measure_command
from sarco_nn.constants import MUSCLE_HU_GATE
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.measure import axial_stack, measure_image, measure_slice, sma_cm2, smi

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOTALSEG = DATA / "totalsegmentator"


def disc(shape: tuple[int, int], spacing_yx: tuple[float, float], radius_mm: float,
         centre_mm: tuple[float, float] | None = None) -> np.ndarray:
    """Pixels whose centre lies within radius_mm of the centre, in physical (mm) coordinates."""
    sy, sx = spacing_yx
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = centre_mm if centre_mm else (shape[0] * sy / 2, shape[1] * sx / 2)
    return (((yy + 0.5) * sy - cy) ** 2 + ((xx + 0.5) * sx - cx) ** 2 <= radius_mm**2).astype(np.uint8)


def volume(array_zyx: np.ndarray, spacing_xyz, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


# ------------------------------------------------------------------------------ analytic areas
@pytest.mark.parametrize("spacing_yx", [(0.6, 0.6), (0.8, 0.8), (1.0, 1.0), (0.9, 0.6), (0.6, 0.9)])
@pytest.mark.parametrize("radius_mm", [30.0, 80.0])
def test_disc_area_is_pi_r_squared(spacing_yx, radius_mm):
    shape = (int(2.4 * radius_mm / spacing_yx[0]), int(2.4 * radius_mm / spacing_yx[1]))
    mask = disc(shape, spacing_yx, radius_mm)
    expected = math.pi * radius_mm**2 / 100.0
    # pixelisation: error scales with perimeter × pixel size; 1 % is generous at r >= 30 mm, s <= 1 mm
    assert sma_cm2(mask, spacing_yx) == pytest.approx(expected, rel=0.01)


def test_area_uses_both_in_plane_spacings_never_the_thickness():
    mask = np.zeros((10, 20), np.uint8)
    mask[2:6, 3:13] = 1  # 4 rows × 10 columns = 40 pixels
    assert sma_cm2(mask, (0.9, 0.6)) == pytest.approx(40 * 0.9 * 0.6 / 100)
    thin, thick = volume(mask[None], (0.6, 0.9, 1.0)), volume(mask[None], (0.6, 0.9, 10.0))
    assert measure_image(thin)[0].sma_cm2 == measure_image(thick)[0].sma_cm2 == pytest.approx(0.216)


def test_2d_image_spacing_order_and_other_labels_ignored():
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 5:25] = 1  # 200 px muscle
    mask[20:25, 5:10] = 2  # 25 px of another tissue
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((0.7, 0.8))  # SimpleITK order: (x = column, y = row)
    (m,) = measure_image(image)
    assert m.n_pixels == 200 and m.sma_cm2 == pytest.approx(200 * 0.7 * 0.8 / 100)
    assert m.slice_index == 0 and m.hu_gate is None and m.muscle_hu_mean is None
    assert measure_image(image, label=2)[0].sma_cm2 == pytest.approx(25 * 0.56 / 100)


def test_float_mask_is_rounded_not_truncated():
    mask = np.zeros((8, 8), np.float32)
    mask[2:4, 2:4] = 0.9999999  # a resampled / float-saved mask
    assert measure_slice(mask, (1.0, 1.0)).n_pixels == 4


def test_ras_and_lps_storage_of_the_same_anisotropic_disc_give_the_same_area():
    spacing_yx = (0.9, 0.6)
    lps = disc((140, 200), spacing_yx, 50.0, centre_mm=(60.0, 55.0))  # off-centre: flips move it
    img_lps = volume(lps[None], (0.6, 0.9, 5.0))
    img_ras = volume(lps[None, ::-1, ::-1].copy(), (0.6, 0.9, 5.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    a, b = measure_image(img_lps)[0], measure_image(img_ras)[0]
    assert a.sma_cm2 == pytest.approx(b.sma_cm2) == pytest.approx(math.pi * 50**2 / 100, rel=0.01)
    # after canonical reorientation both are the same array, pixel for pixel
    assert np.array_equal(axial_stack(img_lps).array, axial_stack(img_ras).array)
    assert axial_stack(img_ras).spacing_yx_mm == (0.9, 0.6)


# ------------------------------------------------------------------------------ 3-D slice mapping
RADII = {1: 20.0, 3: 35.0, 4: 50.0}  # stored slice index -> radius (mm); other slices empty


def _stack(direction_z: int) -> sitk.Image:
    """6-slice mask where STORED slice k holds a disc of radius RADII[k], z axis up (+1) or down (−1)."""
    arr = np.zeros((6, 120, 120), np.uint8)
    for k, r in RADII.items():
        arr[k] = disc((120, 120), (1.0, 1.0), r)
    return volume(arr, (1.0, 1.0, 2.5), direction=(1, 0, 0, 0, 1, 0, 0, 0, direction_z))


@pytest.mark.parametrize("direction_z", [1, -1])
def test_slice_index_means_the_stored_index_whatever_the_z_direction(direction_z):
    image = _stack(direction_z)
    for k, r in RADII.items():
        (m,) = measure_image(image, slice_index=k)
        assert m.slice_index == k
        assert m.sma_cm2 == pytest.approx(math.pi * r * r / 100, rel=0.02)
    (empty,) = measure_image(image, slice_index=0)
    assert empty.sma_cm2 == 0 and empty.n_pixels == 0


@pytest.mark.parametrize("direction_z", [1, -1])
def test_3d_without_slice_reports_every_labelled_slice_in_stored_order(direction_z):
    results = measure_image(_stack(direction_z))
    assert [m.slice_index for m in results] == sorted(RADII)
    for m in results:
        assert m.sma_cm2 == pytest.approx(math.pi * RADII[m.slice_index] ** 2 / 100, rel=0.02)


def test_coronally_stored_volume_is_sliced_along_its_head_foot_axis():
    image = _stack(1)
    coronal = sitk.DICOMOrient(image, "LIP")  # stored axes: x, head→foot (inferior), y
    assert coronal.GetSize() == (120, 6, 120)
    # stored head-foot index k' in the LIP image is canonical slice 5 - k'
    for k, r in RADII.items():
        (m,) = measure_image(coronal, slice_index=5 - k)
        assert m.slice_index == 5 - k
        assert m.sma_cm2 == pytest.approx(math.pi * r * r / 100, rel=0.02)


def test_slice_out_of_range_is_an_input_error():
    with pytest.raises(InputError, match="slice 6 is outside"):
        measure_image(_stack(1), slice_index=6)


# ------------------------------------------------------------------------------ HU and gate
def _ct_and_mask():
    mask = np.zeros((1, 20, 20), np.uint8)
    mask[0, 5:15, 5:15] = 1  # 100 px
    ct = np.full((1, 20, 20), -1000, np.int16)
    ct[0, 5:10, 5:15] = 50  # 50 px inside the gate
    ct[0, 10:15, 5:15] = -50  # 50 px below it (fat-infiltrated)
    return volume(mask, (0.8, 0.8, 10)), volume(ct, (0.8, 0.8, 10))


def test_hu_mean_and_gate():
    mask, ct = _ct_and_mask()
    (plain,) = measure_image(mask, ct)
    assert plain.n_pixels == 100 and plain.muscle_hu_mean == pytest.approx(0.0) and plain.hu_gate is None
    (gated,) = measure_image(mask, ct, hu_gate=MUSCLE_HU_GATE)
    assert gated.n_pixels == 50 and gated.muscle_hu_mean == pytest.approx(50.0)
    assert gated.sma_cm2 == pytest.approx(50 * 0.64 / 100) and gated.hu_gate == MUSCLE_HU_GATE


def test_gate_without_ct_and_grid_mismatch_are_refused():
    mask, ct = _ct_and_mask()
    with pytest.raises(SarcoError, match="HU gate needs the CT"):
        measure_image(mask, hu_gate=MUSCLE_HU_GATE)
    ct.SetSpacing((0.7, 0.8, 10))
    with pytest.raises(InputError, match=r"mask\.nii\.gz.*spacing .* does not match image spacing .* of ct\.nii\.gz"):
        measure_image(mask, ct, mask_name="mask.nii.gz", ct_name="ct.nii.gz")


def test_smi():
    assert smi(100.0, 2.0) == pytest.approx(25.0)
    assert smi(130.0, 1.62) == pytest.approx(130 / 1.62**2)
    assert smi(100.0, None) is None
    with pytest.raises(SarcoError):
        smi(100.0, 0.0)


# ------------------------------------------------------------------------------ real data
@pytest.mark.skipif(not TOTALSEG.is_dir(), reason="shared test data folder absent")
def test_real_ras_segmentation_at_l3_matches_reference_areas_in_both_z_directions():
    seg = sitk.ReadImage(str(TOTALSEG / "example_seg_fast_force_split.nii.gz"))  # RAS, 3 mm
    reference = json.loads((TOTALSEG / "example_ct_L3_reference.json").read_text())
    parts = reference["partial_muscle_area_cm2_at_L3_max_slice_from_total_fast"]
    z = reference["example_seg_fast_force_split (total --fast)"]["L3_max_area_slice"]
    labels = {"autochthon_left": 86, "autochthon_right": 87, "iliopsoas_left": 88, "iliopsoas_right": 89}
    flipped = sitk.Flip(seg, [False, False, True])  # same anatomy stored head→foot
    n = seg.GetSize()[2]
    for name, label in labels.items():
        assert measure_image(seg, label=label, slice_index=z)[0].sma_cm2 == pytest.approx(parts[name], abs=0.01)
        assert measure_image(flipped, label=label, slice_index=n - 1 - z)[0].sma_cm2 == pytest.approx(parts[name], abs=0.01)


# ------------------------------------------------------------------------------ the command
def _cli():
    app = typer.Typer()
    app.command()(measure_command)
    return app


def test_measure_command_json_single_slice_and_per_slice(tmp_path):
    mask, ct = _ct_and_mask()
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    runner = CliRunner()
    result = runner.invoke(_cli(), [str(tmp_path / "m.nii.gz"), "--image", str(tmp_path / "ct.nii.gz"),
                                    "--sex", "F", "--height", "1.6", "--hu-gate", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)
    assert set(obj) >= {"sma_cm2", "smi_cm2_m2", "muscle_hu_mean", "slice_index", "hu_gate", "sarcopenic"}
    assert obj["sma_cm2"] == pytest.approx(0.32) and obj["smi_cm2_m2"] == pytest.approx(0.32 / 2.56, abs=1e-4)
    assert obj["hu_gate"] == list(MUSCLE_HU_GATE) and obj["muscle_hu_mean"] == pytest.approx(50.0)
    # 0.32 cm² is no patient's L3 muscle: numbers are shown, the flag is withheld (#13 item 2)
    assert obj["sarcopenic"] == "unknown" and obj["slice_index"] == 0 and obj["status"] == "review"
    assert "sma_below_floor" in [r["code"] for r in obj["reasons"]]  # (the toy CT also has no bone: `no_bone`)

    sitk.WriteImage(_stack(-1), str(tmp_path / "vol.nii.gz"))
    listed = json.loads(runner.invoke(_cli(), [str(tmp_path / "vol.nii.gz"), "--json"]).output)
    assert isinstance(listed, list) and [o["slice_index"] for o in listed] == sorted(RADII)
    assert all(o["sarcopenic"] == "unknown" and o["hu_gate"] is None for o in listed)  # no sex given
    one = json.loads(runner.invoke(_cli(), [str(tmp_path / "vol.nii.gz"), "--slice", "4", "--json"]).output)
    assert isinstance(one, dict) and one["sma_cm2"] == pytest.approx(math.pi * 25, rel=0.02)

    human = runner.invoke(_cli(), [str(tmp_path / "vol.nii.gz"), "--slice", "4", "--sex", "M"])
    assert human.exit_code == 0 and "SMA" in human.output and "SMA<144 cm² (paper, M)" in human.output


def test_measure_command_refuses_gate_without_image_and_unreadable_mask(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    runner = CliRunner()
    result = runner.invoke(_cli(), [str(bad)])
    assert isinstance(result.exception, InputError)
    result = runner.invoke(_cli(), [str(bad), "--hu-gate"])
    assert isinstance(result.exception, SarcoError) and "--hu-gate needs the CT" in str(result.exception)


# ------------------------------------------------------------------ #13: no flag from an empty or odd mask
def _square_mask(side: int, value: int = 1, shape=(200, 200)) -> sitk.Image:
    arr = np.zeros(shape, np.uint8)
    arr[:side, :side] = value
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0))
    return img


@pytest.mark.parametrize("value, code", [(255, "label_absent"), (0, "empty_mask")])
def test_measure_never_flags_a_mask_without_muscle(tmp_path, value, code):
    sitk.WriteImage(_square_mask(100, value), str(tmp_path / "m.nii.gz"))
    result = CliRunner().invoke(_cli(), [str(tmp_path / "m.nii.gz"), "--sex", "M", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)
    assert obj["sma_cm2"] == 0 and obj["sarcopenic"] == "unknown" and obj["status"] == "review"
    assert [r["code"] for r in obj["reasons"]] == [code]


def _scaled_nifti(image: sitk.Image, path: Path, slope: float, inter: float = 0.0) -> Path:
    """`image` written as .nii with its header's scl_slope/scl_inter set (stored values unchanged)."""
    import struct

    sitk.WriteImage(image, str(path))
    data = bytearray(path.read_bytes())
    data[112:120] = struct.pack("<2f", slope, inter)
    path.write_bytes(bytes(data))
    return path


def test_a_mask_scaled_by_its_header_names_the_scaling_and_the_fix(tmp_path):
    """muscle stored 1 with scl_slope 2 reads 2: the header is named as the cause, not --label."""
    mask = _scaled_nifti(_square_mask(100), tmp_path / "m.nii", 2.0)
    obj = json.loads(CliRunner().invoke(_cli(), [str(mask), "--sex", "M", "--json"]).output)
    assert obj["sarcopenic"] == "unknown" and [r["code"] for r in obj["reasons"]] == ["label_absent"]
    message = obj["reasons"][0]["message"]
    assert "[2]" in message and "scl_slope 2, scl_inter 0" in message and "a stored 1 reads as 2" in message
    assert "Fix: re-save the mask unscaled" in message and "--label" not in message
    volume_mask = _scaled_nifti(_stack(1), tmp_path / "vol.nii", 2.0)  # 3-D, no --slice: refused in one line
    result = CliRunner().invoke(_cli(), [str(volume_mask), "--sex", "M"])
    assert isinstance(result.exception, SarcoError) and "scl_slope 2" in str(result.exception)
    halved = _scaled_nifti(_square_mask(100), tmp_path / "half.nii", 0.5)  # stored 1 reads 0.5
    result = CliRunner().invoke(_cli(), [str(halved), "--sex", "M"])
    assert isinstance(result.exception, InputError)
    assert "scl_slope 0.5" in str(result.exception) and "non-integer" in str(result.exception)
    plain = json.loads(CliRunner().invoke(_cli(), [str(_scaled_nifti(_square_mask(100, 255), tmp_path / "p.nii", 1.0)),
                                                   "--sex", "M", "--json"]).output)
    assert "--label" in plain["reasons"][0]["message"] and "scl_slope" not in plain["reasons"][0]["message"]


def test_measure_empty_slice_chosen_with_slice_is_not_sarcopenic(tmp_path):
    sitk.WriteImage(_stack(-1), str(tmp_path / "vol.nii.gz"))
    result = CliRunner().invoke(_cli(), [str(tmp_path / "vol.nii.gz"), "--slice", "0", "--sex", "F", "--json"])
    obj = json.loads(result.output)
    assert obj["sma_cm2"] == 0 and obj["sarcopenic"] == "unknown" and obj["reasons"][0]["code"] == "empty_mask"
    human = CliRunner().invoke(_cli(), [str(tmp_path / "vol.nii.gz"), "--slice", "0", "--sex", "F"])
    assert "sarcopenic: unknown" in human.output and "empty_mask" in human.output


def test_plausible_mask_is_ok_and_flagged(tmp_path):
    sitk.WriteImage(_square_mask(100), str(tmp_path / "m.nii.gz"))  # 100 cm²
    obj = json.loads(CliRunner().invoke(_cli(), [str(tmp_path / "m.nii.gz"), "--sex", "woman", "--json"]).output)
    assert obj["status"] == "ok" and obj["reasons"] == [] and obj["sarcopenic"] is False  # 100 >= 92


def test_measure_martin_at_bmi_exactly_25(tmp_path):
    arr = np.zeros((200, 200), np.uint8)
    arr[:128, :100] = 1  # 128 cm² → SMI 50.0 at 1.6 m
    small = sitk.GetImageFromArray(arr)
    sitk.WriteImage(small, str(tmp_path / "s.nii.gz"))
    args = [str(tmp_path / "s.nii.gz"), "--sex", "M", "--height", "1.6", "--weight", "64", "--thresholds", "martin",
            "--json"]
    obj = json.loads(CliRunner().invoke(_cli(), args).output)
    assert obj["smi_cm2_m2"] == 50.0 and obj["sarcopenic"] is True  # BMI 25 → cut-off 53
    assert "SMI<53" in obj["threshold"]


def test_measure_accepts_every_clinical_csv_sex_spelling(tmp_path):
    sitk.WriteImage(_square_mask(100), str(tmp_path / "m.nii.gz"))
    for text in ("woman", "man", "Male", "FEMALE", "m", "F"):
        result = CliRunner().invoke(_cli(), [str(tmp_path / "m.nii.gz"), "--sex", text, "--json"])
        assert result.exit_code == 0, (text, result.output)


def test_measure_refuses_an_oblique_mask_as_predict_does(tmp_path):
    from sarco_nn.image_io import require_axial

    arr = np.zeros((5, 40, 40), np.uint8)
    arr[2, 5:35, 5:35] = 1
    img = sitk.GetImageFromArray(arr)
    angle = math.radians(30)
    c, s_ = math.cos(angle), math.sin(angle)
    img.SetDirection((1, 0, 0, 0, c, -s_, 0, s_, c))
    with pytest.raises(InputError):
        require_axial(img, "x")  # predict's own check refuses it
    sitk.WriteImage(img, str(tmp_path / "obl.nii.gz"))
    result = CliRunner().invoke(_cli(), [str(tmp_path / "obl.nii.gz"), "--slice", "2", "--json"])
    assert isinstance(result.exception, InputError) and "oblique" in str(result.exception)
    assert "obl.nii.gz" in str(result.exception)


def test_mask_reasons_floor_sits_below_cachexia_never_near_a_cut_off():
    from sarco_nn.mask_checks import SMA_FLOOR_CM2, mask_reasons
    from sarco_nn.measure import Measurement
    from sarco_nn.thresholds import THRESHOLD_SETS

    lowest_cutoff_sma = min(b.cutoff for ts in THRESHOLD_SETS.values() if ts.metric == "sma"
                            for bands in ts.bands.values() for b in bands)
    assert SMA_FLOOR_CM2 < 50 and SMA_FLOOR_CM2 < lowest_cutoff_sma / 2
    # SMI 20 cm²/m² (severe cachexia) at 1.40 m is 39.2 cm²: plausible, so it keeps its flag
    cachectic = Measurement(39.2, None, 0, None, 3920)
    assert mask_reasons(cachectic, (1.0, 1.0), label=1) == []
    tiny = Measurement(5.0, None, 0, None, 500)
    (reason,) = mask_reasons(tiny, (1.0, 1.0), label=1)
    assert reason.code == "sma_below_floor" and reason.blocks_flag and reason.status.value == "review"
    empty = Measurement(0.0, None, 0, None, 0)
    assert [r.code for r in mask_reasons(empty, (1.0, 1.0), label=1, labels_present=[0])] == ["empty_mask"]
    assert [r.code for r in mask_reasons(empty, (1.0, 1.0), label=1, labels_present=[0, 255])] == ["label_absent"]


def test_mask_reasons_ceiling_withholds_a_not_sarcopenic_flag_from_an_impossible_sma():
    """A muscle mask whose header says 9 mm pixels measures thousands of cm²: `no` would be a wrong answer."""
    from sarco_nn.mask_checks import SMA_CEILING_CM2, mask_reasons
    from sarco_nn.measure import Measurement

    assert SMA_CEILING_CM2 >= 400  # far above any athlete (healthy men average ~180 cm²)
    assert mask_reasons(Measurement(350.0, None, 0, None, 35000), (1.0, 1.0), label=1) == []
    (reason,) = mask_reasons(Measurement(17185.0, None, 0, None, 21216), (9.0, 9.0), label=1)
    assert reason.code == "sma_above_ceiling" and reason.blocks_flag and reason.status.value == "review"


def test_measure_cli_withholds_the_flag_for_nine_mm_pixels(tmp_path):
    mask = np.zeros((1, 200, 200), np.uint8)
    mask[0, 40:160, 40:160] = 1  # 14400 pixels: 144 cm² at 1 mm, 11664 cm² at 9 mm
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((9.0, 9.0, 5.0))
    sitk.WriteImage(image, str(tmp_path / "m9.nii.gz"))
    result = CliRunner().invoke(_cli(), [str(tmp_path / "m9.nii.gz"), "--sex", "M", "--height", "1.8", "--json"])
    obj = json.loads(result.output)
    assert obj["status"] == "review" and obj["sarcopenic"] == "unknown"
    assert "sma_above_ceiling" in [r["code"] for r in obj["reasons"]]


def test_classification_labels_never_come_from_an_empty_or_tiny_mask(tmp_path):
    from sarco_nn.classification.data import derive_labels

    raw = tmp_path / "Dataset001_X"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for case, n in (("good", 10000), ("empty", 0), ("tiny", 50)):
        _write_img = sitk.GetImageFromArray(_raster(n)[None])
        sitk.WriteImage(_write_img, str(raw / "labelsTr" / f"{case}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 200, 200), -100, np.int16)),
                        str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
    (raw / "clinical.csv").write_text("case_id,sex,height_m\ngood,F,1.6\nempty,F,1.6\ntiny,F,1.6\n")
    labelled, excluded = derive_labels(raw)
    assert set(labelled) == {"good"} and labelled["good"].label is False  # 100 cm² ≥ 92
    assert "empty" in excluded and "tiny" in excluded and "sma_below_floor" in excluded["tiny"]


def _raster(n: int, shape=(200, 200)) -> np.ndarray:
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    flat[:n] = 1
    return flat.reshape(shape)


def test_measure_refuses_the_background_label(tmp_path):
    """`--label 0` would measure everything that is not labelled as "muscle" (#14)."""
    from typer.testing import CliRunner

    from sarco_nn.cli import app

    mask = sitk.GetImageFromArray(np.ones((8, 8), np.uint8))
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    result = CliRunner().invoke(app, ["measure", str(tmp_path / "m.nii.gz"), "--label", "0"])
    assert result.exit_code != 0 and "background" in str(result.exception or result.output)


@pytest.mark.parametrize("step_mm, flagged", [(2.5, True), (10.0, False)])
def test_a_mask_whose_slices_span_several_levels_gives_no_flag(tmp_path, step_mm, flagged):
    """HOSTILE_FINDINGS #84: a whole-volume muscle mask (TotalSegmentator's autochthon + iliopsoas on 112 slices,
    333 mm) gave 112 rows, each "level L3" and 78 of them `sarcopenic: yes, status ok`. Three slices 5 mm apart
    (10 mm) may all be at L3; 20 mm apart (40 mm span here: 4 x 10 mm) too; 2.5-mm slices 0..24 span 60 mm: not."""
    from sarco_nn import api

    n = 25 if flagged else 5
    arr = np.zeros((n, 200, 200), np.uint8)
    arr[:, 50:150, 20:180] = 1  # 160 cm² at 1 mm pixels, above the paper cut-off for women (92 cm²)
    sitk.WriteImage(volume(arr, (1.0, 1.0, step_mm)), str(tmp_path / "vol.nii.gz"))
    rows = api.measure(tmp_path / "vol.nii.gz", sex="F", height_m=1.6)
    assert len(rows) == n
    codes = {code for m in rows for code, _ in m.reasons}
    if flagged:
        assert all(m.sarcopenic is None and m.status == "review" for m in rows)  # None: withheld
        assert codes == {"slices_span_levels"} and "60 mm" in rows[0].reasons[0][1]
    else:
        assert all(m.sarcopenic is False and m.status == "ok" for m in rows) and not codes
    one = api.measure(tmp_path / "vol.nii.gz", slice_index=2, sex="F", height_m=1.6)  # the slice named: measured
    assert [m.status for m in one] == ["ok"] and one[0].sarcopenic is False
