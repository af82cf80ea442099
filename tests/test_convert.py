"""Drop-in folder → nnU-Net raw dataset: outputs, geometry, pseudonyms and every refusal."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.convert import MANIFEST_COLUMNS, convert_dropin
from sarco_nn.clinical import read_clinical_csv
from sarco_nn.constants import CHANNEL_NAMES, FILE_ENDING, LABELS, SLICE_AXIS_SPACING_MM
from sarco_nn.errors import InputError
from sarco_nn.image_io import read_image, to_canonical
from helpers import DATA, as_ras, make_image, muscle_of, needs_data, phantom_array, tree_digest, write

CLINICAL_HEADER = "case_id,sex,height_m,weight_kg,age\n"


def clinical(drop: Path, ids, extra: str = "") -> None:
    rows = "".join(f"{i},{'M' if k % 2 else 'F'},1.{70 + k},{60 + k},{50 + k}\n" for k, i in enumerate(ids))
    (drop / "clinical.csv").write_text(CLINICAL_HEADER + rows + extra, encoding="utf-8")


def add_case(drop: Path, case_id: str, image: sitk.Image, mask: sitk.Image | None = None,
             image_ext: str = ".nii.gz", mask_ext: str = ".nii.gz") -> None:
    write(image, drop / "images" / f"{case_id}{image_ext}")
    if mask is None:
        mask = _default_mask(image)
    write(mask, drop / "masks" / f"{case_id}{mask_ext}")


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def good_drop(tmp_path) -> Path:
    drop = tmp_path / "drop"
    lps = make_image(phantom_array(nz=5, seed=1), spacing=(0.7, 0.8, 2.5))
    add_case(drop, "zeta_LPS", lps)
    add_case(drop, "alpha_RAS", as_ras(lps), as_ras(_default_mask(lps)), image_ext=".mha", mask_ext=".nrrd")
    slice2d = make_image(phantom_array(nz=1, seed=2)[0], spacing=(0.9, 0.6), origin=(5.0, 6.0))
    add_case(drop, "mid_2d", slice2d, make_image(muscle_of(phantom_array(nz=1, seed=2)[0]), (0.9, 0.6), (5.0, 6.0)),
             image_ext=".nrrd", mask_ext=".mha")
    clinical(drop, ["zeta_LPS", "alpha_RAS", "mid_2d"])
    return drop


def _default_mask(image: sitk.Image) -> sitk.Image:
    array = muscle_of(sitk.GetArrayFromImage(image))
    keep = np.zeros_like(array)
    keep[2] = array[2]
    mask = sitk.GetImageFromArray(keep)
    mask.CopyInformation(image)
    return mask


def test_converts_a_good_dropin(good_drop, tmp_path):
    before = tree_digest(good_drop)
    raw = tmp_path / "raw"
    result = convert_dropin(good_drop, raw, "L3test", 501)
    assert tree_digest(good_drop) == before  # input untouched
    assert result.dataset_name == "Dataset501_L3test" and result.n_cases == 3
    out = result.dataset_dir
    assert out == raw / "Dataset501_L3test" and sorted(p.name for p in raw.iterdir()) == ["Dataset501_L3test"]

    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["channel_names"] == CHANNEL_NAMES and dataset["labels"] == LABELS
    assert dataset["file_ending"] == FILE_ENDING and dataset["numTraining"] == 3 and dataset["name"] == "L3test"
    assert dataset["sarco"]["converter_version"]

    # pseudonyms in sorted order of source ids; no source id in any file name
    manifest = read_csv(out / "manifest.csv")
    assert list(manifest[0]) == list(MANIFEST_COLUMNS)
    assert [(m["pid"], m["source_case_id"]) for m in manifest] == [
        ("L3test_0001", "alpha_RAS"), ("L3test_0002", "mid_2d"), ("L3test_0003", "zeta_LPS")]
    names = [p.name for p in out.rglob("*")]
    assert not any(source in name for name in names for source in ("alpha", "zeta", "mid"))
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"L3test_000{i}_0000.nii.gz" for i in (1, 2, 3)]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"L3test_000{i}.nii.gz" for i in (1, 2, 3)]
    assert manifest[0]["image_path"] == "images/alpha_RAS.mha" and manifest[0]["slice_index"] == "2"
    assert manifest[1]["n_slices"] == "1" and manifest[1]["spacing_x_mm"] == "0.9"

    records = read_clinical_csv(out / "clinical.csv")
    assert list(records) == ["L3test_0001", "L3test_0002", "L3test_0003"]
    assert records["L3test_0003"].height_m == 1.70 and records["L3test_0001"].sex == "M"

    for pid in ("L3test_0001", "L3test_0002", "L3test_0003"):
        image = sitk.ReadImage(str(out / "imagesTr" / f"{pid}_0000.nii.gz"))
        label = sitk.ReadImage(str(out / "labelsTr" / f"{pid}.nii.gz"))
        assert image.GetSize()[2] == 1 and image.GetSpacing()[2] == SLICE_AXIS_SPACING_MM
        assert image.GetPixelID() in (sitk.sitkInt16, sitk.sitkFloat32) and label.GetPixelID() == sitk.sitkUInt8
        assert (label.GetSize(), label.GetSpacing(), label.GetOrigin(), label.GetDirection()) == \
               (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1}


def test_spacing_preserved_and_ras_equals_lps(good_drop, tmp_path):
    out = convert_dropin(good_drop, tmp_path / "raw", "L3test", 502).dataset_dir
    ras_img = sitk.ReadImage(str(out / "imagesTr" / "L3test_0001_0000.nii.gz"))  # alpha_RAS
    lps_img = sitk.ReadImage(str(out / "imagesTr" / "L3test_0003_0000.nii.gz"))  # zeta_LPS
    f32 = np.float32
    assert ras_img.GetSpacing() == lps_img.GetSpacing() == (float(f32(0.7)), float(f32(0.8)), SLICE_AXIS_SPACING_MM)
    assert np.allclose(ras_img.GetOrigin(), lps_img.GetOrigin(), atol=1e-4)
    assert lps_img.GetOrigin() == pytest.approx((-10.0, -20.0, 100.0 + 2 * 2.5))
    assert ras_img.GetDirection() == lps_img.GetDirection() == tuple(np.eye(3).ravel())
    assert np.array_equal(sitk.GetArrayFromImage(ras_img), sitk.GetArrayFromImage(lps_img))
    ras_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "L3test_0001.nii.gz")))
    lps_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "L3test_0003.nii.gz")))
    assert np.array_equal(ras_lab, lps_lab) and ras_lab.sum() > 0
    source = phantom_array(nz=5, seed=1)[2]  # the stored LPS slice, i.e. the expected canonical one
    assert np.array_equal(sitk.GetArrayFromImage(lps_img)[0], source)
    two_d = sitk.ReadImage(str(out / "imagesTr" / "L3test_0002_0000.nii.gz"))
    assert two_d.GetSpacing()[:2] == (float(f32(0.9)), float(f32(0.6)))
    assert two_d.GetOrigin()[:2] == (5.0, 6.0)


def test_output_is_a_valid_nnunet_dataset(good_drop, tmp_path):
    """nnU-Net's own integrity checks (run in-process: its pool would spawn slow workers)."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import check_cases, verify_labels
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    out = convert_dropin(good_drop, tmp_path / "raw", "L3test", 503).dataset_dir
    dataset_json = json.loads((out / "dataset.json").read_text())
    cases = get_filenames_of_train_images_and_targets(str(out), dataset_json)
    assert len(cases) == dataset_json["numTraining"]
    first = next(iter(cases.values()))
    reader = determine_reader_writer_from_dataset_json(dataset_json, first["images"][0])
    for case in cases.values():
        assert verify_labels(case["label"], reader, [0, 1])
        assert check_cases(case["images"], case["label"], 1, reader)
    data, properties = reader().read_images(first["images"])
    assert data.shape[1] == 1  # one slice on the first spatial axis
    assert properties["spacing"][0] == max(properties["spacing"])  # nnU-Net will plan 2d, not transpose


