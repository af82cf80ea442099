"""ct_checks: a scan is measured only if it is plausibly a CT slice of a body in HU (issue #14 item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from sarco_nn.ct_checks import MIN_PIXEL_SPACING_MM, ct_reasons, file_reasons, refuse_unless_ct, spacing_reason
from sarco_nn.errors import InputError
from sarco_nn.io import read_image
from sarco_nn.status import Status, Verdict
from helpers import make_image, phantom_array, write


def _codes(reasons) -> set[str]:
    return {r.code for r in reasons}


def _phantom_slice(matrix: int = 128, seed: int = 0, spacing=None) -> sitk.Image:
    from dataset_conversion.phantom import generate_phantom_slice

    ph = generate_phantom_slice(np.random.default_rng(seed), matrix=matrix, spacing_mm=spacing)
    image = sitk.GetImageFromArray(ph.ct_hu)
    image.SetSpacing((ph.spacing_mm[1], ph.spacing_mm[0]))
    return image


@pytest.mark.parametrize("matrix", [64, 128, 512])
def test_genuine_phantoms_pass_at_every_matrix(matrix):
    assert ct_reasons(_phantom_slice(matrix), "p") == []


def test_small_test_slices_and_coarse_3mm_grid_pass():
    assert ct_reasons(make_image(phantom_array(nz=1, ny=40, nx=48)[0], spacing=(0.8, 0.8)), "tiny") == []
    assert ct_reasons(_phantom_slice(128, spacing=(3.0, 3.0)), "coarse") == []


def test_all_air_slice_is_failed_no_body():
    rng = np.random.default_rng(0)
    air = (-1000 + rng.normal(0, 15, (128, 128))).astype(np.int16)
    reasons = ct_reasons(make_image(air, spacing=(0.8, 0.8)), "air.nii.gz")
    assert _codes(reasons) == {"no_body"} and Verdict(reasons).status is Status.FAILED


def test_normalised_image_is_failed_not_ct():
    hu = phantom_array(nz=1, ny=64, nx=64)[0].astype(np.float32)
    norm = ((hu + 1000) / 2000).clip(0, 1)
    reasons = ct_reasons(make_image(norm, spacing=(0.8, 0.8)), "norm")
    assert "not_ct" in _codes(reasons) and Verdict(reasons).status is Status.FAILED


@pytest.mark.parametrize("spacing", [(9.0, 9.0), (5.0, 5.0)])
def test_implausible_pixel_spacing_is_review_without_flag(spacing):
    image = _phantom_slice(512)
    image.SetSpacing(spacing)
    verdict = Verdict(ct_reasons(image, "big"))
    assert _codes(verdict.reasons) == {"implausible_body_size"}
    assert verdict.status is Status.REVIEW and not verdict.flag_allowed


@pytest.mark.parametrize("metres_or_cm", [0.0008, 0.08])
def test_a_pixel_spacing_finer_than_any_ct_is_failed_implausible_spacing(metres_or_cm):
    # 0.8 mm pixels written in metres or cm: before, "no body" (metres) or status ok with a 100x small SMA (cm)
    image = _phantom_slice(512)
    image.SetSpacing((metres_or_cm, metres_or_cm))
    reasons = ct_reasons(image, "scan_m.nii.gz")
    assert _codes(reasons) == {"implausible_spacing"} and Verdict(reasons).status is Status.FAILED
    message = reasons[0].message
    assert message.startswith("scan_m.nii.gz: ") and "metres or cm" in message and "Fix: " in message
    assert "\n" not in message


@pytest.mark.parametrize("fine", [MIN_PIXEL_SPACING_MM, 0.146, 0.2])
def test_ultra_high_resolution_pixels_are_not_refused(fine):
    image = _phantom_slice(512)
    image.SetSpacing((fine, fine))  # a 2048² body grid at a 25, 30 or 40 cm field of view (HOSTILE_FINDINGS #74)
    assert "implausible_spacing" not in _codes(ct_reasons(image, "uhr"))


def test_the_spacing_floor_is_in_plane_only_whatever_the_stored_axis_order():
    hu = phantom_array(nz=1, ny=64, nx=64)
    coronal = make_image(np.ascontiguousarray(np.transpose(hu, (1, 0, 2))), spacing=(0.8, 0.1, 0.8),
                         direction=(1, 0, 0, 0, 0, 1, 0, 1, 0))  # stored axis 1 is the body axis: 0.1 mm slices
    assert spacing_reason(coronal, "coronal") is None
    coronal.SetSpacing((0.08, 0.8, 0.8))  # now an in-plane pixel is 0.08 mm
    assert spacing_reason(coronal, "coronal").code == "implausible_spacing"


def test_a_slice_without_bone_is_review():
    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    hu[hu > 200] = 45
    assert _codes(ct_reasons(make_image(hu, spacing=(0.8, 0.8)), "x")) == {"no_bone"}


def test_refuse_unless_ct_raises_one_line_naming_the_file(tmp_path):
    air = np.full((64, 64), -1000, np.int16)
    air[0, 0] = -990
    with pytest.raises(InputError, match=r"air\.nii\.gz: no body.*Fix:"):
        refuse_unless_ct(make_image(air, spacing=(0.8, 0.8)), tmp_path / "air.nii.gz")


def test_every_reason_carries_its_structured_error_and_the_refusal_is_built_from_it():
    """reason_error takes text and fix from the reason's error, never by splitting the row's message at
    " Fix: ": the row's message and the refusal's line are what they were (path, text, [code], fix)."""
    from sarco_nn.ct_checks import _FIX_SPACING, reason_error

    air = (-1000 + np.random.default_rng(0).normal(0, 15, (128, 128))).astype(np.int16)
    hu = phantom_array(nz=1, ny=64, nx=64)[0].astype(np.float32)
    fine, big = _phantom_slice(512), _phantom_slice(512)
    fine.SetSpacing((0.08, 0.08))
    big.SetSpacing((9.0, 9.0))
    images = {"no_body": make_image(air, spacing=(0.8, 0.8)), "implausible_spacing": fine,
              "implausible_body_size": big, "not_ct": make_image(((hu + 1000) / 2000).clip(0, 1), spacing=(0.8, 0.8))}
    name = "in/a Fix: b.nii.gz"  # a name holding the separator the old parse split at
    for code, image in images.items():
        [reason] = [r for r in ct_reasons(image, name) if r.code == code]
        error = reason.error
        assert isinstance(error, InputError) and error.path == name and error.fix and "Fix:" not in error.message
        assert reason.message == f"{name}: {error.message} Fix: {error.fix}"
        refused = reason_error(reason, name)
        assert (refused.message, refused.path, refused.fix) == (f"{error.message} [{code}]", name, error.fix)
        assert str(refused) == f"{name}: {error.message} [{code}] Fix: {error.fix}"
    assert reason_error(ct_reasons(fine, name)[0], name).fix == _FIX_SPACING


# -------------------------------------------------------------------------------- NIfTI headers


def _patched_nifti(tmp_path, name: str, patch) -> tuple:
    import struct

    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    path = write(make_image(hu[None], spacing=(0.8, 0.8, 2.5)), tmp_path / "plain.nii")
    data = bytearray(path.read_bytes())
    patch(data, struct)
    out = tmp_path / name
    out.write_bytes(data)
    return hu, out


def test_nifti_scl_slope_zero_means_no_scaling(tmp_path):
    hu, path = _patched_nifti(tmp_path, "slope0.nii", lambda d, s: d.__setitem__(slice(112, 120), s.pack("<2f", 0.0, -60.0)))
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path))[0], hu)  # ITK alone gives hu - 60


def test_nifti_qform_sform_disagreement_is_a_review_reason(tmp_path):
    def double_sform(data, struct):
        srow = list(struct.unpack("<12f", data[280:328]))
        srow[0] *= 2
        srow[5] *= 2
        data[280:328] = struct.pack("<12f", *srow)

    _, path = _patched_nifti(tmp_path, "qs.nii", double_sform)
    reasons = file_reasons(path)
    assert _codes(reasons) == {"qform_sform_disagree"} and "qform" in reasons[0].message
    _, plain = _patched_nifti(tmp_path, "ok.nii", lambda d, s: None)
    assert file_reasons(plain) == []


# ------------------------------------------------------------------------- measure --image guard


@pytest.mark.parametrize("kind", ["air", "normalised"])
def test_measure_refuses_an_image_that_is_not_a_ct_of_a_body(tmp_path, kind):
    from conftest import sarco_inprocess

    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    mask = make_image(((hu > 20) & (hu < 150)).astype(np.uint8), spacing=(0.8, 0.8))
    if kind == "air":
        values = np.random.default_rng(0).normal(-1000, 15, hu.shape).astype(np.int16)
    else:
        values = ((hu.astype(np.float32) + 1000) / 2000).clip(0, 1)
    write(mask, tmp_path / "mask.nii.gz")
    write(make_image(values, spacing=(0.8, 0.8)), tmp_path / "ct.nii.gz")
    result = sarco_inprocess("measure", tmp_path / "mask.nii.gz", "--image", tmp_path / "ct.nii.gz", "--sex", "M")
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    assert "ct.nii.gz" in result.error_lines()[0] and ("no_body" if kind == "air" else "not") in result.output
    assert "SMA" not in result.stdout


def test_body_region_is_the_one_outline_an_opening_detaches_the_table_from():
    """The trunk rule takes the body as it is (a table touching the patient belongs to it); the QC's
    field-of-view check opens it first (5 mm), so a thin table reaching the image's sides comes off.
    Holes (gas inside the body) are filled either way."""
    from sarco_nn.ct_checks import body_region

    yy, xx = np.mgrid[:100, :100]
    plane = np.full((100, 100), -1000.0)
    plane[((yy - 45) / 30.0) ** 2 + ((xx - 50) / 40.0) ** 2 < 1] = 40.0
    plane[(yy - 45) ** 2 + (xx - 50) ** 2 < 25] = -900.0  # bowel gas inside the body
    plane[74:76, :] = 0.0  # a 2-px (2 mm) table touching the body and both image sides
    whole = body_region(plane)
    assert whole[74, 0] and whole[74, 99] and whole[45, 50]
    opened = body_region(plane, (1.0, 1.0), open_mm=5.0)
    assert not opened[74:76, :5].any() and not opened[74:76, -5:].any()
    assert opened[45, 50] and opened[45, 20]
    with pytest.raises(ValueError, match="spacing"):
        body_region(plane, open_mm=5.0)


@pytest.mark.parametrize("radius", [(1, 1), (2, 3), (5, 5), (13, 13), (4, 9)])
def test_the_distance_transform_opening_is_scipys_disc_opening(radius):
    """`disc_opening` (two distance transforms, so a 2048² slice opens in well under a second, not
    about 7 s) gives exactly scipy's binary_opening with the disc, shapes touching the border included."""
    from scipy import ndimage

    from sarco_nn.ct_checks import disc_opening

    ry, rx = radius
    yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    disc = (yy * rx) ** 2 + (xx * ry) ** 2 <= (ry * rx) ** 2
    rng = np.random.default_rng(sum(radius))
    for _ in range(3):
        mask = ndimage.binary_dilation(rng.random((90, 70)) > 0.985, iterations=6) | (rng.random((90, 70)) > 0.9)
        mask[:, :12] = True  # a region cut by the image's side
        assert np.array_equal(disc_opening(mask, radius), ndimage.binary_opening(mask, structure=disc))
    assert not disc_opening(np.zeros((9, 9), bool), radius).any()


