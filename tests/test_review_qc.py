"""qc_score: a clean case stays ok; each planted sign of trouble raises the score and names itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarco_nn.ct_checks import body_region
from sarco_nn.review.qc import (REFERENCE_ERROR, REVIEW_THRESHOLD, TABLE_OPEN_MM, CaseEvidence, measure, qc_score,
                                score_values)
from sarco_nn.status import Status, Verdict

N = 128
SPACING = (1.5, 1.5)


def _body(matrix: int = N, cx: float | None = None, half_width: float = 45) -> tuple[np.ndarray, np.ndarray]:
    """CT (HU) and muscle mask of a simple abdomen: fat ellipse with a muscle ring and two psoas."""
    yy, xx = np.mgrid[:matrix, :matrix].astype(float)
    cx = matrix / 2 if cx is None else cx
    cy = matrix / 2
    r = np.sqrt(((xx - cx) / half_width) ** 2 + ((yy - cy) / (half_width * 0.7)) ** 2)
    ct = np.full((matrix, matrix), -1000.0)
    ct[r < 1.0] = -100.0
    muscle = (r > 0.78) & (r < 0.9)
    for side in (-1, 1):
        muscle |= ((xx - cx - side * 12) ** 2 + (yy - cy - 12) ** 2) < 36
    ct[muscle] = 45.0
    return ct, muscle.astype(np.uint8)


def _sharp(mask: np.ndarray, n_folds: int = 1) -> np.ndarray:
    p = np.where(mask > 0, 0.98, 0.02).astype(np.float32)
    return np.stack([p] * n_folds)


def _sma(mask):
    return float(mask.sum() * SPACING[0] * SPACING[1] / 100)


def _evidence(ct, mask, probs=None, **kw) -> CaseEvidence:
    kw.setdefault("sex", "F")
    return CaseEvidence(mask=mask, spacing_yx_mm=SPACING, ct_hu=ct, fold_probabilities=probs,
                        sma_cm2=kw.pop("sma_cm2", 120.0), **kw)


def test_clean_case_is_not_suspicious():
    ct, mask = _body()
    result = qc_score(_evidence(ct, mask, _sharp(mask, 5)))
    assert result.score < 0.2, result.components
    assert result.reasons == []
    assert set(result.components) >= {"fold_disagreement", "border_entropy", "fov_edge", "asymmetry"}


def _codes(result):
    return {r.code for r in result.reasons}


def test_truncated_field_of_view_goes_to_review_without_blocking_the_flag():
    ct, mask = _body(half_width=80)  # wider than the 128-px image: body and muscle are cut
    result = qc_score(_evidence(ct, mask, _sharp(mask)))
    assert result.score >= REVIEW_THRESHOLD
    assert {"qc_score_high", "qc_fov_edge"} <= _codes(result)
    verdict = result.apply(Verdict())
    assert verdict.status is Status.REVIEW and verdict.flag_allowed
    assert verdict.columns()["qc_score"] == f"{result.score:.3f}"


def test_fold_disagreement_is_measured_and_named():
    ct, mask = _body()
    other = mask.copy()
    other[:, : N // 2] = 0  # one fold misses the right half
    probs = np.stack([_sharp(mask)[0]] * 3 + [_sharp(other)[0]] * 2)
    result = qc_score(_evidence(ct, mask, probs))
    assert result.values["fold_mean_dice"] < 0.9
    assert result.components["fold_disagreement"] >= REFERENCE_ERROR  # alone enough for review
    assert "qc_fold_disagreement" in _codes(result)


def test_single_model_uses_its_own_probabilities():
    ct, mask = _body()
    blurry = np.where(mask > 0, 0.6, 0.3).astype(np.float32)[None]
    sharp = qc_score(_evidence(ct, mask, _sharp(mask)))
    unsure = qc_score(_evidence(ct, mask, blurry))
    assert "fold_disagreement" not in unsure.components  # one model: no folds to compare
    assert unsure.components["border_entropy"] >= REFERENCE_ERROR and sharp.components["border_entropy"] == 0.0
    assert "qc_border_entropy" in _codes(unsure)


@pytest.mark.parametrize("change, code", [
    ("hu", "qc_hu_implausible"), ("asymmetry", "qc_asymmetry"), ("specks", "qc_fragmentation"),
    ("sma", "qc_sma_implausible"), ("l3", "qc_l3_confidence"),
])
def test_each_plausibility_sign_names_itself(change, code):
    ct, mask = _body()
    kw: dict = {}
    if change == "hu":
        kw["muscle_hu_mean"] = 200.0
    elif change == "asymmetry":
        mask = mask.copy()
        mask[:, N // 2:] = 0
    elif change == "specks":
        mask = mask.copy()
        rng = np.random.default_rng(0)
        mask[rng.integers(0, N, 400), rng.integers(0, N, 400)] = 1
        ct = ct.copy()
        ct[mask > 0] = 45.0  # the specks are muscle-HU tissue: only the fragmentation is odd
    elif change == "sma":
        kw["sma_cm2"] = 400.0
    elif change == "l3":
        kw["l3_confidence"] = 0.3
    clean = qc_score(_evidence(*_body(), _sharp(_body()[1])))
    result = qc_score(_evidence(ct, mask, _sharp(mask), **kw))
    assert result.score > clean.score
    assert code in _codes(result), (result.score, result.components)
    assert all(r.status is Status.REVIEW for r in result.reasons)
    # suspicion never withholds the flag, except numbers that cannot be muscle: SMA 400 cm² in a
    # woman (far above the adult range) and a mean "muscle" HU of 200
    blocking = {r.code for r in result.reasons if r.blocks_flag}
    assert blocking == ({code} if change in ("hu", "sma") else set()), blocking


def test_low_muscle_is_the_disease_and_never_withholds_the_flag():
    ct, mask = _body()
    result = qc_score(_evidence(ct, mask, _sharp(mask), sma_cm2=25.0, muscle_hu_mean=-5.0))  # cachexia, myosteatosis
    assert "qc_sma_implausible" in _codes(result) or result.score < REVIEW_THRESHOLD
    assert not any(r.blocks_flag for r in result.reasons)


def test_score_is_the_estimated_error_against_the_reference_error():
    """score = E / (E + REFERENCE_ERROR), E the components' sum with the model's doubt counted once: 0.5
    (review) exactly at a 5 % estimated error."""
    ct, mask = _body()
    result = qc_score(_evidence(ct, mask, _sharp(mask), l3_confidence=0.4, muscle_hu_mean=200.0))
    doubt = max(result.components[n] for n in ("fold_disagreement", "border_entropy", "fragmentation")
                if n in result.components)
    expected = doubt + sum(v for n, v in result.components.items()
                           if n not in ("fold_disagreement", "border_entropy", "fragmentation"))
    assert result.expected_error == pytest.approx(expected)
    assert result.score == pytest.approx(expected / (expected + REFERENCE_ERROR))
    assert qc_score(_evidence(ct, mask, _sharp(mask))).score < REVIEW_THRESHOLD
    # the members' SMAs spread by 5 % (their coefficient of variation): a 5 % estimated error, review
    at_line = score_values({"fold_mean_dice": 0.99, "fold_sma_cv": REFERENCE_ERROR})
    assert at_line.score == pytest.approx(0.5) and at_line.reasons
    assert not score_values({"fold_mean_dice": 0.99, "fold_sma_cv": 0.8 * REFERENCE_ERROR}).reasons


def test_score_is_a_function_of_the_raw_values():
    """bench/qc_bench.py --rescore recomputes the score from stored values: it must be what predict writes."""
    ct, mask = _body(half_width=80)
    probs = np.stack([_sharp(mask)[0], np.where(np.roll(mask, 3, 1) > 0, 0.7, 0.2).astype(np.float32)])
    ev = _evidence(ct, mask, probs, l3_confidence=0.6)
    direct, again = qc_score(ev), score_values(measure(ev))
    assert direct.score == again.score and direct.components == again.components
    assert [r.code for r in direct.reasons] == [r.code for r in again.reasons]


def test_score_keeps_resolving_where_the_old_ramps_saturated():
    """Fold disagreement, border entropy and specks each raise the score further past the point where
    a clipped ramp stopped at 1 (the old score sat at 0.99 for a whole family)."""
    base = {"fold_mean_dice": 0.97, "fold_sma_cv": 0.01, "entropy_area_ratio": 0.2, "speck_share": 0.0}
    for key, values in (("fold_mean_dice", [0.85, 0.75, 0.6]), ("fold_sma_cv", [0.06, 0.1, 0.2]),
                        ("entropy_area_ratio", [0.5, 0.8, 1.2]), ("speck_share", [0.05, 0.1, 0.2])):
        scores = [score_values({**base, key: v}).score for v in values]
        assert all(a < b for a, b in zip(scores, scores[1:])), (key, scores)
        assert scores[-1] < 0.99, (key, scores)


def _with_table(ct: np.ndarray) -> np.ndarray:
    """A 3-mm table under the patient reaching both sides of the image, as on most scanners."""
    ct = ct.copy()
    ct[N - 8:N - 6, :] = 0.0
    return ct


def test_table_reaching_the_image_sides_is_not_a_cut_body():
    ct, mask = _body()
    ct = _with_table(ct)
    result = qc_score(_evidence(ct, mask, _sharp(mask, 3)))
    assert result.values["edge_body_mm"] == 0.0 and result.components["fov_edge"] == 0.0
    assert not body_region(ct, SPACING, open_mm=TABLE_OPEN_MM)[N - 8:N - 6].any()
    assert result.reasons == []


def test_cut_body_goes_to_review_even_when_the_mask_stops_short_of_the_border():
    """The truncated-FOV failure the bench found: the model leaves the cut muscle out near the border,
    so only the patient's outline on the border tells that muscle is missing."""
    ct, mask = _body(half_width=80)  # wider than the 128-px image
    ct = _with_table(ct)
    mask = mask.copy()
    mask[:, :6] = 0
    mask[:, -6:] = 0  # the mask never touches the border
    result = qc_score(_evidence(ct, mask, _sharp(mask, 3)))
    assert result.values["edge_muscle_mm"] == 0.0 and result.values["edge_body_mm"] > 100.0
    assert result.components["fov_edge"] >= REFERENCE_ERROR, result.components
    assert {"qc_score_high", "qc_fov_edge"} <= _codes(result)
    assert "body touches the image border" in next(r.message for r in result.reasons if r.code == "qc_fov_edge")


