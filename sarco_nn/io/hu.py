"""Refusal of images whose values cannot be CT in Hounsfield units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import BODY_HU, CT_PLAUSIBLE_RANGE_HU
from sarco_nn.errors import InputError, NotCTError


#: An abdominal CT slice always holds air or fat; with nothing below this it is not CT in HU
#: (MR, an image scaled to [0, 1] or an 8-bit screenshot).
_AIR_OR_FAT_HU: float = -100.0

#: The values an 8-bit integer image can hold (int8 -128..127, uint8 0..255). A CT in HU needs air
#: (near -1000) and bone (hundreds of HU); stored in 8 bits both are clipped or wrapped, and an image
#: whose every value lies in this range holds neither: it is refused, whatever its header says.
_EIGHT_BIT_RANGE: tuple[float, float] = (-128.0, 255.0)

#: A CT slice in HU always shows air (about -1000 HU) around the body or in the bowel: in the real CT of
#: ../shared/data 30-64 % of the voxels lie below this. With none below it (padding aside) the values are
#: not HU: halved (a RescaleSlope lost or applied twice: air -512, muscle 20 instead of 40 HU) or windowed
#: (air clipped to -175), and the muscle HU and the HU gates would be measured on them silently.
_AIR_HU: float = -900.0


def check_ct_intensities(image: sitk.Image, path: Path | str) -> None:
    """Refuse images whose values cannot be CT in HU (MR, rescaled or windowed images).

    A fill value below the plausible range (e.g. -3024 or -2048 outside the field of view, as some
    converters write) is ignored: only the image minimum is treated as such padding.
    """
    array = np.asarray(sitk.GetArrayViewFromImage(image)).ravel()
    lo, hi = CT_PLAUSIBLE_RANGE_HU
    minimum = array.min()
    if minimum < lo:
        array = array[array != minimum]
    if array.size == 0:
        raise NotCTError("image holds a single value (empty field of view)", path, "give the CT slice or volume")
    p_lo, p_hi = np.percentile(array, [0.1, 99.9])
    if p_lo < lo or p_hi > hi:
        raise NotCTError(
            f"intensities {p_lo:.0f}..{p_hi:.0f} lie outside the plausible CT range {lo:.0f}..{hi:.0f} HU",
            path, "give the CT in Hounsfield units (apply rescale slope/intercept; do not give a windowed or MR image)")
    if array.min() > _AIR_OR_FAT_HU:
        raise NotCTError(
            f"no voxel below {_AIR_OR_FAT_HU:.0f} HU (no air or fat): this is not a CT in Hounsfield units",
            path, "give the CT in HU, not a windowed, normalised or MR image")
    if array.min() >= _EIGHT_BIT_RANGE[0] and array.max() <= _EIGHT_BIT_RANGE[1]:
        raise NotCTError(
            f"every value lies in {array.min():.0f}..{array.max():.0f} (an 8-bit range): no air near -1000 HU and "
            "no bone, so this is not a CT in Hounsfield units (stored as 8-bit integers, HU clipped or wrapped, or "
            "windowed?)", path, "re-export the CT in HU as 16-bit integers or float, not 8-bit or windowed")
    if array.min() > _AIR_HU:
        inside = (" or the field of view lies inside the body on every side (a targeted reconstruction: it cuts the "
                  "abdominal wall, so its SMA is no patient's)" if _body_on_every_edge(image) else "")
        raise NotCTError(
            f"no voxel below {_AIR_HU:.0f} HU (no air; lowest {array.min():.0f}): a CT in HU always shows air near "
            f"-1000 HU, so these values are scaled (a rescale slope lost or applied twice) or windowed{inside}",
            path, "give the CT in HU as the scanner wrote it (slope and intercept applied once), not windowed"
            + (", with the full field of view" if inside else ""))


def _body_on_every_edge(image: sitk.Image) -> bool:
    """True when every border pixel of every axial plane is body (above `BODY_HU`).

    Why not accept such an image: on the real CT of ../shared/data (example_ct_sm, L3 region) the
    largest air-free box around the body's centre keeps 27-34 % of the muscle, an SMA above the 30 cm²
    floor that would read as sarcopenic; and a windowed CT (air clipped to -175) looks the same here.
    So it is refused as before; the message names this cause too (HOSTILE_FINDINGS #86, #93)."""
    array = np.asarray(sitk.GetArrayViewFromImage(image))
    planes = array.reshape((-1, *array.shape[-2:]))
    return all(bool((p[[0, -1], :] > BODY_HU).all() and (p[:, [0, -1]] > BODY_HU).all()) for p in planes)
