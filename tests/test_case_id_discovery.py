"""One case-id rule for every discovery (HOSTILE #120 at the right depth): predict, measure, evaluate, convert.

A name a spreadsheet would run as a formula never reaches a CSV cell unquoted; predict (and classify
predict) make it a `failed` row with the rule's own message and fix, the strict commands refuse it
in one line naming the file and the fix; measure has no case id and measures such a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import make_image, muscle_of, phantom_array, write
from sarco_nn.cases import EntryId, case_id_for_entry, case_id_from_path, csv_safe
from sarco_nn.errors import InputError, SarcoError

FORMULA_NAMES = ["=HYPERLINK(1).nii.gz", "-x.nii.gz"]


def _slice_ct(path: Path) -> Path:
    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    return write(make_image(hu, spacing=(0.8, 0.8)), path)


def _muscle_mask(path: Path) -> Path:
    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    return write(make_image(muscle_of(hu), spacing=(0.8, 0.8)), path)


@pytest.mark.parametrize("name, stem", [("=HYPERLINK(1).nii.gz", "=HYPERLINK(1)"), ("-x.nii.gz", "-x")])
def test_the_rule_gives_a_csv_safe_stand_in_and_the_refusal_naming_file_and_fix(tmp_path, name, stem):
    named = case_id_for_entry(tmp_path / name)
    assert named.case_id == named.name == "'" + name  # the whole name, quoted: never a formula in a cell
    text = str(named.error)
    assert name in text and repr(stem) in text and "Fix: rename" in text and "\n" not in text
    with pytest.raises(InputError) as refused:
        case_id_from_path(tmp_path / name)
    assert str(refused.value) == text  # the strict form is the same refusal, not a second rule


def test_a_plain_name_has_no_error_and_csv_safe_leaves_it_alone(tmp_path):
    assert case_id_for_entry(tmp_path / "p-01_0000.nii.gz") == EntryId("p-01", "p-01_0000.nii.gz", None)
    assert csv_safe("p01") == "p01" and csv_safe("@x") == "'@x" and csv_safe("\tx") == "'\tx"


def test_predict_discovery_gives_the_rules_message_and_the_batch_goes_on(tmp_path):
    """The failed row's reason is the rule's one line (file and fix), not a swallowed error."""
    from sarco_nn.inference import _failure_reason, _prepare_case, _ReadContext, discover_scans

    for name in (*FORMULA_NAMES, "good.nii.gz"):
        _slice_ct(tmp_path / "in" / name)
    scans = {s.case_id: s for s in discover_scans(tmp_path / "in")}
    assert set(scans) == {"'=HYPERLINK(1).nii.gz", "'-x.nii.gz", "good"}
    assert scans["good"].error is None
    context = _ReadContext(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid",
                           l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
    for case_id, name, stem in (("'=HYPERLINK(1).nii.gz", FORMULA_NAMES[0], "=HYPERLINK(1)"),
                                ("'-x.nii.gz", FORMULA_NAMES[1], "-x")):
        expected = str(case_id_for_entry(tmp_path / "in" / name).error)
        assert str(scans[case_id].refusal()) == expected
        case = _prepare_case(scans[case_id], context)
        reason = _failure_reason(case.error, tmp_path / "out")
        assert reason.message == expected and repr(stem) in reason.message and "Fix: rename" in reason.message
        assert not str(reason).startswith(("=", "+", "-", "@"))


def test_a_discovery_refusal_is_the_rules_error_itself_not_a_reparsed_line(tmp_path):
    """Scan carries the structured error: a name holding " Fix: " keeps the rule's own text and fix
    (splitting the joined line at the first " Fix: " put half the name into the fix)."""
    from sarco_nn.inference import _FIX_LINK, discover_scans

    name = "=a Fix: b.nii.gz"
    _slice_ct(tmp_path / "in" / name)
    (tmp_path / "in" / "gone.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    scans = {s.path.name: s for s in discover_scans(tmp_path / "in")}
    rule = case_id_for_entry(tmp_path / "in" / name).error
    refused = scans[name].refusal()
    assert (refused.message, refused.fix) == (rule.message, rule.fix) and str(refused) == str(rule)
    link = scans["gone.nii.gz"].refusal()
    assert link.fix == _FIX_LINK and link.message.startswith("broken symbolic link") and "Fix" not in link.message


def test_an_empty_id_keeps_its_own_message_not_the_formula_one(tmp_path):
    from sarco_nn.inference import discover_scans

    _slice_ct(tmp_path / "in" / "_0000.nii.gz")
    _slice_ct(tmp_path / "in" / "b.nii.gz")
    [empty] = [s for s in discover_scans(tmp_path / "in") if s.error]
    assert empty.case_id == "_0000.nii.gz" and "empty case id" in empty.error.message and "formula" not in empty.error.message


def test_a_formula_named_series_folder_given_as_the_input_itself_is_quoted(tmp_path):
    """-i =series/ (the folder itself one DICOM series) took the folder name unchecked."""
    from dicom_factory import write_series
    from sarco_nn.inference import discover_scans

    hu = phantom_array(nz=2, ny=32, nx=32).astype(np.int16)
    series = write_series(tmp_path / "=series", hu)
    [scan] = discover_scans(series)
    assert scan.case_id == "'=series" and "formula" in scan.error.message and scan.error.fix.startswith("rename")


def test_an_odd_named_dicom_file_is_named_by_the_one_rule(tmp_path):
    """predict named `scan.ima` whole, the rule (convert, evaluate) `scan`: one rule now."""
    from dicom_factory import write_series
    from sarco_nn.inference import discover_scans

    series = write_series(tmp_path / "tmp", phantom_array(nz=1, ny=32, nx=32).astype(np.int16))
    batch = tmp_path / "batch"
    batch.mkdir()
    (series / "IM0000").rename(batch / "scan.ima")
    _slice_ct(batch / "other.nii.gz")
    names = {s.case_id: s.error for s in discover_scans(batch)}
    assert names == {"scan": None, "other": None} and case_id_from_path(batch / "scan.ima") == "scan"


@pytest.mark.parametrize("side", ["pred", "ref"])
@pytest.mark.parametrize("name", [*FORMULA_NAMES, "+1.nii.gz", "@SUM(1).nii.gz"])
def test_evaluate_gives_a_formula_named_mask_a_failed_row_naming_why(tmp_path, name, side):
    # before session 15 (HOSTILE #173): the one bad name refused the whole evaluation
    import csv

    from sarco_nn.cases import csv_safe
    from sarco_nn.evaluation.evaluate import evaluate_folder

    for side in ("pred", "ref"):
        _muscle_mask(tmp_path / side / "a.nii.gz")
    _muscle_mask(tmp_path / side / name)  # on either side: the prediction's or the reference's
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    assert summary["n_cases"] == 1 and summary["skipped_cases"] == [csv_safe(name)]
    with open(tmp_path / "out" / "cases.csv", newline="", encoding="utf-8") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    row = rows[csv_safe(name)]  # the cell is no formula
    assert row["status"] == "failed" and row["in_statistics"] == "no" and not row["sma_pred_cm2"]
    assert name in row["reasons"] and "formula" in row["reasons"] and "Fix: rename" in row["reasons"]


def test_convert_lists_a_formula_named_image_among_its_problems(tmp_path):
    from dataset_conversion.convert import convert_dropin

    drop = tmp_path / "drop"
    _slice_ct(drop / "images" / "=HYPERLINK(1).nii.gz")
    _muscle_mask(drop / "masks" / "=HYPERLINK(1).nii.gz")
    (drop / "clinical.csv").write_text("case_id,sex,height_m\np1,F,1.6\n")
    with pytest.raises(InputError) as refused:
        convert_dropin(drop, tmp_path / "raw", "T", 990)
    text = str(refused.value)
    assert "=HYPERLINK(1).nii.gz" in text and "formula" in text and "rename" in text


@pytest.mark.parametrize("name", FORMULA_NAMES)
def test_measure_has_no_case_id_and_measures_a_formula_named_mask(tmp_path, name):
    """measure reads one mask and writes no table: its name is no case id, its area is the plain one's."""
    from sarco_nn import api

    plain = _muscle_mask(tmp_path / "plain.nii.gz")
    odd = _muscle_mask(tmp_path / name)
    [a], [b] = api.measure(plain), api.measure(odd)
    expected = float(muscle_of(phantom_array(nz=1, ny=64, nx=64)[0]).sum()) * 0.8 * 0.8 / 100
    assert a.sma_cm2 == b.sma_cm2 == pytest.approx(expected) and b.sma_cm2 > 0


