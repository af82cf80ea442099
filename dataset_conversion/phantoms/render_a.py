"""Family A's geometry: deterministic label maps of an Anatomy at any z (no randomness here).

Why: one patient can be rendered at many z (volumes) or on a coarse grid (to tune its muscle area)
and always gives the same tissues; the scanner model turns the labels into HU afterwards.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dataset_conversion.phantoms.anatomy_a import _L3, Anatomy, Tissue
from dataset_conversion.phantoms.common import VERTEBRA_LABELS
from sarco_nn.constants import TISSUE_LABELS


def body_extent(an: Anatomy, zs: list[float] | None = None) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of the skin outline over the given z (mm)."""
    phi = np.linspace(-np.pi, np.pi, 721)
    ext = [np.inf, -np.inf, np.inf, -np.inf]
    for z in zs or [0.0]:
        c = _contours(an, z, phi)
        xb, yb = c["r_body"] * np.sin(phi), c["yc"] - c["r_body"] * np.cos(phi)
        ext = [min(ext[0], xb.min()), max(ext[1], xb.max()), min(ext[2], yb.min()), max(ext[3], yb.max())]
    return float(ext[0]), float(ext[1]), float(ext[2]), float(ext[3])


def _smoothstep(t: np.ndarray | float) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _bump(x: np.ndarray, a: float, b: float, ea: float, eb: float) -> np.ndarray:
    """1 inside [a+ea, b-eb], smooth ramps to 0 at a and b."""
    return _smoothstep((x - a) / ea) * (1.0 - _smoothstep((x - (b - eb)) / eb))


def _harmonics(phi: np.ndarray, coeffs: np.ndarray, first: int = 2) -> np.ndarray:
    out = np.zeros_like(phi)
    for i, (amp, ph) in enumerate(coeffs):
        out += amp * np.cos((first + i) * phi + ph)
    return out


def _contours(an: Anatomy, z: float, phi: np.ndarray) -> dict:
    """Polar outlines about (0, yc) for angle phi (0 = anterior, +pi/2 = patient left)."""
    width, depth = an.profile("width", z), an.profile("depth", z)
    y_post = an.y_post()
    y_ant = an.y_ant * depth
    yc = y_ant + 0.55 * (y_post - y_ant)
    a, b_ant, b_post = an.half_width * width, yc - y_ant, y_post - yc
    sn, cs = np.abs(np.sin(phi)), np.cos(phi)
    ant = cs >= 0
    b = np.where(ant, b_ant, b_post)
    n = np.where(ant, an.n_ant, an.n_post)
    r_f = ((sn / a) ** n + (np.abs(cs) / b) ** n) ** (-1.0 / n)
    r_f = r_f * (1.0 + _harmonics(phi, an.contour_wobble))
    r_f = r_f - an.groove * np.exp(-(((np.pi - np.abs(phi)) / 0.1) ** 2))
    w_ant, w_post = np.maximum(cs, 0) ** 2, np.maximum(-cs, 0) ** 2
    fat = an.fat[0] * w_ant + an.fat[1] * (1 - w_ant - w_post) + an.fat[2] * w_post
    r_body = r_f + fat * (1.0 + _harmonics(phi, an.fat_wobble)) + an.skin
    return {"yc": yc, "r_f": r_f, "r_body": r_body, "a": a, "b_ant": b_ant}