def test_fov_term_grows_with_the_cut():
    ct_wide, mask_wide = _body(half_width=80)
    ct_less, mask_less = _body(half_width=68)
    wide = qc_score(_evidence(ct_wide, mask_wide, _sharp(mask_wide, 3)))
    less = qc_score(_evidence(ct_less, mask_less, _sharp(mask_less, 3)))
    assert 0 < less.values["edge_body_mm"] < wide.values["edge_body_mm"]
    assert 0 < less.components["fov_edge"] < wide.components["fov_edge"]


def test_probabilities_on_another_grid_are_refused():
    ct, mask = _body()
    with pytest.raises(ValueError, match="do not match"):
        qc_score(_evidence(ct, mask, np.zeros((2, 10, 10), np.float32)))


def test_the_models_doubt_counts_once_by_its_largest_measure():
    """Fold disagreement, border entropy and specks are one doubt measured three ways: E takes the
    largest (by hand: 0.03 fold CV, 0.5 x (0.35 - 0.25) = 0.05 entropy, 0.02 specks -> 0.05), while an
    independent source (a 10 % body cut) adds."""
    doubt = {"fold_mean_dice": 0.99, "fold_sma_cv": 0.03, "entropy_area_ratio": 0.35, "speck_share": 0.02,
             "components": 6.0}
    alone = score_values(doubt)
    assert alone.components["fold_disagreement"] == pytest.approx(0.03)
    assert alone.components["border_entropy"] == pytest.approx(0.05)
    assert alone.components["fragmentation"] == pytest.approx(0.02)
    assert alone.expected_error == pytest.approx(0.05)
    assert alone.score == pytest.approx(0.05 / 0.10)
    cut = score_values({**doubt, "edge_body_mm": 100.0, "mask_area_cm2": 100.0})  # 10 mm x 100 mm of 100 cm²
    assert cut.components["fov_edge"] == pytest.approx(0.10)
    assert cut.expected_error == pytest.approx(0.15)
    assert {"qc_border_entropy", "qc_fov_edge"} <= _codes(cut)