def test_labels_json_keeps_only_muscle_and_multislice_masks_split(tmp_path):
    drop = tmp_path / "drop"
    lps = make_image(phantom_array(nz=5))
    hu = phantom_array(nz=5)
    labels = np.zeros(hu.shape, np.uint8)
    labels[1][muscle_of(hu)[1] > 0] = 3  # muscle declared as 3
    labels[3][muscle_of(hu)[3] > 0] = 3
    labels[3][hu[3] < -50] = 2  # fat elsewhere, label "imat"
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(lps)
    add_case(drop, "p1", lps, mask)
    (drop / "labels.json").write_text(json.dumps({"muscle": 3, "imat": 2}))
    clinical(drop, ["p1"])
    result = convert_dropin(drop, tmp_path / "raw", "Multi", 504)
    assert result.n_cases == 2
    assert any("2 axial slices" in note for note in result.notes)
    manifest = read_csv(result.dataset_dir / "manifest.csv")
    assert [(m["pid"], m["slice_index"], m["annotated_slices"]) for m in manifest] == [
        ("Multi_0001_s001", "1", "2"), ("Multi_0001_s003", "3", "2")]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(result.dataset_dir / "labelsTr" / "Multi_0001_s003.nii.gz")))
    assert np.array_equal(label[0], muscle_of(hu)[3])  # imat (2) → 0, muscle (3) → 1
    assert len(read_clinical_csv(result.dataset_dir / "clinical.csv")) == 2


