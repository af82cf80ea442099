"""bench/external_validation.py: finished arms are skipped, errors are binned by HU, reports sit side by side."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import write_dropin_dataset

BENCH = Path(__file__).resolve().parents[1] / "bench" / "external_validation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("external_validation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arm(train: str, seed: int, dice: float) -> dict:
    bins = {name: {"fp_cm2": 1.0, "fn_cm2": 2.0} for name, _, _ in
            (("air <-200", 0, 0), ("fat -200..-30", 0, 0), ("low muscle -30..30", 0, 0),
             ("muscle-like 30..150", 0, 0), ("dense >150", 0, 0))}
    test = {fam: {"n": 2, "dice": dice, "sma_err_mean_pct": 3.0, "sma_err_max_pct": 5.0, "flag_accuracy": 1.0,
                  "hu_bins": bins} for fam in "AB"}
    return {"arm": f"train{train}_seed{seed}", "train": train, "seed": seed, "test": test}


def test_finished_arms_are_skipped_and_tabled(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    out.mkdir()
    for seed, dice in ((0, 0.9), (1, 0.8)):
        (out / f"trainA_seed{seed}.json").write_text(json.dumps(_arm("A", seed, dice)))

    def refuse(*args, **kwargs):
        raise AssertionError("a finished arm was run again")

    monkeypatch.setattr(bench, "run_arm", refuse)
    monkeypatch.setattr(sys, "argv", ["external_validation.py", "--train-on", "A", "--seeds", "0", "1",
                                      "--out", str(out), "--work", str(tmp_path / "work")])
    bench.main()
    text = capsys.readouterr().out
    assert text.count("done earlier") == 2
    assert "| A → A (internal) | 2 | 0.850 (worst 0.800) |" in text and "A → B (external)" in text
    assert (out / "table.md").read_text().startswith("| train → test |")


def test_hu_bins_place_false_positives_and_negatives(bench, tmp_path):
    drop = write_dropin_dataset(tmp_path / "drop", n_cases=1, seed=0, matrix=64)
    pred = tmp_path / "pred" / "masks"
    pred.mkdir(parents=True)
    ref_img = sitk.ReadImage(str(drop / "masks" / "case_000.nii.gz"))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(drop / "images" / "case_000.nii.gz")))
    ref = sitk.GetArrayFromImage(ref_img) == 1
    guess = ref.copy()
    guess[ct < -900] = True  # all air called muscle
    guess[ref & (ct > 30)] = False  # muscle-like muscle missed
    out = sitk.GetImageFromArray(guess.astype(np.uint8))
    out.CopyInformation(ref_img)
    sitk.WriteImage(out, str(pred / "case_000.nii.gz"))
    bins = bench.hu_bin_errors(pred.parent, drop)
    sx, sy = ref_img.GetSpacing()[:2]
    assert bins["air <-200"]["fp_cm2"] == pytest.approx(np.count_nonzero((ct < -900) & ~ref) * sx * sy / 100)
    assert bins["muscle-like 30..150"]["fn_cm2"] > 0 and bins["fat -200..-30"]["fp_cm2"] == 0
    assert all(b["fn_cm2"] == 0 for name, b in bins.items() if name != "muscle-like 30..150" and
               name != "dense >150")


def test_compare_puts_two_reports_side_by_side(bench, tmp_path):
    for name, dice in (("a", 0.97), ("b", 0.85)):
        (tmp_path / name).mkdir()
        pooled = {"n": 12, "dice_mean": dice, "sma_abs_error_percent_mean": 2.0, "sma_abs_error_percent_max": 9.0,
                  "accuracy": 1.0}
        (tmp_path / name / "summary.json").write_text(json.dumps({"pooled": pooled}))
    text = bench.compare_reports([f"internal={tmp_path / 'a'}", f"external={tmp_path / 'b'}"])
    assert "| metric | internal | external |" in text and "| Dice (mean) | 0.970 | 0.850 |" in text
