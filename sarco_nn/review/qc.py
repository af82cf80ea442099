"""Per-case quality score: which of 5 000 answers a person should look at first.

Every piece of evidence is turned into an *estimate of the relative SMA error it implies* (a fraction
of the SMA: 0.05 = 5 %), the estimates of independent sources are added (below), and the score is that
sum E against the error that counts as large (REFERENCE_ERROR, 5 %)::

    qc_score = E / (E + REFERENCE_ERROR)        in [0, 1), higher = more suspicious

so ``qc_score >= 0.5`` (REVIEW_THRESHOLD) means "an SMA error of 5 % or more is expected", and the
score keeps ranking where evidence piles up (E = 20 % → 0.80, 50 % → 0.91, 200 % → 0.98) instead of
sitting at 0.99 for a whole site, as clipped ramps combined by a noisy-OR did. Adding is the triangle
inequality: independent error sources can at most add. Components whose evidence is missing (no CT,
no sex, a single model for fold disagreement) are left out, never guessed.

Components (name: raw value → estimated error):

- ``fold_disagreement``: the larger of the coefficient of variation of the members' SMAs (their SD)
  and half the share of the mask the members dispute, 1 − mean pairwise Dice (a disputed pixel is
  wrong for about half of them: DISPUTED_PIXEL_ERROR). Needs ≥ 2 folds.
- ``border_entropy``: binary entropy (bits) of the averaged probability summed over the unsure pixels
  (0.1 < p < 0.9) per mask pixel; a correct mask's soft edge already holds ENTROPY_SHARP_EDGE (0.25:
  the clean in-distribution cases of the first half of bench/qc_bench.py's held-out set), each bit
  beyond is half a pixel of expected error (ENTROPY_ERROR_PER_BIT). Works for one model.
- ``fov_edge``: muscle lost outside the image, over the mask's area: a patient outline cut by the
  image border over L mm hides the abdominal-wall muscle behind it, WALL_THICKNESS_MM (10 mm) × L;
  muscle cut over L mm hides at least a half-disc on that chord, π/8 × L²; the larger counts. The
  patient is the largest region above BODY_HU after an opening of TABLE_OPEN_MM (`ct_checks.body_region`),
  so the table and sheets that reach the image's sides are not a cut body; the bottom row (table) is
  not counted.
- ``sma_implausible``: SMA (SMI when the height is known) z against approximate adult L3 references for
  the sex; each SD beyond PLAUSIBLE_Z (2) is one REFERENCE_ERROR.
- ``hu_implausible``: mean muscle HU outside [−10, 80]; each HU_PER_REFERENCE_ERROR (15 HU) beyond is
  one REFERENCE_ERROR (fat or contrast-filled organs counted as muscle). The upper bound rises by as
  much as the patient's fat is brighter than −100 HU (`muscle_hu_band`): contrast on every soft
  tissue brightens muscle without making its area wrong.
- ``fragmentation``: the share of the mask in specks (islands < 1 % of it: area in doubt), plus one
  REFERENCE_ERROR per MAX_PLAUSIBLE_PIECES pieces beyond the 14 an L3 slice's muscle groups make.
- ``asymmetry``: |L − R| / (L + R) about the body's midline beyond NATURAL_ASYMMETRY (0.10): losing a
  share f of one side gives |L − R| / (L + R) ≈ f / 2, which is the SMA error.
- ``l3_confidence``: the L3 locator's confidence c below L3_SURE (0.8): (0.8 − c) / 0.8 × 15 % (one
  vertebra off changes the SMA by 10–20 %).

- ``level_cue``: dense bone in the lateral body wall (`wall_bone_values`, CT only): at L3 there are
  normally no ribs in the wall (the lowest ribs end at L1-L2) and no iliac bone (the iliac crest is at
  about L4, the wings below), so such bone says the slice is probably not at L3. Bone is pixels above
  LEVEL_BONE_HU (300: above enhanced kidneys and muscle in a contrast phase and above most arterial
  blood, below the 350-550 HU a rib reaches even at 3-mm voxels), holes filled (marrow inside a
  cortex), opened with a LEVEL_SPECK_MM (1 mm) disc (noise specks of a noisy image go), in pieces of at
  least LEVEL_MIN_MM2 (30 mm²) that lie LEVEL_SPINE_MM (60 mm) or more from the midline (beyond the L3
  transverse processes), reach the lateral wall, the outer LEVEL_WALL_SHARE (40 %) of the body's
  half-width along their rows (subcutaneous fat, flank muscles and the ribs or crest inside them: ribs
  lie within 0.27 of it, iliac crests within 0.38, real and phantom; not the kidneys, aorta or a stone
  deep inside, nor the bowel under the anterior wall) and are at most 2 × LEVEL_HALF_MM thick (a rib or a
  wing, not a contrast-filled bowel loop) — inside the trunk, arms cut off (LEVEL_ARM_MM). Their area A gives WRONG_LEVEL_ERROR × min(1, A / LEVEL_FULL_MM2): two rib
  cross-sections or a piece of iliac crest (100 mm²) are as sure as a failed locator. Oral contrast
  layering in the colon on the flanks can look the same; real T12-L1 and lower L4-L5 slices show it,
  real L3 slices do not (tests/test_review_qc.py).
- Measured, not scored (``values``, for ``bench/qc_bench.py --rescore``; only when asked, ``image_values``:
  `sarco predict` does not pay for them): ``overcall_share``, the share of the
  mask's pixels that are not of muscle HU in the image (MUSCLE_HU_GATE on the CT smoothed by IMAGE_SMOOTH_MM,
  so 100 HU of noise falls to about 15; the gate moved with the patient's fat, so contrast is not a wrong
  mask), and ``undercall_share``, muscle-HU tissue in a UNDERCALL_RING_MM ring outside the mask, inside its
  grown convex hull, connected to it. Scored as 4 x the over-call share beyond the 5 % a correct mask's
  blurred edge holds, it moved the proxy bench's AUROC only inside its interval (0.70 -> 0.72) and sent
  92 % of the cases to review (family-A clean cases 18 -> 65 %): not worth a reviewer's time. Under-call
  ranked nothing (organs of muscle HU lie beside the inner border of a correct mask too). README, #19.
- ``outside_trunk``: the share of the counted muscle outside the trunk (the largest body region,
  `ct_checks.body_region`, as the trunk rule `sarco_nn.trunk` takes it): arm muscle counted as SMA.
  It is the over-count itself; 0 when the trunk rule already left it out.

The estimate E adds the components, except those that measure one error source several ways: the
model's own doubt (MODEL_DOUBT: fold disagreement, border entropy, fragmentation) and the level's
(LEVEL_DOUBT: the locator's confidence, the wall-bone cue); of each group only the largest counts.
Each component is still reported (``components``) and named as a reason when it holds DRIVER_SHARE of E.

`measure` turns a case's evidence into the raw values, `score_values` the raw values into the score
(so bench/qc_bench.py --rescore can re-score stored values: the same numbers predict writes). A case
at or above REVIEW_THRESHOLD gets ``status = review`` through ``qc_score_high`` plus one reason per
component holding at least DRIVER_SHARE of E. These are pure suspicion: they do not block the
sarcopenia flag (``blocks_flag=False``); a person decides — except SMA/SMI 5 SD or more above the
adult mean, or a mean HU far outside muscle's range (see `_withholds_flag`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from sarco_nn.status import Reason, Status, Verdict, shown_against

__all__ = ["CaseEvidence", "QcResult", "qc_score", "measure", "score_values", "estimated_error", "REVIEW_THRESHOLD",
           "REFERENCE_ERROR", "REFERENCE_L3", "MODEL_DOUBT", "LEVEL_DOUBT", "wall_bone_values"]

#: What the raw values from the mask and probabilities (`measure`) are; bump when one is added or changes
#: meaning (bench/qc_bench.py's signature). The CT-only values (`ct_values`) are refreshed on re-scoring.
MEASURE_VERSION = 3  # 2: outside_trunk_share added (wall_bone_mm2 is a CT-only value: no bump); 3: image beside the mask

#: The relative SMA error that counts as large (bench/qc_bench.py's line): the score is 0.5 there.
REFERENCE_ERROR = 0.05

#: Score at or above which a case goes to review: an estimated SMA error of REFERENCE_ERROR or more.
REVIEW_THRESHOLD = 0.5

#: border_entropy: share of the mask in soft-edge entropy that a correct mask's edge already has
#: (a one-to-two-pixel transition band; 0.25 = the clean family-A cases of the first half of
#: bench/qc_bench.py's held-out set, p50-p90 0.23-0.29), and the SMA error per bit beyond it (half a pixel).
ENTROPY_SHARP_EDGE = 0.25
ENTROPY_ERROR_PER_BIT = 0.5

#: fold_disagreement: the share of a disputed pixel's area that is error (it is wrong for about half the members).
DISPUTED_PIXEL_ERROR = 0.5

#: sma_implausible: |z| up to which an SMA/SMI is a plausible adult value; each SD beyond adds REFERENCE_ERROR.
PLAUSIBLE_Z = 2.0

#: fov_edge: thickness (mm) of the abdominal-wall muscle behind a cut body outline (obliques and
#: transversus at L3, about 10 mm in adults): the muscle lost per mm of outline on the border.
WALL_THICKNESS_MM = 10.0

#: hu_implausible: HU beyond PLAUSIBLE_MUSCLE_HU per REFERENCE_ERROR of error; HU_FAR_OUTSIDE or more withholds the flag.
HU_PER_REFERENCE_ERROR = 15.0
HU_FAR_OUTSIDE = 30.0

#: fragmentation: an island under SPECK_SHARE of the mask is a speck; more pieces than MAX_PLAUSIBLE_PIECES
#: (the L3 muscle groups, each possibly split) is odd.
SPECK_SHARE = 0.01
MAX_PLAUSIBLE_PIECES = 14

#: asymmetry: |L - R| / (L + R) a healthy L3 slice shows at most; beyond it, the excess is area in doubt.
NATURAL_ASYMMETRY = 0.10

#: l3_confidence: confidence at or above which the level is taken as right; at 0 the error is WRONG_LEVEL_ERROR
#: (one vertebra off changes the SMA by about 10-20 %).
L3_SURE = 0.8
WRONG_LEVEL_ERROR = 0.15

#: The components that are the model's own doubt about its mask, measured three ways (members that
#: disagree, soft borders, specks): one source of error, so only the largest of them enters the estimate
#: (adding them counted one doubt up to three times: bench/qc_bench.py's site-B cases, uncertain and
#: often right, outranked cut and wrong-level cases).
MODEL_DOUBT: tuple[str, ...] = ("fold_disagreement", "border_entropy", "fragmentation")

#: The components that say the slice is not at L3, from the locator and from the image: one error source
#: (the level), so only the larger enters the estimate.
LEVEL_DOUBT: tuple[str, ...] = ("l3_confidence", "level_cue")

#: level_cue (`wall_bone_values`; the module docstring says why each): bone above LEVEL_BONE_HU, specks
#: under a LEVEL_SPECK_MM disc removed, pieces of LEVEL_MIN_MM2 or more, LEVEL_SPINE_MM or more from the
#: midline, reaching the outer LEVEL_WALL_SHARE of their rows' half-width, at most 2 x LEVEL_HALF_MM thick,
#: in the trunk after cutting off what hangs on by less than 2 x LEVEL_ARM_MM (arms, mattress);
#: LEVEL_FULL_MM2 of such bone counts the whole WRONG_LEVEL_ERROR.
LEVEL_BONE_HU = 300.0
LEVEL_SPECK_MM = 1.0
LEVEL_MIN_MM2 = 30.0
LEVEL_SPINE_MM = 60.0
LEVEL_WALL_SHARE = 0.4
LEVEL_HALF_MM = 8.0
LEVEL_ARM_MM = 20.0
LEVEL_FULL_MM2 = 100.0

#: A component is named as a reason when it holds at least this share of the estimated error.
DRIVER_SHARE = 0.2

#: Opening radius (mm) that detaches the table and sheets from the patient (`ct_checks.body_region`).
TABLE_OPEN_MM = 5.0

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

#: hu_implausible is judged against the patient's own fat: the median HU of the body's pixels in FAT_WINDOW_HU
#: (`fat_hu`), against TYPICAL_FAT_HU. Where the whole soft tissue is brighter (fat included: contrast, an
#: offset scale) muscle may be brighter by as much before it is implausible; the lower bound never moves
#: (fat or air counted as muscle lowers the mean whatever the phase).
TYPICAL_FAT_HU = -100.0
FAT_WINDOW_HU: tuple[float, float] = (-250.0, 0.0)

#: The image beside the mask (`_image_values`): the CT is smoothed by a Gaussian of IMAGE_SMOOTH_MM (a
#: noisy scan's 100 HU SD falls to about 15 HU) before its pixels are called muscle HU (MUSCLE_HU_GATE,
#: moved by as much as the patient's fat is brighter than TYPICAL_FAT_HU: contrast); under-call looks in a
#: ring of UNDERCALL_RING_MM outside the mask, inside the mask's convex hull grown by as much.
IMAGE_SMOOTH_MM = 1.5
UNDERCALL_RING_MM = 3.0

#: Probabilities in this open interval count as unsure for ``border_entropy``.
UNSURE_P: tuple[float, float] = (0.1, 0.9)

from sarco_nn.constants import BODY_HU, MUSCLE_HU_GATE  # noqa: E402  (the one body bound, muscle gate)
from sarco_nn.ct_checks import body_region, disc_opening  # noqa: E402  (the one outline, opening)

_MESSAGES: dict[str, str] = {
    "fold_disagreement": "the cross-validation folds disagree on this mask ({detail}); check the overlay",
    "border_entropy": "the model is unsure along the muscle borders ({detail}); check the overlay's borders",
    "sma_implausible": "{detail}, far outside the adult range; check the mask and the L3 level",
    "fov_edge": "{detail}: the field of view may cut the muscle, the SMA may be too low",
    "hu_implausible": "mean muscle HU {detail} is implausible for muscle; check contrast phase and mask",
    "fragmentation": "the mask is fragmented ({detail}); check for stray islands",
    "asymmetry": "left/right muscle area differs by {detail}; check for a missed or extra region",
    "l3_confidence": "L3 located with low confidence ({detail}); check the level on the thumbnail",
    "level_cue": "{detail} of bone in the lateral body wall (ribs or iliac wing, normally absent at L3): the "
                 "slice may not be at L3; check the level",
    "outside_trunk": "{detail} of the counted muscle lies outside the trunk (an arm?); the trunk rule leaves it out",
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
    """The score, each component's estimated relative SMA error, the raw values, the reasons to add,
    and the estimated error (`estimated_error` of the components) the score is a function of."""

    score: float
    components: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)
    expected_error: float = 0.0

    def apply(self, verdict: Verdict) -> Verdict:
        """Put the score and its reasons on a case's verdict (the results.csv status cells)."""
        verdict.qc_score = self.score
        verdict.extend(self.reasons)
        return verdict