def test_classify_predict_makes_a_refused_name_a_failed_row_not_a_classified_one(tmp_path, monkeypatch):
    """classify predict ignored `Scan.error`: a formula-named valid CT was classified, status ok."""
    import csv

    import torch

    from sarco_nn.classification import predict as classify

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).expand(x.shape[0], 2)

    monkeypatch.setattr(classify, "find_models", lambda ws, *a: ("Dataset990_T", "fake", [tmp_path / "fold_0"]))
    monkeypatch.setattr(classify, "load_classifier", lambda d, dev: (Constant(), {"input_size": 32, "fov_mm": 400.0}))
    for name in ("=HYPERLINK(1).nii.gz", "good.nii.gz"):
        _slice_ct(tmp_path / "in" / name)
    target, failures = classify.predict_scans(tmp_path / "ws", tmp_path / "in", tmp_path / "out", device="cpu",
                                              log=lambda _: None)
    with open(target, newline="") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert failures == 1 and set(rows) == {"'=HYPERLINK(1).nii.gz", "good"}
    bad = rows["'=HYPERLINK(1).nii.gz"]
    assert bad["status"] == "failed" and "formula" in bad["reasons"] and bad["probability_sarcopenic"] == ""
    assert all(r["input"].startswith("/") for r in rows.values())  # absolute: never a formula cell


