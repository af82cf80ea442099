"""The evaluator: every statistic against hand-computed values, then a small end-to-end run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from sarco_nn.errors import SarcoError
from sarco_nn.evaluation.agreement import Z_95, agreement, icc, pearson_r
from sarco_nn.evaluation.classification import Confusion, wilson_ci
from sarco_nn.evaluation.evaluate import evaluate_crossval, evaluate_folder
from sarco_nn.evaluation.metrics import dice_iou, segmentation_metrics
from sarco_nn.evaluation.threshold_impact import at_risk_counts, case_impact
from sarco_nn.thresholds import THRESHOLD_SETS
from sarco_nn.workspace import Workspace


def disc(shape, spacing_yx, radius_mm):
    sy, sx = spacing_yx
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = shape[0] * sy / 2, shape[1] * sx / 2
    return ((yy + 0.5) * sy - cy) ** 2 + ((xx + 0.5) * sx - cx) ** 2 <= radius_mm**2


# ------------------------------------------------------------------------------ segmentation metrics
def test_dice_iou_and_error_areas_of_overlapping_squares():
    ref = np.zeros((20, 30), bool)
    pred = np.zeros((20, 30), bool)
    ref[5:15, 5:15] = True  # 100 px
    pred[5:15, 10:20] = True  # 100 px, 50 shared
    m = segmentation_metrics(pred, ref, (0.5, 0.8))
    assert m.dice == pytest.approx(2 * 50 / 200) and m.iou == pytest.approx(50 / 150)
    assert m.fp_cm2 == pytest.approx(50 * 0.4 / 100) and m.fn_cm2 == pytest.approx(50 * 0.4 / 100)
    # the shifted edges are 5 columns apart (4 mm); no boundary point is further than that
    assert 0 < m.msd_mm < m.hd95_mm <= 5 * 0.8 + 1e-9


def test_nested_squares_dice():
    ref = np.zeros((40, 40), bool)
    ref[0:20, 0:20] = True  # 400
    pred = np.zeros((40, 40), bool)
    pred[0:10, 0:20] = True  # 200, inside ref
    assert dice_iou(pred, ref) == pytest.approx((2 * 200 / 600, 200 / 400))


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.8, 0.8), (1.0, 1.0), (0.6, 0.9), (0.9, 0.6), (1.5, 1.5)])
@pytest.mark.parametrize("outer, inner", [(30.0, 25.0), (35.0, 20.0)])
def test_concentric_discs_surface_distance_is_the_difference_of_radii(spacing, outer, inner):
    shape = (int(80 / spacing[0]), int(80 / spacing[1]))
    m = segmentation_metrics(disc(shape, spacing, inner), disc(shape, spacing, outer), spacing)
    tolerance = 0.5 * max(spacing)  # boundary pixels are sampled on the pixel grid
    assert m.msd_mm == pytest.approx(outer - inner, abs=tolerance)
    assert m.hd95_mm == pytest.approx(outer - inner, abs=tolerance)
    assert m.dice == pytest.approx(2 * inner**2 / (outer**2 + inner**2), abs=0.01)


def test_empty_masks_are_reported_not_crashed_on():
    empty, full = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    full[2:5, 2:5] = True
    both = segmentation_metrics(empty, empty, (1.0, 1.0))
    assert (both.dice, both.iou, both.hd95_mm, both.msd_mm) == (1.0, 1.0, 0.0, 0.0)
    assert both.reference_empty and both.prediction_empty
    missed = segmentation_metrics(empty, full, (1.0, 2.0))
    # a missed mask gets the worst possible distance (the slice diagonal), never NaN (#13 item 6)
    assert missed.dice == 0 and missed.hd95_mm == pytest.approx(math.hypot(10 * 1.0, 10 * 2.0))
    assert missed.msd_mm == missed.hd95_mm and missed.prediction_empty
    assert missed.fn_cm2 == pytest.approx(9 * 2 / 100) and missed.fp_cm2 == 0


# ------------------------------------------------------------------------------ agreement
def test_agreement_worked_by_hand():
    pred, ref = [10, 12, 15, 20], [11, 11, 14, 22]
    # differences −1, 1, 1, −2: bias −0.25; squared deviations 0.5625+1.5625+1.5625+3.0625 = 6.75; SD = √(6.75/3) = 1.5
    a = agreement(pred, ref)
    assert a.n == 4 and a.bias == pytest.approx(-0.25) and a.sd_diff == pytest.approx(1.5)
    assert a.loa_low == pytest.approx(-0.25 - 1.96 * 1.5, abs=1e-4)
    assert a.loa_high == pytest.approx(-0.25 + 1.96 * 1.5, abs=1e-4)
    assert a.mae == pytest.approx(1.25)
    assert a.mape_percent == pytest.approx((1 / 11 + 1 / 11 + 1 / 14 + 2 / 22) / 4 * 100)
    # two-way ANOVA by hand: row means 10.5, 11.5, 14.5, 21; grand mean 115/8 = 14.375;
    # MSR = 2·Σ(row − grand)² / 3 = 2·67.1875/3; column means 14.25, 14.5 → MSC = 4·0.03125 = 0.125;
    # SST = 137.875 → SSE = 137.875 − 134.375 − 0.125 = 3.375 → MSE = 1.125
    msr, msc, mse = 2 * 67.1875 / 3, 0.125, 1.125
    assert a.icc_3_1 == pytest.approx((msr - mse) / (msr + mse))  # 0.95100
    assert a.icc_2_1 == pytest.approx((msr - mse) / (msr + mse + 2 * (msc - mse) / 4))  # 0.96147
    assert a.icc_2_1 == pytest.approx(0.96147, abs=1e-5) and a.icc_3_1 == pytest.approx(0.95100, abs=1e-5)
    # Pearson: Σ dev products 65.5, Σ dev² 56.75 and 81
    assert a.pearson_r == pytest.approx(65.5 / math.sqrt(56.75 * 81))


def test_icc_against_shrout_and_fleiss_1979():
    # Table 2 of Shrout & Fleiss (1979): 6 targets × 4 judges; published ICC(2,1) = .29, ICC(3,1) = .71
    table = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    icc21, icc31 = icc(np.array(table))
    assert icc21 == pytest.approx(0.29, abs=0.005) and icc31 == pytest.approx(0.71, abs=0.005)


def test_agreement_edge_cases():
    a = agreement([1.0, None, float("nan")], [2.0, 3.0, 4.0])  # only the first pair is complete
    assert a.n == 1 and a.bias == -1.0 and math.isnan(a.sd_diff) and math.isnan(a.icc_2_1)
    assert agreement([], []).n == 0
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    assert Z_95 == pytest.approx(1.96, abs=1e-3)


# ------------------------------------------------------------------------------ classification
def test_wilson_interval_known_values():
    low, high = wilson_ci(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_ci(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_ci(16, 16)[0] == pytest.approx(0.8064, abs=1e-4)  # the study's 16/16 is not "certainly 100 %"
    assert all(math.isnan(v) for v in wilson_ci(0, 0))


def test_confusion_and_summary():
    pred = [True, True, False, False, True, None, False]
    truth = [True, False, False, True, True, True, None]
    c = Confusion.from_flags(pred, truth)
    assert (c.tp, c.fp, c.tn, c.fn, c.n) == (2, 1, 1, 1, 5)
    s = c.summary()
    assert s["accuracy"] == pytest.approx(3 / 5) and s["sensitivity"] == pytest.approx(2 / 3)
    assert s["specificity"] == pytest.approx(1 / 2) and s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["accuracy_ci"] == pytest.approx(list(wilson_ci(3, 5)))


# ------------------------------------------------------------------------------ threshold impact
def test_threshold_impact_borderline_cases():
    paper = THRESHOLD_SETS["paper"]
    # 151 cm² man: −4 % = 144.96 (still ≥ 144), −5 % = 143.45 → flips at 5 %
    near = case_impact(paper, "M", 151.0, None, None)
    assert near.flip_k == 5 and near.distance_to_cutoff_percent == pytest.approx((151 - 144) / 151 * 100)
    # 91 cm² woman (sarcopenic): +1 % = 91.91 < 92, +2 % = 92.82 → flips at 2 %
    assert case_impact(paper, "F", 91.0, None, None).flip_k == 2
    assert case_impact(paper, "M", 200.0, None, None).flip_k is None  # 28 % away
    assert case_impact(paper, None, 150.0, None, None).flip_k is None  # undecidable
    # SMI sets scale SMI with SMA: 53.0 man under prado (52.4): −2 % = 51.94 flips
    assert case_impact(THRESHOLD_SETS["prado"], "M", 150.0, 53.0, None).flip_k == 2
    counts = at_risk_counts([5, 2, None, None])
    assert counts[1] == 0 and counts[2] == 1 and counts[4] == 1 and counts[5] == 2 and counts[10] == 2


# ------------------------------------------------------------------------------ end to end
SPACING_XYZ = (2.0, 2.0, 10.0)  # 2 mm pixels: 1 pixel = 0.04 cm², 144 cm² = 3600 px
#   case: (sex, reference rows×cols, predicted rows×cols)
CASES = {
    "a": ("M", (60, 62), (60, 58)),  # 148.8 → 139.2 cm²: truth not sarcopenic, predicted sarcopenic (FP)
    "b": ("F", (40, 40), (40, 41)),  # 64.0 → 65.6: both sarcopenic (TP)
    "c": ("M", (70, 70), (70, 70)),  # 196 → 196: neither (TN), Dice 1
    "d": ("", (50, 50), (50, 48)),  # unknown sex: measured, not classified
}


def _write(path, array2d, spacing=SPACING_XYZ, dtype=np.uint8):
    image = sitk.GetImageFromArray(array2d[None].astype(dtype))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _rect(rows_cols):
    mask = np.zeros((80, 80), np.uint8)
    mask[2 : 2 + rows_cols[0], 2 : 2 + rows_cols[1]] = 1
    return mask


def _make_dataset(root, preds, refs, images=None, with_extra=True):
    preds.mkdir(parents=True, exist_ok=True)
    refs.mkdir(parents=True, exist_ok=True)
    lines = ["case_id,sex,height_m,weight_kg,sarcopenic"]
    for case, (sex, ref_rc, pred_rc) in CASES.items():
        _write(refs / f"{case}.nii.gz", _rect(ref_rc))
        _write(preds / f"{case}.nii.gz", _rect(pred_rc))
        if images is not None:
            images.mkdir(parents=True, exist_ok=True)
            ct = np.where(_rect(ref_rc) > 0, 40, -80)
            ct[0, :40], ct[0, 40:] = -1000, 700  # air and bone outside every mask: a CT in HU (sarco_nn.io.hu)
            _write(images / f"{case}_0000.nii.gz", ct, dtype=np.int16)
        lines.append(f"{case},{sex},1.70,70,")
    if with_extra:
        _write(preds / "orphan.nii.gz", _rect((10, 10)))  # prediction without reference
        _write(refs / "unpredicted.nii.gz", _rect((10, 10)))  # reference without prediction
    (root / "clinical.csv").write_text("\n".join(lines) + "\n")


def _check_expected_summary(s):
    assert s["n_cases"] == 4 and s["n_cases_classified"] == 3
    assert s["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 0}
    assert s["accuracy"] == pytest.approx(2 / 3) and s["sensitivity"] == 1.0 and s["specificity"] == 0.5
    assert s["accuracy_ci"] == pytest.approx(list(wilson_ci(2, 3)))
    errors = [-9.6, 1.6, 0.0, -4.0]  # cm², predicted − reference
    assert s["sma_bias_cm2"] == pytest.approx(np.mean(errors))
    assert s["sma_mae_cm2"] == pytest.approx(np.mean(np.abs(errors)))
    sd = np.std(errors, ddof=1)
    assert s["sma_loa_low_cm2"] == pytest.approx(np.mean(errors) - Z_95 * sd)
    assert s["sma_loa_high_cm2"] == pytest.approx(np.mean(errors) + Z_95 * sd)
    assert s["sma_mape_percent"] == pytest.approx(np.mean([9.6 / 148.8, 1.6 / 64, 0, 4 / 100]) * 100)
    dices = [2 * 3480 / 7200, 2 * 1600 / 3240, 1.0, 2 * 2400 / 4900]
    assert s["dice_mean"] == pytest.approx(np.mean(dices))
    assert s["threshold_set"] == "paper"
    assert s["threshold_impact"]["4"] == 1  # case a: 148.8 is 3.2 % above 144 → at risk from k = 4
    assert s["threshold_impact"]["3"] == 0
    assert s["threshold_impact_observed"]["flags_changed"] == 1
    assert s["worst_cases"][0] == "a"


def test_evaluate_folder_end_to_end(tmp_path):
    _make_dataset(tmp_path, tmp_path / "pred" / "masks", tmp_path / "ref", images=tmp_path / "img")
    (tmp_path / "pred" / "results.csv").write_text("case_id\n")  # a `sarco predict` output folder
    out = tmp_path / "report"
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "clinical.csv", out,
                        images_dir=tmp_path / "img", folds={"a": "0", "b": "0", "c": "1", "d": "1"})
    for key in ("n_cases", "dice_mean", "sma_mae_cm2", "sma_mape_percent", "sma_bias_cm2", "sma_loa_low_cm2",
                "sma_loa_high_cm2", "sma_icc", "accuracy", "sensitivity", "specificity", "threshold_set"):
        assert key in s
    _check_expected_summary(s)
    assert json.loads((out / "summary.json").read_text()) == s
    problems = s["problems"]
    assert problems["prediction without reference mask"] == ["orphan"]
    assert problems["reference mask without prediction"] == ["unpredicted"]
    assert not any(k.startswith("empty") for k in problems)
    assert any(k.startswith("unknown sex") and v == ["d"] for k, v in problems.items())
    # HU from the CT: reference mask sits exactly on the 40 HU region
    assert s["hu_n"] == 4 and s["hu_bias"] == pytest.approx(np.mean([0.0, (40 * 1600 - 80 * 40) / 1640 - 40, 0.0, 0.0]))
    # per-fold table + pooled row
    assert [f["fold"] for f in s["folds"]] == ["0", "1"] and s["pooled"]["n"] == 4
    assert s["folds"][0]["sma_abs_error_percent_max"] == pytest.approx(9.6 / 148.8 * 100)
    assert s["folds"][1]["dice_mean"] == pytest.approx(np.mean([1.0, 2 * 2400 / 4900]))
    with open(out / "cases.csv", newline="") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(CASES) | {"orphan", "unpredicted"}  # the two unpaired: failed rows saying why
    assert [rows[c]["status"] for c in ("orphan", "unpredicted")] == ["failed", "failed"]
    assert rows["orphan"]["reasons"].startswith("unpaired: ") and rows["orphan"]["in_statistics"] == "no"
    assert s["n_cases_skipped"] == 2 and s["skipped_cases"] == ["orphan", "unpredicted"]
    assert float(rows["a"]["sma_ref_cm2"]) == pytest.approx(148.8) and rows["a"]["flag_correct"] == "no"
    assert rows["a"]["flip_k_percent"] == "4" and rows["d"]["sarcopenic_ref"] == ""
    report_md = (out / "report.md").read_text()
    assert "| pooled | 4 |" in report_md and "orphan" in report_md and "Wilson" in report_md
    for png in ("bland_altman_sma.png", "scatter_sma.png", "dice_per_fold.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    overlays = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert len(overlays) == 4 and overlays[0].startswith("worst_1_a")
    assert not list(out.rglob("*.partial*")) and not list(out.rglob(".*"))  # atomic writes left nothing behind


def test_evaluate_folder_with_smi_set_and_missing_height(tmp_path):
    _make_dataset(tmp_path, tmp_path / "pred", tmp_path / "ref", with_extra=False)
    text = (tmp_path / "clinical.csv").read_text().replace("b,F,1.70,70", "b,F,,70")
    (tmp_path / "clinical.csv").write_text(text)
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "clinical.csv", tmp_path / "out", "prado")
    assert s["threshold_set"] == "prado" and s["n_cases"] == 4
    assert any(k.startswith("missing height") and v == ["b"] for k, v in s["problems"].items())
    assert s["smi_n"] == 3  # b has no height
    assert s["n_cases_classified"] == 2  # a and c (d: unknown sex, b: no height)


def test_evaluate_folder_without_any_match_fails_clearly(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _write(tmp_path / "pred" / "x.nii.gz", _rect((5, 5)))
    _write(tmp_path / "ref" / "y.nii.gz", _rect((5, 5)))
    with pytest.raises(SarcoError, match="prediction without reference mask: x"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")


def test_evaluate_crossval_from_nnunet_layout_and_cli(tmp_path):
    ws = Workspace(tmp_path / "ws").activate()
    raw = ws.raw / "Dataset501_Test"
    model = ws.results / "Dataset501_Test" / "nnUNetTrainer__nnUNetPlans__2d"
    fold_of = {"a": 0, "b": 0, "c": 1, "d": 1}
    _make_dataset(raw, tmp_path / "allpred", raw / "labelsTr", images=raw / "imagesTr", with_extra=False)
    for case, fold in fold_of.items():
        target = model / f"fold_{fold}" / "validation"
        target.mkdir(parents=True, exist_ok=True)
        (tmp_path / "allpred" / f"{case}.nii.gz").rename(target / f"{case}.nii.gz")
    s = evaluate_crossval(ws, "501")
    _check_expected_summary(s)
    assert s["dataset"] == "Dataset501_Test" and s["model"] == "nnUNetTrainer__nnUNetPlans__2d"
    assert [(f["fold"], f["n"]) for f in s["folds"]] == [("0", 2), ("1", 2)]
    assert (model / "sarco_evaluation" / "summary.json").is_file()
    assert (model / "sarco_evaluation" / "dice_per_fold.png").is_file()

    import typer

    from sarco_nn.commands.evaluate_cmd import evaluate as evaluate_command

    app = typer.Typer()
    app.command()(evaluate_command)
    result = CliRunner().invoke(app, ["--crossval", "--workspace", str(ws.root), "-o", str(tmp_path / "cli_out")])
    assert result.exit_code == 0, result.output
    assert "fold pooled: n 4" in result.output and (tmp_path / "cli_out" / "report.md").is_file()


def test_empty_prediction_counts_against_the_model_and_empty_reference_is_left_out(tmp_path):
    full = np.zeros((80, 80), np.uint8)
    full[5:65, 5:65] = 1  # 3600 px at 1 mm = 36 cm² (above the plausibility floor)
    empty = np.zeros_like(full)
    cases = {"x": (empty, full), "y": (full, empty), "z": (empty, empty), "w": (full, full)}
    for folder, index in (("pred", 0), ("ref", 1)):
        (tmp_path / folder).mkdir()
        for case, masks in cases.items():
            _write(tmp_path / folder / f"{case}.nii.gz", masks[index], spacing=(1.0, 1.0, 10.0))
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    # y and z have no reference muscle: not truth, out of every statistic, listed (#13 items 5 and 6)
    assert s["n_cases"] == 4 and s["n_cases_in_statistics"] == 2 and s["excluded_from_statistics"] == ["y", "z"]
    assert s["n_empty_prediction"] == 1 and s["n_empty_reference"] == 2
    assert s["dice_mean"] == pytest.approx(0.5)  # x: 0 (counts against the model), w: 1
    assert s["hd95_mean_mm"] == pytest.approx((math.hypot(80, 80) + 0.0) / 2)  # x's diagonal is IN the mean
    assert s["sma_n"] == 2 and s["sma_mape_percent"] == pytest.approx(50.0)  # x: −100 %, w: 0 %
    assert s["failed_predictions"] == ["x"]
    assert s["problems"]["empty reference mask (left out of the statistics)"] == ["y", "z"]
    assert "empty_reference" in s["rules"] and "HD95" in s["rules"]["hd95"]
    assert s["n_cases_classified"] == 0 and s["accuracy"] is None  # no clinical.csv: nothing to classify
    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "out" / "cases.csv"))}
    assert rows["y"]["in_statistics"] == "no" and rows["y"]["status"] == "review"
    assert rows["y"]["reasons"].startswith("empty_reference") and rows["x"]["sarcopenic_pred"] == "unknown"
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "left out of the means" not in report_md and "y, z" in report_md
    assert (tmp_path / "out" / "overlays" / "worst_1_x.png").is_file()


def test_a_prediction_without_the_muscle_label_is_a_wrong_file_not_a_failed_result(tmp_path):
    """Only 255 (or muscle 1 stored under scl_slope 2, read 2): skipped and listed, in no statistic; the
    failed_prediction rule says "empty" means all-zero and names this case (#6)."""
    import struct

    full = np.zeros((80, 80), np.uint8)
    full[5:65, 5:65] = 1
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        for case in ("w", "v255", "scaled"):
            _write(tmp_path / folder / f"{case}.nii", full, spacing=(1.0, 1.0, 10.0))
    _write(tmp_path / "pred" / "v255.nii", full * 255, spacing=(1.0, 1.0, 10.0))
    scaled = tmp_path / "pred" / "scaled.nii"
    data = bytearray(scaled.read_bytes())
    data[112:120] = struct.pack("<2f", 2.0, 0.0)
    scaled.write_bytes(bytes(data))
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    assert s["n_cases"] == 1 and s["failed_predictions"] == [] and s["dice_mean"] == pytest.approx(1.0)
    skipped = {item.split(":")[0]: item for item in s["problems"]["unreadable or inconsistent files (case skipped)"]}
    assert sorted(skipped) == ["scaled", "v255"]
    assert "[255]" in skipped["v255"] and "scl_slope" not in skipped["v255"]
    assert "scl_slope 2" in skipped["scaled"] and "Fix: re-save the mask unscaled" in skipped["scaled"]
    rule = s["rules"]["failed_prediction"]
    assert "label-less" not in rule and "all-zero" in rule and "255" in rule and "wrong file" in rule
    assert rule in (tmp_path / "out" / "report.md").read_text()


def test_a_clinical_id_differing_only_in_case_is_named_as_predict_names_it(tmp_path):
    """case_w without a row, 'CASE_W' in the CSV: the problem names the CSV's id (predict's hint, #8)."""
    full = np.zeros((80, 80), np.uint8)
    full[5:65, 5:65] = 1
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        for case in ("case_w", "other", "kept"):
            _write(tmp_path / folder / f"{case}.nii.gz", full, spacing=(1.0, 1.0, 10.0))
    (tmp_path / "clinical.csv").write_text("case_id,sex,height_m\nCASE_W,F,1.6\nkept,M,1.8\n")
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "clinical.csv", tmp_path / "out")
    assert sorted(s["problems"]["no row in clinical.csv"]) == ["case_w (the CSV has 'CASE_W')", "other"]
    assert s["n_cases_classified"] == 1