def muscle_hu_band(values: dict) -> tuple[float, float]:
    """PLAUSIBLE_MUSCLE_HU, its upper bound raised by how much brighter than TYPICAL_FAT_HU the
    patient's fat is (`fat_hu`; contrast on every soft tissue is not a wrong mask)."""
    lo, hi = PLAUSIBLE_MUSCLE_HU
    return lo, hi + max(0.0, values.get("fat_hu", TYPICAL_FAT_HU) - TYPICAL_FAT_HU)


def _withholds_flag(component: str, values: dict) -> bool:
    """Suspicion alone never withholds the flag, except where the numbers cannot be muscle at all:
    SMA/SMI 5 SD or more ABOVE the adult mean (never below: low muscle is the disease itself), or a
    mean HU fully outside muscle's range (fat or air counted as muscle)."""
    if component == "sma_implausible":
        return values.get("plausibility_z", 0.0) >= 5.0
    if component == "hu_implausible" and "muscle_hu" in values:
        lo, hi = muscle_hu_band(values)
        return max(lo - values["muscle_hu"], values["muscle_hu"] - hi) >= HU_FAR_OUTSIDE
    return False

# ---------------------------------------------------------------- measurement: CaseEvidence -> raw values


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def _fold_values(probs: np.ndarray, spacing: tuple[float, float]) -> dict[str, float]:
    """Agreement of the members' masks and of their SMAs (needs >= 2 members)."""
    if probs.shape[0] < 2:
        return {}
    masks = probs > 0.5
    mean_dice = float(np.mean([dice(a, b) for a, b in combinations(masks, 2)]))
    smas = masks.reshape(len(masks), -1).sum(1) * spacing[0] * spacing[1] / 100.0
    mean = float(np.mean(smas))
    cv = float(np.std(smas) / mean) if mean > 0 else 1.0
    return {"fold_mean_dice": mean_dice, "fold_sma_cv": cv}


