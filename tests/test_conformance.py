"""Conformance: every number sarco reports, recomputed by an independent oracle (issue #13).

Oracles are written here without sarco's code: Decimal arithmetic for SMA / SMI / BMI / flags,
scikit-learn for Dice and the confusion matrix, MONAI for HD95, scipy for Pearson, statsmodels
for the two-way ANOVA behind the ICCs and for Wilson intervals. Inputs are generated
(hypothesis) and include the boundaries: values exactly at each cut-off, BMI exactly 25 from
several height/weight pairs, n = 1 and 2, constant inputs, empty and both-empty masks, seven
orientations and non-square pixels. Example counts are small so the file stays well under a
minute of CPU.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

getcontext().prec = 60

#: The published cut-offs, typed again from the papers (not imported from sarco).
CUTOFFS = {
    "paper": ("sma", {"M": "144", "F": "92"}),
    "derstine": ("sma", {"M": "144.3", "F": "92.2"}),
    "prado": ("smi", {"M": "52.4", "F": "38.5"}),
    "martin": ("smi", {"M": None, "F": "41"}),  # men: 43 below BMI 25, 53 from 25
}
FLOOR_CM2 = Decimal(30)  # sarco_nn.mask_checks.SMA_FLOOR_CM2, physiological floor (its docstring)
#: More examples for a deeper run: SARCO_CONFORMANCE_EXAMPLES=200 pytest tests/test_conformance.py
SETTINGS = dict(max_examples=int(os.environ.get("SARCO_CONFORMANCE_EXAMPLES", "8")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def D(x) -> Decimal:
    """The decimal a number was entered as (a float by its shortest repr)."""
    return Decimal(repr(float(x))) if isinstance(x, float) else Decimal(str(x))


def oracle_cutoff(name: str, sex: str, height: str | None, weight: str | None) -> Decimal | None:
    metric, table = CUTOFFS[name]
    if name == "martin" and sex == "M":
        if height is None or weight is None:
            return None
        bmi = Decimal(weight) / (Decimal(height) ** 2)
        return Decimal(43) if bmi < 25 else Decimal(53)
    return Decimal(table[sex])


def oracle_flag(name: str, sex: str | None, sma: Decimal, height: str | None, weight: str | None):
    if sex is None:
        return None
    metric = CUTOFFS[name][0]
    cutoff = oracle_cutoff(name, sex, height, weight)
    if cutoff is None:
        return None
    if metric == "smi":
        if height is None:
            return None
        value = sma / Decimal(height) ** 2
    else:
        value = sma
    return value < cutoff


def _cli_measure():
    import typer

    from sarco_nn.commands.measure_cmd import measure

    app = typer.Typer()
    app.command()(measure)
    return app


def _raster_mask(n_pixels: int, shape=(200, 200), value: int = 1) -> np.ndarray:
    """A 2-D mask whose first n pixels (row-major) hold `value`: any count, exactly."""
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    flat[:n_pixels] = value
    return flat.reshape(shape)


def _write2d(path: Path, mask: np.ndarray, spacing_yx=(1.0, 1.0)) -> None:
    img = sitk.GetImageFromArray(mask)
    img.SetSpacing((float(spacing_yx[1]), float(spacing_yx[0])))
    sitk.WriteImage(img, str(path))


def _measure_json(path: Path, *args: str) -> dict:
    result = CliRunner().invoke(_cli_measure(), [str(path), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ------------------------------------------------------------------------------ cut-offs, exactly at them
@pytest.mark.parametrize("name, sex, pixels_at_cutoff", [
    ("paper", "M", 14400), ("paper", "F", 9200), ("derstine", "M", 14430), ("derstine", "F", 9220),
])
def test_measure_at_and_just_below_each_sma_cut_off(tmp_path, name, sex, pixels_at_cutoff):
    for n, expected in ((pixels_at_cutoff, False), (pixels_at_cutoff - 1, True)):
        _write2d(tmp_path / "m.mha", _raster_mask(n))
        obj = _measure_json(tmp_path / "m.mha", "--sex", sex, "--thresholds", name)
        assert obj["sma_cm2"] == float(Decimal(n) / 100)
        assert obj["sarcopenic"] is expected is oracle_flag(name, sex, Decimal(n) / 100, None, None)


@pytest.mark.parametrize("height, weight", [("1.6", "64"), ("2.0", "100"), ("1.5", "56.25"), ("1.8", "81"),
                                            ("1.2", "36"), ("1.7", "72.25")])
def test_martin_at_bmi_exactly_25_in_several_combinations(tmp_path, height, weight):
    assert Decimal(weight) / Decimal(height) ** 2 == 25
    h2 = Decimal(height) ** 2
    for smi, expected in ((50, True), (53, False)):  # BMI 25 → cut-off 53 (43 would say False for 50)
        n = int(Decimal(smi) * h2 * 100)  # 1 mm² pixels
        assert Decimal(n) / 100 / h2 == smi
        _write2d(tmp_path / "m.mha", _raster_mask(n, shape=(300, 300)))
        obj = _measure_json(tmp_path / "m.mha", "--sex", "M", "--height", height, "--weight", weight,
                            "--thresholds", "martin")
        assert obj["sarcopenic"] is expected is oracle_flag("martin", "M", Decimal(n) / 100, height, weight)
        assert "SMI<53" in obj["threshold"]


@pytest.mark.parametrize("name, sex", [("prado", "M"), ("prado", "F"), ("martin", "F")])
def test_smi_exactly_at_the_cut_off(tmp_path, name, sex):
    cutoff = Decimal(CUTOFFS[name][1][sex])
    height = "1.25"  # h² = 1.5625: SMA = cut-off × h² is a whole number of 3.125 mm² pixels
    sma = cutoff * Decimal(height) ** 2
    n = sma / Decimal("0.03125")
    assert n == int(n)
    _write2d(tmp_path / "m.mha", _raster_mask(int(n)), spacing_yx=(1.25, 2.5))
    obj = _measure_json(tmp_path / "m.mha", "--sex", sex, "--height", height, "--thresholds", name)
    assert obj["sarcopenic"] is False is oracle_flag(name, sex, sma, height, None)


# ------------------------------------------------------------------------------ measure --json, generated
#: Seven stored orientations (direction columns = physical axis of stored i, j, k; row-major).
ORIENTATIONS = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "LPI (head→foot)": (1, 0, 0, 0, 1, 0, 0, 0, -1),
    "RAI": (-1, 0, 0, 0, -1, 0, 0, 0, -1),
    "coronal-stored": (1, 0, 0, 0, 0, 1, 0, 1, 0),
    "sagittal-stored": (0, 0, 1, 1, 0, 0, 0, 1, 0),
    "coronal-stored, flipped": (-1, 0, 0, 0, 0, -1, 0, 1, 0),
}


@settings(**SETTINGS)
@given(orientation=st.sampled_from(sorted(ORIENTATIONS)),
       spacing=st.tuples(*[st.sampled_from([0.5, 0.7, 0.8, 1.0, 1.3, 2.0])] * 3),
       fill=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), sex=st.sampled_from(["M", "F", "woman", "male"]),
       height=st.sampled_from([None, "1.55", "1.6", "1.72", "1.9"]), name=st.sampled_from(sorted(CUTOFFS)),
       weight=st.sampled_from([None, "50", "64", "80.5"]))
def test_measure_json_matches_the_oracle(tmp_path, orientation, spacing, fill, seed, sex, height, name, weight):
    rng = np.random.default_rng(seed)
    size = (24, 28, 6)  # stored i, j, k
    arr = (rng.random(size[::-1]) < fill).astype(np.uint8) * 1  # numpy order (k, j, i)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    direction = np.array(ORIENTATIONS[orientation], float).reshape(3, 3)
    img.SetDirection(tuple(direction.ravel()))
    path = tmp_path / "vol.mha"
    sitk.WriteImage(img, str(path))
    stored_axis = int(np.argmax(np.abs(direction[2, :])))  # the stored axis that runs head–foot
    index = int(rng.integers(0, size[stored_axis]))
    args = ["--slice", str(index), "--sex", sex, "--thresholds", name]
    args += ["--height", height] if height else []
    args += ["--weight", weight] if weight else []
    obj = _measure_json(path, *args)
    slice2d = np.take(arr, index, axis=2 - stored_axis)
    in_plane = [Decimal(repr(spacing[a])) for a in range(3) if a != stored_axis]
    n = int(np.count_nonzero(slice2d == 1))
    sma = n * in_plane[0] * in_plane[1] / 100
    assert obj["n_pixels"] == n and obj["slice_index"] == index
    assert obj["sma_cm2"] == pytest.approx(float(sma), abs=5e-5)
    if height:
        assert obj["smi_cm2_m2"] == pytest.approx(float(sma / Decimal(height) ** 2), abs=5e-5)
    sex_code = {"woman": "F", "male": "M"}.get(sex, sex)
    if n == 0 or sma < FLOOR_CM2:
        assert obj["sarcopenic"] == "unknown" and obj["status"] == "review" and obj["reasons"]
    else:
        expected = oracle_flag(name, sex_code, sma, height, weight)
        assert obj["sarcopenic"] == ("unknown" if expected is None else expected)
        assert obj["status"] == "ok"


# ------------------------------------------------------------------------------ evaluate, generated
def _rect(shape, rng, p_empty: float) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    if rng.random() < p_empty:
        return mask
    y0, x0 = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
    mask[y0: y0 + rng.integers(1, shape[0] - y0), x0: x0 + rng.integers(1, shape[1] - x0)] = 1
    return mask


def _monai_hd95(pred: np.ndarray, ref: np.ndarray, spacing_yx) -> float:
    import torch
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(torch.tensor(pred[None, None] > 0).float(),
                                           torch.tensor(ref[None, None] > 0).float(), include_background=True,
                                           percentile=95, spacing=list(spacing_yx))
    return float(value.item())


def _icc_oracle(pred: list[float], ref: list[float]) -> tuple[float, float]:
    """ICC(2,1) and ICC(3,1) from statsmodels' two-way ANOVA table (Shrout & Fleiss forms)."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    n = len(pred)
    data = pd.DataFrame({"y": [*pred, *ref], "subject": [*range(n), *range(n)], "rater": [0] * n + [1] * n})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = anova_lm(smf.ols("y ~ C(subject) + C(rater)", data).fit())
    msr = table.loc["C(subject)", "mean_sq"]
    msc = table.loc["C(rater)", "mean_sq"]
    mse = table.loc["Residual", "mean_sq"]
    k = 2
    return (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n), (msr - mse) / (msr + (k - 1) * mse)


