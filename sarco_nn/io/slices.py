"""Axial slice extraction (the L3 slice nnU-Net sees) and putting a predicted mask back on the user's grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import SLICE_AXIS_SPACING_MM
from sarco_nn.errors import InputError
from sarco_nn.io.files import read_image
from sarco_nn.io.grid import _as_3d, _is_canonical, _reorient, canonical_slice_index, require_axial, to_canonical
from sarco_nn.io.hu import check_ct_intensities


@dataclass(frozen=True)
class SliceSource:
    """Where an extracted slice came from, enough to put a predicted mask back on the user's grid."""

    path: Path
    slice_index: int  # index in the canonical (LPS) image: 0 = most inferior slice
    n_slices: int
    stored_index: int  # the same slice counted along the file's own slice axis (what a viewer shows)
    z_mm: float  # world z (LPS, mm) of the slice
    original: sitk.Image  # the image as read, in its stored orientation


def extract_axial_slice(image: sitk.Image, index: int, path: Path | str | None = None) -> sitk.Image:
    """Axial slice `index` of a canonical image as a one-slice 3-D image.

    In-plane spacing and origin are kept exactly; the slice-axis spacing becomes
    SLICE_AXIS_SPACING_MM so that nnU-Net plans a 2d configuration.
    """
    if not _is_canonical(image):
        raise ValueError("extract_axial_slice needs a canonical image: call to_canonical first")
    image = _as_3d(image)
    n = image.GetSize()[2]
    if not 0 <= index < n:
        raise InputError(f"slice index {index} outside 0..{n - 1}", None, f"choose a slice between 0 and {n - 1}")
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    if max(spacing[:2]) >= SLICE_AXIS_SPACING_MM:
        raise InputError(f"in-plane pixel spacing {spacing[:2]} mm is not below {SLICE_AXIS_SPACING_MM} mm", path,
                         "give a CT with a usual in-plane resolution (about 0.5-1 mm)")
    array = sitk.GetArrayViewFromImage(image)[index]
    out = sitk.GetImageFromArray(np.array(array)[None])
    out.SetSpacing((spacing[0], spacing[1], SLICE_AXIS_SPACING_MM))
    out.SetOrigin((origin[0], origin[1], origin[2] + index * spacing[2]))
    out.SetDirection(tuple(np.eye(3).ravel()))
    return out


def load_axial_slice(path: Path | str, slice_index: int | None = None) -> tuple[sitk.Image, SliceSource]:
    """Read a CT, check it, and return its axial slice (the only one, or `slice_index` of a volume)."""
    path = Path(path)
    original = read_image(path)
    check_ct_intensities(original, path)
    require_axial(original, path)
    canonical = to_canonical(original)
    n = canonical.GetSize()[2]
    if n == 1:
        if slice_index not in (None, 0):
            raise InputError(f"single-slice image, but slice {slice_index} was asked for", path,
                             "leave out --l3-slice (or pass 0) for a single slice")
        index = 0
    else:
        if slice_index is None:
            raise InputError(f"volume with {n} slices: pass --l3-slice", path,
                             f"give the L3 slice index as your viewer counts it along the file's slice axis (0..{n - 1})")
        if not 0 <= slice_index < n:
            raise InputError(f"--l3-slice {slice_index} outside the volume's 0..{n - 1}", path,
                             "count slices along the file's own slice axis, from 0")
        index = canonical_slice_index(original, int(slice_index))
    slice_image = extract_axial_slice(canonical, index, path)
    z_mm = canonical.GetOrigin()[2] + index * canonical.GetSpacing()[2]
    return slice_image, SliceSource(path=path, slice_index=index, n_slices=n,
                                    stored_index=canonical_slice_index(original, index), z_mm=float(z_mm),
                                    original=original)


def mask_to_source_geometry(mask_slice: sitk.Image, source: SliceSource) -> sitk.Image:
    """Put a predicted one-slice mask back onto the user's original grid (zeros on other slices)."""
    original3d = _as_3d(source.original)
    reoriented = _reorient(original3d)
    nx, ny, nz = reoriented.GetSize()
    mask_array = sitk.GetArrayFromImage(_as_3d(mask_slice))  # a view of a temporary image would dangle
    if mask_array.shape != (1, ny, nx):
        raise ValueError(f"mask of shape {mask_array.shape} does not fit the source slice grid {(1, ny, nx)}")
    full = np.zeros((nz, ny, nx), dtype=np.uint8)
    full[source.slice_index] = mask_array[0]
    canonical_mask = sitk.GetImageFromArray(full)
    canonical_mask.CopyInformation(reoriented)
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(original3d.GetDirection())
    back = sitk.DICOMOrient(canonical_mask, code)
    if back.GetSize() != original3d.GetSize():
        raise AssertionError("reorientation did not invert")  # cannot happen: permutations invert
    back.CopyInformation(original3d)
    if source.original.GetDimension() == 2:
        flat = sitk.GetImageFromArray(sitk.GetArrayFromImage(back)[0])
        flat.CopyInformation(source.original)
        return flat
    return back