def test_withheld_prediction_flag_is_scored_as_wrong(tmp_path):
    ref = _rect((60, 62))      # 148.8 cm² man: not sarcopenic under paper
    pred_empty = np.zeros_like(ref)
    sarcopenic_ref = _rect((40, 40))  # 64 cm² woman: sarcopenic
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
    _write(tmp_path / "ref" / "a.nii.gz", ref)
    _write(tmp_path / "pred" / "a.nii.gz", pred_empty)
    _write(tmp_path / "ref" / "b.nii.gz", sarcopenic_ref)
    _write(tmp_path / "pred" / "b.nii.gz", pred_empty)
    (tmp_path / "clinical.csv").write_text("case_id,sex,height_m\na,M,1.7\nb,F,1.6\n")
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "clinical.csv", tmp_path / "out")
    # old code: SMA 0 → "sarcopenic" → b counted as a true positive
    assert s["confusion"] == {"tp": 0, "fp": 1, "tn": 0, "fn": 1} and s["accuracy"] == 0.0
    assert s["n_flags_withheld_scored_wrong"] == 2


def test_reference_labels_json_and_label_option(tmp_path):
    drop = tmp_path / "drop"
    (drop / "masks").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    ref = np.zeros((80, 80), np.uint8)
    ref[2:62, 2:64] = 2   # muscle under value 2: 60 × 62 px × 4 mm² = 148.8 cm²
    ref[62:70, 2:20] = 1  # imat
    pred = (ref == 2).astype(np.uint8)  # sarco writes muscle as 1
    _write(drop / "masks" / "a.nii.gz", ref)
    _write(tmp_path / "pred" / "a.nii.gz", pred)
    (drop / "labels.json").write_text('{"muscle": 2, "imat": 1}')
    s = evaluate_folder(tmp_path / "pred", drop / "masks", None, tmp_path / "out")
    assert s["label"] == 2 and s["label_prediction"] == 1 and s["label_source"].endswith("labels.json")
    assert s["dice_mean"] == 1.0 and s["sma_bias_cm2"] == pytest.approx(0.0)
    (drop / "labels.json").unlink()
    s = evaluate_folder(tmp_path / "pred", drop / "masks", None, tmp_path / "out2", label=2)
    assert s["dice_mean"] == 1.0 and s["label_source"] == "--label"