@pytest.mark.parametrize("step_mm, warned", [(20.0, True), (2.5, False)])
def test_a_mask_whose_slices_span_several_levels_converts_with_a_warning(tmp_path, step_mm, warned):
    """#84's rule at convert: 4 slices 60 mm apart are several levels (warned, not refused); 7.5 mm apart one."""
    drop = tmp_path / "drop"
    hu = phantom_array(nz=5)
    image = make_image(hu, spacing=(0.7, 0.8, step_mm))
    labels = muscle_of(hu).astype(np.uint8)
    labels[0] = 0
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    add_case(drop, "whole", image, mask)
    clinical(drop, ["whole"])
    result = convert_dropin(drop, tmp_path / "raw", "Span", 505)
    assert result.n_cases == 4
    if warned:
        assert len(result.warnings) == 1 and not any("axial slices" in n for n in result.notes)
        text = result.warnings[0]
        assert "'whole'" in text and "spanning 60 mm" in text and "slices 1..4" in text
        assert "L3 cut-offs" in text and "Fix: keep only the L3 slice" in text and "--slice" not in text
    else:
        assert result.warnings == [] and any("4 axial slices" in n for n in result.notes)


def test_undeclared_label_is_refused(tmp_path):
    drop = tmp_path / "drop"
    lps = make_image(phantom_array())
    mask = sitk.GetImageFromArray(muscle_of(phantom_array()) * 255)
    mask.CopyInformation(lps)
    add_case(drop, "p1", lps, mask)
    clinical(drop, ["p1"])
    with pytest.raises(InputError, match=r"label value\(s\) \[255\] not declared"):
        convert_dropin(drop, tmp_path / "raw", "X", 505)