def test_muscle_counted_outside_the_trunk_is_the_over_count_and_names_itself():
    """An arm beside the trunk labelled muscle: its share of the mask is the estimated error; once the
    trunk rule has removed it, nothing is left to count."""
    from sarco_nn.trunk import restrict_to_trunk

    ct, mask = _body(half_width=38)
    yy, xx = np.mgrid[:N, :N]
    arm = (yy - N // 2) ** 2 + (xx - (N - 12)) ** 2 < 64
    ct[arm] = 45.0
    with_arm = mask | arm.astype(np.uint8)
    result = qc_score(_evidence(ct, with_arm, _sharp(with_arm, 3)))
    share = arm.sum() / with_arm.sum()
    assert result.values["outside_trunk_share"] == pytest.approx(share)
    assert result.components["outside_trunk"] == pytest.approx(share)
    assert "qc_outside_trunk" in _codes(result) and result.score >= REVIEW_THRESHOLD
    restricted = restrict_to_trunk(with_arm, ct, SPACING).segmentation
    assert qc_score(_evidence(ct, restricted, _sharp(restricted, 3))).values["outside_trunk_share"] == 0.0


def test_bright_muscle_is_implausible_unless_the_patients_fat_is_as_bright():
    """Contrast on every soft tissue (fat too) brightens muscle without making its area wrong: the upper
    HU bound rises with the patient's own fat; the lower bound (fat counted as muscle) never moves."""
    ct, mask = _body()
    plain = qc_score(_evidence(ct, mask, _sharp(mask), muscle_hu_mean=125.0))
    assert plain.values["fat_hu"] == pytest.approx(-100.0)
    assert plain.components["hu_implausible"] == pytest.approx(REFERENCE_ERROR * 45.0 / 15.0)
    bright = ct.copy()
    bright[ct > -200] += 90.0  # fat at -10 HU, muscle at 135 HU
    shifted = qc_score(_evidence(bright, mask, _sharp(mask), muscle_hu_mean=125.0))
    assert shifted.values["fat_hu"] == pytest.approx(-10.0)
    assert shifted.components["hu_implausible"] == 0.0
    fatty = qc_score(_evidence(bright, mask, _sharp(mask), muscle_hu_mean=-40.0))
    assert fatty.components["hu_implausible"] == pytest.approx(REFERENCE_ERROR * 30.0 / 15.0)


# ---------------------------------------------------------------- level_cue: ribs or iliac bone in the wall

def _trunk_slice(noise_hu: float = 0.0, seed: int = 0) -> tuple[np.ndarray, tuple[float, float], dict]:
    """An adult-sized L3-like slice (0.8 mm pixels): fat ellipse 320 x 230 mm, a 12-mm muscle wall, a
    vertebral body with transverse processes reaching 45 mm from the midline; `where` holds (row, col)
    spots for planted structures (in the lateral wall, beside the spine, deep in the abdomen)."""
    n, sp = 448, (0.8, 0.8)
    yy, xx = np.mgrid[:n, :n].astype(float) * sp[0]
    cy, cx = n * sp[0] / 2, n * sp[1] / 2
    r = np.hypot((xx - cx) / 160.0, (yy - cy) / 115.0)
    ct = np.full((n, n), -1000.0)
    ct[r < 1.0] = -100.0
    ct[(r > 0.84) & (r < 0.92)] = 45.0  # abdominal wall muscle
    ct[np.hypot(xx - cx, yy - cy - 40.0) < 20.0] = 700.0  # vertebral body
    ct[(np.abs(yy - cy - 50.0) < 4.0) & (np.abs(xx - cx) < 45.0)] = 700.0  # transverse processes
    if noise_hu:
        ct += np.random.default_rng(seed).normal(0.0, noise_hu, ct.shape)
    px = lambda y_mm, x_mm: (int(y_mm / sp[0]), int(x_mm / sp[1]))  # noqa: E731
    where = {"wall": px(cy + 30.0, cx + 140.0), "spine": px(cy + 40.0, cx + 25.0), "deep": px(cy, cx + 80.0)}
    return ct, sp, where


def _blob(ct: np.ndarray, sp, centre, half_axes_mm, hu: float) -> np.ndarray:
    yy, xx = np.mgrid[:ct.shape[0], :ct.shape[1]].astype(float)
    inside = ((yy - centre[0]) * sp[0] / half_axes_mm[0]) ** 2 + ((xx - centre[1]) * sp[1] / half_axes_mm[1]) ** 2 <= 1
    out = ct.copy()
    out[inside] = hu
    return out


def test_a_rib_in_the_lateral_wall_says_the_level_may_be_wrong():
    """A rib-like blob (12 x 7 mm, 700 HU) in the lateral wall is wall bone; the same blob beside the
    spine, a noisy image (SD 100 HU) and a thick contrast-filled loop (35 mm, 400 HU) are not."""
    from sarco_nn.review.qc import LEVEL_FULL_MM2, WRONG_LEVEL_ERROR, wall_bone_values

    ct, sp, where = _trunk_slice()
    assert wall_bone_values(ct, sp)["wall_bone_mm2"] == 0.0  # the spine and its processes never count
    rib = _blob(ct, sp, where["wall"], (6.0, 3.5), 700.0)
    found = wall_bone_values(rib, sp)
    assert found["wall_bone_pieces"] == 1.0 and 50.0 < found["wall_bone_mm2"] < 80.0, found
    scored = score_values(found)
    assert scored.components["level_cue"] == pytest.approx(WRONG_LEVEL_ERROR * found["wall_bone_mm2"] / LEVEL_FULL_MM2)
    two = _blob(rib, sp, (where["wall"][0] + 40, where["wall"][1] - 10), (6.0, 3.5), 700.0)
    both = score_values(wall_bone_values(two, sp))
    assert both.components["level_cue"] == pytest.approx(WRONG_LEVEL_ERROR)  # two ribs: as sure as it gets
    assert "qc_level_cue" in _codes(both) and "not be at L3" in both.reasons[-1].message
    assert wall_bone_values(_blob(ct, sp, where["spine"], (6.0, 3.5), 700.0), sp)["wall_bone_mm2"] == 0.0
    assert wall_bone_values(_blob(ct, sp, where["deep"], (17.5, 17.5), 400.0), sp)["wall_bone_mm2"] == 0.0
    noisy, _, _ = _trunk_slice(noise_hu=100.0)
    assert wall_bone_values(noisy, sp)["wall_bone_mm2"] == 0.0
    noisy_rib = _blob(noisy, sp, where["wall"], (6.0, 3.5), 700.0)
    assert wall_bone_values(noisy_rib, sp)["wall_bone_pieces"] == 1.0  # the rib survives the noise


def test_locator_confidence_and_wall_bone_are_one_doubt_about_the_level():
    """Both say "not L3": the estimate takes the larger, so a doubtful level is not counted twice."""
    values = {"l3_confidence": 0.4, "wall_bone_mm2": 50.0, "wall_bone_pieces": 1.0}
    result = score_values(values)
    assert result.components["l3_confidence"] == pytest.approx(0.075)
    assert result.components["level_cue"] == pytest.approx(0.075)
    assert result.expected_error == pytest.approx(0.075)


def _phantom_a_slice(seed: int, level: str, fraction: float):
    from dataset_conversion.phantom import VERTEBRA_LABELS, choose_grid, render_labels, sample_anatomy, tissue_to_hu

    rng = np.random.default_rng([7, seed])
    an = sample_anatomy(rng, sex="MF"[seed % 2])
    grid = choose_grid(an, rng, 512, None)
    top, bottom = an.levels[VERTEBRA_LABELS[level]]
    labels, _ = render_labels(an, bottom + fraction * (top - bottom), grid.xs, grid.ys)
    return tissue_to_hu(an, labels, grid, np.random.default_rng(seed)), grid.spacing


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_phantom_l3_is_quiet_while_l1_ribs_and_l5_iliac_wings_speak(seed):
    """Family A at 512²: mid-L3 has no wall bone; mid-L1 has its lower ribs (>= LEVEL_FULL_MM2), low
    L5 its iliac wings (family A draws the wings from mid-L5 down, the ribs from upper L2 up)."""
    from sarco_nn.review.qc import LEVEL_FULL_MM2, wall_bone_values

    assert wall_bone_values(*_phantom_a_slice(seed, "L3", 0.5))["wall_bone_mm2"] == 0.0
    assert wall_bone_values(*_phantom_a_slice(seed, "L1", 0.5))["wall_bone_mm2"] >= LEVEL_FULL_MM2
    assert wall_bone_values(*_phantom_a_slice(seed, "L5", 0.1))["wall_bone_mm2"] >= LEVEL_FULL_MM2


REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalsegmentator"


@pytest.mark.skipif(not REAL_CT.is_dir(), reason="../shared/data is absent (the generated cases above cover the cue)")
def test_real_ct_l3_slices_are_quiet_and_l1_l5_slices_show_their_bone():
    """Real CT (TotalSegmentator's example, 3-mm voxels, vertebra labels): every slice whose vertebra is
    L3 (29) has no wall bone; L5 (27) slices all show the iliac wings; most L1 (31) slices show the
    lower ribs (at 3 mm a rib tip is often under 300 HU or under 30 mm²: the top of L1 is missed)."""
    import SimpleITK as sitk

    from sarco_nn.review.qc import wall_bone_values

    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT / "example_ct.nii.gz"))).astype(np.float32)
    vertebrae = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT / "example_ct_vertebrae_totalseg.nii.gz")))
    spacing = sitk.ReadImage(str(REAL_CT / "example_ct.nii.gz")).GetSpacing()[1::-1]
    by_level: dict[int, list[float]] = {}
    for z in range(ct.shape[0]):
        present = vertebrae[z][vertebrae[z] > 0]
        if present.size:
            level = int(np.bincount(present).argmax())
            by_level.setdefault(level, []).append(wall_bone_values(ct[z], spacing)["wall_bone_mm2"])
    assert len(by_level[29]) >= 10 and max(by_level[29]) == 0.0, by_level[29]
    assert min(by_level[27]) > 0.0, by_level[27]
    assert np.mean(np.array(by_level[31]) > 0) >= 0.7, by_level[31]