def test_volume_overlap_metrics_are_at_the_reference_slice(tmp_path):
    sq = np.zeros((40, 40), np.uint8)
    sq[5:35, 5:35] = 1
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
    _volume(tmp_path / "ref" / "a.nii.gz", {4: sq})
    _volume(tmp_path / "pred" / "a.nii.gz", {5: sq})
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    row = next(csv.DictReader(open(tmp_path / "out" / "cases.csv")))
    # old code: Dice 1.000 / HD95 0 (each mask read at its own slice); the 3-D overlap is empty
    assert float(row["dice"]) == 0.0 and s["dice_mean"] == 0.0
    assert (row["overlap_slice"], row["sma_pred_slice"]) == ("4", "5")
    assert float(row["sma_error_cm2"]) == pytest.approx(0.0)  # SMA stays end to end, at the prediction's level


def test_evaluate_refuses_an_oblique_mask(tmp_path):
    import SimpleITK as sitk

    arr = np.zeros((5, 40, 40), np.uint8)
    arr[2, 5:35, 5:35] = 1
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
        img = sitk.GetImageFromArray(arr)
        c, s_ = math.cos(math.radians(30)), math.sin(math.radians(30))
        img.SetDirection((1, 0, 0, 0, c, -s_, 0, s_, c))
        sitk.WriteImage(img, str(tmp_path / d / "a.nii.gz"))
    with pytest.raises(SarcoError, match="oblique"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")


def test_duplicate_case_ids_are_refused_naming_both_files(tmp_path):
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
        _write(tmp_path / d / "a.nii.gz", _rect((50, 50)))
    _write(tmp_path / "ref" / "a.mha", _rect((50, 50)))
    with pytest.raises(SarcoError, match=r"a\.mha.*a\.nii\.gz|a\.nii\.gz.*a\.mha"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")


def test_crossval_trainer_is_matched_exactly_never_by_substring(tmp_path):
    from sarco_nn.model_store import match_model_folders

    folders = [tmp_path / "nnUNetTrainer__nnUNetPlans__2d", tmp_path / "nnUNetTrainerSMIT__nnUNetPlans__2d"]
    assert match_model_folders(folders, "nnUNetTrainer") == folders[:1]  # old rule: both (substring)
    assert match_model_folders(folders, "nnUNetTrainerSMIT__nnUNetPlans__2d") == folders[1:]
    with pytest.raises(SarcoError, match="candidates: nnUNetTrainer__nnUNetPlans__2d"):
        match_model_folders(folders, "Trainer")


# ------------------------------------------------------------------------------ L3 level on whole volumes
def _volume(path, slices: dict[int, np.ndarray], n=9, spacing_xyz=(0.8, 0.8, 2.5), flip_z=False):
    """A 3-D mask with the given 2-D masks on the given stored slices; flip_z stores it superior→inferior."""
    array = np.zeros((n, 40, 40), np.uint8)
    for z, mask in slices.items():
        array[z] = mask
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing_xyz)
    if flip_z:  # stored axis runs head→foot: stored index 0 is the most superior slice
        img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("flip_z", [False, True])
def test_volume_level_error_in_slices_and_mm_and_sma_at_each_level(tmp_path, flip_z):
    big, small = np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8)
    big[5:35, 5:35] = 1      # 900 px x 0.64 mm² = 5.76 cm²
    small[10:30, 10:30] = 1  # 400 px = 2.56 cm²
    for d in ("pred", "ref", "annot"):
        (tmp_path / d).mkdir()
    # case a: annotated on stored slice 4, predicted 2 slices away; case b: the right slice
    _volume(tmp_path / "ref" / "a.nii.gz", {4: big}, flip_z=flip_z)
    _volume(tmp_path / "pred" / "a.nii.gz", {6: small}, flip_z=flip_z)
    _volume(tmp_path / "annot" / "a.nii.gz", {4: big}, flip_z=flip_z)
    _volume(tmp_path / "ref" / "b.nii.gz", {3: big}, flip_z=flip_z)
    _volume(tmp_path / "pred" / "b.nii.gz", {3: big}, flip_z=flip_z)
    _volume(tmp_path / "annot" / "b.nii.gz", {3: big}, flip_z=flip_z)
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out", annotated_dir=tmp_path / "annot")
    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "out" / "cases.csv"))}
    a, b = rows["a"], rows["b"]
    assert (a["l3_slice_ref"], a["l3_slice_pred"]) == ("4", "6")  # the user's own (stored) slice numbers
    sign = -1 if flip_z else 1  # stored index grows inferiorly when flipped: +2 stored = 2 slices lower
    assert int(a["l3_error_slices"]) == 2 * sign
    assert float(a["l3_error_mm"]) == pytest.approx(5.0 * sign)
    # SMA of each mask on its own level, never the prediction read at the annotated slice (which is empty)
    assert float(a["sma_pred_cm2"]) == pytest.approx(2.56) and float(a["sma_ref_cm2"]) == pytest.approx(5.76)
    assert float(a["sma_error_annotated_percent"]) == pytest.approx(0.0)
    assert "another level" in a["note"]
    assert (b["l3_error_slices"], float(b["l3_error_mm"])) == ("0", 0.0)
    l3 = s["l3"]
    assert l3["n"] == 2 and l3["within_1_slice"] == 1
    assert l3["error_mm_mean_abs"] == pytest.approx(2.5) and l3["error_mm_max_abs"] == pytest.approx(5.0)
    assert l3["sma_abs_error_percent_at_predicted_level"] == pytest.approx((5.76 - 2.56) / 5.76 * 100 / 2)
    assert l3["sma_abs_error_percent_at_annotated_level"] == pytest.approx(0.0)
    annotated = list(csv.DictReader(open(tmp_path / "out" / "annotated_l3.csv")))
    assert {r["case_id"]: r["l3_slice"] for r in annotated} == {"a": "4", "b": "3"}
    assert "L3 level" in (tmp_path / "out" / "report.md").read_text()


