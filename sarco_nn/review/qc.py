"""Per-case quality score: which of 5 000 answers a person should look at first.

``qc_score`` is in [0, 1], higher = more suspicious. It combines independent pieces of evidence,
each first turned into a *suspicion* s in [0, 1] by a documented ramp, then weighted (w) and
combined as a noisy-OR::

    qc_score = 1 - prod_i (1 - w_i * s_i)

so that one strong, specific sign (a mask cut by the field of view) is enough to reach review,
while several weak signs add up. Components whose evidence is missing (no CT, no sex, a single
model for fold disagreement) are left out, never guessed.

Components (name: measured value → ramp [start, full] → weight):

- ``fold_disagreement``: max of (1 − mean pairwise Dice of the fold masks) → [0.02, 0.10] and the
  coefficient of variation of the folds' SMAs → [0.01, 0.05]; w 0.9. Needs ≥ 2 folds.
- ``border_entropy``: binary entropy (bits) of the averaged muscle probability, summed over the
  unsure pixels (0.1 < p < 0.9: the blurred borders and doubtful islands) and divided by the
  mask's pixel count: the share of the SMA the model is unsure about (works for one model from
  its own probabilities) → [0.15, 0.40]; w 0.7.
- ``sma_implausible``: |z| of SMA (or SMI when the height is known) against approximate adult L3
  reference values for the sex (pooled when the sex is unknown) → [3, 5] SD; w 0.6.
- ``fov_edge``: length (mm) of muscle touching the image border → [0, 20] mm, and half of the
  body's lateral/anterior contact with the border → [0, 60] mm (a truncated abdomen); w 0.8.
- ``hu_implausible``: distance (HU) of the mean muscle HU outside [−10, 80] → [0, 30]; w 0.6.
- ``fragmentation``: share of the mask in specks (< 1 % of the mask each) → [0.01, 0.05], or
  more than 14 components → [14, 24]; w 0.6.
- ``asymmetry``: |L − R| / (L + R) of muscle about the body's midline → [0.15, 0.35]; w 0.6.
- ``l3_confidence``: the L3 locator's confidence → [0.8, 0.4] (lower = more suspicious); w 0.7.

A case with ``qc_score >= REVIEW_THRESHOLD`` gets ``status = review`` through the reason
``qc_score_high`` plus one reason per component that drove it. These are pure suspicion: they do
not block the sarcopenia flag (``blocks_flag=False``); a person decides — except SMA/SMI 5 SD or
more above the adult mean, or a mean HU far outside muscle's range (see `_withholds_flag`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from sarco_nn.status import Reason, Status, Verdict

__all__ = ["CaseEvidence", "QcResult", "qc_score", "WEIGHTS", "REVIEW_THRESHOLD", "REFERENCE_L3"]

#: Score at or above which a case goes to review.
REVIEW_THRESHOLD = 0.5

#: Weight of each component in the noisy-OR (see the module docstring for what each measures).
WEIGHTS: dict[str, float] = {
    "fold_disagreement": 0.9, "border_entropy": 0.7, "sma_implausible": 0.6, "fov_edge": 0.8,
    "hu_implausible": 0.6, "fragmentation": 0.6, "asymmetry": 0.6, "l3_confidence": 0.7,
}

#: Approximate adult L3 reference (mean, SD) per sex: SMA in cm², SMI in cm²/m² (rounded from
#: published healthy-adult cohorts; only used to spot values many SDs away, never to diagnose).
REFERENCE_L3: dict[str | None, dict[str, tuple[float, float]]] = {
    "M": {"sma": (170.0, 30.0), "smi": (54.0, 8.0)},
    "F": {"sma": (115.0, 22.0), "smi": (42.0, 7.0)},
    None: {"sma": (145.0, 40.0), "smi": (48.0, 10.0)},
}

#: Mean muscle HU outside this band is implausible for skeletal muscle (myosteatosis and contrast
#: included).
PLAUSIBLE_MUSCLE_HU: tuple[float, float] = (-10.0, 80.0)

#: Probabilities in this open interval count as unsure for ``border_entropy``.
UNSURE_P: tuple[float, float] = (0.1, 0.9)

#: HU above which a pixel belongs to the body (air and most of the table are below).
BODY_HU = -500.0

_MESSAGES: dict[str, str] = {
    "fold_disagreement": "the cross-validation folds disagree on this mask ({detail}); check the overlay",
    "border_entropy": "the model is unsure about {detail} of the muscle area; check the overlay's borders",
    "sma_implausible": "{detail}, far outside the adult range; check the mask and the L3 level",
    "fov_edge": "{detail}: the field of view may cut the muscle, the SMA may be too low",
    "hu_implausible": "mean muscle HU {detail} is implausible for muscle; check contrast phase and mask",
    "fragmentation": "the mask is fragmented ({detail}); check for stray islands",
    "asymmetry": "left/right muscle area differs by {detail}; check for a missed or extra region",
    "l3_confidence": "L3 located with low confidence ({detail}); check the level on the thumbnail",
}


@dataclass(frozen=True)
class CaseEvidence:
    """What one case offers to the quality score.

    mask: (y, x) final muscle mask (non-zero = muscle) on the slice grid.
    spacing_yx_mm: in-plane (row, column) spacing in mm.
    ct_hu: (y, x) CT slice in HU, or None.
    fold_probabilities: (F, y, x) muscle probability of each fold (F = 1 for a single model), or None.
    sma_cm2 / smi_cm2_m2 / muscle_hu_mean: the case's numbers (None when not computed).
    sex: "M"/"F"/None; l3_confidence: the locator's confidence, None when the slice was given.
    """

    mask: np.ndarray
    spacing_yx_mm: tuple[float, float]
    ct_hu: np.ndarray | None = None
    fold_probabilities: np.ndarray | None = None
    sma_cm2: float | None = None
    smi_cm2_m2: float | None = None
    muscle_hu_mean: float | None = None
    sex: str | None = None
    l3_confidence: float | None = None


@dataclass
class QcResult:
    """The score, each component's suspicion in [0, 1], the raw values, and the reasons to add."""

    score: float
    components: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)

    def apply(self, verdict: Verdict) -> Verdict:
        """Put the score and its reasons on a case's verdict (the results.csv status cells)."""
        verdict.qc_score = self.score
        verdict.extend(self.reasons)
        return verdict


