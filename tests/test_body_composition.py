"""Body composition: every number against an independent numpy/fractions oracle, HU boundaries,
undefined values, derived IMAT, myosteatosis sets, levels and `sarco measure --tissues`."""

from __future__ import annotations

import csv
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sarco_nn.body_composition import (
    RESULT_COLUMNS,
    check_level,
    derived_imat,
    hu_stats,
    measure_composition_image,
    measure_composition_slice,
    myosteatosis_flag,
    sarcopenia_flag,
)
from sarco_nn.commands.measure_cmd import measure as measure_command
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.measure import measure_slice
from sarco_nn.thresholds import MYOSTEATOSIS_SETS, THRESHOLD_SETS, get_threshold_set, load_threshold_file

LABELS = {"muscle": 1, "imat": 2, "vat": 3, "sat": 4}
SPACINGS = [(0.7, 0.7), (0.78125, 0.9), (1.0, 0.5), (0.6, 0.85)]
BOUNDARY_HU = [-191, -190, -189, -31, -30, -29, -28, 0, 41, 149, 150, 151]


# ------------------------------------------------------------------------------------ oracle


def _dec(x: float) -> Fraction:
    return Fraction(repr(float(x)))


def oracle(mask, ct, spacing, convention, height=None):
    """Independent re-implementation: boolean selections, exact fractions, numpy statistics."""
    gates = {"label": (None, None), "alberta": ((-29, 150), (-190, -30))}[convention]
    pixel = _dec(spacing[0]) * _dec(spacing[1]) / 100
    out = {}
    for name, value in LABELS.items():
        sel = mask == value
        gate = gates[0] if name == "muscle" else gates[1]
        if gate is not None:
            sel = sel & (ct >= gate[0]) & (ct <= gate[1])
        n = int(sel.sum())
        vals = ct[sel].astype(np.float64)
        out[name] = {
            "area": n * pixel,
            "mean": None if n == 0 else Fraction(int(ct[sel].astype(np.int64).sum()), n),
            "sd": None if n == 0 else float(np.std(vals)),
        }
    musc = (mask == 1) & (ct >= -29) & (ct <= 150)
    out["attenuation"] = None if not musc.any() else Fraction(int(ct[musc].astype(np.int64).sum()), int(musc.sum()))
    if height is not None:
        h2 = _dec(height) ** 2
        out["smi"] = out["muscle"]["area"] / h2
        out["vati"] = out["vat"]["area"] / h2
        out["sati"] = out["sat"]["area"] / h2
    return out


masks = st.integers(3, 9).flatmap(lambda n: st.lists(st.integers(0, 4), min_size=n * n, max_size=n * n)
                                  .map(lambda v, n=n: np.array(v, dtype=np.uint8).reshape(n, n)))


@settings(max_examples=60, deadline=None)
@given(mask=masks, data=st.data(), spacing=st.sampled_from(SPACINGS), convention=st.sampled_from(["label", "alberta"]),
       height=st.sampled_from([1.6, 1.75, 1.62]))
def test_every_number_matches_the_oracle(mask, data, spacing, convention, height):
    hu = st.one_of(st.sampled_from(BOUNDARY_HU), st.integers(-250, 250))
    ct = np.array(data.draw(st.lists(hu, min_size=mask.size, max_size=mask.size)), dtype=np.int16).reshape(mask.shape)
    comp = measure_composition_slice(mask, spacing, ct, LABELS, convention, "L3", height)
    want = oracle(mask, ct, spacing, convention, height)
    for name in LABELS:
        t = comp.tissues[name]
        assert t.area == want[name]["area"] and t.area_cm2 == float(want[name]["area"])
        assert t.hu_mean == want[name]["mean"]
        if want[name]["sd"] is None:
            assert t.hu_sd is None
        else:
            assert t.hu_sd == pytest.approx(want[name]["sd"], rel=1e-12, abs=1e-12)
    row = comp.to_dict()
    assert row["smi_cm2_m2"] == float(want["smi"])
    assert row["vati_cm2_m2"] == float(want["vati"]) and row["sati_cm2_m2"] == float(want["sati"])
    sat, vat, imat, sma = (want[k]["area"] for k in ("sat", "vat", "imat", "muscle"))
    assert row["vat_sat_ratio"] == (None if sat == 0 else float(vat / sat))
    assert row["total_adipose_cm2"] == float(imat + vat + sat)
    assert row["imat_pct_of_sma"] == (None if sma == 0 else float(100 * imat / sma))
    assert comp.muscle_attenuation == want["attenuation"]
    # the muscle area IS the SMA path's (measure_slice), under the same HU rule
    m = measure_slice(mask, spacing, ct, label=1, hu_gate=(-29.0, 150.0) if convention == "alberta" else None)
    assert row["muscle_area_cm2"] == m.sma_cm2 and row["muscle_hu_mean"] == m.muscle_hu_mean


