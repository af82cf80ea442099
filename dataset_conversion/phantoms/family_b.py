"""Family B ("site B"): a patient (anatomy_b), its tissues (render_b), a site's scanner (scanner_b).

Why: an external test set for models trained on family A. Nothing here imports family A's anatomy,
rendering or scanner code; only the result types and the truth's cut-offs (common) are shared.
"""

from __future__ import annotations

import math

import numpy as np

from dataset_conversion.phantoms.anatomy_b import draw_patient
from dataset_conversion.phantoms.common import PhantomSlice
from dataset_conversion.phantoms.render_b import composition_mask, fit_muscle_scale, render, trunk_extent
from dataset_conversion.phantoms.scanner_b import acquire, draw_protocol, finish, fov_grid, paint_table
from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.errors import SarcoError

_MARGIN_MM = 12.0


def _extend(axis: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """The axis extended with its own pixel pitch until it covers [lo, hi]; also the index of axis[0]."""
    step = float(axis[1] - axis[0])
    before = max(0, int(math.ceil((axis[0] - lo) / step)))
    after = max(0, int(math.ceil((hi - axis[-1]) / step)))
    full = axis[0] + step * np.arange(-before, len(axis) + after)
    return full, before


def generate_slice(rng: np.random.Generator, sex: str | None = None, matrix: int = 512,
                   sarcopenic: bool | None = None,
                   spacing_mm: tuple[float, float] | None = None) -> tuple[PhantomSlice, float]:
    """One family-B L3 slice and its slice thickness (mm), which the writer stores as the z spacing.

    The image is formed on a canvas that holds the whole patient and table (so a cropped field of view
    is a true truncation), then cut to the field of view; the masks are the tissues of the central plane.
    """
    if matrix < 16:
        raise SarcoError(f"phantom matrix must be at least 16 pixels, got {matrix}")
    p = draw_patient(rng, sex=sex, sarcopenic=sarcopenic)
    fit_muscle_scale(p)
    x0, x1, y0, y1 = trunk_extent(p)
    proto = draw_protocol(rng, p, matrix, (x0, x1, y0, y1), spacing_mm)
    xs, ys = fov_grid(proto, matrix)
    cxs, c0 = _extend(xs, x0 - _MARGIN_MM, x1 + _MARGIN_MM)
    cys, r0 = _extend(ys, y0 - _MARGIN_MM, y1 + proto.mattress_mm + proto.table_mm + _MARGIN_MM)
    planes = []
    for dz in proto.plane_offsets():
        lab = render(p, float(dz), cxs, cys)
        paint_table(proto, lab, cxs, cys, p.back_y)
        planes.append(lab)
    img = acquire(rng, planes, proto, proto.spacing, cxs, cys, 0.5 * (x1 - x0))
    crop = (slice(r0, r0 + matrix), slice(c0, c0 + matrix))
    ct = finish(img[crop], proto)
    tissues = composition_mask(planes[len(planes) // 2][crop])
    muscle = (tissues == TISSUE_LABELS["muscle"]).astype(np.uint8)
    return PhantomSlice(ct, muscle, tissues, proto.spacing, p.sex, p.height_m, p.weight_kg, p.age), proto.thickness_mm