class _Canvas:
    """Label map plus helpers that paint a shape only inside its bounding box (speed)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray):
        self.xs, self.ys = xs, ys
        self.lab = np.zeros((len(ys), len(xs)), np.uint8)
        self.vert = np.zeros((len(ys), len(xs)), np.uint8)

    def window(self, x0: float, x1: float, y0: float, y1: float):
        c0, c1 = np.searchsorted(self.xs, [x0, x1])
        r0, r1 = np.searchsorted(self.ys, [y0, y1])
        if c1 <= c0 or r1 <= r0:
            return None
        sl = (slice(r0, r1), slice(c0, c1))
        return sl, self.xs[c0:c1][None, :], self.ys[r0:r1][:, None]

    def paint(self, shape: tuple[Callable, tuple[float, float, float, float]], label: int,
              into: tuple[int, ...] | None = None, vert: int | None = None) -> np.ndarray | None:
        """Set `label` where the shape holds (and the current label is in `into`); return the mask."""
        fn, bbox = shape
        win = self.window(*bbox)
        if win is None:
            return None
        sl, X, Y = win
        m = fn(X, Y)
        if into is not None:
            m &= np.isin(self.lab[sl], into)
        self.lab[sl][m] = label
        if vert is not None:
            self.vert[sl][m] = vert
        full = np.zeros(self.lab.shape, bool)
        full[sl] = m
        return full


def ellipse(cx: float, cy: float, a: float, b: float, rot: float = 0.0, wob: np.ndarray | None = None):
    """Rotated ellipse (semi-axes a along rotated x, b along rotated y), optionally wobbled outline."""
    a, b = max(a, 1e-3), max(b, 1e-3)
    extra = 1.0 + (np.abs(wob[:, 0]).sum() if wob is not None else 0.0)
    rmax = max(a, b) * extra
    c, s = math.cos(rot), math.sin(rot)

    def fn(X, Y):
        dx, dy = X - cx, Y - cy
        u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
        rho2 = u * u + v * v
        if wob is None:
            return rho2 <= 1.0
        lim = 1.0 + _harmonics(np.arctan2(v, u), wob)
        return rho2 <= lim * lim

    return fn, (cx - rmax, cx + rmax, cy - rmax, cy + rmax)


def capsule(x0: float, y0: float, x1: float, y1: float, width: float):
    """Thick line segment (bone processes, fat planes)."""
    h = width / 2
    dx, dy = x1 - x0, y1 - y0
    ll = max(dx * dx + dy * dy, 1e-9)

    def fn(X, Y):
        t = np.clip(((X - x0) * dx + (Y - y0) * dy) / ll, 0.0, 1.0)
        return (X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2 <= h * h

    return fn, (min(x0, x1) - h, max(x0, x1) + h, min(y0, y1) - h, max(y0, y1) + h)


def render_labels(an: Anatomy, z: float, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue label map and vertebra label map (TotalSegmentator numbers) of the axial plane at z."""
    cv = _Canvas(xs, ys)
    _paint_outline_and_wall(cv, an, z)
    _paint_posterior_muscles(cv, an, z)
    _paint_pelvis(cv, an, z)
    _paint_organs(cv, an, z)
    _paint_bowel(cv, an, z)
    _paint_spine(cv, an, z)
    _paint_ribs(cv, an, z)
    if an.arms:
        _paint_arms(cv, an, z)
    if an.table:
        _paint_table(cv, an, z)
    return cv.lab, cv.vert


def _paint_outline_and_wall(cv: _Canvas, an: Anatomy, z: float) -> None:
    X, Y = cv.xs[None, :], cv.ys[:, None]
    c0 = _contours(an, z, np.zeros(1))
    yc = c0["yc"]
    dy = Y - yc
    phi = np.arctan2(X, -dy)
    r = np.hypot(X, dy)
    c = _contours(an, z, phi)
    r_f, r_b = c["r_f"], c["r_body"]
    lab = cv.lab
    lab[r < r_b] = Tissue.SKIN
    lab[r < r_b - an.skin] = Tissue.SUBCUT_FAT
    lab[r < r_f] = Tissue.VISC_FAT
    # abdominal wall band: rectus (paired, split by the linea alba), obliques + transversus, latissimus
    aphi = np.abs(phi)
    s = an.s * (1.0 + an.wall_asym * np.sign(phi))
    la = an.linea_alba_mm / 2 / float(c0["r_f"][0])
    rect = an.rectus_th * s * _bump(aphi, la, an.rectus_end, 0.04, 0.2)
    obl = an.oblique_th * s * an.profile("oblique", z) * _bump(aphi, an.rectus_end - 0.12, an.oblique_end, 0.15, 0.3)
    lat = an.lat_th * s * _bump(aphi, an.oblique_end - 0.3, an.lat_end, 0.12, 0.15)
    th = np.maximum(np.maximum(rect, obl), lat)
    depth = r_f - r
    band = (depth > 0) & (depth < th) & (th > 1.0)
    lab[band] = Tissue.MUSCLE
    # thin fat planes between external oblique, internal oblique and transversus
    d = depth / np.maximum(th, 1e-3)
    pw = 0.6
    planes = band & (obl > rect) & (th > 7.0) & (
        (np.abs(d - an.planes[0]) * th < pw) | (np.abs(d - an.planes[1]) * th < pw))
    lab[planes] = Tissue.IM_FAT