@pytest.mark.skipif(not (REAL_CT.parent / "dcmqi_ct3slice").is_dir(), reason="../shared/data is absent")
def test_real_upper_abdomen_slices_with_ribs_all_round_speak():
    """dcmqi's three GE slices through the liver dome (T10-T12: ribs all round the wall) are far off L3."""
    import SimpleITK as sitk

    from sarco_nn.review.qc import LEVEL_FULL_MM2, wall_bone_values

    for name in ("01.dcm", "02.dcm", "03.dcm"):
        image = sitk.ReadImage(str(REAL_CT.parent / "dcmqi_ct3slice" / name))
        hu = np.maximum(sitk.GetArrayFromImage(image)[0].astype(np.float32), -1024.0)  # -3024 padding
        found = wall_bone_values(hu, image.GetSpacing()[1::-1])
        assert found["wall_bone_mm2"] >= LEVEL_FULL_MM2 and found["wall_bone_pieces"] >= 4, (name, found)


def test_noise_on_an_enhanced_structure_is_not_bone(monkeypatch):
    """SD-100-HU noise on a 250-HU structure in the wall (an enhancing vessel or lesion, below the bone
    bound) pushes a third of its pixels above 300 HU; the 1-mm opening removes what they form, without it
    some of them pass as a piece of wall bone."""
    import sarco_nn.review.qc as qc

    ct, sp, where = _trunk_slice()
    organ = _blob(ct, sp, where["wall"], (7.0, 7.0), 250.0)
    noisy = [organ + np.random.default_rng(seed).normal(0.0, 100.0, organ.shape) for seed in range(5)]
    assert all(qc.wall_bone_values(image, sp)["wall_bone_mm2"] == 0.0 for image in noisy)
    monkeypatch.setattr(qc, "LEVEL_SPECK_MM", 0.0)
    assert any(qc.wall_bone_values(image, sp)["wall_bone_mm2"] > 0.0 for image in noisy)
