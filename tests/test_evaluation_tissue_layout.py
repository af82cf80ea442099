"""Issue #18: `sarco evaluate` of a four-tissue evaluation runs the tissue-layout check
(`sarco_nn.tissue_layout.layout_reason`, as measure and predict do) on each case's prediction and
reference: a VAT/SAT swap on either side is a cases.csv flag, a summary count, a report paragraph and a
one-line warning naming the case, and the case stays in every statistic."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from helpers import swap_labels

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.tissue_layout import layout_reason

M, I, V, S = (TISSUE_LABELS[t] for t in ("muscle", "imat", "vat", "sat"))
SPACING = (1.2, 1.2)  # the muscle wall's 3120 pixels: 44.9 cm², above the SMA floor


def _body() -> np.ndarray:
    """SAT under the skin, a 10-pixel muscle wall, VAT inside, IMAT in the wall."""
    mask = np.zeros((120, 120), np.uint8)
    mask[4:116, 4:116] = S
    mask[16:104, 16:104] = M
    mask[26:94, 26:94] = V
    mask[18:22, 40:80] = I
    return mask


def _write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing((SPACING[1], SPACING[0], 5.0))
    sitk.WriteImage(image, str(path))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture()
def drop(tmp_path):
    """Case `ok` (both normal), `pred_swapped` (prediction VAT/SAT swapped), `ref_swapped` (reference swapped)."""
    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    (tmp_path / "ref" / "labels.json").write_text(json.dumps(TISSUE_LABELS))
    body = _body()
    swapped = swap_labels(body, V, S)
    pairs = {"ok": (body, body), "pred_swapped": (body, swapped), "ref_swapped": (swapped, body)}
    for case, (ref, pred) in pairs.items():
        _write(ref, tmp_path / "ref" / f"{case}.nii.gz")
        _write(pred, tmp_path / "pred" / f"{case}.nii.gz")
    return tmp_path, pairs


def test_a_swapped_prediction_or_reference_is_flagged_counted_and_kept_in_the_statistics(drop):
    from sarco_nn.evaluation.evaluate import evaluate_folder

    root, pairs = drop
    assert layout_reason(_body(), TISSUE_LABELS, SPACING) is None  # the oracle: tissue_layout's own verdicts
    assert layout_reason(swap_labels(_body(), V, S), TISSUE_LABELS, SPACING) is not None
    s = evaluate_folder(root / "pred", root / "ref", None, root / "out")
    assert s["n_tissue_layout_judged"] == 3
    assert s["tissue_layout_predictions"] == ["pred_swapped"] and s["n_tissue_layout_predictions"] == 1
    assert s["tissue_layout_references"] == ["ref_swapped"] and s["n_tissue_layout_references"] == 1
    assert s["n_cases_in_statistics"] == 3 and s["n_failed_predictions"] == 0  # kept, not a failed prediction
    for tissue, value in (("vat", V), ("sat", S)):  # every case in the pooled Dice, against numpy
        want = np.mean([_dice(ref == value, pred == value) for ref, pred in pairs.values()])
        assert s["tissues"][tissue]["n"] == 3 and s["tissues"][tissue]["dice_mean"] == pytest.approx(want)
        assert s["tissues"][tissue]["dice_mean"] == pytest.approx(1 / 3)
    rows = {r["case_id"]: r for r in csv.DictReader((root / "out" / "cases.csv").open(encoding="utf-8"))}
    assert {c: (r["tissue_layout_pred"], r["tissue_layout_ref"]) for c, r in rows.items()} == {
        "ok": ("no", "no"), "pred_swapped": ("yes", "no"), "ref_swapped": ("no", "yes")}
    assert rows["ok"]["status"] == "ok" and rows["ok"]["reasons"] == ""
    for case, side in (("pred_swapped", "prediction"), ("ref_swapped", "reference")):
        assert rows[case]["status"] == "review" and rows[case]["in_statistics"] == "yes"
        assert rows[case]["reasons"].startswith(f"tissue_layout: {side}: tissue labels on the wrong side")
    assert "labels.json" in rows["ref_swapped"]["reasons"]  # a reference is a mask: the label-map fix
    assert any("prediction tissue_layout" in k and v == ["pred_swapped"] for k, v in s["problems"].items())
    assert any("reference tissue_layout" in k and v == ["ref_swapped"] for k, v in s["problems"].items())
    report = (root / "out" / "report.md").read_text(encoding="utf-8")
    section = report.split("## Tissue layout")[1].split("\n## ")[0]
    assert "1 prediction(s) (pred_swapped)" in section and "1 reference(s) (ref_swapped)" in section
    assert "stay in every statistic" in section and "tissue_layout" in s["rules"]


def test_a_muscle_only_evaluation_judges_nothing_and_writes_no_layout_column(tmp_path):
    from sarco_nn.evaluation.evaluate import evaluate_folder

    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    muscle = (_body() == M).astype(np.uint8)
    _write(muscle, tmp_path / "ref" / "c.nii.gz")
    _write(muscle, tmp_path / "pred" / "c.nii.gz")
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    assert s["n_tissue_layout_judged"] == 0 and s["tissue_layout_predictions"] == []
    assert "tissue_layout_pred" not in (tmp_path / "out" / "cases.csv").read_text().splitlines()[0]
    assert "## Tissue layout" not in (tmp_path / "out" / "report.md").read_text()


def test_a_muscle_only_prediction_beside_four_tissue_ones_still_gets_its_reference_judged(tmp_path):
    """The case compared per tissue on the second pass (`_compare_every_case_per_tissue`) carries the
    layout cells and the reference's reason too."""
    from sarco_nn.evaluation.evaluate import evaluate_folder

    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    (tmp_path / "ref" / "labels.json").write_text(json.dumps(TISSUE_LABELS))
    body = _body()
    _write(body, tmp_path / "ref" / "a.nii.gz")
    _write(body, tmp_path / "pred" / "a.nii.gz")
    _write(swap_labels(body, V, S), tmp_path / "ref" / "b.nii.gz")
    _write((body == M).astype(np.uint8), tmp_path / "pred" / "b.nii.gz")  # the model found no fat
    s = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    assert s["tissue_layout_references"] == ["b"] and s["tissue_layout_predictions"] == []
    rows = {r["case_id"]: r for r in csv.DictReader((tmp_path / "out" / "cases.csv").open(encoding="utf-8"))}
    assert rows["b"]["tissue_layout_ref"] == "yes" and rows["b"]["status"] == "review"
    assert rows["b"]["reasons"].startswith("tissue_layout: reference:")


def test_sarco_evaluate_prints_one_warning_line_naming_the_case(drop):
    from sarco_nn.cli import app

    root, _ = drop
    result = CliRunner().invoke(app, ["evaluate", str(root / "pred"), "--reference", str(root / "ref"),
                                      "-o", str(root / "out")])
    assert result.exit_code == 0, result.output
    text = result.output  # stdout and stderr, as a terminal shows them
    lines = [line for line in text.splitlines() if line.startswith("warning: prediction tissue_layout")]
    assert len(lines) == 1 and lines[0].endswith("(1): pred_swapped")
    assert [line for line in text.splitlines() if line.startswith("warning: reference tissue_layout")][0].endswith(
        "(1): ref_swapped")
