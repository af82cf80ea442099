"""A sagittal thumbnail marking the chosen L3 level, so a person can check the level at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.atomic import atomic_path
from sarco_nn.l3.result import L3Location

__all__ = ["SLAB_MM", "THUMBNAIL_WINDOW_HU", "sagittal_slab", "save_l3_thumbnail"]

#: Display window (HU) of the thumbnail: bone and soft tissue both visible; display only.
THUMBNAIL_WINDOW_HU: tuple[float, float] = (-250.0, 1000.0)
#: Thickness (mm) of the sagittal slab through the spine, shown as a maximum-intensity projection.
SLAB_MM: float = 20.0
_BONE_HU = 200.0


def sagittal_slab(canonical: sitk.Image) -> np.ndarray:
    """(z, y) maximum intensity of a SLAB_MM-thick sagittal slab centred on the spine."""
    hu = sitk.GetArrayViewFromImage(canonical)  # (z, y, x)
    sx = canonical.GetSpacing()[0]
    nx = hu.shape[2]
    bone_per_column = (hu > _BONE_HU).sum(axis=(0, 1)).astype(float)
    lo, hi = nx // 4, max(nx // 4 + 1, 3 * nx // 4)  # the spine is near the middle, not in the arms
    centre = lo + int(np.argmax(bone_per_column[lo:hi])) if bone_per_column[lo:hi].any() else nx // 2
    half = max(0, int(round(SLAB_MM / 2 / sx)))
    return hu[:, :, max(0, centre - half):min(nx, centre + half + 1)].max(axis=2)


def save_l3_thumbnail(canonical: sitk.Image, location: L3Location, path: Path | str, title: str = "") -> Path:
    """Write a PNG: sagittal slab (head up, anterior left) with a line at the chosen slice. Atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = sagittal_slab(canonical)
    sy, sz = canonical.GetSpacing()[1], canonical.GetSpacing()[2]
    nz, ny = image.shape
    z0 = canonical.GetOrigin()[2]
    extent = (0.0, ny * sy, z0 - sz / 2, z0 + (nz - 0.5) * sz)
    height_mm, width_mm = extent[3] - extent[2], extent[1]
    fig, ax = plt.subplots(figsize=(3.2, max(2.0, 3.2 * height_mm / max(width_mm, 1e-6))), dpi=100)
    ax.imshow(image, cmap="gray", vmin=THUMBNAIL_WINDOW_HU[0], vmax=THUMBNAIL_WINDOW_HU[1], origin="lower",
              extent=extent, interpolation="bilinear", aspect="equal")
    ax.axhline(location.z_mm, color="red", linewidth=1.2)
    label = f"L3: slice {location.slice_index}, z {location.z_mm:.1f} mm ({location.method}" + \
        (f", {location.rule}" if location.rule else "") + ")"
    ax.set_title(f"{title}\n{label}" if title else label, fontsize=7)
    ax.set_axis_off()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
