"""`--l3-slice` and `sarco measure --slice` count slices the same way: along the file's own slice axis."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from sarco_nn.image_io import load_axial_slice
from sarco_nn.measure import axial_stack


def _volume(tmp_path, flip_z: bool):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 400, size=(6, 20, 24)).astype(np.int16)
    array[:, :2, :2] = -1000
    for k in range(6):
        array[k, 10, 10] = 100 * k  # a marker telling stored slices apart
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.7, 3.0))
    if flip_z:
        image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    path = tmp_path / f"vol_{flip_z}.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, array


def test_stored_index_selects_the_stored_slice_in_both_z_directions(tmp_path):
    for flip in (False, True):
        path, array = _volume(tmp_path, flip)
        for k in (0, 2, 5):
            slice_image, source = load_axial_slice(path, k)
            got = sitk.GetArrayFromImage(slice_image)[0]
            assert got[10, 10] == array[k, 10, 10]
            assert source.stored_index == k
            assert source.slice_index == (5 - k if flip else k)
            stack = axial_stack(sitk.ReadImage(str(path)))
            assert stack.stored_indices[source.slice_index] == k
