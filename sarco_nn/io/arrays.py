"""Fresh images from arrays: no header metadata (patient fields) travels with an image sarco returns."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def _fresh(array: np.ndarray, geometry: sitk.Image) -> sitk.Image:
    """A new image with `geometry`'s grid and no metadata dictionary (no header fields leak)."""
    if geometry.GetDimension() == 4:  # 4-D with one volume: drop the time axis
        array = array[0]
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(geometry.GetSpacing()[:3])
        image.SetOrigin(geometry.GetOrigin()[:3])
        d = np.array(geometry.GetDirection()).reshape(4, 4)[:3, :3]
        image.SetDirection(tuple(d.ravel()))
        return image
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(geometry)
    return image


def _hu_array(array: np.ndarray) -> np.ndarray:
    """int16 when the values are integers that fit (smaller files, exact), else float32."""
    if array.dtype == np.int16:
        return np.array(array)
    if array.size == 0:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer) or (
        np.all(np.isfinite(array)) and np.all(array == np.round(array))
    ):
        lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
        if array.min() >= lo and array.max() <= hi:
            return array.astype(np.int16)
    return array.astype(np.float32)