def _paint_posterior_muscles(cv: _Canvas, an: Anatomy, z: float) -> None:
    k, s, vw, vd = an.k, an.s, an.vert_w, an.vert_d
    inside = (Tissue.VISC_FAT, Tissue.MUSCLE)
    centres: dict[str, tuple[float, float, float, float]] = {}
    pa, pb = an.paraspinal[0] * s * an.profile("paraspinal", z), an.paraspinal[1] * s * an.profile("paraspinal", z)
    # L3 geometry fixes the back: paraspinal size caudally shrinks away from the fascia, not the fascia
    py = vd + 12.0 * k + an.paraspinal[1] * s
    for side, name in ((-1, "paraR"), (1, "paraL")):
        cx = side * (4.0 * k + pa * 0.95)
        cv.paint(ellipse(cx, py + (an.paraspinal[1] * s - pb) * 0.3, pa, pb, 0.0, an.wobbles[name]),
                 Tissue.MUSCLE, inside)
        centres[name] = (cx, py, pa, pb)
        # fat plane between multifidus and erector spinae
        cv.paint(capsule(side * 14 * k, py - pb * 0.6, side * (14 * k + pa * 0.5), py + pb * 0.9, 1.0),
                 Tissue.IM_FAT, (Tissue.MUSCLE,))
    cv.paint(capsule(0.0, vd + 40 * k, 0.0, py + pb + 10, 2.5 * k), Tissue.IM_FAT, (Tissue.MUSCLE,))
    qf = an.profile("ql", z)
    if qf > 0.05:
        qa, qb = an.ql[0] * s * qf, an.ql[1] * s * math.sqrt(qf)
        for side, name in ((-1, "qlR"), (1, "qlL")):
            cx = side * (vw + 24 * k + qa * 0.6)
            cv.paint(ellipse(cx, vd + 2 * k, qa, qb, side * an.ql[2], an.wobbles[name]), Tissue.MUSCLE, inside)
    pf = an.profile("psoas", z)
    u = an.u_of_z(z)
    if pf > 0.03:
        a, b = an.psoas[0] * s * pf, an.psoas[1] * s * math.sqrt(pf)
        shift = max(-u, 0.0) * 9.0 * k  # psoas moves laterally and forwards towards the pelvis
        for side, name in ((-1, "psoasR"), (1, "psoasL")):
            cx = side * (vw * an.profile("vert_size", z) + a * 0.85 + shift)
            cy = -vd * 0.15 - shift * 0.6
            cv.paint(ellipse(cx, cy, a, b, side * an.psoas[2], an.wobbles[name]), Tissue.MUSCLE, inside)
            centres[name] = (cx, cy, a, b)
    for name, ru, rv, rad in an.speckles:  # intramuscular fat (myosteatosis), not muscle
        if name in centres:
            cx, cy, a, b = centres[name]
            cv.paint(ellipse(cx + ru * a, cy + rv * b, rad, rad * 0.7, ru * 3), Tissue.IM_FAT, (Tissue.MUSCLE,))


