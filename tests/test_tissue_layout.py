"""HOSTILE_FINDINGS #104/#105: a four-tissue mask whose tissue labels lie where that tissue cannot lie
(VAT and SAT swapped; the SAT ring saved as IMAT) is a `tissue_layout` review, flags withheld, numbers
kept; every phantom family and the muscle-only or fat-less mask are left alone (`sarco_nn.tissue_layout`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantoms.writer import dropin_case
from helpers import DATA, needs_data, swap_labels
from sarco_nn.body_composition import measure_composition_slice, predicted_composition
from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.tissue_layout import MIN_MISPLACED_CM2, layout_reason, muscle_hull_sides

M, I, V, S = (TISSUE_LABELS[t] for t in ("muscle", "imat", "vat", "sat"))
FOUR = {"background": 0, **TISSUE_LABELS}


def _body() -> np.ndarray:
    """A hand-drawn slice: SAT frame under the skin, a 4-pixel muscle wall, VAT inside, IMAT in the wall."""
    mask = np.zeros((60, 60), np.uint8)
    mask[2:58, 2:58] = S
    mask[8:52, 8:52] = M
    mask[12:48, 12:48] = V
    mask[9:11, 20:40] = I
    return mask


@pytest.fixture(scope="module")
def phantoms():
    """Two L3 slices of each family at 128² (their margins at 512², 128² and over T12-S1: the module docstring)."""
    return {family: [dropin_case(11, i, 128, family=family).phantom for i in range(2)] for family in ("A", "B", "A-wide")}


def test_every_phantom_family_lies_as_a_body_does_and_its_planted_relabellings_do_not(phantoms):
    for family, slices in phantoms.items():
        for ph in slices:
            mask, spacing = ph.tissue_mask, ph.spacing_mm
            assert layout_reason(mask, TISSUE_LABELS, spacing) is None, (family, muscle_hull_sides(mask, None, spacing))
            swapped = layout_reason(swap_labels(mask, V, S), TISSUE_LABELS, spacing)
            assert swapped is not None and swapped.code == "tissue_layout", family
            assert "VAT (value 3" in swapped.message and "SAT (value 4" in swapped.message
            as_imat = np.where(mask == S, I, mask)  # #105: the SAT ring saved as IMAT (no SAT left)
            reason = layout_reason(as_imat, {k: v for k, v in TISSUE_LABELS.items() if k != "sat"}, spacing)
            assert reason is not None and "IMAT (value 2" in reason.message, family


@needs_data
def test_a_real_ct_tissue_segmentation_lies_as_a_body_does():
    """TotalSegmentator's skeletal muscle, torso fat (as VAT) and subcutaneous fat of the real CT, 30 slices
    T11-L2: none flagged (SAT inside the hull 0.08-0.15, VAT 0.99-1.0); every slice with VAT/SAT swapped is."""
    folder = DATA / "totalsegmentator" / "example_seg_tissue_types"
    part = {n: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{n}.nii.gz"))) > 0
            for n in ("skeletal_muscle", "torso_fat", "subcutaneous_fat")}
    spacing = sitk.ReadImage(str(folder / "skeletal_muscle.nii.gz")).GetSpacing()[1::-1]
    volume = np.zeros(part["torso_fat"].shape, np.uint8)
    volume[part["torso_fat"]], volume[part["subcutaneous_fat"]], volume[part["skeletal_muscle"]] = V, S, M
    judged = [z for z in range(len(volume)) if (volume[z] == M).sum() >= 10]
    assert len(judged) == 30
    for z in judged:
        assert layout_reason(volume[z], TISSUE_LABELS, spacing) is None, z
        assert layout_reason(swap_labels(volume[z], V, S), TISSUE_LABELS, spacing) is not None, z


def test_shares_match_a_hand_count():
    mask = _body()
    sides = {s.tissue: s for s in muscle_hull_sides(mask, TISSUE_LABELS, (1.0, 1.0))}
    assert sides["vat"].inside_share == 1.0 and sides["imat"].inside_share == 1.0 and sides["sat"].inside_share == 0.0
    assert sides["sat"].area_cm2 == pytest.approx((56 * 56 - 44 * 44) / 100)
    half = mask.copy()
    half[4:6, 20:40] = I  # 40 IMAT pixels in the SAT band, beside the 40 in the wall: exactly half outside
    imat = {s.tissue: s for s in muscle_hull_sides(half, TISSUE_LABELS, (1.0, 1.0))}["imat"]
    assert imat.inside_share == 0.5 and imat.wrong_cm2 == pytest.approx(0.4)
    assert layout_reason(mask, TISSUE_LABELS, (1.0, 1.0)) is None
    assert layout_reason(swap_labels(mask, V, S), TISSUE_LABELS, (1.0, 1.0)) is not None


def test_missing_tissues_and_specks_are_not_judged():
    mask = _body()
    spacing = (0.8, 0.8)
    assert layout_reason(np.where(mask == M, M, 0), TISSUE_LABELS, spacing) is None  # muscle only
    no_fat = np.where(np.isin(mask, (V, S)), 0, mask)  # muscle and IMAT, VAT/SAT absent
    assert layout_reason(no_fat, TISSUE_LABELS, spacing) is None
    specks = mask.copy()
    specks[20:22, 20:22] = S  # four "SAT" pixels inside the abdomen, all of that label's area besides the frame
    lone = np.where(mask == S, 0, specks)
    assert muscle_hull_sides(lone, TISSUE_LABELS, spacing)[-1].inside_share == 1.0
    assert 4 * 0.64 / 100 < MIN_MISPLACED_CM2 and layout_reason(lone, TISSUE_LABELS, spacing) is None
    assert layout_reason(np.zeros((8, 8), np.uint8), TISSUE_LABELS, spacing) is None  # no muscle: nothing to judge
    line = np.zeros((20, 20), np.uint8)
    line[5, 2:18] = M  # a muscle with no hull (one row): not judged
    line[10:20, :] = V
    assert layout_reason(line, TISSUE_LABELS, spacing) is None


def test_the_reason_reaches_measure_and_predict_compositions_and_blocks_the_flags(phantoms):
    ph = phantoms["A"][0]
    ct = ph.ct_hu
    swapped = swap_labels(ph.tissue_mask, V, S)
    comp = measure_composition_slice(swapped, ph.spacing_mm, ct, TISSUE_LABELS)
    assert [r.code for r in comp.reasons] == ["tissue_layout"] and comp.reasons[0].blocks_flag
    assert comp.reasons[0].status.value == "review" and comp.reasons[0].message.startswith("mask:")
    assert "labels.json" in comp.reasons[0].message
    assert measure_composition_slice(ph.tissue_mask, ph.spacing_mm, ct, TISSUE_LABELS).reasons == []
    model = predicted_composition(swapped, ph.spacing_mm, ct, FOUR, hu_gate=False, height_m=1.7)
    assert [r.code for r in model.reasons] == ["tissue_layout"] and model.reasons[0].message.startswith("prediction:")
    assert predicted_composition((ph.tissue_mask == M).astype(np.uint8), ph.spacing_mm, ct, {"muscle": 1},
                                 hu_gate=False, height_m=1.7).reasons == []  # a muscle-only model: derived IMAT


def _write(array: np.ndarray, path, spacing) -> str:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((float(spacing[1]), float(spacing[0])))
    sitk.WriteImage(image, str(path))
    return str(path)


def test_sarco_measure_reports_a_swapped_mask_as_review_with_its_numbers(phantoms, tmp_path):
    from typer.testing import CliRunner

    from sarco_nn.cli import app

    ph = phantoms["B"][0]
    cases = {"normal": ph.tissue_mask, "swapped": swap_labels(ph.tissue_mask, V, S),
             "sat_as_imat": np.where(ph.tissue_mask == S, I, ph.tissue_mask)}
    out = {}
    for name, mask in cases.items():
        path = _write(mask, tmp_path / f"{name}.nii.gz", ph.spacing_mm)
        result = CliRunner().invoke(app, ["measure", path, "--sex", ph.sex, "--height", str(ph.height_m), "--json"])
        assert result.exit_code == 0, result.output
        out[name] = json.loads(result.output)
    assert out["normal"]["status"] == "ok" and out["normal"]["reasons"] == []
    assert out["normal"]["sarcopenic"] in (True, False)
    areas = ph.tissue_areas_cm2()
    for name in ("swapped", "sat_as_imat"):
        o = out[name]
        assert o["status"] == "review" and [r["code"] for r in o["reasons"]] == ["tissue_layout"], o["reasons"]
        assert o["sarcopenic"] == "unknown" and o["myosteatosis"] == "unknown"
        assert o["sma_cm2"] == out["normal"]["sma_cm2"]  # numbers stay reported, for the labels as given
    assert out["swapped"]["vat_area_cm2"] == pytest.approx(areas["sat"], abs=1e-3)
    assert out["swapped"]["vat_sat_ratio"] == pytest.approx(areas["sat"] / areas["vat"], rel=1e-3)
    assert out["sat_as_imat"]["imat_area_cm2"] == pytest.approx(areas["imat"] + areas["sat"], abs=1e-3)
    assert out["sat_as_imat"]["sat_source"] == "absent"


def test_predict_of_a_four_tissue_model_with_swapped_outputs_is_a_review_without_flags(phantoms, tmp_path, monkeypatch):
    """The predict path (`inference._segment_and_measure`, network stubbed): the reason joins the verdict
    before the flag is decided, so the row is review, `unknown`, and keeps its areas."""
    from types import SimpleNamespace

    import sarco_nn.inference as inference
    import sarco_nn.review.fold_ensemble as fold_ensemble
    from helpers import make_image, write
    from sarco_nn.clinical import ClinicalRecord
    from sarco_nn.status import Verdict
    from sarco_nn.thresholds import get_threshold_set

    ph = phantoms["A"][0]
    scan_path = write(make_image(ph.ct_hu, spacing=ph.spacing_mm), tmp_path / "scans" / "p1.nii.gz")
    scan = inference.discover_scans(scan_path)[0]
    monkeypatch.setattr(inference, "_huge_network_grid", lambda *args: None)  # no network, no plans
    monkeypatch.setattr(fold_ensemble, "preprocess", lambda *args: None)
    context = inference._ReadContext(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid",
                                     l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
    case = inference._prepare_case(scan, context)
    assert case.error is None and case.reasons == [], (case.error, case.reasons)
    assert case.ct.shape[1:] == ph.tissue_mask.shape  # the phantom's LPS layout is predict's canonical one
    rows = {}
    for name, seg in (("normal", ph.tissue_mask), ("swapped", swap_labels(ph.tissue_mask, V, S))):
        onehot = np.stack([(seg == v) for v in range(5)]).astype(np.float32)[:, None]  # (C, 1, y, x): a certain model
        monkeypatch.setattr(fold_ensemble, "predict_folds", lambda *a, onehot=onehot, seg=seg, **k:
                            fold_ensemble.FoldPrediction(onehot[None], onehot, seg[None].astype(np.uint8)))
        verdict = Verdict()
        cells, _ = inference._segment_and_measure(
            scan, "p1", case, verdict, predictor=SimpleNamespace(dataset_json={"labels": FOUR}), pp_functions=[],
            out_dir=tmp_path / "out", clinical={"p1": ClinicalRecord("p1", ph.sex, ph.height_m)},
            threshold_set=get_threshold_set("paper"), gate=None, slab=1, trunk_only=False)
        rows[name] = (cells, [r.code for r in verdict.reasons])
    assert "tissue_layout" not in rows["normal"][1] and rows["normal"][0]["sarcopenic"] != "unknown"
    cells, codes = rows["swapped"]
    assert "tissue_layout" in codes and cells["sarcopenic"] == "unknown" and cells["myosteatosis"] == "unknown"
    assert cells["vat_source"] == "model" and float(cells["vat_area_cm2"]) == pytest.approx(ph.tissue_areas_cm2()["sat"],
                                                                                           abs=1e-3)


def test_the_margin_bench_runs_and_flags_no_normal_phantom():
    """`bench/tissue_layout_margins.py` (the docstring's figures) at one 64² slice per family."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "bench" / "tissue_layout_margins.py"), "--cases", "1",
                             "--matrix", "64"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if " flagged " in line]
    families = {row[0] for row in rows if row[0] in ("A", "B", "A-wide")}
    assert families == {"A", "B", "A-wide"}
    for row in rows:
        flagged, n = row[row.index("flagged") + 1].split("/")
        assert flagged == ("0" if "normal" in row else n), row