def _near_constant(values) -> bool:
    values = np.asarray(values, float)
    return float(np.ptp(values)) <= 1e-9 * float(np.max(np.abs(values)))


@settings(**SETTINGS)
@given(n=st.integers(1, 4), seed=st.integers(0, 2**16), name=st.sampled_from(sorted(CUTOFFS)),
       spacing=st.tuples(st.sampled_from([0.6, 0.8, 1.0, 1.5]), st.sampled_from([0.7, 1.0, 1.2, 2.0])),
       same=st.booleans())
@example(n=1, seed=0, name="martin", spacing=(0.6, 0.7), same=True)    # n = 1
@example(n=2, seed=1, name="paper", spacing=(1.0, 1.0), same=True)     # n = 2, constant differences
@example(n=3, seed=7, name="derstine", spacing=(1.5, 0.7), same=False)
def test_evaluate_summary_and_cases_csv_match_the_oracles(tmp_path_factory, n, seed, name, spacing, same):
    from scipy import stats
    from sklearn.metrics import confusion_matrix, f1_score
    from statsmodels.stats.proportion import proportion_confint

    from sarco_nn.evaluation.evaluate import evaluate_folder

    tmp = tmp_path_factory.mktemp("conf")
    rng = np.random.default_rng(seed)
    shape = (60, 70)
    (tmp / "pred").mkdir()
    (tmp / "ref").mkdir()
    truth: dict[str, dict] = {}
    lines = ["case_id,sex,height_m,weight_kg"]
    for i in range(n):
        case = f"c{i}"
        ref = _rect(shape, rng, 0.15)
        pred = ref.copy() if same else _rect(shape, rng, 0.2)
        sex = ["M", "F"][int(rng.integers(0, 2))]
        height, weight = [("1.6", "64"), ("1.75", "70"), ("1.5", "80"), ("2.0", "100")][int(rng.integers(0, 4))]
        _write2d(tmp / "pred" / f"{case}.mha", pred, spacing)
        _write2d(tmp / "ref" / f"{case}.mha", ref, spacing)
        lines.append(f"{case},{sex},{height},{weight}")
        truth[case] = dict(ref=ref > 0, pred=pred > 0, sex=sex, height=height, weight=weight)
    (tmp / "clinical.csv").write_text("\n".join(lines) + "\n")
    s = evaluate_folder(tmp / "pred", tmp / "ref", tmp / "clinical.csv", tmp / "out", name)
    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp / "out" / "cases.csv", newline=""))}
    assert set(rows) == set(truth)

    pixel = Decimal(repr(spacing[0])) * Decimal(repr(spacing[1])) / 100
    diag = math.hypot(shape[0] * spacing[0], shape[1] * spacing[1])
    inc = []
    for case, t in truth.items():
        row = rows[case]
        ref_sma = int(t["ref"].sum()) * pixel
        pred_sma = int(t["pred"].sum()) * pixel
        dice = f1_score(t["ref"].ravel(), t["pred"].ravel(), zero_division=1.0)
        if t["ref"].any() and t["pred"].any():
            hd95 = _monai_hd95(t["pred"], t["ref"], spacing)
        elif t["ref"].any() or t["pred"].any():
            hd95 = diag  # one empty: the slice diagonal (worst possible value)
        else:
            hd95 = 0.0
        assert float(row["dice"]) == pytest.approx(dice, rel=1e-5, abs=1e-6)
        assert float(row["hd95_mm"]) == pytest.approx(hd95, rel=1e-5, abs=1e-5)
        assert float(row["sma_ref_cm2"]) == pytest.approx(float(ref_sma), rel=1e-5)
        assert float(row["sma_pred_cm2"]) == pytest.approx(float(pred_sma), rel=1e-5)
        included = bool(t["ref"].any())
        assert row["in_statistics"] == ("yes" if included else "no")
        withheld = pred_sma < FLOOR_CM2
        ref_flag = oracle_flag(name, t["sex"], ref_sma, t["height"], t["weight"]) if included else None
        pred_flag = None if withheld else oracle_flag(name, t["sex"], pred_sma, t["height"], t["weight"])
        assert row["sarcopenic_pred"] == ("unknown" if withheld else {True: "yes", False: "no"}[pred_flag])
        assert row["sarcopenic_ref"] == {True: "yes", False: "no", None: ""}[ref_flag]
        if included:
            scored = (not ref_flag) if withheld else pred_flag
            inc.append(dict(dice=dice, hd95=hd95, ref=float(ref_sma), pred=float(pred_sma), ref_flag=ref_flag,
                            scored=scored))
    assert s["n_cases"] == n and s["n_cases_in_statistics"] == len(inc)
    assert s["excluded_from_statistics"] == [c for c, t in truth.items() if not t["ref"].any()]
    if not inc:
        assert s["dice_mean"] is None and s["sma_n"] == 0
        return
    assert s["dice_mean"] == pytest.approx(np.mean([c["dice"] for c in inc]))
    assert s["hd95_mean_mm"] == pytest.approx(np.mean([c["hd95"] for c in inc]), rel=1e-5)
    pred_v, ref_v = np.array([c["pred"] for c in inc]), np.array([c["ref"] for c in inc])
    diff = pred_v - ref_v
    assert s["sma_n"] == len(inc) and s["sma_bias_cm2"] == pytest.approx(diff.mean(), abs=1e-9)
    assert s["sma_mae_cm2"] == pytest.approx(np.abs(diff).mean(), abs=1e-9)
    if len(inc) >= 2:
        sd = diff.std(ddof=1)
        assert s["sma_loa_low_cm2"] == pytest.approx(diff.mean() - 1.959963984540054 * sd, abs=1e-9)
    else:
        assert s["sma_loa_low_cm2"] is None  # n = 1: no spread, no limits
    if len(inc) >= 2 and not _near_constant(np.concatenate([pred_v, ref_v])):
        icc21, icc31 = _icc_oracle(list(pred_v), list(ref_v))
        assert s["sma_icc_2_1"] == pytest.approx(icc21, abs=1e-7)
        assert s["sma_icc_3_1"] == pytest.approx(icc31, abs=1e-7)
    else:
        assert s["sma_icc_2_1"] is None and s["sma_icc_3_1"] is None
    if len(inc) >= 2 and not _near_constant(pred_v) and not _near_constant(ref_v):
        assert s["sma_pearson_r"] == pytest.approx(stats.pearsonr(pred_v, ref_v)[0], abs=1e-9)
    else:
        assert s["sma_pearson_r"] is None
    scored = [(c["scored"], c["ref_flag"]) for c in inc if c["ref_flag"] is not None]
    assert s["n_cases_classified"] == len(scored)
    if scored:
        tn, fp, fn, tp = confusion_matrix([t for _, t in scored], [p for p, _ in scored], labels=[False, True]).ravel()
        assert s["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        hits = int(tp + tn)
        assert s["accuracy"] == pytest.approx(hits / len(scored))
        low, high = proportion_confint(hits, len(scored), method="wilson")
        assert s["accuracy_ci"] == pytest.approx([low, high], abs=1e-9)


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "LPI (head→foot)", "coronal-stored"])
def test_evaluate_volume_in_several_orientations(tmp_path, orientation):
    """Overlap at the reference's slice, SMA at the prediction's, whatever the storage order."""
    from sklearn.metrics import f1_score

    from sarco_nn.evaluation.evaluate import evaluate_folder

    direction = np.array(ORIENTATIONS[orientation], float).reshape(3, 3)
    stored_axis = int(np.argmax(np.abs(direction[2, :])))
    size = [30, 34, 30]
    size[stored_axis] = 5
    ref = np.zeros(size[::-1], np.uint8)
    pred = np.zeros_like(ref)
    index = [slice(2, 28)] * 3
    index[2 - stored_axis] = 2
    ref[tuple(index)] = 1
    index[2 - stored_axis] = 3  # predicted one slice away
    pred[tuple(index)] = 1
    for d, arr in (("pred", pred), ("ref", ref)):
        (tmp_path / d).mkdir()
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.8, 1.1, 2.5))
        img.SetDirection(tuple(direction.ravel()))
        sitk.WriteImage(img, str(tmp_path / d / "a.mha"))
    evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    row = next(csv.DictReader(open(tmp_path / "out" / "cases.csv")))
    at_ref = np.take(pred, 2, axis=2 - stored_axis).ravel() > 0
    assert float(row["dice"]) == f1_score(np.take(ref, 2, axis=2 - stored_axis).ravel() > 0, at_ref,
                                          zero_division=1.0) == 0.0
    assert (row["overlap_slice"], row["sma_pred_slice"]) == ("2", "3")
    assert float(row["sma_error_cm2"]) == pytest.approx(0.0)
