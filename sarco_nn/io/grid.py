"""Orientation and voxel grids: axial checks, reorientation to LPS, the one image-mask grid check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import CANONICAL_ORIENTATION
from sarco_nn.errors import InputError


#: Largest angle (degrees) between an image's slice normal and the head-feet axis still treated as
#: axial. Beyond it the cross-section is oblique and the muscle area is inflated by 1/cos(angle).
AXIAL_TOLERANCE_DEG: float = 5.0

#: Fewest pixels an axial slice may have along each in-plane axis; fewer means the file is a
#: handful of sagittal/coronal slices that reorientation would turn into a sliver.
MIN_AXIAL_PIXELS: int = 16


def _as_3d(image: sitk.Image) -> sitk.Image:
    """2-D slice → 3-D image with one slice (z spacing 1 mm, origin z 0: unknown, irrelevant)."""
    if image.GetDimension() == 3:
        return image
    return sitk.JoinSeries(image)


def _direction(image: sitk.Image) -> np.ndarray:
    return np.array(image.GetDirection(), dtype=float).reshape(3, 3)


def _axis_angles_from_z(image: sitk.Image) -> np.ndarray:
    """Angle (degrees) between each image axis and the patient head-feet axis."""
    return np.degrees(np.arccos(np.clip(np.abs(_direction(image)[2, :]), 0.0, 1.0)))


def require_axial(image: sitk.Image, path: Path | str) -> None:
    """Refuse images whose slices are not axial (normal more than AXIAL_TOLERANCE_DEG from z)."""
    image = _as_3d(image)
    angles = _axis_angles_from_z(image)
    z_axis = int(np.argmin(angles))
    if angles[z_axis] > AXIAL_TOLERANCE_DEG:
        raise InputError(
            f"not an axial image: no image axis lies within {AXIAL_TOLERANCE_DEG:g} degrees of the head-feet axis "
            f"(closest {angles[z_axis]:.1f} degrees)", path,
            "give an axial CT (reformat oblique or tilted series to axial first)")
    size = image.GetSize()
    flat = [k for k in range(3) if size[k] == 1]
    if flat and z_axis not in flat:
        raise InputError("a single sagittal or coronal slice, not an axial one", path, "give the axial L3 slice")
    in_plane = [size[k] for k in range(3) if k != z_axis]
    if min(in_plane) < MIN_AXIAL_PIXELS:
        raise InputError(f"axial slices would be only {in_plane[0]} x {in_plane[1]} pixels: a stack of a few "
                         "sagittal or coronal slices, not an axial CT", path, "give the axial CT series")


def _reorient(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(_as_3d(image), CANONICAL_ORIENTATION)


def _snap_to_identity(image: sitk.Image) -> sitk.Image:
    """Set a nearly axis-aligned direction to exactly identity (a relabelling, no resampling)."""
    angles = _axis_angles_from_z(image)
    if angles[2] > AXIAL_TOLERANCE_DEG:
        raise InputError(f"oblique image ({angles[2]:.1f} degrees from axial)", None,
                         "reformat the series to axial first")
    snapped = sitk.Image(image)
    snapped.SetDirection(tuple(np.eye(3).ravel()))
    return snapped


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes to LPS and set the direction to identity, so axial slice k is array[k].

    Only axis permutations and flips are applied (voxel values never resampled); a residual
    obliquity up to AXIAL_TOLERANCE_DEG is dropped from the direction cosines.
    """
    return _snap_to_identity(_reorient(image))


def _is_canonical(image: sitk.Image) -> bool:
    return image.GetDimension() == 2 or np.allclose(_direction(image), np.eye(3), atol=1e-6)


#: Grid agreement asked of a mask and its image (NIfTI stores float32 geometry; writers round).
_SPACING_RTOL = 1e-3
_DIRECTION_ATOL = 1e-3
_ORIGIN_TOL_VOXELS = 0.1


def check_same_grid(image: sitk.Image, mask: sitk.Image, mask_path: Path | str | None,
                    image_path: Path | str | None = None) -> None:
    """Refuse a mask whose voxel grid is not the image's (compared after both are reoriented to LPS,
    so a LAS-stored mask may belong to an LPS-stored DICOM series). For a single slice, the slice
    thickness and, for 2-D files, the slice position are not compared (they carry no information).

    The one grid check of sarco (convert, measure, evaluate, L3): the error names `mask_path` and,
    when given, the image it was compared with."""
    a, b = _reorient(image), _reorient(mask)
    fix = "give the mask on the image's own grid (same size, spacing, origin and orientation)"
    of = f" of {image_path}" if image_path else ""
    if a.GetSize() != b.GetSize():
        raise InputError(f"mask size {_as_3d(mask).GetSize()} does not match image size {_as_3d(image).GetSize()}{of}",
                         mask_path, fix)
    both_3d = image.GetDimension() == 3 and mask.GetDimension() == 3
    axes = 3 if both_3d and a.GetSize()[2] > 1 else 2
    sa, sb = np.array(a.GetSpacing())[:axes], np.array(b.GetSpacing())[:axes]
    if np.any(np.abs(sa - sb) > _SPACING_RTOL * sa):
        raise InputError(f"mask spacing {tuple(np.round(sb, 4).tolist())} does not match image spacing "
                         f"{tuple(np.round(sa, 4).tolist())}{of}", mask_path, fix)
    if np.any(np.abs(_direction(a) - _direction(b)) > _DIRECTION_ATOL):
        raise InputError(f"mask orientation (direction cosines) does not match the image{of}", mask_path, fix)
    axes = 3 if both_3d else 2
    oa, ob = np.array(a.GetOrigin())[:axes], np.array(b.GetOrigin())[:axes]
    if np.any(np.abs(oa - ob) > _ORIGIN_TOL_VOXELS * np.array(a.GetSpacing())[:axes]):
        raise InputError(f"mask origin {tuple(np.round(ob, 2).tolist())} does not match image origin "
                         f"{tuple(np.round(oa, 2).tolist())}{of} (after reorientation to LPS)", mask_path, fix)


def canonical_slice_index(image: sitk.Image, index: int) -> int:
    """Map a slice index along the file's own head–foot axis to the canonical (LPS, 0 = most inferior)
    index, or back: the map is its own inverse (identity, or a reversal when the file runs head→foot)."""
    image3d = _as_3d(image)
    direction = _direction(image3d)
    stored_axis = int(np.argmax(np.abs(direction[2, :])))  # the stored axis that runs head–foot
    n = image3d.GetSize()[stored_axis]
    return n - 1 - index if direction[2, stored_axis] < 0 else index
