"""clinical.csv parsing: every value SMI and the sarcopenia flag depend on is checked."""

from __future__ import annotations

import pytest

from sarco_nn.clinical import ClinicalRecord, read_clinical_csv, write_clinical_csv
from sarco_nn.errors import ClinicalDataError


def csv_file(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "clinical.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_all_sex_codes_optional_and_extra_columns(tmp_path):
    path = csv_file(tmp_path, (
        "case_id,sex,height_m,weight_kg,age,site,sarcopenic\n"
        "a,M,1.80,81,64,X,1\n"
        "b,female,1.62,,70,Y,no\n"
        "c,Man,,90,,Z,\n"
        "d,WOMAN,1.5,45,33,Z,TRUE\n"
        "e,f,1.7,60,50,Z,0\n"
        "g,,1.75,70,40,Z,\n"
        "\n"
    ))
    records = read_clinical_csv(path)
    assert list(records) == ["a", "b", "c", "d", "e", "g"]
    assert [r.sex for r in records.values()] == ["M", "F", "M", "F", "F", None]
    assert records["a"] == ClinicalRecord("a", "M", 1.80, 81.0, 64.0, True)
    assert records["b"].weight_kg is None and records["b"].sarcopenic is False
    assert records["c"].height_m is None and records["c"].bmi is None
    assert records["d"].sarcopenic is True and records["g"].sarcopenic is None
    assert records["a"].bmi == pytest.approx(81 / 1.8**2)


def test_excel_bom_semicolons_and_decimal_comma(tmp_path):
    path = csv_file(tmp_path, "\ufeffCase_ID; Sex ;Height_m;weight_kg\nP1;m;1,72;70,5\n")
    record = read_clinical_csv(path)["P1"]
    assert (record.sex, record.height_m, record.weight_kg) == ("M", 1.72, 70.5)


def test_height_in_centimetres_is_refused(tmp_path):
    path = csv_file(tmp_path, "case_id,sex,height_m\na,M,175\n")
    with pytest.raises(ClinicalDataError, match="looks like centimetres; give metres") as info:
        read_clinical_csv(path)
    assert str(path) in str(info.value) and "row 2" in str(info.value)


def test_weight_in_grams_is_refused(tmp_path):
    """HOSTILE_FINDINGS #81: weight 7000 (grams or a lost decimal point) gave BMI 2734 and the martin set's obese
    cut-off; 635 kg is the heaviest person on record."""
    path = csv_file(tmp_path, "case_id,sex,height_m,weight_kg\na,M,1.8,7000\nb,F,1.6,635\n")
    with pytest.raises(ClinicalDataError, match=r"row 2 \(a\): weight_kg '7000' is above 650 kg") as info:
        read_clinical_csv(path)
    assert "row 3" not in str(info.value)
    assert read_clinical_csv(path, strict=False)["b"].weight_kg == 635


def test_weight_in_tonnes_is_refused(tmp_path):
    """HOSTILE_FINDINGS #103: weight 0.072 (tonnes) gave BMI 0.02, so martin's lower-BMI cut-offs (SMI 43,
    muscle HU 41) applied to a patient of BMI 22-30, silently; 2.1 kg is the lightest adult on record."""
    path = csv_file(tmp_path, "case_id,sex,height_m,weight_kg\na,M,1.8,0.072\nb,F,1.6,2.1\n")
    with pytest.raises(ClinicalDataError, match=r"row 2 \(a\): weight_kg '0.072' is below 2 kg") as info:
        read_clinical_csv(path)
    assert "row 3" not in str(info.value)
    assert read_clinical_csv(path, strict=False)["b"].weight_kg == 2.1


def test_unknown_sex_names_file_row_and_value(tmp_path):
    path = csv_file(tmp_path, "case_id,sex,height_m\na,M,1.8\nb,X,1.7\n")
    with pytest.raises(ClinicalDataError) as info:
        read_clinical_csv(path)
    message = str(info.value)
    assert str(path) in message and "row 3" in message and "'X'" in message and "(b)" in message


def test_all_problems_reported_together(tmp_path):
    path = csv_file(tmp_path, "case_id,sex,height_m,weight_kg,age\na,M,1.8,-3,40\na,F,1.6,60,40\nc,F,tall,60,40\n,F,1.6,60,40\n")
    with pytest.raises(ClinicalDataError) as info:
        read_clinical_csv(path)
    message = str(info.value)
    assert "4 problem(s)" in message
    for piece in ("weight_kg '-3'", "duplicate case_id 'a'", "height_m 'tall' is not a number", "row 5: empty case_id"):
        assert piece in message
    assert "\n" not in message


def test_missing_columns_are_refused(tmp_path):
    path = csv_file(tmp_path, "case_id,height\na,1.8\n")
    with pytest.raises(ClinicalDataError, match="missing column.*sex, height_m"):
        read_clinical_csv(path)


def test_non_utf8_file_is_refused(tmp_path):
    path = csv_file(tmp_path, "case_id,sex,height_m\nRené,M,1.8\n", encoding="latin-1")
    with pytest.raises(ClinicalDataError, match="not UTF-8"):
        read_clinical_csv(path)


def test_bad_sarcopenic_flag_is_refused(tmp_path):
    path = csv_file(tmp_path, "case_id,sex,height_m,sarcopenic\na,M,1.8,maybe\n")
    with pytest.raises(ClinicalDataError, match="sarcopenic 'maybe'"):
        read_clinical_csv(path)


def test_write_then_read_round_trip(tmp_path):
    records = [
        ClinicalRecord("L3_0001", "M", 1.8, 81.5, 64.0, True),
        ClinicalRecord("L3_0002", "F", None, None, None, None),
        ClinicalRecord("L3_0003", None, 1.62, 55.0, 0.0, False),
    ]
    path = tmp_path / "out.csv"
    write_clinical_csv(path, records)
    assert list(read_clinical_csv(path).values()) == records


def test_decimal_comma_in_a_comma_separated_file_is_refused_not_read_as_one_metre(tmp_path):
    # "1,76" splits into height "1" and a stray "76": read as 1 m, SMI would be SMA / 1
    path = csv_file(tmp_path, "case_id,sex,height_m\na,M,1,76\nb,F,1.62\n")
    with pytest.raises(ClinicalDataError, match=r"row 2 \(a\): 4 values for 3 columns.*decimal comma"):
        read_clinical_csv(path)
    lenient = read_clinical_csv(path, strict=False)
    assert "a" not in lenient and lenient["b"].height_m == 1.62
    assert any("decimal comma" in p for p in lenient.problems)


def test_height_below_half_a_metre_is_a_unit_slip(tmp_path):
    path = csv_file(tmp_path, "case_id,sex,height_m\na,M,0.176\n")
    with pytest.raises(ClinicalDataError, match=r"height_m '0.176' is below 0.54 m"):
        read_clinical_csv(path)


def test_tab_separated_file_is_read(tmp_path):
    path = csv_file(tmp_path, "case_id\tsex\theight_m\na\tF\t1.6\n")
    assert read_clinical_csv(path)["a"].height_m == 1.6


def test_na_tokens_are_missing_values_not_errors(tmp_path):
    # R writes NA, pandas NaN: the case gets no SMI / flag from them, the file is not refused
    path = csv_file(tmp_path, "case_id,sex,height_m,weight_kg\na,NA,NA,nan\nb,F,N/A,-\n")
    records = read_clinical_csv(path)
    assert (records["a"].sex, records["a"].height_m, records["a"].weight_kg) == (None, None, None)
    assert (records["b"].sex, records["b"].height_m) == ("F", None)