def _probability_values(probs: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """entropy_area_ratio: binary entropy (bits) of the averaged muscle probability summed over the
    unsure pixels (UNSURE_P: blurred borders, doubtful islands) / the mask's pixel count."""
    p = np.clip(probs.mean(0), 1e-6, 1 - 1e-6)
    entropy_bits = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    unsure = (p > UNSURE_P[0]) & (p < UNSURE_P[1])  # faint background noise must not add up over the image
    return {"entropy_area_ratio": float(entropy_bits[unsure].sum() / max(int(mask.sum()), 1))}


def _plausibility_values(ev: CaseEvidence) -> dict[str, float]:
    ref = REFERENCE_L3.get(ev.sex if ev.sex in ("M", "F") else None)
    if ev.smi_cm2_m2 is not None:
        (mean, sd), value = ref["smi"], ev.smi_cm2_m2
    elif ev.sma_cm2 is not None:
        (mean, sd), value = ref["sma"], ev.sma_cm2
    else:
        return {}
    return {"plausibility_z": (value - mean) / sd}


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


def _trunk_core(body: np.ndarray, spacing: tuple[float, float], radius_mm: float) -> np.ndarray:
    """The body without what hangs on by less than 2 x radius_mm (arms touching it, a thick mattress): an
    opening by distance transforms (cheap for a large disc), the largest piece grown back inside the body."""
    from scipy import ndimage

    core = ndimage.distance_transform_edt(body, sampling=spacing) > radius_mm
    labels, n = ndimage.label(core)
    if n == 0:
        return body
    core = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return body & (ndimage.distance_transform_edt(~core, sampling=spacing) <= radius_mm + max(spacing))


def wall_bone_values(ct_hu: np.ndarray, spacing: tuple[float, float],
                     outline: np.ndarray | None = None) -> dict[str, float]:
    """wall_bone_mm2: the area of dense bone in the lateral body wall (ribs, iliac wing; the module
    docstring's ``level_cue`` says which bone counts and why), and wall_bone_pieces, how many pieces."""
    from scipy import ndimage

    ct = np.asarray(ct_hu, dtype=np.float32)
    body = body_region(ct, spacing, open_mm=TABLE_OPEN_MM) if outline is None else outline
    if not body.any():
        return {"wall_bone_mm2": 0.0, "wall_bone_pieces": 0.0}
    body = _trunk_core(body, spacing, LEVEL_ARM_MM)
    bone = ndimage.binary_fill_holes((ct > LEVEL_BONE_HU) & body)
    radius = np.round(LEVEL_SPECK_MM / np.asarray(spacing, float)).astype(int)
    if radius.min() > 0:  # pixels coarser than 2 mm: a speck is a pixel, the size floor removes it
        bone = disc_opening(bone, (int(radius[0]), int(radius[1])))
    labels, _ = ndimage.label(bone, structure=np.ones((3, 3), bool))
    columns = np.arange(body.shape[1])
    left = np.where(body, columns, body.shape[1]).min(axis=1)  # the body's extent on each row
    right = np.where(body, columns, -1).max(axis=1)
    half_width = np.maximum((right - left + 1) / 2.0, 1.0)
    midline = float(np.nonzero(body)[1].mean())
    pixel_mm2 = float(spacing[0] * spacing[1])
    area, pieces = 0.0, 0
    for k, box in enumerate(ndimage.find_objects(labels), 1):
        piece = labels[box] == k
        piece_mm2 = float(piece.sum()) * pixel_mm2
        if piece_mm2 < LEVEL_MIN_MM2:
            continue
        rows, cols = np.nonzero(piece)
        rows, cols = rows + box[0].start, cols + box[1].start
        offset = float(cols.mean()) - midline
        inward = (right[rows] - cols) if offset > 0 else (cols - left[rows])  # from the lateral outline, per row
        in_wall = float((inward / half_width[rows]).min()) <= LEVEL_WALL_SHARE
        half_mm = float(ndimage.distance_transform_edt(np.pad(piece, 1), sampling=spacing).max())
        if abs(offset) * spacing[1] >= LEVEL_SPINE_MM and in_wall and half_mm <= LEVEL_HALF_MM:
            area, pieces = area + piece_mm2, pieces + 1
    return {"wall_bone_mm2": area, "wall_bone_pieces": float(pieces)}


def ct_values(ct_hu: np.ndarray, spacing: tuple[float, float]) -> dict[str, float]:
    """The raw values that need only the CT (no model): edge_body_mm, the length of the patient's
    outline on the image's top, left and right borders (the bottom row is skipped: the table lies there),
    fat_hu, the median HU of the outline's pixels in FAT_WINDOW_HU (the patient's fat), and the lateral
    wall's bone (`wall_bone_values`, the level cue).

    Separate so bench/qc_bench.py --rescore can refresh them from the regenerated image."""
    outline = body_region(ct_hu, spacing, open_mm=TABLE_OPEN_MM)
    values = {"edge_body_mm": _edge_contact_mm(outline, spacing, sides="tlr")}
    body = np.asarray(ct_hu)[outline]
    fat = body[(body > FAT_WINDOW_HU[0]) & (body < FAT_WINDOW_HU[1])]
    if fat.size:
        values["fat_hu"] = float(np.median(fat))
    values.update(wall_bone_values(ct_hu, spacing, outline))
    return values


def _fov_values(ev: CaseEvidence, mask: np.ndarray) -> dict[str, float]:
    """Contact (mm) of the muscle and of the patient's outline with the image border, and the mask's area."""
    out = {"edge_muscle_mm": _edge_contact_mm(mask, ev.spacing_yx_mm),
           "mask_area_cm2": float(mask.sum()) * ev.spacing_yx_mm[0] * ev.spacing_yx_mm[1] / 100.0}
    if ev.ct_hu is not None:
        out.update(ct_values(ev.ct_hu, ev.spacing_yx_mm))
    return out


def _trunk_values(ev: CaseEvidence, mask: np.ndarray) -> dict[str, float]:
    """outside_trunk_share: the share of the mask outside the trunk region the trunk rule keeps."""
    if ev.ct_hu is None or not mask.any():
        return {}
    trunk = body_region(ev.ct_hu)
    return {"outside_trunk_share": float((mask & ~trunk).sum() / mask.sum())}


def _hu_values(ev: CaseEvidence, mask: np.ndarray) -> dict[str, float]:
    hu = ev.muscle_hu_mean
    if hu is None and ev.ct_hu is not None and mask.any():
        hu = float(ev.ct_hu[mask].mean())
    return {} if hu is None else {"muscle_hu": float(hu)}


def _fragment_values(mask: np.ndarray) -> dict[str, float]:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, int)
    total = max(int(sizes.sum()), 1)
    return {"components": float(n), "speck_share": float(sizes[sizes < SPECK_SHARE * total].sum() / total)}


