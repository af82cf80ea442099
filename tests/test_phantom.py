"""Synthetic L3 phantom: exact areas, realistic HU, balanced drop-in datasets, orientation, volumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import (
    Tissue,
    choose_grid,
    dropin_case,
    generate_phantom_slice,
    render_labels,
    sample_anatomy,
    tissue_to_hu,
    write_dropin_dataset,
)
from dataset_conversion.phantom_volume import generate_phantom_volume
from sarco_nn.constants import MUSCLE_HU_GATE
from sarco_nn.errors import SarcoError

CUTOFF = {"M": 144.0, "F": 92.0}
SEED = 7


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dropin_dataset(tmp_path_factory.mktemp("drop") / "ds", n_cases=10, seed=SEED, matrix=128)


def test_true_area_is_pixel_count_times_spacing():
    ph = generate_phantom_slice(np.random.default_rng(1), sex="F", matrix=96, spacing_mm=(4.5, 5.0))
    assert ph.ct_hu.dtype == np.int16 and ph.muscle_mask.dtype == np.uint8
    assert ph.ct_hu.shape == ph.muscle_mask.shape == (96, 96)
    assert set(np.unique(ph.muscle_mask)) == {0, 1}
    assert ph.spacing_mm == (4.5, 5.0)
    assert ph.true_sma_cm2 == pytest.approx(ph.muscle_mask.sum() * 4.5 * 5.0 / 100.0, rel=1e-12)


def test_hu_ranges_per_tissue():
    rng = np.random.default_rng(3)
    an = sample_anatomy(rng, sex="M")
    grid = choose_grid(an, rng, 256, None)
    lab, _ = render_labels(an, 0.0, grid.xs, grid.ys)
    ct = tissue_to_hu(an, lab, grid, rng).astype(float)
    lo, hi = MUSCLE_HU_GATE
    muscle = ct[lab == Tissue.MUSCLE]
    assert np.mean((muscle >= lo) & (muscle <= hi)) > 0.9
    fat = ct[lab == Tissue.SUBCUT_FAT]
    assert -150 < np.median(fat) < -50 and np.mean((fat > -160) & (fat < -40)) > 0.9
    bone = ct[(lab == Tissue.CORTICAL) | (lab == Tissue.TRABECULAR)]
    assert np.median(bone) > 150 and np.mean(bone > 150) > 0.8
    assert np.median(ct[lab == Tissue.CORTICAL]) > 400
    assert np.median(ct[lab == Tissue.GAS]) < -700
    assert np.median(ct[lab == Tissue.AIR]) < -950
    # the task is not trivial: non-muscle soft tissue (bowel, organs) lies inside the muscle HU gate
    soft = np.isin(lab, [Tissue.BOWEL_WALL, Tissue.FLUID, Tissue.LIVER, Tissue.KIDNEY, Tissue.VESSEL, Tissue.SKIN])
    assert np.mean((ct[soft] >= lo) & (ct[soft] <= hi)) > 0.3


@pytest.mark.parametrize("sex", ["M", "F"])
def test_sarcopenic_flag_is_respected(sex):
    for seed in range(3):
        for sarcopenic in (True, False):
            ph = generate_phantom_slice(np.random.default_rng(seed), sex=sex, matrix=128, sarcopenic=sarcopenic)
            assert ph.sex == sex
            assert (ph.true_sma_cm2 < CUTOFF[sex]) == sarcopenic
            assert (70.0 if sex == "M" else 50.0) < ph.true_sma_cm2 < (220.0 if sex == "M" else 160.0)


def test_habitus_and_spacing_vary():
    widths, spacings = [], []
    for seed in range(16):
        rng = np.random.default_rng(100 + seed)
        an = sample_anatomy(rng)
        grid = choose_grid(an, rng, 512, None)
        spacings.append(grid.spacing)
        widths.append(an.bmi)
    sp = np.array(spacings)
    assert sp.min() >= 0.6 - 1e-9 and sp.max() <= 1.0 + 1e-9
    assert np.ptp(sp[:, 1]) > 0.1  # field of view follows body size
    assert any(abs(a - b) > 1e-6 for a, b in spacings)  # some non-square pixels
    assert np.ptp(widths) > 6  # thin and obese patients


def test_determinism_by_seed():
    a = generate_phantom_slice(np.random.default_rng(11), matrix=64)
    b = generate_phantom_slice(np.random.default_rng(11), matrix=64)
    c = generate_phantom_slice(np.random.default_rng(12), matrix=64)
    assert np.array_equal(a.ct_hu, b.ct_hu) and np.array_equal(a.muscle_mask, b.muscle_mask)
    assert a.spacing_mm == b.spacing_mm and a.age == b.age
    assert not np.array_equal(a.ct_hu, c.ct_hu)


def test_dataset_layout_balance_and_roundtrip(dataset: Path):
    clinical = _read_csv(dataset / "clinical.csv")
    truth = _read_csv(dataset / "truth.csv")
    assert list(clinical[0]) == ["case_id", "sex", "height_m", "weight_kg", "age"]
    assert list(truth[0]) == ["case_id", "true_sma_cm2", "sarcopenic_truth", "spacing_y_mm", "spacing_x_mm",
                              "true_imat_cm2", "true_vat_cm2", "true_sat_cm2"]
    assert len(clinical) == len(truth) == 10
    assert {r["sex"] for r in clinical} == {"M", "F"}
    assert {r["sarcopenic_truth"] for r in truth} == {"0", "1"}
    sexes = {r["case_id"]: r["sex"] for r in clinical}
    for sex in "MF":
        assert {r["sarcopenic_truth"] for r in truth if sexes[r["case_id"]] == sex} == {"0", "1"}
    for row in truth:
        img = sitk.ReadImage(str(dataset / "images" / f"{row['case_id']}.nii.gz"))
        msk = sitk.ReadImage(str(dataset / "masks" / f"{row['case_id']}.nii.gz"))
        assert img.GetPixelID() == sitk.sitkInt16 and msk.GetPixelID() == sitk.sitkUInt8
        assert img.GetSize() == msk.GetSize() and img.GetSize()[2] == 1
        assert img.GetSpacing() == msk.GetSpacing() and img.GetOrigin() == msk.GetOrigin()
        assert img.GetDirection() == msk.GetDirection()
        sx, sy, _ = msk.GetSpacing()
        assert (sy, sx) == (float(row["spacing_y_mm"]), float(row["spacing_x_mm"]))
        area = np.count_nonzero(sitk.GetArrayFromImage(msk) == 1) * sx * sy / 100.0
        sma = float(row["true_sma_cm2"])
        assert abs(area - sma) < 1e-6
        assert int(row["sarcopenic_truth"]) == int(sma < CUTOFF[sexes[row["case_id"]]])


def test_flipped_cases_are_anatomically_right_after_reorientation(dataset: Path):
    truth = _read_csv(dataset / "truth.csv")
    directions = set()
    for i, row in enumerate(truth):
        img = sitk.ReadImage(str(dataset / "images" / f"{row['case_id']}.nii.gz"))
        msk = sitk.ReadImage(str(dataset / "masks" / f"{row['case_id']}.nii.gz"))
        directions.add(img.GetDirection())
        ct = sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))[0]
        mask = sitk.GetArrayFromImage(sitk.DICOMOrient(msk, "LPS"))[0]
        # same pixels as the generator's LPS arrays
        case = dropin_case(SEED, i, matrix=128)
        assert np.array_equal(ct, case.phantom.ct_hu) and np.array_equal(mask, case.phantom.tissue_mask)
        mask = (mask == 1).astype(np.uint8)
        # anterior abdomen at low row index: the topmost muscle is the rectus near the midline, the
        # spine (dense bone) lies in the posterior half of the muscle ring
        rows, cols = np.nonzero(mask)
        top = rows.min()
        bone_rows = np.nonzero(ct > 600)[0]
        assert top < np.median(bone_rows)
        assert np.median(bone_rows) > 0.5 * (rows.min() + rows.max())
        body_cols = np.nonzero(ct > -500)[1]
        assert abs(cols[rows <= top + 2].mean() - np.median(body_cols)) < 0.3 * np.ptp(body_cols)
    assert (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0) in directions
    assert (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0) in directions


def test_refuses_non_empty_folder(tmp_path: Path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(SarcoError, match="not empty"):
        write_dropin_dataset(out, n_cases=1, matrix=64)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_dropin_dataset(empty, n_cases=1, matrix=64) / "truth.csv").is_file()


def test_dataset_is_deterministic(tmp_path: Path, dataset: Path):
    again = write_dropin_dataset(tmp_path / "again", n_cases=3, seed=SEED, matrix=128)
    first = _read_csv(dataset / "truth.csv")[:3]
    assert _read_csv(again / "truth.csv") == first
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(again / "images" / "case_002.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "images" / "case_002.nii.gz")))
    assert np.array_equal(a, b)


def test_volume_levels_and_muscle_variation():
    vol = generate_phantom_volume(np.random.default_rng(4), slice_spacing_mm=5.0, matrix=64, sex="F")
    nz = vol.ct_hu.shape[0]
    assert 40 <= nz <= 70 and vol.spacing_mm[0] == 5.0
    assert vol.ct_hu.shape == vol.muscle_mask.shape == vol.vertebra_labels.shape
    assert set(np.unique(vol.vertebra_labels)) == {0, 26, 27, 28, 29, 30, 31, 32}
    z_of = {lb: np.nonzero((vol.vertebra_labels == lb).any(axis=(1, 2)))[0] for lb in range(26, 33)}
    l3 = z_of[29]
    assert l3.min() < vol.l3_slice_index < l3.max()
    # caudal to cranial in index order (LPS: z index grows towards superior)
    centres = [np.median(z_of[lb]) for lb in range(26, 33)]
    assert centres == sorted(centres)
    area = vol.muscle_area_cm2()
    assert (area > 0).all()
    assert area.max() / area.min() > 1.3
    assert vol.true_sma_cm2 == pytest.approx(area[vol.l3_slice_index])
    # discs separate the bodies: between the L3 and L4 centres the vertebral-body region loses its bone
    rows, cols = np.nonzero(vol.vertebra_labels[vol.l3_slice_index] == 29)
    front = rows < np.median(rows)  # anterior half of the L3 label = the vertebral body
    region = (rows[front], cols[front])
    bone = [np.mean(vol.ct_hu[i][region] > 150) for i in range(nz)]
    assert bone[vol.l3_slice_index] > 0.8
    between = range(int(np.median(z_of[28])), vol.l3_slice_index)
    assert min(bone[i] for i in between) < 0.3


def test_volume_dropin_masks_only_l3(tmp_path: Path):
    out = write_dropin_dataset(tmp_path / "vol", n_cases=2, seed=1, matrix=48, volumes=True)
    truth = _read_csv(out / "truth.csv")
    assert "l3_slice_index" in truth[0]
    for row in truth:
        cid = row["case_id"]
        img = sitk.ReadImage(str(out / "images" / f"{cid}.nii.gz"))
        msk = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masks" / f"{cid}.nii.gz")))
        vert = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "vertebrae" / f"{cid}.nii.gz")))
        assert img.GetSize()[2] > 30 and msk.shape == vert.shape == sitk.GetArrayFromImage(img).shape
        li = int(row["l3_slice_index"])
        assert np.nonzero(msk.reshape(len(msk), -1).any(axis=1))[0].tolist() == [li]
        assert (vert[li] == 29).any()
        sx, sy, _ = img.GetSpacing()
        assert abs(np.count_nonzero(msk == 1) * sx * sy / 100.0 - float(row["true_sma_cm2"])) < 1e-6
        assert abs(np.count_nonzero(msk == 4) * sx * sy / 100.0 - float(row["true_sat_cm2"])) < 1e-6


# ----------------------------------------------------------------------------------- four tissues
def test_masks_hold_four_tissues_with_exact_areas_and_fat_hu(dataset: Path):
    assert json.loads((dataset / "labels.json").read_text()) == {"muscle": 1, "imat": 2, "vat": 3, "sat": 4}
    for row in _read_csv(dataset / "truth.csv"):
        cid = row["case_id"]
        img = sitk.DICOMOrient(sitk.ReadImage(str(dataset / "images" / f"{cid}.nii.gz")), "LPS")
        msk = sitk.DICOMOrient(sitk.ReadImage(str(dataset / "masks" / f"{cid}.nii.gz")), "LPS")
        ct, mask = sitk.GetArrayFromImage(img)[0].astype(float), sitk.GetArrayFromImage(msk)[0]
        assert set(np.unique(mask)) == {0, 1, 2, 3, 4}
        pixel = float(row["spacing_y_mm"]) * float(row["spacing_x_mm"]) / 100.0
        for name, value in (("imat", 2), ("vat", 3), ("sat", 4)):
            assert np.count_nonzero(mask == value) * pixel == pytest.approx(float(row[f"true_{name}_cm2"]), abs=1e-9)
            assert np.median(ct[mask == value]) < -30  # adipose tissue
        assert np.median(ct[mask == 1]) > -29
        # SAT wraps the body: its centroid is the body's, and it lies outside the muscle ring
        rows, cols = np.nonzero(mask == 4)
        mrows, mcols = np.nonzero(mask == 1)
        assert rows.min() < mrows.min() and rows.max() > mrows.max()
        assert cols.min() < mcols.min() and cols.max() > mcols.max()
        # VAT sits inside the muscle ring's bounding box
        vrows, vcols = np.nonzero(mask == 3)
        assert mcols.min() < vcols.min() and vcols.max() < mcols.max()


def test_slice_tissue_mask_agrees_with_muscle_mask():
    ph = generate_phantom_slice(np.random.default_rng(21), matrix=128)
    assert np.array_equal(ph.tissue_mask == 1, ph.muscle_mask == 1)
    areas = ph.tissue_areas_cm2()
    assert areas["muscle"] == pytest.approx(ph.true_sma_cm2)
    assert set(areas) == {"muscle", "imat", "vat", "sat"} and all(v > 0 for v in areas.values())


def test_convert_of_a_four_tissue_drop_keeps_muscle_only(dataset: Path, tmp_path: Path):
    from dataset_conversion.convert import convert_dropin

    result = convert_dropin(dataset, tmp_path / "raw", "Four", 590)
    assert result.n_cases == 10
    truth = {r["case_id"]: float(r["true_sma_cm2"]) for r in _read_csv(dataset / "truth.csv")}
    values, areas = set(), []
    for lab_path in sorted((result.dataset_dir / "labelsTr").iterdir()):
        lab = sitk.ReadImage(str(lab_path))
        arr = sitk.GetArrayFromImage(lab)
        values |= set(np.unique(arr).tolist())
        sx, sy, _ = lab.GetSpacing()
        areas.append(np.count_nonzero(arr == 1) * sx * sy / 100.0)
    assert values == {0, 1}
    assert sorted(areas) == pytest.approx(sorted(truth.values()), abs=1e-6)