def test_all_problems_are_collected_and_nothing_is_written(tmp_path):
    drop = tmp_path / "drop"
    hu = phantom_array()
    good = make_image(hu)
    add_case(drop, "ok", good)
    add_case(drop, "shifted", good, make_image(muscle_of(hu), origin=(-10.0, -18.0, 100.0)))
    add_case(drop, "empty", good, make_image(np.zeros(hu.shape, np.uint8)))
    add_case(drop, "notct", make_image((hu + 1000) / 3000.0))
    tilt = np.radians(30)
    add_case(drop, "oblique", make_image(hu, direction=(1, 0, 0, 0, np.cos(tilt), -np.sin(tilt),
                                                        0, np.sin(tilt), np.cos(tilt))))
    add_case(drop, "dup", good)
    write(good, drop / "images" / "dup.mha")
    write(good, drop / "images" / "lonely.nii.gz")
    write(make_image(muscle_of(hu)), drop / "masks" / "orphan.nii.gz")
    add_case(drop, "noclin", good)
    add_case(drop, "badsize", good, make_image(muscle_of(phantom_array(ny=30))))
    clinical(drop, ["ok", "shifted", "empty", "notct", "oblique", "dup", "badsize"])
    raw = tmp_path / "raw"
    with pytest.raises(InputError) as info:
        convert_dropin(drop, raw, "Bad", 506)
    lines = str(info.value).splitlines()
    assert "9 problem(s)" in lines[0] and "nothing was converted" in lines[0]
    body = "\n".join(lines[1:])
    expected = {
        "shifted": "origin", "empty": "empty mask", "notct": "not a CT", "oblique": "not an axial image",
        "dup": "duplicate case id", "lonely": "image without mask", "orphan": "mask without image",
        "noclin": "missing from clinical.csv", "badsize": "mask size",
    }
    for case_id, words in expected.items():
        matching = [line for line in lines[1:] if f"case {case_id!r}" in line]
        assert len(matching) == 1 and words in matching[0], (case_id, body)
    assert "'ok'" not in body
    assert list(raw.iterdir()) == []  # no dataset folder, no partial folder


def test_existing_dataset_refused_unless_overwrite(good_drop, tmp_path):
    raw = tmp_path / "raw"
    first = convert_dropin(good_drop, raw, "L3test", 507)
    (first.dataset_dir / "stale.txt").write_text("old")
    with pytest.raises(InputError, match="already exists"):
        convert_dropin(good_drop, raw, "L3test", 507)
    assert (first.dataset_dir / "stale.txt").exists()
    again = convert_dropin(good_drop, raw, "L3test", 507, overwrite=True)
    assert not (again.dataset_dir / "stale.txt").exists() and again.n_cases == 3
    with pytest.raises(InputError, match="already used by Dataset507_L3test"):
        convert_dropin(good_drop, raw, "Other", 507, overwrite=True)
    with pytest.raises(InputError, match="dataset name"):
        convert_dropin(good_drop, raw, "bad name", 508)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset507_L3test"]


def test_a_dataset_name_means_one_dataset(good_drop, tmp_path):
    """HOSTILE_FINDINGS #82: `sarco convert DROP --name Ci` a second time (or with --overwrite but no --id) wrote
    Dataset502_Ci beside Dataset501_Ci, and `--dataset Ci` (plan, train, evaluate) then took the older one."""
    from sarco_nn import api
    from sarco_nn.errors import SarcoError
    from sarco_nn.workspace import Workspace

    ws = tmp_path / "ws"
    first = api.convert(good_drop, name="Ci", workspace=ws)
    (first.dataset_dir / "stale.txt").write_text("old")
    for dataset_id in (None, 600):
        with pytest.raises(InputError, match="dataset name 'Ci' is already used by Dataset501_Ci.*--overwrite"):
            api.convert(good_drop, name="Ci", dataset_id=dataset_id, workspace=ws)
    planned = ws / "nnUNet_preprocessed" / "Dataset501_Ci"
    planned.mkdir(parents=True)
    (planned / "sarcoPlans_cpu.json").write_text("{}")  # `sarco plan` would skip it as "already planned"
    (ws / "nnUNet_results" / "Dataset501_Ci").mkdir(parents=True)
    again = api.convert(good_drop, name="Ci", overwrite=True, workspace=ws)
    assert again.dataset_name == "Dataset501_Ci" and not (again.dataset_dir / "stale.txt").exists()
    assert not planned.exists() and (ws / "nnUNet_results" / "Dataset501_Ci").is_dir()  # plans of the old data gone
    assert any("run `sarco plan` again" in n and "models in" in n for n in again.notes)
    assert sorted(p.name for p in (ws / "nnUNet_raw").iterdir()) == ["Dataset501_Ci"]
    assert api.convert(good_drop, name="Ci2", workspace=ws).dataset_name == "Dataset502_Ci2"  # a prefix is no namesake
    (ws / "nnUNet_raw" / "Dataset503_Ci").mkdir()  # a workspace written before this rule
    with pytest.raises(SarcoError, match=r"several datasets are named 'Ci'.*Dataset501_Ci, Dataset503_Ci"):
        Workspace.resolve(ws).dataset_name("Ci")
    assert Workspace.resolve(ws).dataset_name(503) == "Dataset503_Ci"


