"""One case-id rule, one image–mask pairing, one labels.json reader (issue #13 item 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarco_nn.cases import (
    case_entries, case_id_from_path, group_by_case, index_by_case, index_folder, muscle_label_for, pair_by_case,
    read_labels_json,
)
from sarco_nn.errors import InputError


@pytest.mark.parametrize("name, expected", [
    ("p01.nii.gz", "p01"), ("p01_0000.nii.gz", "p01"), ("P01.NII.GZ", "P01"), ("p01.nii", "p01"),
    ("p01.mha", "p01"), ("p01.mhd", "p01"), ("p01.nrrd", "p01"), ("p01.nhdr", "p01"), ("p01.dcm", "p01"),
    ("p01_0000.mha", "p01"), ("scan.ima", "scan"), ("1.2.840.113619", "1.2.840.113619"), ("IM0001", "IM0001"),
    ("p.01.nii.gz", "p.01"), ("p01_0001.nii.gz", "p01_0001"),
])
def test_case_id_from_file_name(name, expected, tmp_path):
    path = tmp_path / name
    path.write_bytes(b"")
    assert case_id_from_path(path) == expected


def test_case_id_of_a_series_folder_is_its_name(tmp_path):
    (tmp_path / "series_0000.nii.gz").mkdir()  # a folder keeps its whole name
    assert case_id_from_path(tmp_path / "series_0000.nii.gz") == "series_0000.nii.gz"


@pytest.mark.parametrize("name", ["_0000.nii.gz", ".nii.gz", "_0000"])
def test_empty_case_id_is_a_clear_error(name, tmp_path):
    with pytest.raises(InputError, match="empty case id") as info:
        case_id_from_path(tmp_path / name)
    assert name in str(info.value) and "Fix:" in str(info.value)


def test_predict_convert_and_evaluate_name_nnunet_images_the_same():
    from sarco_nn.evaluation.evaluate import list_masks  # noqa: F401  (uses the same rule)

    # predict used to strip _0000, convert and evaluate did not: one rule now
    assert case_id_from_path(Path("a_0000.nii.gz")) == case_id_from_path(Path("a.nii.gz")) == "a"


def test_duplicates_are_refused_naming_both_files(tmp_path):
    for name in ("a.nii.gz", "a.mha", "b.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(group_by_case(tmp_path.iterdir())["a"]) == [tmp_path / "a.mha", tmp_path / "a.nii.gz"]
    with pytest.raises(InputError) as info:
        index_by_case(tmp_path.iterdir(), tmp_path)
    assert "a.mha" in str(info.value) and "a.nii.gz" in str(info.value)


def test_mhd_pixel_files_are_not_cases(tmp_path):
    for name in ("a.mhd", "a.raw", "b.nii.gz", ".hidden.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in case_entries(tmp_path)] == ["a.mhd", "b.nii.gz"]
    assert set(index_folder(tmp_path)) == {"a", "b"}


def test_pairing_reports_both_sides():
    pairing = pair_by_case({"a": Path("ia"), "b": Path("ib")}, {"b": Path("mb"), "c": Path("mc")})
    assert pairing.pairs == {"b": (Path("ib"), Path("mb"))}
    assert pairing.images_only == ["a"] and pairing.masks_only == ["c"]


def test_labels_json_rule(tmp_path):
    (tmp_path / "masks").mkdir()
    assert muscle_label_for(tmp_path / "masks") == (1, "sarco default")
    (tmp_path / "labels.json").write_text('{"muscle": 2, "imat": 1}')
    assert read_labels_json(tmp_path / "labels.json") == {"muscle": 2, "imat": 1}
    assert muscle_label_for(tmp_path / "masks")[0] == 2
    assert muscle_label_for(tmp_path / "masks", 7) == (7, "--label")
    (tmp_path / "labels.json").write_text('{"imat": 1}')
    with pytest.raises(InputError, match="muscle"):
        read_labels_json(tmp_path / "labels.json")


def _write(path: Path, value: int = 1) -> None:
    arr = np.zeros((2, 20, 20), np.uint8)
    arr[1, 2:10, 2:10] = value
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


def test_train_l3_refuses_duplicate_masks_instead_of_letting_the_last_win(tmp_path):
    from sarco_nn.l3.train_l3 import cases_from_dropin

    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    _write(tmp_path / "images" / "a.nii.gz")
    _write(tmp_path / "masks" / "a.nii.gz")
    _write(tmp_path / "masks" / "a.mha")
    with pytest.raises(InputError, match="a.mha.*a.nii.gz"):
        cases_from_dropin(tmp_path)


def test_convert_uses_the_same_case_id_rule(tmp_path):
    from dataset_conversion.convert import _list_entries

    for name in ("a_0000.nii.gz", "b.nii.gz", "_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    problems: list[str] = []
    found, duplicated = _list_entries(tmp_path, problems, "CT images")
    assert set(found) == {"a", "b"} and not duplicated
    assert any("empty case id" in p for p in problems)


@pytest.mark.parametrize("content", ['{"muscle": 1, "imat": 2, "VAT": 3, "SAT": 4}', '{"Muscle": 1}'])
def test_a_tissue_name_in_another_letter_case_is_refused_not_ignored(content, tmp_path):
    """HOSTILE_FINDINGS #98: "VAT"/"SAT" named no tissue, so measure reported VAT and SAT `absent`, status ok."""
    (tmp_path / "labels.json").write_text(content)
    with pytest.raises(InputError, match="must be lower case") as info:
        read_labels_json(tmp_path / "labels.json")
    assert "muscle, imat, vat, sat" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ['=HYPERLINK("x","y").nii.gz', "+1-2.nii.gz", "-5_0000.nii.gz",
                                  "@SUM(A1).nii", "\t=p01.nii.gz"])
def test_a_case_id_a_spreadsheet_would_run_as_a_formula_is_refused_naming_the_file(tmp_path, name):
    """HOSTILE #120: results.csv opened in a spreadsheet must never hold a formula for a case id."""
    with pytest.raises(InputError) as err:
        case_id_from_path(tmp_path / name)
    text = str(err.value)
    assert "formula" in text and "rename" in text and name[:3] in text


def test_a_tab_or_cr_before_the_id_is_white_space_stripped_not_a_formula(tmp_path):
    """HOSTILE #124: white space at either end is no part of an id (as in clinical.csv cells), so a
    leading tab or CR never reaches a cell; what follows it is checked."""
    assert case_id_from_path(tmp_path / "\tp01.nii.gz") == case_id_from_path(tmp_path / "\rp01.nii.gz") == "p01"


def test_formula_characters_inside_an_id_are_kept(tmp_path):
    assert case_id_from_path(tmp_path / "p-01+x=y@z.nii.gz") == "p-01+x=y@z"


def test_predict_discovery_makes_a_formula_named_input_a_failed_row_with_a_quoted_id(tmp_path):
    """HOSTILE #120 through `sarco predict`'s discovery: a file, a series folder and an odd-named file."""
    from sarco_nn.inference import discover_scans

    (tmp_path / "=cmd.nii.gz").write_bytes(b"x")
    (tmp_path / "@series").mkdir()
    (tmp_path / "+1").write_bytes(b"x")
    (tmp_path / "p01.nii.gz").write_bytes(b"x")
    scans = {s.case_id: s for s in discover_scans(tmp_path)}
    assert set(scans) == {"'=cmd.nii.gz", "'@series", "'+1", "p01"}
    for cid in ("'=cmd.nii.gz", "'@series", "'+1"):
        assert "formula" in str(scans[cid].error) and "rename" in str(scans[cid].error)
    assert scans["p01"].error is None