def test_a_junk_file_named_like_a_scans_id_is_a_failed_row_not_a_refused_batch(tmp_path):
    """HOSTILE #122: notes.txt (a failed row named whole) beside notes.txt.nii.gz (id notes.txt) refused the batch."""
    from sarco_nn.inference import discover_scans

    _slice_ct(tmp_path / "in" / "notes.txt.nii.gz")
    (tmp_path / "in" / "notes.txt").write_text("x")
    scans = discover_scans(tmp_path / "in")
    assert sorted((s.case_id, s.error is None) for s in scans) == [("notes.txt", False), ("notes.txt", True)]
    _slice_ct(tmp_path / "in" / "notes.txt.mha")  # two usable scans, one id: still refused, naming both
    with pytest.raises(SarcoError, match="two inputs give case id 'notes.txt'.*notes.txt.mha"):
        discover_scans(tmp_path / "in")


# HOSTILE #123 (NFC/NFD) and #124 (a space at either end): one normalisation, `normal_case_id`, on both sides
NFC, NFD = "Jos\u00e9", "Jose\u0301"  # the same name to the eye; macOS writes the second


def test_the_rule_gives_nfc_ids_without_spaces_at_either_end(tmp_path):
    (tmp_path / " p04 ").mkdir()  # a DICOM series folder
    ids = {name: case_id_for_entry(tmp_path / name).case_id
           for name in (f"{NFD}.nii.gz", f"{NFC}.nii.gz", " p02.nii.gz", "p01 .nii.gz", "p03 _0000.nii.gz",
                        "scan .ima", " p04 ")}
    assert ids == {f"{NFD}.nii.gz": NFC, f"{NFC}.nii.gz": NFC, " p02.nii.gz": "p02", "p01 .nii.gz": "p01",
                   "p03 _0000.nii.gz": "p03", "scan .ima": "scan", " p04 ": "p04"}
    assert len(NFD) == len(NFC) + 1 and NFD != NFC  # the test's two spellings really differ
    assert case_id_for_entry(tmp_path / " .nii.gz").error is not None  # only a space: still an empty id