def _asymmetry_values(ev: CaseEvidence, mask: np.ndarray) -> dict[str, float]:
    body = ev.ct_hu > BODY_HU if ev.ct_hu is not None else mask
    if not body.any() or not mask.any():
        return {}
    midline = float(np.nonzero(body)[1].mean())
    cols = np.nonzero(mask)[1]
    left, right = float((cols < midline).sum()), float((cols >= midline).sum())
    return {"asymmetry": abs(left - right) / (left + right)}


def _muscle_hu_pixels(ct_hu: np.ndarray, spacing: tuple[float, float], fat_hu: float | None) -> np.ndarray:
    """Pixels of muscle HU in the smoothed CT (IMAGE_SMOOTH_MM), the gate moved with the patient's fat."""
    from scipy import ndimage

    sigma = [IMAGE_SMOOTH_MM / float(s) for s in spacing]
    smooth = ndimage.gaussian_filter(np.asarray(ct_hu, dtype=np.float32), sigma=sigma, mode="nearest")
    shift = max(0.0, (TYPICAL_FAT_HU if fat_hu is None else fat_hu) - TYPICAL_FAT_HU)
    return (smooth >= MUSCLE_HU_GATE[0] + shift) & (smooth <= MUSCLE_HU_GATE[1] + shift)


