"""Threshold sets: cut-offs, strictness at the border, undecidable cases, user files."""

from __future__ import annotations

import json

import pytest

from sarco_nn.errors import InputError, SarcoError
from sarco_nn.thresholds import DEFAULT_THRESHOLD_SET, THRESHOLD_SETS, get_threshold_set, normalise_sex


def test_default_is_the_papers_sma_set():
    assert DEFAULT_THRESHOLD_SET == "paper"
    ts = get_threshold_set(DEFAULT_THRESHOLD_SET)
    assert ts.metric == "sma" and ts.cutoff_for("M") == 144 and ts.cutoff_for("F") == 92


@pytest.mark.parametrize("sex, sma, expected", [
    ("M", 143.99, True), ("M", 144.0, False), ("M", 144.01, False),
    ("F", 91.99, True), ("F", 92.0, False), ("F", 120.0, False),
    ("male", 100.0, True), ("f", 100.0, False),
])
def test_paper_borderline(sex, sma, expected):
    assert get_threshold_set("paper").is_sarcopenic(sex, sma) is expected


@pytest.mark.parametrize("sex, smi, expected", [
    ("M", 52.39, True), ("M", 52.4, False), ("F", 38.49, True), ("F", 38.5, False),
])
def test_prado_borderline(sex, smi, expected):
    assert get_threshold_set("prado").is_sarcopenic(sex, 999.0, smi=smi) is expected


@pytest.mark.parametrize("sex, smi, bmi, expected", [
    ("M", 42.9, 24.9, True), ("M", 43.0, 24.9, False),  # BMI < 25: cut-off 43
    ("M", 43.0, 25.0, True), ("M", 52.9, 25.0, True), ("M", 53.0, 30.0, False),  # BMI >= 25: 53
    ("F", 40.9, None, True), ("F", 41.0, 18.0, False),  # women: 41 whatever the BMI (not needed)
])
def test_martin_bmi_bands(sex, smi, bmi, expected):
    assert get_threshold_set("martin").is_sarcopenic(sex, 100.0, smi=smi, bmi=bmi) is expected


def test_undecidable_cases_return_none_with_a_reason():
    paper, prado, martin = (THRESHOLD_SETS[n] for n in ("paper", "prado", "martin"))
    assert paper.is_sarcopenic(None, 100.0) is None
    assert paper.is_sarcopenic("X", 100.0) is None
    assert paper.why_undecidable("", 100.0) == "unknown sex"
    assert prado.is_sarcopenic("F", 100.0, smi=None) is None
    assert prado.why_undecidable("F", 100.0, None) == "missing height (SMI)"
    assert martin.is_sarcopenic("M", 100.0, smi=40.0, bmi=None) is None
    assert martin.why_undecidable("M", 100.0, 40.0, None) == "missing BMI (height/weight)"
    assert martin.cutoff_for("M") is None and martin.cutoff_for("M", 22.0) == 43


def test_describe():
    assert THRESHOLD_SETS["paper"].describe("M") == "SMA<144 cm² (paper, M)"
    assert THRESHOLD_SETS["prado"].describe("female") == "SMI<38.5 cm²/m² (prado, F)"
    assert THRESHOLD_SETS["martin"].describe("M", 27.0) == "SMI<53 cm²/m² (martin, M)"
    assert "undecidable" in THRESHOLD_SETS["martin"].describe("M") and "BMI" in THRESHOLD_SETS["martin"].describe("M")
    assert "unknown sex" in THRESHOLD_SETS["paper"].describe(None)


def test_normalise_sex():
    assert [normalise_sex(s) for s in ("M", "m", " Male ", "F", "female", None, "", "x", float("nan"))] == \
        ["M", "M", "M", "F", "F", None, None, None, None]


def test_unknown_name_lists_the_sets():
    with pytest.raises(SarcoError) as info:
        get_threshold_set("baumgartner")
    assert all(name in str(info.value) for name in ("paper", "prado", "martin"))