def test_a_space_before_a_formula_character_is_still_refused_and_quoted(tmp_path):
    named = case_id_for_entry(tmp_path / "\u00a0=x.nii.gz")  # NBSP, then '=' (HOSTILE #125)
    assert "formula" in str(named.error) and named.case_id.startswith("'")
    assert csv_safe(" =x") == "' =x" and csv_safe("p =x") == "p =x"


@pytest.mark.parametrize("first, second, hint", [(f"{NFC}.nii.gz", f"{NFD}.nii.gz", "NFD"),
                                                 ("p01.nii.gz", "p01 .nii.gz", "white space"),
                                                 ("p01.nii.gz", " p01.mha", "white space")])
def test_two_names_that_normalise_to_one_id_are_refused_as_duplicates_saying_why(tmp_path, first, second, hint):
    from sarco_nn.cases import index_folder
    from sarco_nn.inference import discover_scans

    for name in (first, second):
        _slice_ct(tmp_path / "in" / name)
    assert len(list((tmp_path / "in").iterdir())) == 2  # the file system kept both names
    with pytest.raises(SarcoError, match="two inputs give case id") as refused:
        discover_scans(tmp_path / "in")
    assert hint in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(InputError, match="two files give case id") as refused:
        index_folder(tmp_path / "in")
    assert hint in str(refused.value)


def test_a_plain_duplicate_gets_no_normalisation_hint(tmp_path):
    from sarco_nn.cases import same_id_hint

    assert same_id_hint(["p01.nii.gz", "p01.mha"]) == "" and same_id_hint(["p 01.nii.gz", "p 01.mha"]) == ""


def test_an_nfd_or_space_padded_file_name_joins_its_clinical_row(tmp_path):
    from sarco_nn.clinical import missing_rows_warning, read_clinical_csv
    from sarco_nn.inference import discover_scans

    for name in (f"{NFD}.nii.gz", " p02.nii.gz", "p03 .nii.gz"):
        _slice_ct(tmp_path / "in" / name)
    csv_path = tmp_path / "clinical.csv"
    csv_path.write_text(f"case_id,sex,height_m\n{NFC},M,1.80\n p02 ,F,1.60\n{'p03'},F,1.70\n", encoding="utf-8")
    table = read_clinical_csv(csv_path)
    ids = [s.case_id for s in discover_scans(tmp_path / "in")]
    assert sorted(ids) == sorted([NFC, "p02", "p03"]) and missing_rows_warning(csv_path, table, ids) is None
    assert table[NFC].height_m == 1.80 and table["p02"].height_m == 1.60


def test_an_nfd_clinical_cell_is_keyed_nfc_and_an_nfc_nfd_pair_is_a_duplicate(tmp_path):
    from sarco_nn.clinical import read_clinical_csv
    from sarco_nn.errors import ClinicalDataError

    one = tmp_path / "one.csv"
    one.write_text(f"case_id,sex,height_m\n{NFD},M,1.80\n", encoding="utf-8")
    assert list(read_clinical_csv(one)) == [NFC]
    two = tmp_path / "two.csv"
    two.write_text(f"case_id,sex,height_m\n{NFC},M,1.80\n{NFD},F,1.60\n", encoding="utf-8")
    with pytest.raises(ClinicalDataError, match="row 3: duplicate case_id") as refused:
        read_clinical_csv(two)
    assert "NFD" in str(refused.value)
    lenient = read_clinical_csv(two, strict=False)
    assert NFC not in lenient and any("both rows ignored" in p and "NFD" in p for p in lenient.problems)


