"""Is this plausibly a CT slice of a body, in Hounsfield units? Checked before any number is given.

The readers (`sarco_nn.io`) refuse what cannot be read at all; these checks look at what was read and
say, as `sarco_nn.status` reasons, why a readable image must not give an SMA (`failed`: not a CT of
a body in HU) or must be looked at first (`review`: measurable but implausible geometry). One place,
used by `sarco predict` (before the network runs), `sarco convert`, `sarco measure --image` and
`sarco classify predict`.

What is checked, and why each bound is where it is:

- **a body is present**: the largest connected region above -500 HU must cover at least
  `MIN_BODY_AREA_CM2` (a real body at L3 covers hundreds of cm²; the bound is that low for the
  tests' toy slices); an all-air slice (-1000 HU + noise) otherwise gave 327 cm² of "muscle".
- **its physical size is plausible**: the body's widest extent, from the pixel spacing, is at most
  `MAX_BODY_EXTENT_CM`. A real abdomen at L3 is 15-60 cm wide; 9 mm "pixels" or a DICOM PixelSpacing
  of 5.0 make it several metres. The bound is on the body, not the spacing, so coarse genuine grids
  (3 mm CT, 128² phantoms at 2-4 mm) pass. The body size gives no lower bound (the tests' toy slices
  have a 1-4 cm "body"), so the spacing itself has one:
- **the pixel spacing is not below a CT's** (`spacing_reason`, `MIN_PIXEL_SPACING_MM`, checked first:
  the area and size checks below trust the spacing): a header in metres or cm (0.0008 or 0.08 for
  0.8 mm pixels) is `implausible_spacing`, not "no body" or a 100x too small SMA. The same rule
  judges a mask `sarco measure` gets without its CT.
- **the values are a CT's**: values in the plausible HU range with air or fat present
  (`sarco_nn.io.hu.check_ct_intensities`: a [0, 1]-normalised, windowed or MR image fails, and so
  does a CT stored as 8-bit integers, whose values all lie in -128..255: no air, no bone), soft
  tissue (-29..150 HU) in the body, and bone (>= 200 HU: the vertebra of an L3 slice).
- **header facts** (`file_reasons`): a NIfTI whose qform and sform disagree (the rule: the
  geometry SimpleITK takes is used and the row says so), a DICOM series without rescale tags whose
  values were taken as HU because air is present (series without tags whose values are not HU are
  refused by the reader).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import BODY_HU
from sarco_nn.errors import InputError
from sarco_nn.status import Reason, Status

__all__ = ["body_region", "ct_reasons", "disc_opening", "file_reasons", "reason_error", "refuse_unless_ct",
           "spacing_reason", "MAX_BODY_EXTENT_CM", "MIN_BODY_AREA_CM2", "MIN_PIXEL_SPACING_MM"]

#: Widest body extent (cm) taken as plausible for an abdominal CT slice; beyond it the pixel spacing
#: is wrong (the widest abdomens are about 60 cm).
MAX_BODY_EXTENT_CM: float = 80.0

#: Smallest in-plane pixel spacing (mm) of a CT of a body. The finest genuine body grids are
#: ultra-high-resolution CT: a 2048² matrix over the smallest body field of view (about 25 cm) is 0.122 mm,
#: over 30 cm 0.146 mm; a usual 512² grid at 25 cm is 0.49 mm. A spacing written in cm or metres falls
#: below it for any pixel under 1.2 mm (0.05-0.12 or 0.0005-0.0012); a slip of a coarser pixel passes
#: here and gives an SMA 100x too small, which the SMA floor (`mask_checks`, sma_below_floor) sends to review. The upper
#: bounds are the body size (`MAX_BODY_EXTENT_CM`, above) and the reader's 10 mm (`io.slices`,
#: `constants.SLICE_AXIS_SPACING_MM`).
MIN_PIXEL_SPACING_MM: float = 0.12

#: Smallest body cross-section (cm²): below it the slice holds no body (air, a table, noise).
MIN_BODY_AREA_CM2: float = 0.5

_SOFT_TISSUE_HU = (-29.0, 150.0)
_BONE_HU = 200.0
#: Fewest soft-tissue voxels (fraction of the body) in a CT slice of a body at L3.
_MIN_SOFT_TISSUE_FRACTION = 0.02

_FIX_SPACING = "check the pixel spacing in the file header (mm per pixel; re-export the scan from PACS)"


def _in_plane_slices(image: sitk.Image) -> np.ndarray:
    """(n, y, x) array of the image's axial planes as stored (a 2-D image is one plane)."""
    array = sitk.GetArrayViewFromImage(image)
    return np.asarray(array)[None] if array.ndim == 2 else np.asarray(array)


def _largest_region(mask: np.ndarray) -> np.ndarray:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    return sitk.GetArrayFromImage(labels) == 1


