"""Family "A-wide" (domain-randomised A, `phantoms/widen_a.py`): it differs from A, is deterministic per
seed, spans the widened site and patient range, and its masks stay exact (arm muscle is never trunk muscle)."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantoms import widen_a
from dataset_conversion.phantoms.anatomy_a import Tissue
from dataset_conversion.phantoms.family_a import sample_anatomy
from dataset_conversion.phantoms.render_a import body_composition_labels, body_extent, render_labels
from dataset_conversion.phantoms.writer import FAMILIES, check_family, dropin_case, write_dropin_dataset
from sarco_nn.constants import MUSCLE_HU_GATE, MUSCLE_LABEL, TISSUE_LABELS


@pytest.fixture(scope="module")
def cohort():
    """24 A-wide slices at 128² (site variety is a cohort property)."""
    return [dropin_case(5, i, 128, family="A-wide").phantom for i in range(24)]


def test_family_names():
    assert "A-wide" in FAMILIES and check_family("a-WIDE") == "A-wide" and check_family("a") == "A"


def test_widening_imports_nothing_of_family_b():
    tree = ast.parse(Path(widen_a.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name and name.endswith("_b") for name in names), names


def test_wide_differs_from_a_and_is_deterministic_per_seed():
    a = dropin_case(3, 0, 96, family="A").phantom
    w1, w2 = (dropin_case(3, 0, 96, family="A-wide").phantom for _ in range(2))
    other = dropin_case(4, 0, 96, family="A-wide").phantom
    assert np.array_equal(w1.ct_hu, w2.ct_hu) and np.array_equal(w1.tissue_mask, w2.tissue_mask)
    assert w1.spacing_mm == w2.spacing_mm
    assert not np.array_equal(w1.ct_hu, a.ct_hu)
    assert not np.array_equal(w1.ct_hu, other.ct_hu)
    assert (w1.sex, w1.height_m, w1.age) == (a.sex, a.height_m, a.age)  # A's patient, widened


def _patient_with_arms(start: int = 0):
    for i in range(start, start + 40):
        an = sample_anatomy(np.random.default_rng([9, i]), wide_rng=np.random.default_rng([9, i, 0xA1DE]))
        if len(an.arms) == 2:
            return an
    raise AssertionError("no widened patient with two arms in 40 draws")


def test_arm_muscle_is_muscle_hu_but_never_trunk_muscle():
    from dataset_conversion.phantoms.scanner_a import Grid, tissue_to_hu

    an = _patient_with_arms()
    x0, x1, y0, y1 = body_extent(an)
    reach = max(2 * (a["muscle"] + a["fat"] + an.skin) + max(a["gap"], 0.0) for a in an.arms) + 10
    xs, ys = np.arange(x0 - reach, x1 + reach, 1.0), np.arange(y0 - 10, y1 + 40, 1.0)
    lab, _ = render_labels(an, 0.0, xs, ys)
    arm = lab == Tissue.ARM_MUSCLE
    assert arm.sum() > 500  # both arms in this wide field
    trunk = (xs[None, :] >= x0) & (xs[None, :] <= x1)
    assert not (arm & trunk).any()
    # SMA is tuned on trunk muscle only: arms leave the target area where it was
    sma = np.count_nonzero(lab == Tissue.MUSCLE) / 100.0
    assert sma == pytest.approx(an.target_sma_cm2, rel=0.03)
    tissues = body_composition_labels(an, 0.0, lab, xs, ys)
    assert np.all(tissues[arm] == 0) and np.all(tissues[lab == Tissue.ARM_FAT] == 0)
    ct = tissue_to_hu(an, lab, Grid(xs, ys), np.random.default_rng(0))
    arm_hu = float(np.median(ct[arm]))
    assert MUSCLE_HU_GATE[0] < arm_hu < MUSCLE_HU_GATE[1]
    assert abs(arm_hu - float(np.median(ct[lab == Tissue.MUSCLE]))) < 20


def test_cohort_spans_spacing_kernel_noise_air_and_truncation(cohort):
    scale = 512 / 128
    spacings = np.array([ph.spacing_mm for ph in cohort]) / scale
    assert spacings.min() < 0.6 and spacings.max() <= 1.0  # below plain A's 0.6 mm floor
    assert sum(abs(sy - sx) > 0.02 for sy, sx in spacings) >= 3  # non-square pixels
    air_fraction = [float(np.mean(ph.ct_hu < -900)) for ph in cohort]
    assert max(air_fraction) > 0.5  # wide air around a small or off-centre body
    body = [ph.ct_hu > -500 for ph in cohort]
    truncated = [b[0].any() or b[-1].any() or b[:, 0].any() or b[:, -1].any() for b in body]
    assert 2 <= sum(truncated) < len(cohort)
    # noise: spread of the muscle HU (texture + kernel + noise) varies several-fold across protocols
    spread = [float(np.std(ph.ct_hu[ph.muscle_mask > 0])) for ph in cohort]
    assert max(spread) > 3 * min(spread)


def test_plain_a_has_none_of_it():
    plain = [dropin_case(5, i, 128, family="A").phantom for i in range(24)]
    assert min(np.array([ph.spacing_mm for ph in plain]).ravel()) / 4 >= 0.6 - 1e-6
    an = sample_anatomy(np.random.default_rng([9, 0]))
    assert an.arms == [] and an.sharpen[0] == 0.0


def test_wide_drop_masks_are_exact(tmp_path: Path):
    drop = write_dropin_dataset(tmp_path / "w", n_cases=4, seed=2, matrix=96, family="a-wide")
    rows = {r["case_id"]: r for r in csv.DictReader(open(drop / "truth.csv", newline=""))}
    for case_id, row in rows.items():
        mask_img = sitk.ReadImage(str(drop / "masks" / f"{case_id}.nii.gz"))
        mask = sitk.GetArrayFromImage(mask_img)
        assert set(np.unique(mask).tolist()) <= set(TISSUE_LABELS.values()) | {0}
        sx, sy = mask_img.GetSpacing()[:2]
        area = np.count_nonzero(mask == MUSCLE_LABEL) * sx * sy / 100.0
        assert area == pytest.approx(float(row["true_sma_cm2"]), rel=1e-9)


def test_sarco_demo_data_writes_the_wide_family(tmp_path: Path):
    from conftest import sarco_inprocess

    result = sarco_inprocess("demo-data", str(tmp_path / "w"), "--cases", "2", "--matrix", "64", "--family", "A-wide")
    assert result.code == 0, result.output
    assert "family-A-wide" in result.output and len(list((tmp_path / "w" / "images").glob("*.nii.gz"))) == 2