def test_l3_csv_keys_and_vertebra_masks_use_the_same_normalisation(tmp_path):
    from sarco_nn.l3.choose import read_l3_csv, vertebra_mask_for

    rows = tmp_path / "l3.csv"
    rows.write_text(f"case_id,l3_slice\n{NFD},3\n p02 ,4\n", encoding="utf-8")
    assert read_l3_csv(rows) == {NFC: 3, "p02": 4}
    vertebrae = tmp_path / "vertebrae"
    mask = _muscle_mask(vertebrae / f"{NFD}.nii.gz")
    padded = _muscle_mask(vertebrae / " p02.nii.gz")
    exact = _muscle_mask(vertebrae / "p05.nii.gz")
    (vertebrae / "p06.txt").write_text("not a mask")
    assert vertebra_mask_for(vertebrae, NFC) == mask and vertebra_mask_for(vertebrae, "p02") == padded
    assert vertebra_mask_for(vertebrae, "p05") == exact
    with pytest.raises(InputError, match="no vertebra mask for case 'p06'"):
        vertebra_mask_for(vertebrae, "p06")
    _muscle_mask(vertebrae / "p02 .mha")
    with pytest.raises(InputError, match="two vertebra masks give case id 'p02'.*white space"):
        vertebra_mask_for(vertebrae, "p02")


def test_convert_joins_nfd_and_space_padded_names_to_their_nfc_rows(tmp_path):
    """End to end: the converted clinical.csv carries each source row's height under the case's pid."""
    import csv

    from dataset_conversion.convert import convert_dropin
    from sarco_nn import api

    drop = tmp_path / "drop"
    api.demo_data(drop, cases=2, seed=1)
    source = {r["case_id"]: r for r in csv.DictReader(open(drop / "clinical.csv", encoding="utf-8"))}
    new_names = {"case_000": (f"{NFD}.nii.gz", f"{NFD}.nii.gz"), "case_001": (" case_001.nii.gz", "case_001 .nii.gz")}
    for case, (image, mask) in new_names.items():
        (drop / "images" / f"{case}.nii.gz").rename(drop / "images" / image)
        (drop / "masks" / f"{case}.nii.gz").rename(drop / "masks" / mask)
    text = (drop / "clinical.csv").read_text(encoding="utf-8").replace("case_000,", f"{NFC},")
    (drop / "clinical.csv").write_text(text, encoding="utf-8")
    result = convert_dropin(drop, tmp_path / "raw", "T", 991)
    assert result.n_cases == 2
    manifest = list(csv.DictReader(open(result.dataset_dir / "manifest.csv", encoding="utf-8")))
    heights = {r["case_id"]: r["height_m"] for r in csv.DictReader(open(result.dataset_dir / "clinical.csv",
                                                                         encoding="utf-8"))}
    joined = {row["source_case_id"]: float(heights[row["pid"]]) for row in manifest}
    assert joined == {NFC: float(source["case_000"]["height_m"]), "case_001": float(source["case_001"]["height_m"])}


@pytest.mark.parametrize("first", ["\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe66"])  # ＝ ＋ － ＠ ﹦
def test_a_full_width_formula_look_alike_is_refused_and_quoted_as_the_ascii_one(tmp_path, first):
    """HOSTILE #191: `＝HYPERLINK(...)` passed the rule (only ASCII `=` was checked); NFKC folds it."""
    from sarco_nn.cases import starts_like_formula

    name = f"{first}HYPERLINK(1).nii.gz"
    named = case_id_for_entry(tmp_path / name)
    assert named.error is not None and "formula" in str(named.error)
    assert named.case_id == named.name == "'" + name  # the stand-in quoted, its own characters kept
    assert "e.g. pHYPERLINK(1)." in str(named.error)  # the suggested rename drops the look-alike too
    assert csv_safe(first + "x") == "'" + first + "x" and csv_safe("\u00a0" + first + "x").startswith("'")
    assert starts_like_formula(first) and not starts_like_formula("p" + first)
    assert case_id_for_entry(tmp_path / f"p{first}1.nii.gz").error is None  # inside an id it is no formula
