"""Family B ("site B"): a patient (anatomy_b), its tissues (render_b), a site's scanner (scanner_b).

Why: an external test set for models trained on family A. Nothing here imports family A's anatomy,
rendering or scanner code; only the result types and the truth's cut-offs (common) are shared.
"""

from __future__ import annotations

import math

import numpy as np

from dataset_conversion.phantoms.anatomy_b import LEVELS_B, PatientB, TissueB, draw_patient
from dataset_conversion.phantoms.common import PhantomSlice, PhantomVolume
from dataset_conversion.phantoms.render_b import composition_mask, fit_muscle_scale, render, trunk_extent, vertebra_map
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
    canvas = _Canvas(p, proto, matrix)
    ct, lab = canvas.slice(rng, 0.0)
    tissues = composition_mask(lab)
    muscle = (tissues == TISSUE_LABELS["muscle"]).astype(np.uint8)
    return (PhantomSlice(ct, muscle, tissues, proto.spacing, p.sex, p.height_m, p.weight_kg, p.age,
                         anatomy=lab, anatomy_names={int(t): t.name.lower() for t in TissueB}), proto.thickness_mm)


def generate_volume(rng: np.random.Generator, matrix: int = 128, sex: str | None = None,
                    sarcopenic: bool | None = None, slice_spacing_mm: float | None = None) -> PhantomVolume:
    """A family-B volume from the top of T12 to S1 with vertebra labels; slice thickness = spacing.

    Masks (muscle, four tissues) are exact on every slice; l3_slice_index is the slice nearest mid-L3.
    """
    if matrix < 16:
        raise SarcoError(f"phantom matrix must be at least 16 pixels, got {matrix}")
    p = draw_patient(rng, sex=sex, sarcopenic=sarcopenic)
    fit_muscle_scale(p)
    proto = draw_protocol(rng, p, matrix, trunk_extent(p))
    dz = float(slice_spacing_mm) if slice_spacing_mm is not None else float(rng.choice([2.0, 3.0, 4.0, 5.0]))
    if dz <= 0:
        raise SarcoError(f"slice spacing must be positive, got {slice_spacing_mm}")
    proto.thickness_mm = dz
    z_top, z_bot = p.levels[LEVELS_B["T12"]][0] + 3.0, p.levels[LEVELS_B["S1"]][1] + 5.0
    zs = z_bot + float(rng.uniform(-0.5, 0.5)) * dz + dz * np.arange(int(math.ceil((z_top - z_bot) / dz)) + 1)
    canvas = _Canvas(p, proto, matrix)
    shape = (len(zs), matrix, matrix)
    ct, tissues, vert = np.empty(shape, np.int16), np.empty(shape, np.uint8), np.empty(shape, np.uint8)
    for i, z in enumerate(zs):
        ct[i], lab = canvas.slice(rng, float(z))
        tissues[i] = composition_mask(lab)
        vert[i] = canvas.crop(vertebra_map(p, float(z), canvas.central, canvas.xs, canvas.ys))
    muscle = (tissues == TISSUE_LABELS["muscle"]).astype(np.uint8)
    sy, sx = proto.spacing
    return PhantomVolume(ct, muscle, tissues, vert, int(np.argmin(np.abs(zs))), (dz, sy, sx), p.sex, p.height_m,
                         p.weight_kg, p.age)


class _Canvas:
    """The field of view extended (same pixel pitch) until it holds patient and table: a cropped field
    of view is then a true truncation, and the layers below the skin are measured on the whole body."""

    def __init__(self, p: PatientB, proto, matrix: int):
        x0, x1, y0, y1 = trunk_extent(p)
        fx, fy = fov_grid(proto, matrix)
        self.xs, self.c0 = _extend(fx, x0 - _MARGIN_MM, x1 + _MARGIN_MM)
        self.ys, self.r0 = _extend(fy, y0 - _MARGIN_MM, y1 + proto.mattress_mm + proto.table_mm + _MARGIN_MM)
        self.p, self.proto, self.matrix = p, proto, matrix
        self.radius = 0.5 * (x1 - x0)
        self.central = np.zeros((len(self.ys), len(self.xs)), np.uint8)

    def crop(self, arr: np.ndarray) -> np.ndarray:
        return arr[self.r0:self.r0 + self.matrix, self.c0:self.c0 + self.matrix]

    def slice(self, rng: np.random.Generator, z: float) -> tuple[np.ndarray, np.ndarray]:
        """(stored CT, tissue map of the central plane) of the slice centred at z, both cropped."""
        planes = []
        for dz in self.proto.plane_offsets():
            lab = render(self.p, z + float(dz), self.xs, self.ys)
            paint_table(self.proto, lab, self.xs, self.ys, self.p.back_y)
            planes.append(lab)
        self.central = planes[len(planes) // 2]
        img = acquire(rng, planes, self.proto, self.proto.spacing, self.xs, self.ys, self.radius)
        return finish(self.crop(img), self.proto), self.crop(self.central)

