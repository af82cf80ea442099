"""PNG overlays a clinician can check at a glance: the CT slice with the mask on top.

Muscle-only masks keep the original look (muscle filled red). A body-composition mask (`tissues`
given) gets one colour per tissue and a legend naming only the tissues present on the slice. The
palette is Okabe & Ito's colour-blind-safe set ("Color Universal Design", 2008): muscle
vermillion, IMAT yellow, VAT bluish green, SAT sky blue, distinguishable under the common colour
vision deficiencies. The CT is drawn in a soft-tissue window; display only, never measurement.
A reference mask (evaluation) is drawn as outlines: green for a muscle-only overlay, and with
`reference_tissues` each tissue's outline in that tissue's colour over the prediction's fill.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarco_nn.atomic import atomic_path

__all__ = ["DISPLAY_WINDOW_HU", "TISSUE_ALPHA", "TISSUE_COLOURS", "TISSUE_DISPLAY_NAMES", "overlay_figure",
           "present_tissues", "save_overlay", "tissue_overlay_rgb"]

#: Display window (soft tissue, level 40 / width 400 HU); display only, never used for measurement.
DISPLAY_WINDOW_HU = (-160.0, 240.0)

#: One colour per tissue (Okabe–Ito palette, RGB hex), in legend order.
TISSUE_COLOURS: dict[str, str] = {"muscle": "#D55E00", "imat": "#F0E442", "vat": "#009E73", "sat": "#56B4E9"}
#: How a tissue is named in the legend (the report's and README's names).
TISSUE_DISPLAY_NAMES: dict[str, str] = {"muscle": "muscle", "imat": "IMAT", "vat": "VAT", "sat": "SAT"}
#: Opacity of a tissue colour over the CT.
TISSUE_ALPHA: float = 0.5


def _rgb(hex_colour: str) -> np.ndarray:
    text = hex_colour.lstrip("#")
    return np.array([int(text[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def present_tissues(mask: np.ndarray, tissues: dict[str, int]) -> list[str]:
    """The tissues of `tissues` ({name: mask value}) with at least one pixel, in legend order."""
    mask = np.rint(mask) if np.issubdtype(np.asarray(mask).dtype, np.floating) else np.asarray(mask)
    return [name for name in TISSUE_COLOURS if name in tissues and bool(np.any(mask == tissues[name]))]


def tissue_overlay_rgb(ct_hu: np.ndarray, mask: np.ndarray, tissues: dict[str, int],
                       alpha: float = TISSUE_ALPHA) -> np.ndarray:
    """(y, x, 3) RGB in [0, 1]: the windowed CT in grey, each tissue's colour blended at its pixels."""
    lo, hi = DISPLAY_WINDOW_HU
    grey = np.clip((np.asarray(ct_hu, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = np.rint(mask) if np.issubdtype(np.asarray(mask).dtype, np.floating) else np.asarray(mask)
    for name in present_tissues(mask, tissues):
        where = mask == tissues[name]
        rgb[where] = (1.0 - alpha) * rgb[where] + alpha * _rgb(TISSUE_COLOURS[name])
    return rgb


def overlay_figure(ct_hu: np.ndarray, mask: np.ndarray, spacing_yx_mm: tuple[float, float], title: str = "",
                   reference: np.ndarray | None = None, tissues: dict[str, int] | None = None,
                   reference_tissues: dict[str, int] | None = None):
    """The matplotlib figure `save_overlay` writes (true pixel aspect ratio); the caller closes it.

    `reference_tissues` ({name: value in `reference`}, with `tissues`): outline every reference
    tissue in its own colour instead of one green outline of the whole reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sy, sx = spacing_yx_mm
    height, width = ct_hu.shape
    extent = (0, width * sx, height * sy, 0)
    fig, ax = plt.subplots(figsize=(6, 6 * (height * sy) / max(width * sx, 1e-6)), dpi=100)
    if tissues is None:
        ax.imshow(ct_hu, cmap="gray", vmin=DISPLAY_WINDOW_HU[0], vmax=DISPLAY_WINDOW_HU[1], extent=extent,
                  interpolation="nearest")
        ax.imshow(np.ma.masked_where(mask == 0, mask), cmap="autumn", alpha=0.45, extent=extent,
                  interpolation="nearest")
    else:
        from matplotlib.patches import Patch

        ax.imshow(tissue_overlay_rgb(ct_hu, mask, tissues), extent=extent, interpolation="nearest")
        outlined = present_tissues(reference, reference_tissues) if reference is not None and reference_tissues else []
        shown = present_tissues(mask, tissues)
        shown += [t for t in outlined if t not in shown]
        if shown:
            handles = [Patch(facecolor=TISSUE_COLOURS[t], edgecolor="none", label=TISSUE_DISPLAY_NAMES[t])
                       for t in sorted(shown, key=list(TISSUE_COLOURS).index)]
            if outlined:
                from matplotlib.lines import Line2D

                handles.append(Line2D([], [], color="dimgray", linewidth=1.2, label="outline: reference"))
            ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.8)
        for name in outlined:
            ax.contour(np.linspace(0, width * sx, width), np.linspace(0, height * sy, height),
                       reference == reference_tissues[name], levels=[0.5], colors=TISSUE_COLOURS[name],
                       linewidths=1.2)
        if outlined:
            reference = None  # drawn per tissue
    if reference is not None and reference.any():
        ax.contour(np.linspace(0, width * sx, width), np.linspace(0, height * sy, height), reference > 0,
                   levels=[0.5], colors="lime", linewidths=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return fig


def save_overlay(ct_hu: np.ndarray, mask: np.ndarray, spacing_yx_mm: tuple[float, float], path: Path,
                 title: str = "", reference: np.ndarray | None = None,
                 tissues: dict[str, int] | None = None, reference_tissues: dict[str, int] | None = None) -> Path:
    """Write the overlay PNG: muscle filled red, or with `tissues` ({name: value}) one colour per
    tissue and a legend; the reference contour green when given, or with `reference_tissues` one
    outline per reference tissue in its colour."""
    fig = overlay_figure(ct_hu, mask, spacing_yx_mm, title, reference, tissues, reference_tissues)
    import matplotlib.pyplot as plt  # after overlay_figure chose the Agg backend

    import warnings

    with atomic_path(Path(path)) as tmp, warnings.catch_warnings():
        # a case id in a script the font lacks (CJK) is drawn as boxes; matplotlib's warning per glyph
        # would only clutter the batch's console
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.savefig(tmp, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
