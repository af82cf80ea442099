"""PNG overlays a clinician can check at a glance: the CT slice with the muscle mask on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarco_nn.atomic import atomic_path

__all__ = ["DISPLAY_WINDOW_HU", "save_overlay"]

#: Display window (soft tissue, level 40 / width 400 HU); display only, never used for measurement.
DISPLAY_WINDOW_HU = (-160.0, 240.0)


def save_overlay(ct_hu: np.ndarray, mask: np.ndarray, spacing_yx_mm: tuple[float, float], path: Path,
                 title: str = "", reference: np.ndarray | None = None) -> Path:
    """Mask filled red (and reference contour green when given), drawn with the true pixel aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sy, sx = spacing_yx_mm
    height, width = ct_hu.shape
    extent = (0, width * sx, height * sy, 0)
    fig, ax = plt.subplots(figsize=(6, 6 * (height * sy) / max(width * sx, 1e-6)), dpi=100)
    ax.imshow(ct_hu, cmap="gray", vmin=DISPLAY_WINDOW_HU[0], vmax=DISPLAY_WINDOW_HU[1], extent=extent,
              interpolation="nearest")
    ax.imshow(np.ma.masked_where(mask == 0, mask), cmap="autumn", alpha=0.45, extent=extent, interpolation="nearest")
    if reference is not None and reference.any():
        ax.contour(np.linspace(0, width * sx, width), np.linspace(0, height * sy, height), reference > 0,
                   levels=[0.5], colors="lime", linewidths=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