# --------------------------------------------------------------------------------- boundaries


def test_alberta_gates_are_inclusive_at_minus29_150_and_minus190_minus30():
    hus = [-191, -190, -30, -29, 150, 151]
    ct = np.array([hus, hus], dtype=np.int16)
    mask = np.array([[1] * 6, [3] * 6], dtype=np.uint8)
    comp = measure_composition_slice(mask, (1.0, 1.0), ct, LABELS, "alberta")
    assert comp.tissues["muscle"].n_pixels == 2  # −29 and 150 in; −30 and 151 out
    assert comp.tissues["muscle"].hu_mean == Fraction(-29 + 150, 2)
    assert comp.tissues["vat"].n_pixels == 2  # −190 and −30 in; −191 and −29 out
    assert comp.tissues["vat"].hu_mean == Fraction(-190 - 30, 2)
    # under "label" every labelled pixel counts
    assert measure_composition_slice(mask, (1.0, 1.0), ct, LABELS, "label").tissues["vat"].n_pixels == 6


def test_empty_tissue_has_zero_area_but_undefined_hu_and_absent_tissue_undefined_area():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 1
    mask[2:] = 4
    ct = np.full((4, 4), -100, np.int16)
    ct[:2] = 40
    comp = measure_composition_slice(mask, (1.0, 1.0), ct, {"muscle": 1, "vat": 3, "sat": 4}, "label")
    vat = comp.tissues["vat"]
    assert vat.area == 0 and vat.hu_mean is None and vat.hu_sd is None and vat.source == "label"
    row = comp.to_dict()
    assert row["vat_area_cm2"] == 0.0 and row["vat_hu_mean"] is None and row["vat_sat_ratio"] == 0.0
    # no IMAT label in the map, CT given → IMAT derived (none here), total adipose defined
    assert row["imat_source"] == "derived" and row["imat_area_cm2"] == 0.0
    no_ct = measure_composition_slice(mask, (1.0, 1.0), None, {"muscle": 1, "sat": 4}).to_dict()
    assert no_ct["vat_area_cm2"] is None and no_ct["vat_source"] == "absent"
    assert no_ct["imat_source"] == "absent" and no_ct["total_adipose_cm2"] is None
    assert no_ct["muscle_hu_mean"] is None and no_ct["muscle_attenuation_hu"] is None
    sat_empty = measure_composition_slice(np.where(mask == 4, 3, mask), (1.0, 1.0), ct, LABELS).to_dict()
    assert sat_empty["vat_sat_ratio"] is None  # SAT 0 cm²: ratio undefined, never inf or 0


def test_hu_stats_exact_mean_and_population_sd():
    mean, sd = hu_stats(np.array([1, 2, 2], dtype=np.int16))
    assert mean == Fraction(5, 3) and sd == pytest.approx(math.sqrt(2 / 9), rel=1e-15)
    assert hu_stats(np.array([], dtype=np.int16)) == (None, None)


# -------------------------------------------------------------------------------- derived IMAT


def _ring(n=40, inner=6, outer=14):
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2 + 0.5, xx - n / 2 + 0.5)
    return (r >= inner) & (r <= outer), r < inner


def test_derived_imat_counts_small_fat_holes_not_a_large_enclosed_cavity():
    ring, cavity = _ring()
    mask = ring.astype(np.uint8)
    mask[20, 10] = 0  # a one-pixel hole in the muscle wall, fat HU
    ct = np.full(mask.shape, 40, np.int16)
    ct[cavity] = -100  # enclosed cavity full of fat (VAT-like)
    ct[20, 10] = -60
    ct[20, 30] = -80  # a muscle-labelled pixel (in the ring) with fat HU
    small = measure_composition_slice(mask, (1.0, 1.0), ct, {"muscle": 1}, "label")
    n_cavity = int(cavity.sum())
    assert mask[20, 30] == 1 and n_cavity == 112
    # at 1 mm pixels the cavity is 1.12 cm² (≤ 10 cm²: inside the envelope); at 5 mm pixels 28 cm² (excluded)
    assert small.tissues["imat"].source == "derived"
    assert small.tissues["imat"].n_pixels == n_cavity + 1  # label convention: the labelled fat pixel stays muscle
    big = measure_composition_slice(mask, (5.0, 5.0), ct, {"muscle": 1}, "alberta")
    assert big.tissues["imat"].n_pixels == 2  # the hole and the fat-HU muscle pixel; never the cavity
    assert big.tissues["muscle"].n_pixels == int(mask.sum()) - 1  # SMA excludes IMAT
    assert not (derived_imat(mask == 1, ct, (5.0, 5.0)) & cavity).any()