def test_single_slice_cases_have_no_level_columns(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
        _write(tmp_path / d / "c.nii.gz", mask)
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    row = next(csv.DictReader(open(tmp_path / "out" / "cases.csv")))
    assert row["l3_error_mm"] == "" and s["l3"] is None
    assert not (tmp_path / "out" / "annotated_l3.csv").exists()


# ------------------------------------------------------------------------------ #13 item 3: near-constant data
def test_icc_and_pearson_on_near_constant_data_are_undefined():
    sma = [150.0, 150.0, 150.0]
    heights = [1.7, 1.7, 1.7]
    smi_pred = [s / h**2 for s, h in zip(sma, heights)]
    smi_ref = [150.0000000000001 / 1.7**2, 150.0 / 1.7**2, 149.99999999999997 / 1.7**2]  # rounding residue only
    a = agreement(smi_pred, smi_ref)
    assert math.isnan(a.icc_2_1) and math.isnan(a.icc_3_1) and math.isnan(a.pearson_r)
    assert math.isnan(pearson_r([51.903114186851205, 51.90311418685121, 51.903114186851205], [1.0, 2.0, 3.0]))
    both = agreement([1.0, 1.0 + 1e-13], [1.0 + 2e-13, 1.0])
    assert math.isnan(both.icc_2_1) and math.isnan(both.pearson_r)
    # real spread stays defined
    assert not math.isnan(agreement([1.0, 2.0, 3.0], [1.1, 2.1, 2.9]).icc_2_1)


def test_hd95_is_monais_max_of_directed_percentiles_not_the_pooled_percentile():
    import torch
    from monai.metrics import compute_hausdorff_distance

    from sarco_nn.evaluation.metrics import hd95_mm, surface_distances

    rng = np.random.default_rng(0)
    pred, ref = np.zeros((40, 50), bool), np.zeros((40, 50), bool)
    for mask in (pred, ref):
        y0, x0 = rng.integers(0, 20, 2)
        mask[y0: y0 + rng.integers(5, 20), x0: x0 + rng.integers(5, 25)] = True
    spacing = (0.7, 1.3)
    monai = compute_hausdorff_distance(torch.tensor(pred)[None, None].float(), torch.tensor(ref)[None, None].float(),
                                       include_background=True, percentile=95, spacing=list(spacing)).item()
    pooled = float(np.percentile(surface_distances(pred, ref, spacing), 95))  # medpy's hd95 (the old value)
    ours = segmentation_metrics(pred, ref, spacing).hd95_mm
    assert ours == hd95_mm(pred, ref, spacing) == pytest.approx(monai, rel=1e-6)
    assert pooled < ours  # the two conventions really differ on these masks


def test_evaluate_refuses_a_report_folder_inside_the_reference_folder(tmp_path):
    """`-o` inside the reference masks would put report files among the masks it reads (#14)."""
    from sarco_nn.errors import SarcoError

    _make_dataset(tmp_path, tmp_path / "pred" / "masks", tmp_path / "ref", images=tmp_path / "img")
    before = sorted(p.name for p in (tmp_path / "ref").iterdir())
    for inside in (tmp_path / "ref" / "report", tmp_path / "img" / "report"):
        with pytest.raises(SarcoError, match="inside the reference folder"):
            evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "clinical.csv", inside,
                            images_dir=tmp_path / "img")
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == before


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_evaluate_takes_no_hu_from_an_image_that_is_not_a_ct(tmp_path, scale):
    """HOSTILE_FINDINGS #87: `evaluate --images` read the CT without the CT checks: a halved CT (air -512) gave
    hu_ref 19.9 HU, status ok (predict, measure and convert refuse it as not_ct)."""
    from helpers import make_image, phantom_array, write
    from sarco_nn import api

    hu = phantom_array(nz=1, ny=120, nx=120)
    mask = (hu == 45).astype(np.uint8)  # the phantom's muscle ring
    for folder in ("pred", "ref"):
        write(make_image(mask, spacing=(1.0, 1.0, 2.5)), tmp_path / folder / "c1.nii.gz")
    write(make_image((hu * scale).astype(np.float32), spacing=(1.0, 1.0, 2.5)), tmp_path / "ct" / "c1.nii.gz")
    summary = api.evaluate(tmp_path / "pred", reference=tmp_path / "ref", images=tmp_path / "ct",
                           output=tmp_path / "rep")
    with open(tmp_path / "rep" / "cases.csv", newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    if scale == 1.0:
        assert float(row["hu_ref"]) == pytest.approx(45.0)
    else:
        assert row["hu_ref"] == "" and row["hu_pred"] == "", row
        assert "no voxel below -900 HU" in json.dumps(summary["problems"])