def _withholds_flag(component: str, suspicion: float, values: dict) -> bool:
    """Suspicion alone never withholds the flag, except where the numbers cannot be muscle at all:
    SMA/SMI 5 SD or more ABOVE the adult mean (never below: low muscle is the disease itself), or a
    mean HU fully outside muscle's range (fat or air counted as muscle)."""
    if component == "sma_implausible":
        return values.get("plausibility_z", 0.0) >= 5.0
    return component == "hu_implausible" and suspicion >= 1.0


def _ramp(value: float, start: float, full: float) -> float:
    """0 at `start`, 1 at `full` (either direction), linear between, clipped."""
    if full == start:
        return float(value >= full)
    return float(np.clip((value - start) / (full - start), 0.0, 1.0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def _fold_disagreement(probs: np.ndarray, spacing: tuple[float, float]) -> tuple[float, dict, str] | None:
    if probs.shape[0] < 2:
        return None
    masks = probs > 0.5
    mean_dice = float(np.mean([dice(a, b) for a, b in combinations(masks, 2)]))
    smas = masks.reshape(len(masks), -1).sum(1) * spacing[0] * spacing[1] / 100.0
    cv = float(np.std(smas) / np.mean(smas)) if np.mean(smas) > 0 else 1.0
    s = max(_ramp(1 - mean_dice, 0.02, 0.10), _ramp(cv, 0.01, 0.05))
    return s, {"fold_mean_dice": mean_dice, "fold_sma_cv": cv}, f"mean Dice {mean_dice:.2f}, SMA CV {cv:.1%}"


def _border_entropy(probs: np.ndarray, mask: np.ndarray) -> tuple[float, dict, str]:
    p = np.clip(probs.mean(0), 1e-6, 1 - 1e-6)
    entropy_bits = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    unsure = (p > UNSURE_P[0]) & (p < UNSURE_P[1])  # faint background noise must not add up over the image
    ratio = float(entropy_bits[unsure].sum() / max(int((mask > 0).sum()), 1))
    return _ramp(ratio, 0.15, 0.40), {"entropy_area_ratio": ratio}, f"{ratio:.0%}"


def _sma_implausible(ev: CaseEvidence) -> tuple[float, dict, str] | None:
    ref = REFERENCE_L3.get(ev.sex if ev.sex in ("M", "F") else None)
    if ev.smi_cm2_m2 is not None:
        (mean, sd), value, name, unit = ref["smi"], ev.smi_cm2_m2, "SMI", "cm²/m²"
    elif ev.sma_cm2 is not None:
        (mean, sd), value, name, unit = ref["sma"], ev.sma_cm2, "SMA", "cm²"
    else:
        return None
    z = (value - mean) / sd
    return _ramp(abs(z), 3.0, 5.0), {"plausibility_z": z}, f"{name} {value:.1f} {unit} is {z:+.1f} SD"


def _edge_contact_mm(region: np.ndarray, spacing: tuple[float, float], sides: str = "tblr") -> float:
    sy, sx = spacing
    length = 0.0
    if "t" in sides:
        length += region[0].sum() * sx
    if "b" in sides:
        length += region[-1].sum() * sx
    if "l" in sides:
        length += region[:, 0].sum() * sy
    if "r" in sides:
        length += region[:, -1].sum() * sy
    return float(length)


def _fov_edge(ev: CaseEvidence, mask: np.ndarray) -> tuple[float, dict, str]:
    muscle_mm = _edge_contact_mm(mask, ev.spacing_yx_mm)
    body_mm = 0.0
    if ev.ct_hu is not None:  # the posterior edge (bottom row) is skipped: the table lies there
        body_mm = _edge_contact_mm(ev.ct_hu > BODY_HU, ev.spacing_yx_mm, sides="tlr")
    s = max(_ramp(muscle_mm, 0.0, 20.0), 0.5 * _ramp(body_mm, 0.0, 60.0))
    detail = (f"muscle touches the image border over {muscle_mm:.0f} mm" if muscle_mm > 0
              else f"the body touches the image border over {body_mm:.0f} mm")
    return s, {"edge_muscle_mm": muscle_mm, "edge_body_mm": body_mm}, detail


def _hu_implausible(ev: CaseEvidence, mask: np.ndarray) -> tuple[float, dict, str] | None:
    hu = ev.muscle_hu_mean
    if hu is None and ev.ct_hu is not None and mask.any():
        hu = float(ev.ct_hu[mask].mean())
    if hu is None:
        return None
    lo, hi = PLAUSIBLE_MUSCLE_HU
    outside = max(lo - hu, hu - hi, 0.0)
    return _ramp(outside, 0.0, 30.0), {"muscle_hu": hu}, f"{hu:.0f}"


def _fragmentation(mask: np.ndarray) -> tuple[float, dict, str]:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, int)
    total = max(int(sizes.sum()), 1)
    speck_share = float(sizes[sizes < 0.01 * total].sum() / total)
    s = max(_ramp(speck_share, 0.01, 0.05), _ramp(float(n), 14, 24))
    return s, {"components": float(n), "speck_share": speck_share}, f"{n} pieces, {speck_share:.1%} in specks"


def _asymmetry(ev: CaseEvidence, mask: np.ndarray) -> tuple[float, dict, str] | None:
    body = ev.ct_hu > BODY_HU if ev.ct_hu is not None else mask
    if not body.any() or not mask.any():
        return None
    midline = float(np.nonzero(body)[1].mean())
    cols = np.nonzero(mask)[1]
    left, right = float((cols < midline).sum()), float((cols >= midline).sum())
    asym = abs(left - right) / (left + right)
    return _ramp(asym, 0.15, 0.35), {"asymmetry": asym}, f"{asym:.0%}"


def _l3(ev: CaseEvidence) -> tuple[float, dict, str] | None:
    if ev.l3_confidence is None:
        return None
    c = float(ev.l3_confidence)
    return _ramp(c, 0.8, 0.4), {"l3_confidence": c}, f"{c:.2f}"


def qc_score(ev: CaseEvidence, threshold: float = REVIEW_THRESHOLD) -> QcResult:
    """Score one case (see the module docstring for every component and its weight)."""
    mask = np.asarray(ev.mask) > 0
    probs = None
    if ev.fold_probabilities is not None:
        probs = np.asarray(ev.fold_probabilities, dtype=np.float32)
        probs = probs[None] if probs.ndim == 2 else probs
        if probs.shape[1:] != mask.shape:
            raise ValueError(f"fold probabilities {probs.shape[1:]} do not match the mask {mask.shape}")
    found: dict[str, tuple[float, dict, str] | None] = {
        "fold_disagreement": _fold_disagreement(probs, ev.spacing_yx_mm) if probs is not None else None,
        "border_entropy": _border_entropy(probs, mask) if probs is not None else None,
        "sma_implausible": _sma_implausible(ev),
        "fov_edge": _fov_edge(ev, mask),
        "hu_implausible": _hu_implausible(ev, mask),
        "fragmentation": _fragmentation(mask),
        "asymmetry": _asymmetry(ev, mask),
        "l3_confidence": _l3(ev),
    }
    components, values, details = {}, {}, {}
    keep = 1.0
    for name, item in found.items():
        if item is None:
            continue
        s, vals, detail = item
        components[name], details[name] = s, detail
        values.update(vals)
        keep *= 1.0 - WEIGHTS[name] * s
    score = float(1.0 - keep)
    reasons: list[Reason] = []
    if score >= threshold:
        drivers = sorted((n for n in components if WEIGHTS[n] * components[n] >= 0.2),
                         key=lambda n: -WEIGHTS[n] * components[n])
        names = ", ".join(drivers) or "several weak signs"
        reasons.append(Reason("qc_score_high", f"suspicion score {score:.2f} >= {threshold:.2f} (higher = more "
                                               f"suspicious; {names}); look at the overlay before using the numbers",
                              Status.REVIEW, blocks_flag=False))
        reasons.extend(Reason(f"qc_{n}", _MESSAGES[n].format(detail=details[n]), Status.REVIEW,
                              blocks_flag=_withholds_flag(n, components[n], values))
                       for n in drivers)
    return QcResult(score, components, values, reasons)