@needs_data
def test_real_dicom_series_converts_onto_the_reference_grid(tmp_path):
    """TotalSegmentator's series (no file extensions, empty UIDs) + a mask derived from its seg."""
    series = DATA / "totalsegmentator" / "example_ct_dicom"
    seg_path = DATA / "totalsegmentator" / "example_seg_dicom.nii.gz"
    drop = tmp_path / "drop"
    (drop / "images").mkdir(parents=True)
    os.symlink(series, drop / "images" / "ts_case")
    seg = sitk.ReadImage(str(seg_path))  # stored LAS
    seg_array = sitk.GetArrayFromImage(seg)
    canonical_seg = to_canonical(seg)
    z = 10  # canonical (LPS, inferior → superior) slice to annotate
    muscle_canonical = np.isin(sitk.GetArrayFromImage(canonical_seg)[z], [86, 87])  # autochthon muscles
    world_z = canonical_seg.GetOrigin()[2] + z * canonical_seg.GetSpacing()[2]
    stored_z = int(round((world_z - seg.GetOrigin()[2]) / seg.GetSpacing()[2]))
    mask_array = np.zeros_like(seg_array)
    mask_array[stored_z] = np.isin(seg_array[stored_z], [86, 87])
    mask = sitk.GetImageFromArray(mask_array)
    mask.CopyInformation(seg)
    write(mask, drop / "masks" / "ts_case.nii.gz")
    clinical(drop, ["ts_case"])

    result = convert_dropin(drop, tmp_path / "raw", "TS", 509)
    out_img = sitk.ReadImage(str(result.dataset_dir / "imagesTr" / "TS_0001_0000.nii.gz"))
    out_lab = sitk.ReadImage(str(result.dataset_dir / "labelsTr" / "TS_0001.nii.gz"))
    assert out_img.GetSize() == (512, 512, 1)
    assert np.allclose(out_img.GetSpacing()[:2], canonical_seg.GetSpacing()[:2], atol=1e-6)
    assert np.allclose(out_img.GetOrigin(), (*canonical_seg.GetOrigin()[:2], world_z), atol=1e-3)
    assert out_img.GetDirection() == canonical_seg.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(out_lab)[0], muscle_canonical.astype(np.uint8))
    hu = sitk.GetArrayFromImage(out_img)[0]
    assert np.array_equal(hu, sitk.GetArrayFromImage(to_canonical(read_image(series)))[z])
    assert 20 < hu[muscle_canonical].mean() < 90  # the label lies on muscle in the converted image
    row = read_csv(result.dataset_dir / "manifest.csv")[0]
    assert (row["slice_index"], row["n_slices"], row["image_path"]) == ("10", "20", "images/ts_case")


@needs_data
def test_failing_dicom_series_in_a_dropin_is_refused_by_name(tmp_path):
    drop = tmp_path / "drop"
    (drop / "images").mkdir(parents=True)
    shutil.copytree(DATA / "dicom2nifti_failing_ct" / "gantrytilting" / "001", drop / "images" / "tilted")
    write(make_image(np.zeros((4, 8, 8), np.uint8)), drop / "masks" / "tilted.nii.gz")
    clinical(drop, ["tilted"])
    with pytest.raises(InputError) as info:
        convert_dropin(drop, tmp_path / "raw", "T", 510)
    assert "case 'tilted'" in str(info.value) and "gantry tilt" in str(info.value)


