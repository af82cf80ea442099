"""Family B's geometry: the tissue map of a PatientB at z on a pixel grid (deterministic, no randomness).

Why distances on the grid: skin, subcutaneous fat and the muscle wall are layers at a given depth
below the skin and below the fascia, measured by a Euclidean distance transform on the pixel grid
itself (SciPy), so the layers follow any outline, including a flattened back and a pannus.
"""

from __future__ import annotations

import numpy as np

from dataset_conversion.phantoms.anatomy_b import Blob, PatientB, TissueB
from sarco_nn.constants import TISSUE_LABELS

#: Family B tissue → body-composition label (everything else, arm tissue included, is 0).
_COMPOSITION = {TissueB.MUSCLE: TISSUE_LABELS["muscle"], TissueB.IMAT: TISSUE_LABELS["imat"],
                TissueB.VAT: TISSUE_LABELS["vat"], TissueB.SAT: TISSUE_LABELS["sat"]}


def composition_mask(lab: np.ndarray) -> np.ndarray:
    """TISSUE_LABELS mask (muscle 1, IMAT 2, VAT 3, SAT 4) of a family-B tissue map; arm muscle is 0."""
    lut = np.zeros(max(int(t) for t in TissueB) + 1, np.uint8)
    for tissue, value in _COMPOSITION.items():
        lut[int(tissue)] = value
    return lut[lab]


def _paint(lab: np.ndarray, xs: np.ndarray, ys: np.ndarray, blob: Blob, scale: float, label: int,
           into: tuple[int, ...] | None) -> np.ndarray | None:
    """Set `label` inside the blob (where the current label is in `into`) within its bounding box."""
    if scale <= 0.0:
        return None
    x0, x1, y0, y1 = blob.extent(scale)
    c0, c1 = np.searchsorted(xs, [x0, x1])
    r0, r1 = np.searchsorted(ys, [y0, y1])
    if c1 <= c0 or r1 <= r0:
        return None
    win = (slice(r0, r1), slice(c0, c1))
    m = blob.inside(xs[None, c0:c1], ys[r0:r1, None], scale)
    if into is not None:
        m &= np.isin(lab[win], into)
    lab[win][m] = label
    full = np.zeros(lab.shape, bool)
    full[win] = m
    return full


def _smooth_bump(x: np.ndarray, lo: float, hi: float, ramp: float) -> np.ndarray:
    """1 well inside [lo, hi], falling linearly to 0 over `ramp` at both ends."""
    return np.clip(np.minimum(x - lo, hi - x) / ramp, 0.0, 1.0)