def disc_opening(mask: np.ndarray, radius_yx: tuple[int, int]) -> np.ndarray:
    """Binary opening of a 2-D `mask` by the elliptic disc (y/ry)² + (x/rx)² <= 1 (pixels; outside the
    image is empty): what scipy's binary_opening with that structure gives, in two distance transforms.

    Why: the structure's cost grows with its area: a 5-mm opening of a 2048² slice (0.175-mm pixels, a
    59 x 59 disc) took about 7 s, the distance transforms take well under one whatever the radius. Exact:
    distances with sampling (rx, ry) make the disc's bound the integer ry * rx."""
    from scipy import ndimage

    ry, rx = (int(r) for r in radius_yx)
    padded = np.pad(np.asarray(mask, bool), 1)  # the empty outside, as binary_erosion's border
    bound = float(ry * rx)
    eroded = ndimage.distance_transform_edt(padded, sampling=(rx, ry)) > bound
    if not eroded.any():
        return np.zeros(np.shape(mask), bool)
    return (ndimage.distance_transform_edt(~eroded, sampling=(rx, ry)) <= bound)[1:-1, 1:-1]


def body_region(plane_hu: np.ndarray, spacing_yx_mm: tuple[float, float] | None = None,
                open_mm: float = 0.0) -> np.ndarray:
    """The body on one axial plane: the largest connected region above BODY_HU, holes filled (bowel
    gas and lung inside the body belong to it). Empty when nothing is above the bound.

    The one body outline of the toolkit: the trunk rule (`sarco_nn.trunk`) takes it as it is; the QC's
    field-of-view check (`sarco_nn.review.qc`) first opens the HU mask with a disc of `open_mm` (mm,
    needs `spacing_yx_mm`) so the table, sheets and cables (thin, often reaching the image's sides)
    come off the patient. Hole filling never changes what touches the image border."""
    above = np.asarray(plane_hu) > BODY_HU
    if open_mm > 0:
        if spacing_yx_mm is None:
            raise ValueError("body_region: an opening in mm needs the pixel spacing")
        radius = np.maximum(1, np.round(open_mm / np.asarray(spacing_yx_mm, float))).astype(int)
        above = disc_opening(above, (int(radius[0]), int(radius[1])))
    if not above.any():
        return np.zeros(above.shape, bool)
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(_largest_region(above).astype(np.uint8)))
    return sitk.GetArrayFromImage(filled).astype(bool)


def _in_plane_spacing(image: sitk.Image) -> tuple[float, float]:
    """(x, y) spacing (mm) of the image's axial plane: the two axes other than the one that points
    most along the body axis (stored order; a 2-D image's both axes)."""
    spacing = image.GetSpacing()
    if image.GetDimension() < 3:
        return float(spacing[0]), float(spacing[1])
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    slice_axis = int(np.argmax(np.abs(direction[2])))  # column k = axis k's direction in LPS
    return tuple(float(spacing[k]) for k in range(3) if k != slice_axis)[:2]  # type: ignore[return-value]


def spacing_reason(image: sitk.Image, name: str | Path) -> Reason | None:
    """`failed` (implausible_spacing) when an in-plane pixel is smaller than any CT's
    (`MIN_PIXEL_SPACING_MM`): the header's spacing is in another unit or wrong. The one rule of
    predict, convert, measure (its CT, or the mask when no CT is given) and classify."""
    sx, sy = _in_plane_spacing(image)
    if min(sx, sy) >= MIN_PIXEL_SPACING_MM:
        return None
    return Reason.of("implausible_spacing", InputError(
        f"in-plane pixel spacing {sx:g} x {sy:g} mm is below {MIN_PIXEL_SPACING_MM:g} mm, finer than any CT of a "
        "body: the header's spacing is wrong (written in metres or cm?).", name, _FIX_SPACING), Status.FAILED)


