"""Reading one image file (NIfTI/MHA/NRRD), a DICOM file or a DICOM series folder, in HU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.errors import InputError
from sarco_nn.io.arrays import _fresh, _hu_array
from sarco_nn.io.dicom import looks_like_dicom, _read_dicom_files, _read_dicom_folder
from sarco_nn.io.headers import (_header_spacing_problem, _nifti_payload_problem, nifti_intercept_wrongly_applied,
                                 label_scaling_note, qform_sform_disagreement, read_nifti_header)
from sarco_nn.io.paths import IMAGE_SUFFIXES, _image_suffix, _sitk_name


#: The ITK reader each file ending must be read with: a PNG or a text file renamed .nii.gz is
#: refused instead of being read by whichever reader recognises its bytes.
_IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO",
             ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO"}


def _sitk_read(path: Path) -> sitk.Image:
    """sitk.ReadImage with the reader fixed by the file ending (RuntimeError when it does not fit)."""
    reader = sitk.ImageFileReader()
    io = _IMAGE_IO.get(_image_suffix(path) or "")
    if io:
        reader.SetImageIO(io)
    reader.SetFileName(_sitk_name(path))
    # a qform/sform disagreement is reported as a reason in the result row (sarco_nn.ct_checks):
    # ITK's raw warning about it would only clutter the console
    quiet = qform_sform_disagreement(read_nifti_header(path)) is not None
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    if quiet:
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_image(path: Path | str) -> sitk.Image:
    """Read a NIfTI/MHA/NRRD file, one DICOM file or a folder holding one DICOM series, in HU.

    Returns a 2-D or 3-D scalar image (int16 when the HU values are integers that fit, else
    float32) without any header metadata attached. Raises InputError for anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path, "check the path")
    if path.is_dir():
        image = _read_dicom_folder(path)
    elif _image_suffix(path):
        image = _read_sitk_file(path)
    elif looks_like_dicom(path):
        image = _read_dicom_files(path, [path])
    else:
        raise InputError(
            "unknown file type",
            path,
            f"give a NIfTI/MHA/NRRD file ({', '.join(IMAGE_SUFFIXES)}), a DICOM file or a folder with one DICOM series",
        )
    _check_voxels_and_spacing(image, path)
    return image


def read_label_image(path: Path | str) -> sitk.Image:
    """Read a label mask (any SimpleITK file format) as a uint16 image of non-negative integers."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path, "check the path of the mask")
    if not path.is_file():
        raise InputError("mask must be one image file", path, "give the mask as a NIfTI/MHA/NRRD file")
    problem = _header_spacing_problem(path)
    if problem:
        raise InputError(problem, path, "re-export the mask with its pixel spacing (mm) in the header")
    problem = _nifti_payload_problem(path)
    if problem:
        raise InputError(problem.replace("image holds", "mask holds"), path, "re-export the mask")
    try:
        image = _sitk_read(path)
    except RuntimeError:
        raise InputError("cannot read this mask file (unknown format or corrupt)", path,
                         "save the mask as .nii.gz, .mha or .nrrd") from None
    _check_dimensions(image, path)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
        scaling = label_scaling_note(path)
        if scaling:  # scl_slope 0.5 turns stored labels into halves: the header is the cause
            raise InputError(f"mask holds non-integer or negative values: {scaling}", path)
        raise InputError("mask holds non-integer, negative or NaN values", path,
                         "save the mask with integer labels (0 = background, 1 = muscle)")
    if array.max(initial=0) > np.iinfo(np.uint16).max:
        raise InputError("mask label values are too large", path, "use small integer labels (1 = muscle)")
    _check_voxels_and_spacing(image, path)
    return _fresh(array.astype(np.uint16), image)


def _read_sitk_file(path: Path) -> sitk.Image:
    problem = _header_spacing_problem(path)
    if problem:
        raise InputError(problem, path, "re-export the image with its pixel spacing (mm) in the header")
    problem = _nifti_payload_problem(path)
    if problem:
        raise InputError(problem, path, "re-export the image from the original CT")
    try:
        image = _sitk_read(path)
    except RuntimeError:
        raise InputError(f"cannot read this image file (corrupt, truncated, or not a {_image_suffix(path)} image)",
                         path, "re-export the image in the format its name says (.nii.gz, .mha or .nrrd)") from None
    _check_dimensions(image, path)
    array = sitk.GetArrayViewFromImage(image)
    wrong_intercept = nifti_intercept_wrongly_applied(read_nifti_header(path))
    if wrong_intercept:  # scl_slope 0 = no scaling (NIfTI standard); ITK applied scl_inter anyway
        array = np.asarray(array, dtype=np.float64) - wrong_intercept
    return _fresh(_hu_array(array), image)


def _check_dimensions(image: sitk.Image, path: Path) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("image has several components per voxel (RGB or vector), not a CT", path,
                         "give the grey-value CT in HU")
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(f"4-D image ({size[3]} volumes)", path, "give a single 3-D CT volume or one 2-D slice")
    elif image.GetDimension() not in (2, 3):
        raise InputError(f"{image.GetDimension()}-D image", path, "give a 3-D CT volume or one 2-D slice")


def _check_voxels_and_spacing(image: sitk.Image, path: Path) -> None:
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError("image holds NaN or infinite voxel values", path, "re-export the image from the original CT")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"missing or zero voxel spacing {tuple(spacing)}", path,
                         "re-export the image with its pixel spacing (mm) in the header")