def test_keep_tissues_remaps_to_tissue_labels_and_muscle_stays_1(tmp_path):
    from sarco_nn.constants import TISSUE_LABELS

    drop = tmp_path / "drop"
    hu = phantom_array(nz=3)
    lps = make_image(hu)
    labels = np.zeros(hu.shape, np.uint8)
    labels[1][muscle_of(hu)[1] > 0] = 7   # muscle declared as 7
    labels[1][(hu[1] < -50) & (labels[1] == 0)] = 5  # fat, declared "sat"
    labels[1][0, 0] = 6  # one pixel declared "imat"
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(lps)
    add_case(drop, "p1", lps, mask)
    (drop / "labels.json").write_text(json.dumps({"muscle": 7, "sat": 5, "imat": 6}))
    clinical(drop, ["p1"])
    plain = convert_dropin(drop, tmp_path / "raw", "Plain", 505)
    kept = convert_dropin(drop, tmp_path / "raw", "Tissues", 506, keep_tissues=True)
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(kept.dataset_dir / "labelsTr" / "Tissues_0001.nii.gz")))[0]
    assert np.array_equal(out == 1, labels[1] == 7)
    assert np.array_equal(out == TISSUE_LABELS["sat"], labels[1] == 5) and (labels[1] == 5).any()
    assert np.array_equal(out == TISSUE_LABELS["imat"], labels[1] == 6) and not (out == 3).any()
    meta = json.loads((kept.dataset_dir / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "muscle": 1, "imat": 2, "sat": 4}
    assert json.loads((plain.dataset_dir / "dataset.json").read_text())["labels"] == LABELS
    only = sitk.GetArrayFromImage(sitk.ReadImage(str(plain.dataset_dir / "labelsTr" / "Plain_0001.nii.gz")))[0]
    assert set(np.unique(only)) == {0, 1}
    (drop / "labels.json").write_text(json.dumps({"muscle": 7, "sat": 5, "bone": 6}))
    with pytest.raises(InputError, match="bone"):
        convert_dropin(drop, tmp_path / "raw", "Bad", 507, keep_tissues=True)


def test_a_killed_converts_staging_folder_is_removed_by_the_next_convert(good_drop, tmp_path):
    """A SIGKILLed convert leaves `.<name>.partial-<pid>-…`; nothing else would ever clean it (#14)."""
    import subprocess
    import sys

    raw = tmp_path / "raw"
    raw.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = raw / f".Dataset501_L3test.partial-{int(dead.stdout)}-abc"
    (stale / "imagesTr").mkdir(parents=True)
    alive = raw / f".Dataset502_Other.partial-{os.getpid()}-xyz"  # a convert still running: kept
    alive.mkdir()
    convert_dropin(good_drop, raw, "L3test", 501)
    assert not stale.exists() and alive.exists()
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == ["Dataset501_L3test"]


def test_a_clinical_row_differing_in_letter_case_is_named_by_the_one_near_id_rule(good_drop, tmp_path):
    """convert names the CSV's near id as predict's warning does (`clinical.missing_rows`, one rule):
    'ZETA_lps' for zeta_LPS is refused saying which row was meant; a row with no near id says nothing more."""
    from sarco_nn.clinical import missing_row_name, missing_rows_warning, read_clinical_csv

    clinical(good_drop, ["ZETA_lps", "alpha_RAS"])
    with pytest.raises(InputError) as info:
        convert_dropin(good_drop, tmp_path / "raw", "Near", 507)
    lines = str(info.value).splitlines()
    [near] = [line for line in lines if "'zeta_LPS'" in line]
    assert f"case {missing_row_name(repr('zeta_LPS'), 'ZETA_lps')}: missing from clinical.csv" in near
    assert "case-sensitive" in near
    [plain] = [line for line in lines if "'mid_2d'" in line]
    assert "the CSV has" not in plain and "case-sensitive" not in plain
    table = read_clinical_csv(good_drop / "clinical.csv")
    warning = missing_rows_warning(good_drop / "clinical.csv", table, ["zeta_LPS", "alpha_RAS"])
    assert missing_row_name("zeta_LPS", "ZETA_lps") in warning  # predict's line names the same row