def ct_reasons(image: sitk.Image, name: str | Path) -> list[Reason]:
    """Reasons why `image` (a CT slice, or a volume: every plane is judged together) is not a
    plausible CT of a body in HU. An empty list means the image may be measured."""
    too_fine = spacing_reason(image, name)
    if too_fine is not None:  # the area and size checks below would trust this spacing
        return [too_fine]
    try:
        from sarco_nn.io.hu import check_ct_intensities

        check_ct_intensities(image, name)
    except InputError as exc:  # a NotCTError: the code predict gives the same refusal (`errors.SarcoError.reason_code`)
        return [Reason.of(exc.reason_code, exc, Status.FAILED)]
    planes = _in_plane_slices(image)
    sx, sy = image.GetSpacing()[:2]
    # the plane with the most body stands for the scan (the L3 slice when one slice is given)
    body_counts = (planes > BODY_HU).reshape(len(planes), -1).sum(axis=1)
    plane = planes[int(np.argmax(body_counts))]
    body = _largest_region(plane > BODY_HU) if body_counts.max() else np.zeros(plane.shape, bool)
    area_cm2 = float(body.sum()) * sx * sy / 100.0
    if area_cm2 < MIN_BODY_AREA_CM2:
        return [Reason.of("no_body", InputError(f"no body in the image (largest region above {BODY_HU:.0f} HU: "
                                                f"{area_cm2:.2f} cm²): an empty or all-air slice.", name,
                                                "give the L3 slice of the CT"), Status.FAILED)]
    values = plane[body]
    reasons: list[Reason] = []
    soft = np.mean((values >= _SOFT_TISSUE_HU[0]) & (values <= _SOFT_TISSUE_HU[1]))
    if soft < _MIN_SOFT_TISSUE_FRACTION:
        reasons.append(Reason.of("not_ct", InputError(
            f"only {soft:.1%} of the body lies in the soft-tissue range {_SOFT_TISSUE_HU[0]:.0f}..{_SOFT_TISSUE_HU[1]:.0f}"
            " HU: not a CT of a body in HU.", name, "give the CT in Hounsfield units"), Status.FAILED))
    rows, cols = np.nonzero(body)
    height_cm = (rows.max() - rows.min() + 1) * sy / 10.0
    width_cm = (cols.max() - cols.min() + 1) * sx / 10.0
    extent = max(width_cm, height_cm)
    if extent > MAX_BODY_EXTENT_CM:
        reasons.append(Reason.of("implausible_body_size", InputError(
            f"the body measures {width_cm:.1f} x {height_cm:.1f} cm with pixel spacing {sx:g} x {sy:g} mm (a body "
            f"at L3 is at most {MAX_BODY_EXTENT_CM:g} cm wide).", name, _FIX_SPACING)))
    if not np.any(values >= _BONE_HU):
        # review, flag kept: the muscle found is muscle, but a person must check the level
        reasons.append(Reason.of("no_bone", InputError(f"no bone (>= {_BONE_HU:.0f} HU) in the body: not an L3 slice "
                                                       "or not HU.", name, "check the slice and the HU scaling"),
                                 blocks_flag=False))
    return reasons


def file_reasons(path: str | Path) -> list[Reason]:
    """Header facts of the input file that a result row must carry (cheap: headers only)."""
    from sarco_nn.io.headers import qform_sform_disagreement, read_nifti_header

    path = Path(path)
    reasons: list[Reason] = []
    problem = qform_sform_disagreement(read_nifti_header(path)) if path.is_file() else None
    if problem:
        reasons.append(Reason.of("qform_sform_disagree", InputError(
            f"the NIfTI qform and sform disagree ({problem}); the geometry SimpleITK chose (the qform when the sform "
            "has other voxel sizes) was used.", path, "re-export the image with one consistent geometry")))
    first = _first_dicom_file(path)
    if first is not None:
        from sarco_nn.io.dicom import rescale_missing

        try:
            import pydicom

            header = pydicom.dcmread(str(first), stop_before_pixels=True)
        except Exception:  # unreadable: the reader reports it
            return reasons
        if str(header.get("Modality", "CT") or "CT").upper() == "CT" and rescale_missing(header):
            reasons.append(Reason.of("rescale_missing", InputError(
                "no RescaleSlope/RescaleIntercept; the stored values are read as HU as they are (accepted only where "
                "they then look like CT, with air near -1000 HU).", path, "re-export the series with its rescale tags"),
                blocks_flag=False))
    return reasons


def _first_dicom_file(path: Path) -> Path | None:
    from sarco_nn.io.dicom import looks_like_dicom

    if path.is_file():
        return path if looks_like_dicom(path) else None
    if path.is_dir():
        try:
            return next((p for p in sorted(path.iterdir()) if p.is_file() and looks_like_dicom(p)), None)
        except OSError:
            return None
    return None


def refuse_unless_ct(image: sitk.Image, path: str | Path) -> list[Reason]:
    """For commands that cannot write a `failed` row (convert, measure): raise the first failing
    reason as an InputError naming `path`; return the `review` reasons for a note or a warning."""
    reasons = ct_reasons(image, path)
    failed = [r for r in reasons if r.status is Status.FAILED]
    if failed:
        raise reason_error(failed[0], path)
    return reasons


def reason_error(reason: Reason, path: str | Path) -> InputError:
    """A reason as the one-line InputError of a command that refuses instead of writing a row: its
    structured error's text with the code, `path` and the error's fix (every reason of this module
    carries one, `Reason.of`; a reason without one keeps its message whole)."""
    error = reason.error
    if error is None:
        return InputError(f"{reason.message} [{reason.code}]", path)
    return InputError(f"{error.message} [{reason.code}]", path, error.fix)