def test_labelled_imat_is_not_derived_and_never_double_counted():
    ring, _ = _ring()
    mask = ring.astype(np.uint8)
    mask[20, 25] = 2
    ct = np.full(mask.shape, -50, np.int16)
    comp = measure_composition_slice(mask, (1.0, 1.0), ct, LABELS, "alberta")
    assert comp.tissues["imat"].source == "label" and comp.tissues["imat"].n_pixels == 1
    assert comp.tissues["muscle"].n_pixels == 0  # all muscle pixels are fat-HU: excluded from SMA


# ------------------------------------------------------------------------------- myosteatosis


def _muscle_with_mean(mean_numerator: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n muscle pixels whose HU sum is mean_numerator (mean = mean_numerator / n), plus a gated-out one."""
    mask = np.ones((1, n + 1), np.uint8)
    ct = np.zeros((1, n + 1), np.int16)
    base, rest = divmod(mean_numerator, n)
    ct[0, :n] = base
    ct[0, :rest] += 1
    ct[0, n] = -100  # labelled muscle outside −29…150: excluded from the attenuation
    return mask, ct


@pytest.mark.parametrize("numerator, n, bmi, expected", [
    (41 * 7, 7, 24.9, False),          # exactly 41 HU at BMI < 25: not low (strict <)
    (41 * 7 - 1, 7, 24.9, True),       # 40.857… HU
    (41 * 7 - 1, 7, Fraction(25), False),  # BMI exactly 25 is in the ≥ 25 band: cut-off 33
    (33 * 3, 3, 30, False),            # exactly 33 at BMI ≥ 25
    (33 * 3 - 1, 3, 30, True),
])
def test_martin_myosteatosis_exact_strict_and_bmi_bands(numerator, n, bmi, expected):
    mask, ct = _muscle_with_mean(numerator, n)
    comp = measure_composition_slice(mask, (1.0, 1.0), ct, {"muscle": 1}, "label")
    assert comp.muscle_attenuation == Fraction(numerator, n)
    assert comp.tissues["muscle"].hu_mean != comp.muscle_attenuation  # ungated mean includes −100
    flag, why = myosteatosis_flag(comp, MYOSTEATOSIS_SETS["martin_myosteatosis"], "F", bmi)
    assert (flag, why) == (expected, None)


def test_bmi_25_exactly_from_height_and_weight_uses_the_upper_band():
    from sarco_nn.thresholds import bmi
    mask, ct = _muscle_with_mean(35 * 2, 2)  # 35 HU: low at BMI < 25 (41), not at ≥ 25 (33)
    comp = measure_composition_slice(mask, (1.0, 1.0), ct, {"muscle": 1})
    assert myosteatosis_flag(comp, get_threshold_set("martin_myosteatosis"), "M", bmi(1.6, 64))[0] is False
    assert myosteatosis_flag(comp, get_threshold_set("martin_myosteatosis"), "M", None) == (None, "missing BMI (height/weight)")


def test_custom_myosteatosis_file_with_level_and_gate(tmp_path):
    path = tmp_path / "ma.json"
    path.write_text(json.dumps({"metric": "muscle_hu", "male": 30, "female": 28, "level": ["L1"], "hu_gate": [-29, 150]}))
    ts = load_threshold_file(path)
    assert ts.kind == "myosteatosis" and ts.levels == ("L1",) and ts.hu_gate == (-29.0, 150.0)
    mask, ct = _muscle_with_mean(29 * 4, 4)
    at_l1 = measure_composition_slice(mask, (1.0, 1.0), ct, {"muscle": 1}, level="L1")
    assert myosteatosis_flag(at_l1, ts, "M") == (True, None)
    assert myosteatosis_flag(at_l1, ts, "F") == (False, None)
    at_l3 = measure_composition_slice(mask, (1.0, 1.0), ct, {"muscle": 1}, level="L3")
    flag, why = myosteatosis_flag(at_l3, ts, "M")
    assert flag is None and "L3" in why and "areas only" in why
    other_gate = tmp_path / "g.json"
    other_gate.write_text(json.dumps({"metric": "muscle_hu", "male": 30, "female": 28, "hu_gate": [-30, 150]}))
    with pytest.raises(SarcoError, match="assumes"):
        myosteatosis_flag(at_l3, load_threshold_file(other_gate), "M")


@pytest.mark.parametrize("content, match", [
    ({"metric": "muscle_hu", "male": 30, "female": 28, "hu_gate": [150, -29]}, "low < high"),
    ({"metric": "muscle_hu", "male": 30, "female": 28, "hu_gate": [1]}, "two numbers"),
    ({"metric": "sma", "male": 30, "female": 28, "hu_gate": [-29, 150]}, "'muscle_hu' only"),
    ({"metric": "sma", "male": 30, "female": 28, "level": "L6"}, "not one of"),
])
def test_bad_threshold_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=match):
        load_threshold_file(path)


def test_sets_of_the_wrong_kind_are_refused():
    comp = measure_composition_slice(np.ones((2, 2), np.uint8), (1.0, 1.0), np.zeros((2, 2), np.int16), {"muscle": 1})
    with pytest.raises(SarcoError, match="myosteatosis"):
        myosteatosis_flag(comp, THRESHOLD_SETS["paper"], "M")
    with pytest.raises(SarcoError, match="not a sarcopenia set"):
        MYOSTEATOSIS_SETS["martin_myosteatosis"].is_sarcopenic("M", 100.0)


# ------------------------------------------------------------------------------------- levels


def test_levels_t12_to_l5_only_and_no_l3_cutoffs_elsewhere():
    assert check_level("l1") == "L1"
    for bad in ("L6", "T11", "C3"):
        with pytest.raises(SarcoError, match="not supported"):
            check_level(bad)
    mask = np.ones((10, 10), np.uint8)  # 1 cm² at 1 mm pixels: far below every SMA cut-off
    for level in ("T12", "L1", "L2", "L4", "L5"):
        comp = measure_composition_slice(mask, (1.0, 1.0), None, {"muscle": 1}, level=level)
        for name in THRESHOLD_SETS:
            flag, why = sarcopenia_flag(comp, THRESHOLD_SETS[name], "M", 30, 1.8)
            assert flag is None and "areas only" in why
    comp = measure_composition_slice(mask, (1.0, 1.0), None, {"muscle": 1}, level="L3")
    assert sarcopenia_flag(comp, THRESHOLD_SETS["paper"], "M") == (True, None)


def test_volume_slice_choice_follows_measure_image():
    arr = np.zeros((4, 6, 6), np.uint8)
    arr[1, 1:3, 1:3] = 1
    arr[2, 4:6, :] = 4  # a SAT-only slice
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.7, 3.0))
    comps = measure_composition_image(img, labels=LABELS)
    assert [c.slice_index for c in comps] == [1, 2]
    assert comps[0].tissues["muscle"].area == 4 * _dec(0.7) * _dec(0.8) / 100
    assert comps[1].tissues["sat"].n_pixels == 12


# ------------------------------------------------------------------------------------------ CLI


def _write(array, path: Path, spacing=(0.8, 0.7)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _cli():
    app = typer.Typer()
    app.command()(measure_command)
    return app


@pytest.fixture()
def four_tissue(tmp_path):
    # laid out as a body is (sarco_nn.tissue_layout): SAT under the skin, the muscle wall, VAT inside it
    mask = np.zeros((120, 120), np.uint8)
    mask[4:116, 4:116] = 4
    mask[10:110, 10:110] = 1  # a 100² wall around 60²: 35.84 cm², above the 30 cm² floor, below every cut-off
    mask[30:90, 30:90] = 3
    mask[11, 11:14] = 2
    mask[55:65, 50:60] = 0
    ct = np.full(mask.shape, 45, np.int16)
    ct[mask == 2] = -50
    ct[mask == 3] = -90
    ct[mask == 4] = -110
    ct[10, 10] = -29
    ct[55:65, 50:60] = 700  # a vertebra inside the wall: a plausible CT slice has bone (sarco_nn.ct_checks)
    ct[mask == 0] = np.where(ct[mask == 0] == 700, 700, -1000)  # and air outside the body (sarco_nn.io.hu)
    return _write(mask, tmp_path / "mask.nii.gz"), _write(ct, tmp_path / "ct.nii.gz"), mask, ct


def test_cli_reports_all_tissues_for_a_multi_label_mask(four_tissue):
    mask_path, ct_path, mask, ct = four_tissue
    result = CliRunner().invoke(_cli(), [str(mask_path), "--image", str(ct_path), "--sex", "F", "--height", "1.6",
                                         "--weight", "50", "--json", "--hu-gate"])
    assert result.exit_code == 0, result.output
    o = json.loads(result.output)
    want = oracle(mask, ct, (0.7, 0.8), "alberta", 1.6)
    assert o["hu_convention"] == "alberta" and o["muscle_hu_range"] == "[-29, 150]" and o["adipose_hu_range"] == "[-190, -30]"
    for name in LABELS:
        area_key, hu_key = ("sma_cm2", "muscle_hu_mean") if name == "muscle" else (f"{name}_area_cm2", f"{name}_hu_mean")
        assert o[area_key] == round(float(want[name]["area"]), 4)
        assert o[hu_key] == round(float(want[name]["mean"]), 2)
        assert o[f"{name}_source"] == "label"
    assert "muscle_area_cm2" not in o  # one fact, one column: the muscle area is sma_cm2
    assert set(RESULT_COLUMNS) <= set(o)
    assert o["vati_cm2_m2"] == round(float(want["vati"]), 4)
    assert o["myosteatosis"] is False and o["myosteatosis_set"] == "martin_myosteatosis"
    assert o["sarcopenic"] is True and o["status"] == "ok"


def test_cli_text_names_units_and_muscle_only_mask_gets_derived_imat(four_tissue, tmp_path):
    mask_path, ct_path, mask, ct = four_tissue
    text = CliRunner().invoke(_cli(), [str(mask_path), "--image", str(ct_path), "--level", "L1"])
    assert text.exit_code == 0, text.output
    assert "VAT" in text.output and "cm²" in text.output and "HU" in text.output and "level L1" in text.output
    assert "sarcopenic: unknown" in text.output and "areas only" in text.output
    only = _write((mask == 1).astype(np.uint8), tmp_path / "m1.nii.gz")
    plain = CliRunner().invoke(_cli(), [str(only), "--image", str(ct_path), "--json"])
    assert "imat_source" not in json.loads(plain.output)  # muscle-only mask without --tissues: unchanged output
    res = CliRunner().invoke(_cli(), [str(only), "--image", str(ct_path), "--json", "--tissues"])
    o = json.loads(res.output)
    assert o["imat_source"] == "derived" and o["vat_source"] == "absent" and o["vat_area_cm2"] is None


def test_cli_reads_labels_json_beside_the_mask(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[:20] = 7
    mask[20:] = 9
    mask_path = _write(mask, tmp_path / "case.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"muscle": 7, "sat": 9}))
    res = CliRunner().invoke(_cli(), [str(mask_path), "--label", "7", "--json", "--tissues"])
    assert res.exit_code == 0, res.output
    o = json.loads(res.output)
    assert o["sat_area_cm2"] == round(800 * 0.56 / 100, 4) and o["imat_source"] == "absent"


# ------------------------------------------------------------------------- per-tissue evaluation


def _tissue_case(shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = np.zeros((100, 100), np.uint8)
    ref[5:85, 5:85] = 1  # 36 cm² of muscle at 0.75 × 0.75 mm
    ref[40:44, 40:50] = 2
    ref[86:92, :] = 3
    ref[93:99, :] = 4
    pred = ref.copy()
    pred[86:92, :] = 0
    pred[86 + shift:92, :] = 3  # VAT shrunk by `shift` rows
    pred[40:44, 40:50 - shift] = 2
    pred[40:44, 50 - shift:50] = 1
    ct = np.full(ref.shape, 50, np.int16)
    ct[ref == 2] = -60
    ct[86:92, :] = np.arange(86, 92)[:, None] - 180  # VAT HU varies by row: a shrunk VAT has another mean
    ct[ref == 4] = -100
    ct[0, :50], ct[0, 50:] = -1000, 700  # air and bone outside every mask: a CT in HU (sarco_nn.io.hu)
    return ref, pred, ct


def test_evaluation_reports_each_tissue_against_a_numpy_oracle(tmp_path):
    from sarco_nn.evaluation.evaluate import evaluate_folder

    spacing = (0.75, 0.75)
    for d in ("ref", "pred", "img"):
        (tmp_path / d).mkdir()
    (tmp_path / "ref" / "labels.json").write_text(json.dumps(LABELS))
    want = {t: {"dice": [], "err": [], "hu": []} for t in LABELS}
    for i, shift in enumerate((0, 1, 3)):
        ref, pred, ct = _tissue_case(shift)
        _write(ref, tmp_path / "ref" / f"c{i}.nii.gz", spacing)
        _write(pred, tmp_path / "pred" / f"c{i}.nii.gz", spacing)
        _write(ct, tmp_path / "img" / f"c{i}_0000.nii.gz", spacing)
        for t, v in LABELS.items():
            r, p = ref == v, pred == v
            want[t]["dice"].append(2 * (r & p).sum() / (r.sum() + p.sum()))
            want[t]["err"].append(float((p.sum() - r.sum()) * Fraction("0.5625") / 100))
            want[t]["hu"].append(ct[p].mean() - ct[r].mean())
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out", images_dir=tmp_path / "img")
    assert set(s["tissues"]) == set(LABELS)
    for t in LABELS:
        got = s["tissues"][t]
        assert got["n"] == 3 and got["dice_mean"] == pytest.approx(np.mean(want[t]["dice"]), abs=1e-12)
        assert got["area_agreement_cm2"]["bias"] == pytest.approx(np.mean(want[t]["err"]), abs=1e-12)
        sd = np.std(want[t]["err"], ddof=1)
        assert got["area_agreement_cm2"]["loa_high"] == pytest.approx(np.mean(want[t]["err"]) + 1.959963984540054 * sd,
                                                                     abs=1e-9)
        assert got["hu_bias"] == pytest.approx(np.mean(want[t]["hu"]), abs=1e-9)
    assert s["tissues"]["vat"]["dice_min"] < 1.0 and s["tissues"]["sat"]["dice_min"] == 1.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Tissue: VAT" in report and "## Tissue: SAT" in report and "## Tissue: IMAT" in report
    vat_section = report.split("## Tissue: VAT")[1].split("## ")[0]
    assert "![Bland–Altman VAT area](bland_altman_vat.png)" in vat_section  # each section shows its own plot
    assert all((tmp_path / "out" / f"bland_altman_{t}.png").stat().st_size > 1000 for t in LABELS)
    assert s["plots"]["Bland–Altman IMAT area"] == "bland_altman_imat.png"
    assert report.count("bland_altman_vat.png") == 1  # not repeated in the Plots list
    from sarco_nn.evaluation.tissues import console_line

    line = console_line(s["tissues"])
    assert line.startswith("per tissue (Dice mean / area bias / HU bias): Skeletal muscle ")
    assert f"VAT {s['tissues']['vat']['dice_mean']:.3f} / {s['tissues']['vat']['area_agreement_cm2']['bias']:+.2f} cm²" in line
    assert console_line({}) is None
    header = (tmp_path / "out" / "cases.csv").read_text().splitlines()[0].split(",")
    assert "vat_dice" in header and "imat_hu_error" in header


def test_muscle_only_prediction_gets_no_tissue_sections(tmp_path):
    from sarco_nn.evaluation.evaluate import evaluate_folder

    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    (tmp_path / "ref" / "labels.json").write_text(json.dumps(LABELS))
    ref, _, _ = _tissue_case(0)
    _write(ref, tmp_path / "ref" / "c.nii.gz", (0.75, 0.75))
    _write((ref == 1).astype(np.uint8), tmp_path / "pred" / "c.nii.gz", (0.75, 0.75))
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    assert s["tissues"] == {} and "## Tissue" not in (tmp_path / "out" / "report.md").read_text()


def _oracle_derived_imat(muscle: np.ndarray, ct: np.ndarray, pixel_cm2: Fraction, counted: np.ndarray) -> np.ndarray:
    """Pure-Python BFS: background not 4-connected to the border = holes; holes ≤ 10 cm² join the envelope."""
    h, w = muscle.shape
    outside = np.zeros_like(muscle, dtype=bool)
    stack = [(y, x) for y in range(h) for x in range(w) if (y in (0, h - 1) or x in (0, w - 1)) and not muscle[y, x]]
    for y, x in stack:
        outside[y, x] = True
    while stack:
        y, x = stack.pop()
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < h and 0 <= nx < w and not muscle[ny, nx] and not outside[ny, nx]:
                outside[ny, nx] = True
                stack.append((ny, nx))
    holes = ~muscle & ~outside
    envelope = muscle.copy()
    seen = np.zeros_like(holes)
    for y0 in range(h):
        for x0 in range(w):
            if holes[y0, x0] and not seen[y0, x0]:
                comp, todo = [], [(y0, x0)]
                seen[y0, x0] = True
                while todo:
                    y, x = todo.pop()
                    comp.append((y, x))
                    for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                        if 0 <= ny < h and 0 <= nx < w and holes[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            todo.append((ny, nx))
                if len(comp) * pixel_cm2 <= 10:
                    for y, x in comp:
                        envelope[y, x] = True
    return envelope & (ct >= -190) & (ct <= -30) & ~counted


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(4, 9), convention=st.sampled_from(["label", "alberta"]),
       spacing=st.sampled_from([(10.0, 10.0), (20.0, 15.0), (1.0, 1.0)]))
def test_derived_imat_matches_a_bfs_oracle(data, n, convention, spacing):
    muscle = np.array(data.draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))).reshape(n, n)
    hu = st.one_of(st.sampled_from(BOUNDARY_HU), st.integers(-250, 200))
    ct = np.array(data.draw(st.lists(hu, min_size=n * n, max_size=n * n)), dtype=np.int16).reshape(n, n)
    comp = measure_composition_slice(muscle.astype(np.uint8), spacing, ct, {"muscle": 1}, convention)
    counted = muscle & (ct >= -29) & (ct <= 150) if convention == "alberta" else muscle
    pixel = _dec(spacing[0]) * _dec(spacing[1]) / 100
    want = _oracle_derived_imat(muscle, ct, pixel, counted)
    imat = comp.tissues["imat"]
    assert imat.source == "derived" and imat.n_pixels == int(want.sum()) and imat.area == int(want.sum()) * pixel
    assert imat.hu_mean == (None if not want.any() else Fraction(int(ct[want].astype(np.int64).sum()), int(want.sum())))
    assert comp.tissues["muscle"].n_pixels == int(counted.sum())  # SMA excludes IMAT: disjoint by construction
    assert not (want & counted).any()


def test_implausible_mask_withholds_myosteatosis_too(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[:10] = 1
    mask[10:] = 4
    mask[19, 18:] = 0
    ct = np.where(mask == 1, 20, -100).astype(np.int16)  # 20 HU: would be "low" under Martin
    ct[19, 19] = 700  # a vertebra pixel: values all within -128..255 (no air, no bone) are not a CT in HU
    ct[19, 18] = -1000  # and an air pixel: a CT in HU shows air (sarco_nn.io.hu)
    res = CliRunner().invoke(_cli(), [str(_write(mask, tmp_path / "m.nii.gz")), "--image",
                                      str(_write(ct, tmp_path / "c.nii.gz")), "--sex", "M", "--height", "1.8",
                                      "--weight", "70", "--json"])
    o = json.loads(res.output)
    assert o["status"] == "review" and o["sarcopenic"] == "unknown"
    assert o["myosteatosis"] == "unknown" and "withheld" in o["myosteatosis_threshold"]
    assert o["muscle_attenuation_hu"] == 20.0


def test_without_a_label_map_a_tissue_the_mask_lacks_is_absent_not_zero(four_tissue, tmp_path):
    _, ct_path, mask, _ = four_tissue
    (tmp_path / "sub").mkdir()
    no_imat = _write(np.where(mask == 2, 1, mask).astype(np.uint8), tmp_path / "sub" / "m.nii.gz")
    o = json.loads(CliRunner().invoke(_cli(), [str(no_imat), "--image", str(ct_path), "--json"]).output)
    assert o["imat_source"] == "derived" and o["vat_source"] == "label"
    (tmp_path / "sub" / "labels.json").write_text(json.dumps(LABELS))  # declared: IMAT annotated, none found
    o = json.loads(CliRunner().invoke(_cli(), [str(no_imat), "--image", str(ct_path), "--json"]).output)
    assert o["imat_source"] == "label" and o["imat_area_cm2"] == 0.0 and o["imat_hu_mean"] is None


def test_label_map_with_a_shared_value_is_refused_and_myosteatosis_set_describes_itself():
    with pytest.raises(SarcoError, match="one value"):
        measure_composition_slice(np.ones((2, 2), np.uint8), (1.0, 1.0), None, {"muscle": 1, "vat": 1})
    ts = get_threshold_set("MARTIN_MYOSTEATOSIS")
    assert ts.describe("F", 24) == "muscle HU<41 HU (martin_myosteatosis, F)"
    assert ts.describe("M", 25) == "muscle HU<33 HU (martin_myosteatosis, M)"
    with pytest.raises(SarcoError, match="martin_myosteatosis"):
        get_threshold_set("no_such_set")


def test_myosteatosis_follows_the_sarcopenia_flag_rule_a_no_bone_review_keeps_both(four_tissue, tmp_path):
    """HOSTILE_FINDINGS #99: a CT slice without bone (`no_bone`, a review that keeps the sarcopenia flag)
    lost its myosteatosis flag in `sarco measure` only (predict kept it), as `withheld: the mask is not a
    plausible muscle mask`."""
    mask_path, _, mask, ct = four_tissue
    boneless = ct.copy()
    boneless[boneless >= 200] = 45
    ct_path = _write(boneless, tmp_path / "boneless.nii.gz")
    res = CliRunner().invoke(_cli(), [str(mask_path), "--image", str(ct_path), "--sex", "F", "--height", "1.6",
                                      "--weight", "50", "--json"])
    assert res.exit_code == 0, res.output
    o = json.loads(res.output)
    assert [r["code"] for r in o["reasons"]] == ["no_bone"] and o["sarcopenic"] is True
    attenuation = boneless[(mask == 1) & (boneless >= -29) & (boneless <= 150)].mean()
    assert o["muscle_attenuation_hu"] == round(float(attenuation), 2) and attenuation >= 41  # BMI 19.5: < 41 HU
    assert o["myosteatosis"] is False and o["myosteatosis_threshold"] == "muscle HU<41 HU (martin_myosteatosis, F)"
    tiny = mask.copy()
    tiny[mask == 1] = 0
    tiny[5:15, 5:15] = 1  # 0.56 cm²: below the floor, a blocking reason withholds both flags
    res = CliRunner().invoke(_cli(), [str(_write(tiny, tmp_path / "tiny.nii.gz")), "--image", str(ct_path),
                                      "--sex", "F", "--height", "1.6", "--weight", "50", "--json"])
    o = json.loads(res.output)
    assert o["sarcopenic"] == "unknown" and o["myosteatosis"] == "unknown"
    assert o["myosteatosis_threshold"] == "withheld: a reason blocks every flag (see reasons)"


def test_a_muscle_only_prediction_among_four_tissue_ones_counts_its_tissues_as_not_predicted(tmp_path):
    """HOSTILE_FINDINGS #100: tissues were compared per case only where that prediction held a fat value, so
    a four-tissue model's case with no fat predicted left the tissue statistics, unsaid (VAT Dice 1.0 over 2
    cases instead of 0.5); a four-tissue reference without labels.json got no tissue section, unsaid (#101)."""
    from sarco_nn.evaluation.evaluate import evaluate_folder

    spacing = (0.75, 0.75)
    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    ref, _, _ = _tissue_case(0)
    for case in ("a", "b"):
        _write(ref, tmp_path / "ref" / f"{case}.nii.gz", spacing)
    _write(ref, tmp_path / "pred" / "a.nii.gz", spacing)
    _write((ref == 1).astype(np.uint8), tmp_path / "pred" / "b.nii.gz", spacing)  # muscle only: no fat predicted
    bare = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "bare")
    assert bare["tissues"] == {} and any("no labels.json names them" in k for k in bare["problems"])
    (tmp_path / "ref" / "labels.json").write_text(json.dumps(LABELS))
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    pixel = Fraction("0.5625") / 100
    for t in ("imat", "vat", "sat"):
        assert s["tissues"][t]["n"] == 2 and s["tissues"][t]["dice_mean"] == pytest.approx(0.5)
        want_bias = -float(int((ref == LABELS[t]).sum()) * pixel) / 2  # case b: 0 predicted
        assert s["tissues"][t]["area_agreement_cm2"]["bias"] == pytest.approx(want_bias, abs=1e-9)
    assert s["tissues"]["muscle"]["n"] == 2
    assert [k for k in s["problems"] if "muscle only beside multi-tissue" in k] and \
        s["problems"][[k for k in s["problems"] if "muscle only beside" in k][0]] == ["b"]
    rows = {r["case_id"]: r for r in csv.DictReader((tmp_path / "out" / "cases.csv").open())}
    assert rows["b"]["vat_dice"] == "0" and rows["b"]["vat_area_pred_cm2"] == "0"


def test_every_hu_range_cell_is_spreadsheet_safe_and_reads_back_as_the_gate():
    """HOSTILE #130: `-29..150` in results.csv starts with '-', a formula prefix; `[-29, 150]` does not, so
    csv_safe leaves it alone, and it reads back (JSON) as the inclusive gate."""
    from sarco_nn.body_composition import hu_range_text
    from sarco_nn.cases import csv_safe
    from sarco_nn.constants import MUSCLE_HU_GATE

    assert hu_range_text(MUSCLE_HU_GATE) == "[-29, 150]" and hu_range_text(None) is None
    for gate in (MUSCLE_HU_GATE, (-190.0, -30.0), (-150, -50), (-29.5, 150.25)):
        cell = hu_range_text(gate)
        assert csv_safe(cell) == cell and not cell.startswith(("=", "+", "-", "@"))
        assert json.loads(cell) == [float(gate[0]), float(gate[1])]