def undercall_pixels(mask: np.ndarray, muscle_hu: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Muscle-HU pixels within UNDERCALL_RING_MM outside the mask, inside its convex hull grown by as
    much, and connected to the mask through such pixels: muscle the mask may have left out."""
    from scipy import ndimage

    from sarco_nn.tissue_layout import inside_hull

    ring = ~mask & (ndimage.distance_transform_edt(~mask, sampling=spacing) <= UNDERCALL_RING_MM) & muscle_hu
    points = np.argwhere(ring)
    inside = inside_hull(mask, points.astype(np.float64), UNDERCALL_RING_MM / float(min(spacing)))
    if inside is None or not len(points):
        return np.zeros_like(mask)
    ring = np.zeros_like(mask)
    ring[tuple(points[inside].T)] = True
    labels, _ = ndimage.label(mask | ring, structure=np.ones((3, 3), bool))
    touching = np.unique(labels[mask])
    return ring & np.isin(labels, touching[touching > 0])


def _image_values(ev: CaseEvidence, mask: np.ndarray, fat_hu: float | None) -> dict[str, float]:
    """The image beside the mask, as shares of the mask: overcall_share (mask pixels not of muscle HU) and
    undercall_share (`undercall_pixels`); measured, not scored (module docstring: what scoring them cost)."""
    if ev.ct_hu is None or not mask.any() or np.shape(ev.ct_hu) != mask.shape:
        return {}
    muscle_hu = _muscle_hu_pixels(ev.ct_hu, ev.spacing_yx_mm, fat_hu)
    under = undercall_pixels(mask, muscle_hu, ev.spacing_yx_mm)
    n = float(mask.sum())
    return {"undercall_share": float(under.sum()) / n, "overcall_share": float((mask & ~muscle_hu).sum()) / n}


def measure(ev: CaseEvidence, image_values: bool = False) -> dict[str, float]:
    """Every raw value the score is computed from (the `values` of QcResult; missing evidence: absent).

    image_values adds the measured-not-scored image beside the mask (`_image_values`): a smoothing and a
    hull per case that the score never reads, so `sarco predict` leaves it off and bench/qc_bench.py,
    which stores the values for --rescore, turns it on."""
    mask = np.asarray(ev.mask) > 0
    values: dict[str, float] = {}
    if ev.fold_probabilities is not None:
        probs = np.asarray(ev.fold_probabilities, dtype=np.float32)
        probs = probs[None] if probs.ndim == 2 else probs
        if probs.shape[1:] != mask.shape:
            raise ValueError(f"fold probabilities {probs.shape[1:]} do not match the mask {mask.shape}")
        values.update(_fold_values(probs, ev.spacing_yx_mm))
        values.update(_probability_values(probs, mask))
    values.update(_plausibility_values(ev))
    values.update(_fov_values(ev, mask))
    values.update(_hu_values(ev, mask))
    values.update(_trunk_values(ev, mask))
    values.update(_fragment_values(mask))
    values.update(_asymmetry_values(ev, mask))
    if image_values:
        values.update(_image_values(ev, mask, values.get("fat_hu")))
    if ev.l3_confidence is not None:
        values["l3_confidence"] = float(ev.l3_confidence)
    return {k: float(v) for k, v in values.items()}


# ---------------------------------------------------------------- scoring: raw values -> estimated SMA error


def _fold_term(v: dict) -> tuple[float, str] | None:
    if "fold_mean_dice" not in v:
        return None
    e = max(v["fold_sma_cv"], DISPUTED_PIXEL_ERROR * (1.0 - v["fold_mean_dice"]))
    return e, f"mean Dice {v['fold_mean_dice']:.2f}, SMA CV {v['fold_sma_cv']:.1%}"


def _entropy_term(v: dict) -> tuple[float, str] | None:
    if "entropy_area_ratio" not in v:
        return None
    e = ENTROPY_ERROR_PER_BIT * max(0.0, v["entropy_area_ratio"] - ENTROPY_SHARP_EDGE)
    # not a share of the area: the unsure band lies on both sides of the edge, so the ratio can pass 1
    return e, (f"{v['entropy_area_ratio']:.2f} bit of border entropy per muscle pixel; a clean edge has about "
               f"{ENTROPY_SHARP_EDGE:.2f}")


def _plausibility_term(v: dict) -> tuple[float, str] | None:
    if "plausibility_z" not in v:
        return None
    z = v["plausibility_z"]
    return REFERENCE_ERROR * max(0.0, abs(z) - PLAUSIBLE_Z), f"SMA/SMI {z:+.1f} SD from the adult mean"


def _fov_term(v: dict) -> tuple[float, str]:
    muscle_mm, body_mm = v.get("edge_muscle_mm", 0.0), v.get("edge_body_mm", 0.0)
    area_mm2 = max(v.get("mask_area_cm2", 0.0) * 100.0, 1.0)
    lost_mm2 = max(WALL_THICKNESS_MM * body_mm, np.pi / 8 * muscle_mm ** 2)
    detail = (f"muscle touches the image border over {muscle_mm:.0f} mm" if muscle_mm > 0
              else f"the body touches the image border over {body_mm:.0f} mm")
    return lost_mm2 / area_mm2, detail


def _hu_term(v: dict) -> tuple[float, str] | None:
    if "muscle_hu" not in v:
        return None
    lo, hi = muscle_hu_band(v)
    outside = max(lo - v["muscle_hu"], v["muscle_hu"] - hi, 0.0)
    return REFERENCE_ERROR * outside / HU_PER_REFERENCE_ERROR, f"{v['muscle_hu']:.0f}"


def _fragment_term(v: dict) -> tuple[float, str]:
    n = int(v.get("components", 0))
    e = v.get("speck_share", 0.0) + REFERENCE_ERROR * max(0.0, n - MAX_PLAUSIBLE_PIECES) / MAX_PLAUSIBLE_PIECES
    return e, f"{n} pieces, {v.get('speck_share', 0.0):.1%} in specks"


def _asymmetry_term(v: dict) -> tuple[float, str] | None:
    if "asymmetry" not in v:
        return None
    return max(0.0, v["asymmetry"] - NATURAL_ASYMMETRY), f"{v['asymmetry']:.0%}"


def _l3_term(v: dict) -> tuple[float, str] | None:
    if "l3_confidence" not in v:
        return None
    c = v["l3_confidence"]
    return WRONG_LEVEL_ERROR * float(np.clip((L3_SURE - c) / L3_SURE, 0.0, 1.0)), f"{c:.2f}"


def _level_cue_term(v: dict) -> tuple[float, str] | None:
    if "wall_bone_mm2" not in v:
        return None
    area = v["wall_bone_mm2"]
    return (WRONG_LEVEL_ERROR * min(1.0, area / LEVEL_FULL_MM2),
            f"{area:.0f} mm² in {int(v.get('wall_bone_pieces', 0))} piece(s)")


def _trunk_term(v: dict) -> tuple[float, str] | None:
    if "outside_trunk_share" not in v:
        return None
    return v["outside_trunk_share"], f"{v['outside_trunk_share']:.0%}"


_TERMS = {"fold_disagreement": _fold_term, "border_entropy": _entropy_term, "sma_implausible": _plausibility_term,
          "fov_edge": _fov_term, "hu_implausible": _hu_term, "fragmentation": _fragment_term,
          "asymmetry": _asymmetry_term, "l3_confidence": _l3_term, "level_cue": _level_cue_term,
          "outside_trunk": _trunk_term}


def estimated_error(components: dict[str, float]) -> float:
    """E: the independent sources added; the model's doubt (MODEL_DOUBT) and the level's (LEVEL_DOUBT)
    once each, by their largest measure."""
    grouped = (*MODEL_DOUBT, *LEVEL_DOUBT)
    total = sum(v for n, v in components.items() if n not in grouped)
    for group in (MODEL_DOUBT, LEVEL_DOUBT):
        total += max((components[n] for n in group if n in components), default=0.0)
    return float(total)


def score_values(values: dict, threshold: float = REVIEW_THRESHOLD) -> QcResult:
    """The score, components and reasons of one case's raw values (`measure`)."""
    components, details = {}, {}
    for name, term in _TERMS.items():
        found = term(values)
        if found is not None:
            components[name], details[name] = float(found[0]), found[1]
    expected = estimated_error(components)
    score = expected / (expected + REFERENCE_ERROR)
    reasons: list[Reason] = []
    if score >= threshold:
        drivers = sorted((n for n in components if components[n] >= DRIVER_SHARE * expected and components[n] > 0),
                         key=lambda n: -components[n])
        names = ", ".join(drivers) or "several weak signs"
        reasons.append(Reason("qc_score_high", f"suspicion score {shown_against(score, threshold)} >= "
                                               f"{threshold:.2f} (higher = more "
                                               f"suspicious; SMA error estimated at {expected:.0%}: {names}); look at "
                                               "the overlay before using the numbers",
                              Status.REVIEW, blocks_flag=False))
        reasons.extend(Reason(f"qc_{n}", _MESSAGES[n].format(detail=details[n]), Status.REVIEW,
                              blocks_flag=_withholds_flag(n, values))
                       for n in drivers)
    return QcResult(score, components, dict(values), reasons, expected)


def qc_score(ev: CaseEvidence, threshold: float = REVIEW_THRESHOLD, image_values: bool = False) -> QcResult:
    """Score one case: `measure` its raw values, then `score_values` (see the module docstring). The score
    is the same with or without image_values (they are only kept in ``values``)."""
    return score_values(measure(ev, image_values), threshold)