def test_user_json_file_with_bmi_bands(tmp_path):
    path = tmp_path / "site.json"
    path.write_text(json.dumps({
        "name": "site", "metric": "smi", "male": 50,
        "female": [{"bmi_max": 25, "cutoff": 40}, {"bmi_min": 25, "cutoff": 45}],
    }))
    ts = get_threshold_set(str(path))
    assert ts.name == "site" and ts.metric == "smi"
    assert ts.is_sarcopenic("M", 1.0, smi=49.9) is True and ts.is_sarcopenic("M", 1.0, smi=50.0) is False
    assert ts.is_sarcopenic("F", 1.0, smi=42.0, bmi=24.0) is False
    assert ts.is_sarcopenic("F", 1.0, smi=42.0, bmi=26.0) is True
    assert ts.is_sarcopenic("F", 1.0, smi=42.0) is None


def test_user_yaml_file(tmp_path):
    pytest.importorskip("yaml")  # YAML is optional; JSON always works
    path = tmp_path / "site.yaml"
    path.write_text("metric: sma\nmale: 150\nfemale: 100\n")
    ts = get_threshold_set(path)
    assert ts.name == "site" and ts.is_sarcopenic("F", 99.0) is True and ts.is_sarcopenic("M", 150.0) is False


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot parse"),
    ('{"metric": "bmi", "male": 1, "female": 1}', "metric must be"),
    ('{"metric": "sma", "male": 144}', "missing 'female'"),
    ('{"metric": "sma", "male": -1, "female": 92}', "positive"),
    ('{"metric": "smi", "male": [{"bmi_max": 30, "cutoff": 43}, {"bmi_min": 25, "cutoff": 53}], "female": 41}',
     "overlap"),
    ('{"metric": "smi", "male": [{"cut": 43}], "female": 41}', "needs 'cutoff'"),
    # HOSTILE_FINDINGS #94: a typo'd key was ignored (cut-offs applied at L3 / the default gate, silently)
    ('{"metric": "muscle_hu", "male": 41, "female": 41, "levels": ["L1"]}', "unknown key.*'levels'"),
    ('{"metric": "muscle_hu", "male": 41, "female": 41, "hugate": [-50, 150]}', "unknown key.*'hugate'"),
    # #95: a BMI bound that is no number was a traceback; NaN / Infinity were accepted, then a traceback per patient
    ('{"metric": "smi", "male": [{"bmi_max": 25, "cutoff": 43}, {"bmi_min": "abc", "cutoff": 53}], "female": 41}',
     "bmi_min 'abc' is not a finite number"),
    ('{"metric": "smi", "male": [{"bmi_min": NaN, "cutoff": 43}], "female": 41}', "bmi_min nan is not a finite"),
    ('{"metric": "smi", "male": [{"bmi_max": Infinity, "cutoff": 43}], "female": 41}', "bmi_max inf is not a finite"),
    # #96: a boolean cut-off in a band read as 1 (SMI < 1 cm²/m²)
    ('{"metric": "smi", "male": [{"bmi_max": 25, "cutoff": true}, {"bmi_min": 25, "cutoff": 53}], "female": 41}',
     "cut-off True is not a number"),
])
def test_bad_user_files_are_one_line_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        get_threshold_set(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ #13: exact boundaries, one sex rule
@pytest.mark.parametrize("height_m, weight_kg", [(1.6, 64), (1.6, 64.0), (2.0, 100), (1.5, 56.25), (1.8, 81)])
def test_bmi_exactly_25_is_in_the_bmi_25_band(height_m, weight_kg):
    from sarco_nn.thresholds import bmi

    assert bmi(height_m, weight_kg) == 25  # exact; floating point gives 24.999999999999996 for 64/1.6²
    martin = THRESHOLD_SETS["martin"]
    assert martin.cutoff_for("M", bmi(height_m, weight_kg)) == 53
    assert martin.is_sarcopenic("M", 100.0, smi=50.0, bmi=bmi(height_m, weight_kg)) is True  # 50 < 53


def test_clinical_record_bmi_is_exact():
    from sarco_nn.clinical import ClinicalRecord

    record = ClinicalRecord("a", "M", 1.6, 64.0)
    assert record.bmi == 25 and THRESHOLD_SETS["martin"].cutoff_for("M", record.bmi) == 53


def test_smi_exactly_at_the_cut_off_is_not_sarcopenic_when_height_is_given():
    # 134.144 / 1.6² = 52.4 exactly; in floats 134.144 / 1.6**2 = 52.39999999999999 (< 52.4).
    assert 134.144 / 1.6**2 < 52.4
    assert THRESHOLD_SETS["prado"].is_sarcopenic("M", 134.144, smi=134.144 / 1.6**2, height_m=1.6) is False
    from sarco_nn.measure import smi

    assert THRESHOLD_SETS["prado"].is_sarcopenic("M", 134.144, smi=smi(134.144, 1.6)) is False


def test_derstine_set_is_the_exact_published_values_beside_the_rounded_paper_set():
    d = get_threshold_set("derstine")
    assert d.metric == "sma" and d.cutoff_for("M") == 144.3 and d.cutoff_for("F") == 92.2
    assert d.is_sarcopenic("M", 144.0) is True and THRESHOLD_SETS["paper"].is_sarcopenic("M", 144.0) is False
    assert d.is_sarcopenic("M", 144.3) is False and d.is_sarcopenic("F", 92.2) is False


def test_one_sex_rule_for_every_command():
    from sarco_nn.clinical import _parse_sex

    for text in ("woman", "Man", "MALE", "female", "M", "f"):
        assert normalise_sex(text) == _parse_sex(text, []) is not None


def test_a_sex_independent_set_needs_no_sex_and_a_sex_specific_one_still_does(tmp_path):
    """HOSTILE_FINDINGS #97: Martin 2013's myosteatosis cut-offs are the same for men and women, yet a
    patient without a recorded sex got myosteatosis `unknown (unknown sex)`."""
    from sarco_nn.thresholds import MYOSTEATOSIS_SETS

    myo = MYOSTEATOSIS_SETS["martin_myosteatosis"]
    assert myo.sex_independent and myo.cutoff_for(None, 25) == 33 and myo.cutoff_for(None, 24.9) == 41
    assert myo.is_low(None, 32.5, 25) is True and myo.is_low(None, 33, 25) is False  # strict <, BMI 25 upper band
    assert myo.why_undecidable(None, None, None, 25) is None and "any sex" in myo.describe(None, 25)
    assert myo.why_undecidable(None, None, None, None) == "missing BMI (height/weight)"
    assert not THRESHOLD_SETS["paper"].sex_independent and THRESHOLD_SETS["paper"].is_sarcopenic(None, 50.0) is None
    same = tmp_path / "same.json"
    same.write_text('{"metric": "sma", "male": 100, "female": 100}')
    assert get_threshold_set(same).is_sarcopenic(None, 99.0) is True


def test_a_myosteatosis_set_given_as_thresholds_is_refused_once_before_any_case(tmp_path):
    """HOSTILE_FINDINGS #102: `sarco evaluate --thresholds myo.json` (metric muscle_hu) skipped every case as
    "unreadable or inconsistent files", its fix naming a --myosteatosis option evaluate does not have."""
    from sarco_nn.evaluation.evaluate import evaluate_folder
    from sarco_nn.thresholds import sarcopenia_set

    assert sarcopenia_set("prado").name == "prado"
    with pytest.raises(SarcoError, match="is a myosteatosis set") as info:
        sarcopenia_set("martin_myosteatosis")
    assert "--thresholds paper, derstine, prado, martin" in str(info.value) and "\n" not in str(info.value)
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()  # empty: the set is refused before any mask is looked for
    myo = tmp_path / "myo.json"
    myo.write_text('{"metric": "muscle_hu", "male": 41, "female": 41}')
    with pytest.raises(SarcoError, match="'myo' is a myosteatosis set"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out", thresholds=str(myo))