def _paint_pelvis(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Iliac wings near L5/S1 with iliacus inside and gluteus medius outside them."""
    u = an.u_of_z(z)
    g = float(_smoothstep((-u - 1.5) / 1.0))
    if g <= 0.0:
        return
    rw, th = an.iliac
    for side in (-1.0, 1.0):
        # arc from the sacroiliac joint (posteromedial) sweeping laterally and forwards; it opens
        # anteromedially, where the iliacus lies, with the gluteus medius on its outer side
        cx, cy = side * (an.vert_w + 10 * an.k), -30.0 * an.k
        lo, hi = 0.35, 0.35 + 1.55 * g  # angle from posterior, towards lateral

        def arc(r_in: float, r_out: float, cx=cx, cy=cy, side=side, lo=lo, hi=hi):
            def fn(X, Y):
                dx, dy = (X - cx) * side, Y - cy
                r = np.hypot(dx, dy)
                ang = np.arctan2(dx, dy)  # 0 = posterior, +pi/2 = lateral
                return (r >= r_in) & (r <= r_out) & (ang >= lo) & (ang <= hi)

            return fn, (cx - r_out, cx + r_out, cy - r_out, cy + r_out)

        cv.paint(arc(rw - th / 2 - 22 * an.s * g, rw - th / 2), Tissue.MUSCLE, (Tissue.VISC_FAT,))  # iliacus
        cv.paint(arc(rw + th / 2, rw + th / 2 + 28 * an.s * g), Tissue.MUSCLE, (Tissue.VISC_FAT, Tissue.SUBCUT_FAT))
        cv.paint(arc(rw - th / 2, rw + th / 2), Tissue.CORTICAL)
        cv.paint(arc(rw - th / 2 + 1.5, rw + th / 2 - 1.5), Tissue.TRABECULAR)


def _paint_organs(cv: _Canvas, an: Anatomy, z: float) -> None:
    k, vw, vd = an.k, an.vert_w, an.vert_d
    fat = (Tissue.VISC_FAT,)
    u = an.u_of_z(z)
    for kd in an.kidneys:
        t = (u - kd["u0"]) / kd["half_u"]
        if abs(t) >= 1.0:
            continue
        f = math.sqrt(1 - t * t)
        side = kd["side"]
        cx = side * (vw + 2 * an.psoas[0] * an.s * 0.8 + kd["a"] * 0.7) + kd["dx"]
        cy = vd * 0.3 + kd["dy"]
        cv.paint(ellipse(cx, cy, kd["a"] * f, kd["b"] * f, kd["rot"], kd["wob"]), Tissue.KIDNEY, fat)
        if abs(t) < 0.4:  # renal sinus fat at the hilum
            cv.paint(ellipse(cx - side * kd["a"] * 0.45, cy - 4, kd["a"] * 0.35, kd["b"] * 0.35, kd["rot"]),
                     Tissue.VISC_FAT, (Tissue.KIDNEY,))
    liver = an.liver_tip if u < 0.5 else an.liver_tip + (u - 0.5) * 0.45
    liver *= float(_smoothstep((u + 0.6) / 0.6))
    if liver > 0.02:
        c = _contours(an, z, np.array([0.0]))
        cx = -an.half_width * an.liver_pos[0]
        cy = c["yc"] + an.liver_pos[1] * c["b_ant"]
        cv.paint(ellipse(cx, cy, 120 * liver * k, 90 * liver * k, 0.3, an.wobbles.get("psoasR")), Tissue.LIVER, fat)
    sp = an.profile("spleen", z)
    if sp > 0.02:
        cv.paint(ellipse(an.half_width * 0.6, vd + 5, 45 * sp * k, 30 * sp * k, -0.6), Tissue.SPLEEN, fat)
    # aorta (left-anterior of the spine) with wall calcifications; IVC right-anterior
    ar, acx, acy = an.aorta_r, 0.35 * vw, -(vd + an.aorta_r + 3 * k)
    if u > -1.3:  # bifurcation around L4
        cv.paint(ellipse(acx, acy, ar, ar), Tissue.VESSEL, fat)
        for ang in an.calcium:
            cv.paint(ellipse(acx + ar * 0.9 * math.cos(ang), acy + ar * 0.9 * math.sin(ang), 1.6, 1.0, ang),
                     Tissue.CALCIUM, (Tissue.VESSEL, Tissue.VISC_FAT))
        cv.paint(ellipse(-0.9 * vw, -(vd + 9 * k), 13 * k, 8 * k, 0.2), Tissue.VESSEL, fat)
    else:
        for side in (-1.0, 1.0):
            cv.paint(ellipse(side * 0.8 * vw, -(vd + 8 * k), 0.65 * ar, 0.65 * ar), Tissue.VESSEL, fat)
    for x, y, zz, r in an.mes_vessels:
        if abs(zz - z) < 25:
            cv.paint(ellipse(x, y, r, r), Tissue.VESSEL, fat)


def _paint_bowel(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Bowel loops only into visceral fat: they touch but never replace muscle or organs."""
    for lp in an.bowel:
        t = (z - lp["z"]) / lp["rz"]
        if abs(t) >= 1.0:
            continue
        f = math.sqrt(1 - t * t)
        rx, ry = lp["rx"] * f, lp["ry"] * f
        if min(rx, ry) < 2.0:
            continue
        outer = cv.paint(ellipse(lp["x"], lp["y"], rx, ry, lp["rot"]), Tissue.BOWEL_WALL, (Tissue.VISC_FAT,))
        if outer is None or lp["kind"] == "collapsed":
            continue
        w = lp["wall"]
        fn, bbox = ellipse(lp["x"], lp["y"], rx - w, ry - w, lp["rot"])
        win = cv.window(*bbox)
        if win is None or rx - w < 1.0 or ry - w < 1.0:
            continue
        sl, X, Y = win
        m = fn(X, Y) & outer[sl]
        kind = lp["kind"]
        if kind == "level":  # supine: gas floats anteriorly (low Y) over fluid
            lev = lp["y"] + lp["level"] * ry
            content = np.where(Y < lev, Tissue.GAS, Tissue.FLUID)
            cv.lab[sl][m] = np.broadcast_to(content, m.shape)[m]
        else:
            cv.lab[sl][m] = {"fluid": Tissue.FLUID, "gas": Tissue.GAS, "feces": Tissue.FECES,
                             "contrast": Tissue.ORAL}[kind]


def _paint_spine(cv: _Canvas, an: Anatomy, z: float) -> None:
    k = an.k
    body_lab = next((lb for lb, (top, bot) in an.levels.items() if bot <= z <= top), None)
    vs = an.profile("vert_size", z)
    vw, vd = an.vert_w * vs, an.vert_d * vs
    canal_y = an.vert_d + 9 * k
    cv.paint(ellipse(0.0, canal_y, 11 * k, 8 * k), Tissue.CSF)
    if body_lab is None:
        cv.paint(ellipse(0.0, 0.0, vw * 1.02, vd * 1.02), Tissue.DISC)
    else:
        top, bot = an.levels[body_lab]
        near_plate = min(top - z, z - bot) < 1.2  # end plate: dense bone across the body
        notch = ellipse(0.0, vd + 3.0 * k, 9 * k, 5 * k)
        body = ellipse(0.0, 0.0, vw, vd)

        def body_fn(X, Y, b=body[0], n=notch[0]):
            return b(X, Y) & ~n(X, Y)

        cv.paint((body_fn, body[1]), Tissue.CORTICAL, vert=body_lab)
        if not near_plate:
            inner = ellipse(0.0, -an.cortex * 0.3, vw - an.cortex, vd - an.cortex)
            cv.paint(inner, Tissue.TRABECULAR, (Tissue.CORTICAL,))
        if body_lab == VERTEBRA_LABELS["S1"]:  # sacral ala towards the sacroiliac joints
            for side in (-1.0, 1.0):
                cv.paint(capsule(side * vw * 0.6, vd * 0.4, side * (vw + 30 * k), vd + 8 * k, 16 * k),
                         Tissue.CORTICAL, vert=body_lab)
                cv.paint(capsule(side * vw * 0.6, vd * 0.4, side * (vw + 30 * k), vd + 8 * k, 12 * k),
                         Tissue.TRABECULAR, (Tissue.CORTICAL,), vert=body_lab)
    # posterior elements lag the body caudally by ~40 % of its height (facets, spinous process)
    post_lab = None
    for lb, (top, bot) in an.levels.items():
        lag = 0.4 * (top - bot)
        if bot - lag <= z <= top - lag * 0.5:
            post_lab = lb
    if post_lab is None or post_lab == VERTEBRA_LABELS["S1"]:
        return
    ped_y0, ped_y1 = vd * 0.6, canal_y + 5 * k
    lam_y = canal_y + 10 * k
    parts = [
        (-vw * 0.45, ped_y0, -vw * 0.42, ped_y1, 8 * k), (vw * 0.45, ped_y0, vw * 0.42, ped_y1, 8 * k),
        (-vw * 0.42, ped_y1, 0.0, lam_y, 6 * k), (vw * 0.42, ped_y1, 0.0, lam_y, 6 * k),
        (0.0, lam_y, 0.0, lam_y + 28 * k, 7 * k),
    ]
    rel = (z - an.levels[post_lab][1]) / an.level_height(post_lab)
    if rel > -0.1:  # transverse processes at the upper part of the posterior arch
        tp = (an.vert_w + (24 if post_lab == _L3 else 17) * k)
        parts += [(side * vw * 0.42, canal_y, side * tp, canal_y + 4 * k, 5.5 * k) for side in (-1.0, 1.0)]
    for x0, y0, x1, y1, w in parts:
        cv.paint(capsule(x0, y0, x1, y1, w), Tissue.CORTICAL, vert=post_lab)
    for x0, y0, x1, y1, w in parts:
        cv.paint(capsule(x0, y0, x1, y1, w - 3.0), Tissue.TRABECULAR, (Tissue.CORTICAL,), vert=post_lab)


def _paint_ribs(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Lower ribs in the lateral wall above L2 (the reason muscle area drops cranially)."""
    u = an.u_of_z(z)
    if u < 1.3:
        return
    c = _contours(an, z, np.linspace(-np.pi, np.pi, 8))
    n = 1 + int((u - 1.3) * 2.0)
    for side in (-1.0, 1.0):
        for i in range(n):
            phi = side * (2.3 - 0.35 * i - 0.1 * (u - 1.3))
            cr = _contours(an, z, np.array([phi]))
            rr = float(cr["r_f"][0]) - 7.0 * an.s
            x, y = rr * math.sin(phi), c["yc"] - rr * math.cos(phi)
            cv.paint(ellipse(x, y, 6.0 * an.k, 4.0 * an.k, phi), Tissue.CORTICAL)
            cv.paint(ellipse(x, y, 4.0 * an.k, 2.2 * an.k, phi), Tissue.TRABECULAR, (Tissue.CORTICAL,))


def _paint_arms(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Arms beside the trunk (widened A): skin, fat, arm muscle, humerus, painted only into air.

    Arm muscle has muscle HU but is not trunk skeletal muscle, so it gets its own tissue and never
    enters the mask; painting into air only means an arm touching the trunk leaves the trunk as it was.
    """
    x0, x1, y0, y1 = body_extent(an, [z])
    X, Y = cv.xs[None, :], cv.ys[:, None]
    for arm in an.arms:
        r_out = arm["muscle"] + arm["fat"] + an.skin
        cy = 0.5 * (y0 + y1) + arm["dy"] * (y1 - y0)
        cx = (x1 + arm["gap"] + r_out) if arm["side"] > 0 else (x0 - arm["gap"] - r_out)
        aspect = arm["aspect"]

        def disc(r: float, dx: float = 0.0, cx=cx, cy=cy, aspect=aspect) -> np.ndarray:
            return ellipse(cx + dx, cy, r, r * aspect, arm["rot"])[0](X, Y)

        arm_px = disc(r_out) & (cv.lab == Tissue.AIR)
        cv.lab[arm_px] = Tissue.SKIN
        cv.lab[arm_px & disc(r_out - an.skin)] = Tissue.ARM_FAT
        cv.lab[arm_px & disc(arm["muscle"])] = Tissue.ARM_MUSCLE
        bone_dx = arm["side"] * arm["bone_shift"] * arm["muscle"]
        cv.lab[arm_px & disc(arm["bone"], bone_dx)] = Tissue.CORTICAL
        cv.lab[arm_px & disc(arm["bone"] * 0.6, bone_dx)] = Tissue.TRABECULAR


def _paint_table(cv: _Canvas, an: Anatomy, z: float) -> None:
    """Curved CT table under the back: shell plus foam core, only in air."""
    y_back = body_extent(an, [z])[3]
    y_top = y_back + 2.0

    def shell(X, Y):
        top = y_top - 0.0006 * X**2
        return (Y >= top) & (Y <= top + 25.0) & (np.abs(X) <= 230.0)

    def core(X, Y):
        top = y_top - 0.0006 * X**2
        return (Y >= top + 2.5) & (Y <= top + 22.5) & (np.abs(X) <= 227.0)

    bbox = (-230.0, 230.0, y_top - 35.0, y_top + 41.0)
    cv.paint((shell, bbox), Tissue.TABLE, (Tissue.AIR,))
    cv.paint((core, bbox), Tissue.TABLE_FOAM, (Tissue.TABLE,))


def tune_muscle_scale(an: Anatomy, z: float = 0.0, resolution_mm: float = 1.5, iterations: int = 5) -> None:
    """Set an.s so that the muscle area at z matches an.target_sma_cm2 (coarse grid, fast)."""
    for _ in range(iterations):
        x0, x1, y0, y1 = body_extent(an, [z])
        xs = np.arange(x0 - 5, x1 + 5, resolution_mm)
        ys = np.arange(y0 - 5, y1 + 5, resolution_mm)
        lab, _ = render_labels(an, z, xs, ys)
        area = np.count_nonzero(lab == Tissue.MUSCLE) * resolution_mm**2 / 100.0
        ratio = an.target_sma_cm2 / max(area, 1.0)
        an.s *= ratio ** (1 / 1.6)
        if abs(ratio - 1.0) < 0.005:
            break



def body_composition_labels(an: Anatomy, z: float, lab: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """TISSUE_LABELS mask of a rendered plane: muscle, IMAT, VAT, SAT (everything else 0).

    IMAT is the fat painted inside muscles plus the visceral-fat pixels of the posterior compartment
    (behind the vertebral body, medial to the transverse-process tips): fat between the back muscles is
    inside the muscle fascia, not visceral. Reads the label map only, so the CT stays as it was.
    """
    out = np.zeros(lab.shape, np.uint8)
    out[lab == Tissue.MUSCLE] = TISSUE_LABELS["muscle"]
    out[lab == Tissue.IM_FAT] = TISSUE_LABELS["imat"]
    out[lab == Tissue.SUBCUT_FAT] = TISSUE_LABELS["sat"]
    visceral = lab == Tissue.VISC_FAT
    back = (ys[:, None] > an.vert_d * an.profile("vert_size", z)) & (np.abs(xs[None, :]) < an.vert_w + 24.0 * an.k)
    out[visceral & ~back] = TISSUE_LABELS["vat"]
    out[visceral & back] = TISSUE_LABELS["imat"]
    return out
