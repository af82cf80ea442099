"""Family B ("site B"): independent of family A's code, same drop-in layout, and the site shifts it promises."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantoms import anatomy_b, family_b, render_b, scanner_b
from dataset_conversion.phantoms.anatomy_b import TissueB, draw_patient
from dataset_conversion.phantoms.family_b import generate_slice
from dataset_conversion.phantoms.writer import write_dropin_dataset
from sarco_nn.constants import MUSCLE_HU_GATE
from sarco_nn.errors import SarcoError

CUTOFF = {"M": 144.0, "F": 92.0}
FAMILY_A_MODULES = {"anatomy_a", "render_a", "scanner_a", "family_a", "phantom", "phantom_volume"}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def drop_b(tmp_path_factory) -> Path:
    return write_dropin_dataset(tmp_path_factory.mktemp("b") / "ds", n_cases=8, seed=3, matrix=128, family="B")


@pytest.fixture(scope="module")
def slices_b():
    """A small cohort at 256² (site variety is a cohort property)."""
    return [generate_slice(np.random.default_rng([40, i]), matrix=256) for i in range(14)]


def test_family_b_imports_none_of_family_a():
    for module in (anatomy_b, render_b, scanner_b, family_b):
        tree = ast.parse(Path(module.__file__).read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.rsplit(".", 1)[-1])
            elif isinstance(node, ast.Import):
                names |= {a.name.rsplit(".", 1)[-1] for a in node.names}
        assert not names & FAMILY_A_MODULES, f"{module.__name__} imports family A: {names & FAMILY_A_MODULES}"


def test_family_b_drop_has_the_layout_exact_areas_and_both_classes(drop_b: Path):
    assert json.loads((drop_b / "labels.json").read_text()) == {"muscle": 1, "imat": 2, "vat": 3, "sat": 4}
    clinical = {r["case_id"]: r for r in _read_csv(drop_b / "clinical.csv")}
    truth = _read_csv(drop_b / "truth.csv")
    assert len(truth) == 8 and set(clinical) == {r["case_id"] for r in truth}
    for row in truth:
        img = sitk.ReadImage(str(drop_b / "images" / f"{row['case_id']}.nii.gz"))
        msk = sitk.ReadImage(str(drop_b / "masks" / f"{row['case_id']}.nii.gz"))
        assert img.GetPixelID() == sitk.sitkInt16 and msk.GetPixelID() == sitk.sitkUInt8
        assert img.GetSize() == msk.GetSize() and img.GetSize()[2] == 1 and img.GetOrigin() == msk.GetOrigin()
        sx, sy, _ = msk.GetSpacing()
        assert (sy, sx) == (float(row["spacing_y_mm"]), float(row["spacing_x_mm"]))
        arr = sitk.GetArrayFromImage(msk)
        assert set(np.unique(arr)) <= {0, 1, 2, 3, 4}
        for name, value in (("sma", 1), ("imat", 2), ("vat", 3), ("sat", 4)):
            assert np.count_nonzero(arr == value) * sx * sy / 100.0 == pytest.approx(float(row[f"true_{name}_cm2"]),
                                                                                     abs=1e-6)
        sma = float(row["true_sma_cm2"])
        assert int(row["sarcopenic_truth"]) == int(sma < CUTOFF[clinical[row["case_id"]]["sex"]])
    assert {r["sarcopenic_truth"] for r in truth} == {"0", "1"}


def test_family_b_is_deterministic_and_differs_from_family_a(tmp_path: Path, drop_b: Path):
    again = write_dropin_dataset(tmp_path / "again", n_cases=2, seed=3, matrix=128, family="B")
    assert _read_csv(again / "truth.csv") == _read_csv(drop_b / "truth.csv")[:2]
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(again / "images" / "case_001.nii.gz")))
    assert np.array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(drop_b / "images" / "case_001.nii.gz"))))
    site_a = write_dropin_dataset(tmp_path / "a", n_cases=2, seed=3, matrix=128, family="A")
    assert _read_csv(site_a / "truth.csv") != _read_csv(again / "truth.csv")


def test_family_b_spans_site_and_patient_variation(slices_b):
    spacings = np.array([ph.spacing_mm for ph, _ in slices_b])
    scale = 512 / 256
    assert spacings.min() >= 0.5 * scale - 1e-9 and spacings.max() <= 1.0 * scale + 1e-9
    assert np.ptp(spacings) > 0.3 * scale
    assert any(abs(a - b) > 1e-6 for a, b in spacings)  # non-square pixels
    thick = {dz for _, dz in slices_b}
    assert min(thick) <= 1.25 and max(thick) >= 3.0
    pads = {int(ph.ct_hu.min()) for ph, _ in slices_b}
    assert any(v < -1024 for v in pads)  # a vendor's circle fill below air
    truncated = [ph for ph, _ in slices_b if (ph.tissue_mask[:, 0] == 4).any() or (ph.tissue_mask[:, -1] == 4).any()]
    air = [np.mean(ph.ct_hu < -900) for ph, _ in slices_b]
    assert truncated and max(air) > 0.6  # cropped bodies and wide air around small ones
    lo, hi = MUSCLE_HU_GATE
    muscle_hu = [float(np.median(ph.ct_hu[ph.muscle_mask == 1])) for ph, _ in slices_b]
    assert min(muscle_hu) < 30 and max(muscle_hu) > 40  # myosteatosis ... normal muscle
    assert all(lo < m < hi for m in muscle_hu)
    bmis = [ph.weight_kg / ph.height_m**2 for ph, _ in slices_b]
    assert min(bmis) < 19 and max(bmis) > 30  # cachectic ... obese


def test_protocols_vary_kernel_noise_phase_and_table():
    kernels, phases, tables, noise = set(), set(), set(), []
    for i in range(80):
        rng = np.random.default_rng([41, i])
        p = draw_patient(rng)
        proto = scanner_b.draw_protocol(rng, p, 512, render_b.trunk_extent(p))
        kernels.add(proto.kernel)
        phases.add(proto.phase)
        tables.add(proto.table)
        noise.append(proto.noise_sd)
    assert kernels == set(scanner_b.KERNELS) and phases == set(scanner_b.PHASES)
    assert tables == {"curved", "flat", "none"}
    assert min(noise) < 10 and max(noise) > 25


def test_arm_muscle_is_not_trunk_muscle_and_organs_reach_muscle_hu():
    for i in range(60):
        rng = np.random.default_rng([42, i])
        p = draw_patient(rng)
        if p.arms:
            break
    else:
        pytest.fail("no patient with arms in the field of view among 60")
    render_b.fit_muscle_scale(p)
    x0, x1, y0, y1 = render_b.trunk_extent(p)
    xs, ys = np.arange(x0 - 10, x1 + 10, 1.5), np.arange(y0 - 10, y1 + 10, 1.5)
    lab = render_b.render(p, 0.0, xs, ys)
    mask = render_b.composition_mask(lab)
    assert np.count_nonzero(lab == TissueB.ARM_MUSCLE) > 100
    assert (mask[lab == TissueB.ARM_MUSCLE] == 0).all() and (mask[lab == TissueB.ARM_FAT] == 0).all()
    assert (mask[lab == TissueB.MUSCLE] == 1).all()
    hu = scanner_b.tissue_hu(np.random.default_rng(0), p, "portal_venous")
    muscle = hu[int(TissueB.MUSCLE)][0]
    assert hu[int(TissueB.LIVER)][0] > muscle and hu[int(TissueB.AORTA)][0] > muscle
    assert abs(hu[int(TissueB.ARM_MUSCLE)][0] - muscle) < 20  # same HU: only anatomy tells them apart


def test_family_b_refuses_an_unknown_family(tmp_path: Path):
    with pytest.raises(SarcoError, match="unknown phantom family"):
        write_dropin_dataset(tmp_path / "c", n_cases=1, matrix=64, family="C")
    assert not (tmp_path / "c").exists()


def test_family_b_volumes_span_t12_to_s1_with_levels_and_an_l3_mask(tmp_path: Path):
    from dataset_conversion.phantoms.family_b import generate_volume

    vol = generate_volume(np.random.default_rng(8), matrix=48, slice_spacing_mm=5.0)
    assert set(np.unique(vol.vertebra_labels)) == {0, 26, 27, 28, 29, 30, 31, 32}
    z_of = {lb: np.nonzero((vol.vertebra_labels == lb).any(axis=(1, 2)))[0] for lb in range(26, 33)}
    assert [np.median(z_of[lb]) for lb in range(26, 33)] == sorted(np.median(z_of[lb]) for lb in range(26, 33))
    assert z_of[29].min() <= vol.l3_slice_index <= z_of[29].max()
    area = vol.muscle_area_cm2()
    assert (area > 0).all() and area.max() / area.min() > 1.2
    assert np.array_equal(vol.tissue_mask == 1, vol.muscle_mask == 1)
    out = write_dropin_dataset(tmp_path / "vol", n_cases=1, seed=2, matrix=48, volumes=True, family="B")
    row = _read_csv(out / "truth.csv")[0]
    msk = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masks" / f"{row['case_id']}.nii.gz")))
    vert = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "vertebrae" / f"{row['case_id']}.nii.gz")))
    li = int(row["l3_slice_index"])
    assert np.nonzero(msk.reshape(len(msk), -1).any(axis=1))[0].tolist() == [li] and (vert[li] == 29).any()


def test_sarco_convert_accepts_a_family_b_drop_as_muscle_only(drop_b: Path, tmp_path: Path):
    from dataset_conversion.convert import convert_dropin

    result = convert_dropin(drop_b, tmp_path / "raw", "SiteB", 591)
    assert result.n_cases == 8
    values = set()
    for lab_path in (result.dataset_dir / "labelsTr").iterdir():
        values |= set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(lab_path)))).tolist())
    assert values == {0, 1}