def render(p: PatientB, z: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """TissueB map (rows = ys towards posterior, columns = xs towards left) of the axial plane at z.

    The grid must hold the whole trunk (the layers are depths below its skin).
    """
    from scipy.ndimage import distance_transform_edt

    sy, sx = float(ys[1] - ys[0]), float(xs[1] - xs[0])
    X, Y = xs[None, :], ys[:, None]
    lab = np.zeros((len(ys), len(xs)), np.uint8)
    trunk = p.outline.inside(X, Y) & (Y <= p.back_y)
    depth = distance_transform_edt(trunk, sampling=(sy, sx))
    t = np.mod(np.arctan2(Y, X), 2 * np.pi)  # 0 = left, pi/2 = posterior
    k = len(p.sat_mm)
    sat = np.interp(t, np.linspace(0.0, 2 * np.pi, k + 1), np.append(p.sat_mm, p.sat_mm[0]))
    lab[trunk] = TissueB.SKIN
    lab[trunk & (depth > p.skin_mm)] = TissueB.SAT
    fascia = trunk & (depth > p.skin_mm + sat)
    lab[fascia] = TissueB.VAT
    _paint_wall(p, lab, fascia, distance_transform_edt(fascia, sampling=(sy, sx)), X, Y)
    sy0, vw, vd, _ = p.spine
    back = fascia & (lab == TissueB.VAT) & (Y > sy0) & (np.abs(X) < p.posterior_imat_x)
    lab[back] = TissueB.IMAT  # fat between the back muscles lies inside the fascia: intermuscular
    soft = (TissueB.VAT, TissueB.IMAT)
    s = p.muscle_scale
    # along z: the erector thins caudally, quadratus lumborum spans ~L1-L4, psoas grows towards the pelvis
    for blob in p.back_muscles:
        _paint(lab, xs, ys, blob, s * float(np.clip(1.0 - 0.002 * z, 0.6, 1.3)), TissueB.MUSCLE, soft)
    for blob in p.ql:
        _paint(lab, xs, ys, blob, s * max(0.0, 1.0 - (z / 120.0) ** 2) * (1.0 + 0.004 * z), TissueB.MUSCLE, soft)
    for blob in p.psoas:
        _paint(lab, xs, ys, blob, s * float(np.clip(1.0 - 0.006 * z, 0.12, 1.5)), TissueB.MUSCLE, soft)
    for blob in p.fat_clefts:
        _paint(lab, xs, ys, blob, 1.0, TissueB.IMAT, (TissueB.MUSCLE,))
    _paint_spine(p, lab, X, Y, z)
    _paint_viscera(p, z, lab, xs, ys)
    _paint_arms(p, lab, X, Y)
    return lab


def _paint_wall(p: PatientB, lab: np.ndarray, fascia: np.ndarray, d: np.ndarray, X: np.ndarray, Y: np.ndarray) -> None:
    """Rectus pair, three lateral layers split by fat planes, a thin latissimus; linea alba is fascia."""
    s = p.muscle_scale
    aphi = np.abs(np.arctan2(X, -Y))  # 0 = anterior midline, pi = posterior midline
    ra = p.rectus_half_angle
    rect = p.rectus_mm * s * _smooth_bump(aphi, -1.0, ra, 0.12)
    midline = np.abs(X) <= p.linea_alba_mm / 2
    lab[fascia & midline & (aphi < ra) & (d < p.rectus_mm * s)] = TissueB.FASCIA
    lab[fascia & ~midline & (d < rect)] = TissueB.MUSCLE
    taper = _smooth_bump(aphi, ra - 0.15, p.wall_end_angle, 0.3)
    depth0 = np.zeros_like(d)
    for i, th in enumerate(p.wall_mm):
        thick = th * s * taper
        layer = fascia & (d >= depth0) & (d < depth0 + thick) & (thick > 0.5) & (aphi > ra - 0.2)
        lab[layer & (lab == TissueB.VAT)] = TissueB.MUSCLE
        depth0 = depth0 + thick
        if i < 2:
            plane = fascia & (d >= depth0) & (d < depth0 + p.plane_mm) & (thick > 0.5) & (aphi > ra - 0.2)
            lab[plane & (lab == TissueB.VAT)] = TissueB.IMAT
            depth0 = depth0 + p.plane_mm
    lat = 3.5 * s * _smooth_bump(aphi, p.wall_end_angle - 0.35, 2.75, 0.2)
    lab[fascia & (d < lat) & (lab == TissueB.VAT)] = TissueB.MUSCLE


def body_level(p: PatientB, z: float) -> int | None:
    """The vertebra whose body the plane z cuts (None: a disc, or outside S1..T12)."""
    return next((lb for lb, (top, bottom) in p.levels.items() if bottom <= z <= top), None)


def nearest_level(p: PatientB, z: float) -> int:
    """The vertebra whose body centre is nearest to z (posterior elements belong to it)."""
    return min(p.levels, key=lambda lb: abs(0.5 * sum(p.levels[lb]) - z))


def vertebra_map(p: PatientB, z: float, lab: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """TotalSegmentator vertebra numbers on the spine's bone at z (0 elsewhere, discs and arms included)."""
    cy, vw, vd, _ = p.spine
    X, Y = xs[None, :], ys[:, None]
    spine = (np.abs(X) < vw + 30.0) & (Y > cy - vd - 3.0) & (Y < cy + vd + 60.0)
    bone = np.isin(lab, [TissueB.CORTEX, TissueB.MARROW]) & spine
    out = np.zeros(lab.shape, np.uint8)
    if p.levels:
        out[bone] = nearest_level(p, z)
    return out


def _paint_spine(p: PatientB, lab: np.ndarray, X: np.ndarray, Y: np.ndarray, z: float = 0.0) -> None:
    """Rounded-box vertebral body (or disc between bodies), canal, lamina, spinous and transverse processes."""
    cy, vw, vd, cortex = p.spine
    body = np.abs(X / vw) ** 2.6 + np.abs((Y - cy) / vd) ** 2.6 <= 1.0
    marrow = np.abs(X / (vw - cortex)) ** 2.6 + np.abs((Y - cy) / (vd - cortex)) ** 2.6 <= 1.0
    canal_y = cy + vd + 8.0
    canal = X**2 + (Y - canal_y) ** 2 <= 8.0**2
    ring = (X**2 + (Y - canal_y) ** 2 <= 13.0**2) & ~canal & (Y > cy + vd - 2.0)
    spinous = (np.abs(X) < 4.0) & (Y > canal_y + 10.0) & (Y < canal_y + 38.0)
    transverse = (np.abs(Y - canal_y + 2.0) < 4.5) & (np.abs(X) < vw + 22.0) & (np.abs(X) > 8.0)
    in_body = not p.levels or body_level(p, z) is not None
    bone = (body if in_body else np.zeros_like(body)) | ring | spinous | transverse
    lab[bone] = TissueB.CORTEX
    lab[(marrow if in_body else np.zeros_like(marrow)) | (spinous & (np.abs(X) < 2.0))] = TissueB.MARROW
    if not in_body:
        lab[body] = TissueB.DISC
    lab[canal] = TissueB.CANAL


_ORGAN_TISSUE = {"aorta": TissueB.AORTA, "ivc": TissueB.IVC, "kidney": TissueB.KIDNEY, "liver": TissueB.LIVER,
                 "spleen": TissueB.SPLEEN, "pancreas": TissueB.PANCREAS}
_CONTENT = {"fluid": TissueB.BOWEL_FLUID, "gas": TissueB.BOWEL_GAS, "stool": TissueB.STOOL,
            "oral": TissueB.ORAL_CONTRAST}


def _paint_viscera(p: PatientB, z: float, lab: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Organs and bowel only into visceral (or back-compartment) fat: they touch muscle, never replace it."""
    fat = (TissueB.VAT, TissueB.IMAT)
    for organ in p.organs:
        _paint(lab, xs, ys, organ.blob, organ.scale_at(z), _ORGAN_TISSUE[organ.kind], fat)
    for loop in p.bowel:
        f = loop.scale_at(z)
        outer = _paint(lab, xs, ys, loop.blob, f, TissueB.BOWEL_WALL, (TissueB.VAT,))
        if outer is None or loop.content == "collapsed":
            continue
        r_mean = float(loop.blob.radii.mean()) * f
        if r_mean <= loop.wall_mm + 1.0:
            continue
        inner = outer & loop.blob.inside(xs[None, :], ys[:, None], f * (1.0 - loop.wall_mm / r_mean))
        if loop.content == "level":  # supine: gas rises anteriorly (towards low y)
            gas = ys[:, None] < loop.blob.cy + loop.level * r_mean
            lab[inner & gas] = TissueB.BOWEL_GAS
            lab[inner & ~gas] = TissueB.BOWEL_FLUID
        else:
            lab[inner] = _CONTENT[loop.content]


def _paint_arms(p: PatientB, lab: np.ndarray, X: np.ndarray, Y: np.ndarray) -> None:
    """Arms only into air: skin, fat, muscle (not trunk SMA), humerus."""
    for arm in p.arms:
        rr = (X - arm.cx) ** 2 + (Y - arm.cy) ** 2
        free = lab == TissueB.OUTSIDE
        lab[free & (rr <= arm.radius**2)] = TissueB.ARM_SKIN
        lab[free & (rr <= (arm.radius - 1.5) ** 2)] = TissueB.ARM_FAT
        lab[free & (rr <= (arm.radius - arm.fat_mm) ** 2)] = TissueB.ARM_MUSCLE
        bx = arm.cx - np.sign(arm.cx) * arm.radius * 0.1
        lab[free & ((X - bx) ** 2 + (Y - arm.cy) ** 2 <= arm.bone_r**2)] = TissueB.ARM_BONE


def trunk_extent(p: PatientB) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of everything drawn (trunk and arms), in mm."""
    x0, x1, y0, _ = p.outline.extent()
    y1 = p.back_y
    for arm in p.arms:
        x0, x1 = min(x0, arm.cx - arm.radius), max(x1, arm.cx + arm.radius)
        y0, y1 = min(y0, arm.cy - arm.radius), max(y1, arm.cy + arm.radius)
    return x0, x1, y0, y1


def fit_muscle_scale(p: PatientB, resolution_mm: float = 2.0, rounds: int = 5) -> None:
    """Set p.muscle_scale so the trunk muscle area at z = 0 approaches p.target_sma_cm2 (coarse grid)."""
    x0, x1, y0, y1 = trunk_extent(p)
    xs = np.arange(x0 - 6.0, x1 + 6.0, resolution_mm)
    ys = np.arange(y0 - 6.0, y1 + 6.0, resolution_mm)
    for _ in range(rounds):
        area = np.count_nonzero(render(p, 0.0, xs, ys) == TissueB.MUSCLE) * resolution_mm**2 / 100.0
        ratio = p.target_sma_cm2 / max(area, 1.0)
        p.muscle_scale *= ratio ** (1 / 1.7)
        if abs(ratio - 1.0) < 0.01:
            break