@pytest.mark.parametrize("edit", ["halved", "windowed"])
def test_a_ct_without_air_is_not_ct(tmp_path, edit):
    """HOSTILE_FINDINGS #86: a CT halved (a rescale slope lost or applied twice: air -512 HU) or windowed to
    -175..250 HU passed every check; `sarco measure` then gave muscle HU 19.9 instead of 39.9, status ok."""
    hu = phantom_array(nz=1, ny=60, nx=60).astype(np.float32)
    assert not ct_reasons(make_image(hu), "ct.nii.gz")  # the phantom itself is a CT: air, fat, muscle, bone
    changed = hu * 0.5 if edit == "halved" else np.clip(hu, -175, 250)
    with pytest.raises(InputError, match=r"ct.nii.gz: no voxel below -900 HU \(no air; lowest -[0-9]+\)"):
        refuse_unless_ct(make_image(changed), "ct.nii.gz")  # sarco measure --image, convert
    [reason] = ct_reasons(make_image(changed), "ct.nii.gz")  # predict's failed row
    assert reason.code == "not_ct" and reason.status is Status.FAILED


def test_a_field_of_view_inside_the_body_is_refused_naming_that_cause_too():
    """#86 left open: a targeted reconstruction with no air is refused too (on the real example_ct_sm an
    air-free field of view keeps about a third of the muscle: an SMA that would read as sarcopenic), and
    the message says so; a halved CT (air -512, outside the body bound) is not told this."""
    hu = phantom_array(nz=1, ny=60, nx=60).astype(np.float32)
    inside = hu[:, 12:48, 12:48]  # every border pixel is body, nothing below -900 HU
    assert inside.min() > -900 and (inside[0, [0, -1]] > -500).all() and (inside[0, :, [0, -1]] > -500).all()
    with pytest.raises(InputError, match=r"no voxel below -900 HU .* or the field of view lies inside the body"
                                         r".*Fix: .*with the full field of view"):
        refuse_unless_ct(make_image(inside), "ct.nii.gz")
    with pytest.raises(InputError) as halved:
        refuse_unless_ct(make_image(hu * 0.5), "ct.nii.gz")
    assert "no voxel below -900 HU" in str(halved.value) and "inside the body" not in str(halved.value)
