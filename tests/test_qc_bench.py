"""bench/qc_bench.py: held-out cases of every family with exact truth, the seed ensemble's layout, the summary."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sarco_nn.errors import SarcoError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def qcb():
    """bench/qc_bench.py as a module (it puts the repository root on sys.path for bench.qc_cases)."""
    spec = importlib.util.spec_from_file_location("qc_bench", ROOT / "bench" / "qc_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cases(qcb):
    return importlib.import_module("bench.qc_cases")


@pytest.fixture(scope="module")
def qcm(qcb):
    return importlib.import_module("bench.qc_model")


# ---------------------------------------------------------------- held-out cases


def test_case_plan_covers_every_family_and_failure_with_both_sexes(cases):
    plans = [cases.case_plan(i) for i in range(24)]
    pairs = {(fam, fail) for fam, fail, _ in plans}
    assert pairs == set(itertools.product(("A", "B"), set(cases.FAILURES)))
    for pair in pairs:
        assert {sex for fam, fail, sex in plans if (fam, fail) == pair} == {"M", "F"}, pair
    assert sum(fail == "none" for _, fail, _ in plans) == 8  # a third clean


def _area(mask, spacing):
    return float(np.count_nonzero(mask)) * spacing[0] * spacing[1] / 100.0


def test_held_cases_are_deterministic_in_distribution_and_their_truth_is_the_mask_area(cases):
    for index in (3, 8):  # A wrong level, B truncated field of view
        a, b = cases.held_case(index), cases.held_case(index)
        assert np.array_equal(a.ct_hu, b.ct_hu) and np.array_equal(a.truth_mask, b.truth_mask)
        assert (a.family, a.failure) == (("A", "wrong_level") if index == 3 else ("B", "truncated_fov"))
        assert a.true_sma_cm2 == pytest.approx(_area(a.truth_mask, a.spacing_yx_mm), rel=1e-12)
        assert 50.0 < a.true_sma_cm2 < 260.0
        # the families' normal 512² grid at 0.5-1.0 mm: what the cpu-preset models are trained on
        assert a.truth_mask.shape == (512, 512)
        assert all(0.5 <= s <= 1.0 for s in a.spacing_yx_mm), a.spacing_yx_mm
        assert 1.3 < a.height_m < 2.1 and a.sex in "MF"
    cut = cases.held_case(8)  # the image is cut through the muscle on both sides; the truth is the whole muscle
    start, stop = cut.kept_columns
    assert cut.ct_hu.shape == (512, stop - start)
    assert cut.truth_mask[:, :start].sum() > 0 and cut.truth_mask[:, stop:].sum() > 0
    assert 0.03 < 1 - cut.truth_mask[:, start:stop].sum() / cut.truth_mask.sum() < 0.5  # SMA visibly lost


def test_held_cases_come_from_each_familys_own_generator(cases):
    """The truth of a wrong-level case is the L3 slice the public generator draws for the same stream;
    a contrast case is that generator's CT plus 90 HU on soft tissue."""
    from dataset_conversion.phantoms import family_a, family_b

    wrong_a = cases.held_case(3)
    ph = family_a.generate_phantom_slice(np.random.default_rng([cases.HELD_SEED, 3]), sex=wrong_a.sex, matrix=512)
    assert np.array_equal(ph.muscle_mask > 0, wrong_a.truth_mask)
    assert wrong_a.true_sma_cm2 == pytest.approx(ph.true_sma_cm2, rel=1e-12)
    assert np.abs(ph.ct_hu - wrong_a.ct_hu).mean() > 10.0  # the image shows another level

    wrong_b = cases.held_case(9)
    assert (wrong_b.family, wrong_b.failure) == ("B", "wrong_level")
    ph_b, _ = family_b.generate_slice(np.random.default_rng([cases.HELD_SEED, 9, 0xB]), sex=wrong_b.sex, matrix=512)
    assert np.array_equal(ph_b.muscle_mask > 0, wrong_b.truth_mask)
    assert wrong_b.spacing_yx_mm == ph_b.spacing_mm
    assert np.abs(ph_b.ct_hu - wrong_b.ct_hu).mean() > 5.0

    contrast = cases.held_case(4)
    assert (contrast.family, contrast.failure) == ("A", "contrast")
    clean = family_a.generate_phantom_slice(np.random.default_rng([cases.HELD_SEED, 4]), sex=contrast.sex,
                                            matrix=512).ct_hu.astype(np.float32)
    assert np.array_equal(contrast.ct_hu, np.where(clean > -200, clean + 90.0, clean))


# ---------------------------------------------------------------- the seed ensemble


def _fake_workspace(root: Path, payload: bytes, plans_extra: dict | None = None, dataset="Dataset501_ExtVal",
                    folder="SarcoSMITTrainer__sarcoPlans_cpu__2d") -> Path:
    """A workspace layout with a fold_all 'checkpoint' (bytes only: the layout is what is tested)."""
    (root / "nnUNet_raw" / dataset).mkdir(parents=True)
    model = root / "nnUNet_results" / dataset / folder
    (model / "fold_all").mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps({"dataset_name": dataset, "plans_name": "sarcoPlans_cpu",
                                                  **(plans_extra or {})}))
    (model / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "muscle": 1}}))
    (model / "fold_all" / "checkpoint_final.pth").write_bytes(payload)
    (model / "fold_all" / "sarco_provenance.json").write_text(json.dumps({"pretrained": None}))
    return root


def test_ensemble_of_fold_all_models_is_a_model_find_model_accepts(qcm, tmp_path):
    from sarco_nn.model_store import find_model
    from sarco_nn.workspace import Workspace

    sources = [_fake_workspace(tmp_path / f"seed{i}", bytes([i]) * 100,  # seeds differ in plans.json: allowed
                               plans_extra={"sarco": {"preset": {"name": "cpu", "training": {"seed": i}}}})
               for i in range(3)]
    ws = qcm.assemble_ensemble(sources, tmp_path / "out" / "ensemble_ws")
    model = find_model(Workspace(ws))
    assert model.folds == ["0", "1", "2"]
    assert model.folder.name == "SarcoSMITTrainer__sarcoPlans_cpu__2d"
    for i, fold in enumerate(model.folds):  # fold i is seed i's fold_all checkpoint
        assert model.checkpoint(fold).read_bytes() == bytes([i]) * 100
        assert model.checkpoint(fold).resolve() == (sources[i] / "nnUNet_results" / "Dataset501_ExtVal" /
                                                   model.folder.name / "fold_all" / "checkpoint_final.pth").resolve()
    assert json.loads((model.folder / "plans.json").read_text())["plans_name"] == "sarcoPlans_cpu"
    assert (model.folder / "dataset.json").is_file()
    assert model.provenance()["folds"] == "0+1+2"

    marker = ws / qcm.SOURCES_FILE
    before = marker.stat().st_mtime_ns
    assert qcm.assemble_ensemble(sources, ws) == ws and marker.stat().st_mtime_ns == before  # same sources: reused

    sig = qcm.model_signature(model, ws, {"seed": 1})
    assert [m["workspace"] for m in sig["ensemble_of"]] == [str(s.resolve()) for s in sources]
    assert [m["seed"] for m in sig["ensemble_of"]] == [0, 1, 2]
    ckpt = sources[1] / "nnUNet_results" / "Dataset501_ExtVal" / model.folder.name / "fold_all" / "checkpoint_final.pth"
    ckpt.write_bytes(b"retrained" * 10)  # a source retrained: another model, another signature
    ws = qcm.assemble_ensemble(sources, ws)
    assert qcm.model_signature(find_model(Workspace(ws)), ws, {"seed": 1}) != sig
    assert qcm.model_signature(model, ws, {"seed": 2}) != qcm.model_signature(model, ws, {"seed": 1})


def test_ensemble_refuses_mixed_plans_duplicates_and_foreign_folders(qcm, tmp_path):
    a = _fake_workspace(tmp_path / "a", b"a" * 50)
    b = _fake_workspace(tmp_path / "b", b"b" * 50, plans_extra={"configurations": {"2d": {"spacing": [3, 3]}}})
    with pytest.raises(SarcoError, match="differs"):
        qcm.ensemble_members([a, b])
    net = _fake_workspace(tmp_path / "net", b"n" * 50, plans_extra={"sarco": {"preset": {"name": "cpu", "network": 1}}})
    with pytest.raises(SarcoError, match="differs"):  # another network: its weights would not load
        qcm.ensemble_members([a, net])
    other = _fake_workspace(tmp_path / "c", b"c" * 50, folder="nnUNetTrainer__sarcoPlans_cpu__2d")
    with pytest.raises(SarcoError, match="differs"):
        qcm.ensemble_members([a, other])
    twin = _fake_workspace(tmp_path / "twin", b"a" * 50, dataset="Dataset502_Copy")
    with pytest.raises(SarcoError, match="same checkpoint twice"):
        qcm.ensemble_members([a, twin])
    with pytest.raises(SarcoError, match="at least two"):
        qcm.ensemble_members([a])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    d = _fake_workspace(tmp_path / "d", b"d" * 50)
    with pytest.raises(SarcoError, match="never overwritten"):
        qcm.assemble_ensemble([a, d], foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- the summary


def _mann_whitney_auc(positive: list[bool], score: list[float]) -> float:
    """P(score of a large-error case > score of a small-error case), ties counted half: by hand."""
    pos = [s for p, s in zip(positive, score) if p]
    neg = [s for p, s in zip(positive, score) if not p]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _rows(err, score, family=None, failure=None):
    return [{"case_id": f"held_{i:04d}", "abs_rel_error": f"{e:.4f}", "qc_score": f"{s:.4f}",
             "status": "review" if s >= 0.5 else "ok",
             "family": family[i] if family else "A", "failure": failure[i] if failure else "none"}
            for i, (e, s) in enumerate(zip(err, score))]


def test_summary_auroc_matches_a_hand_computed_mann_whitney(qcb):
    rng = np.random.default_rng(7)
    err = rng.uniform(0.0, 0.12, 40)
    score = np.round(rng.uniform(0, 1, 40) * 0.5 + (err > 0.05) * 0.3, 1)  # rounded: ties in the scores
    fam = ["AB"[i % 2] for i in range(40)]
    fail = ["none", "noise", "contrast", "wrong_level"] * 10
    s = qcb.summarise(_rows(err, score, fam, fail))
    large = [float(f"{e:.4f}") > 0.05 for e in err]
    assert s["auroc"] == pytest.approx(_mann_whitney_auc(large, list(score)), abs=1e-12)
    for name in "AB":
        idx = [i for i in range(40) if fam[i] == name]
        assert s["families"][name]["n"] == len(idx)
        assert s["families"][name]["auroc"] == pytest.approx(
            _mann_whitney_auc([large[i] for i in idx], [score[i] for i in idx]), abs=1e-12)
    assert sum(g["n"] for g in s["family_failure"].values()) == 40
    assert s["large_error_share"] == pytest.approx(np.mean(large))


def test_summary_reports_the_half_the_score_was_tuned_on_and_the_held_out_half(qcb):
    """Cases 0-11 and 24-35 = "tuned on", 12-23 and 36-47 = "held out" (whole cycles of every family x
    failure pair): each half's AUROC is its own Mann-Whitney (by hand), its top 10 % its own cases',
    and the table shows both halves."""
    rng = np.random.default_rng(3)
    err = rng.uniform(0.0, 0.12, 48)
    tuned = [i for i in range(48) if i < 12 or 24 <= i < 36]
    fitted = np.isin(np.arange(48), tuned)
    score = np.round(rng.uniform(0, 1, 48) * 0.6 + (err > 0.05) * 0.3 * fitted, 2)
    s = qcb.summarise(_rows(err, score))
    large = [float(f"{e:.4f}") > 0.05 for e in err]
    for name, idx in (("tuned on", tuned), ("held out", [i for i in range(48) if i not in tuned])):
        half = s["splits"][name]
        assert half["n"] == 24
        assert half["auroc"] == pytest.approx(_mann_whitney_auc([large[i] for i in idx], [score[i] for i in idx]),
                                              abs=1e-12)
        top = sorted(idx, key=lambda i: -score[i])[:3]  # 10 % of 24, rounded up
        assert half["top10_large_error_share"] == pytest.approx(np.mean([large[i] for i in top]))
    assert s["splits"]["tuned on"]["auroc"] > s["splits"]["held out"]["auroc"]  # only one half was "fitted"
    assert qcb.split_of("held_0011") == "tuned on" and qcb.split_of("held_0012") == "held out"
    assert qcb.split_of("held_0119") == "held out" and qcb.split_of("held_0100") == "tuned on"
    assert qcb.split_of("held_0120") == "fresh" and "fresh" not in s["splits"]  # only with --held > 120
    text = qcb.summary_table(s)
    assert "| tuned on (even cycles of 12) | 24 |" in text and "| held out (odd cycles of 12) | 24 |" in text


def test_bench_predicts_with_sarco_predicts_defaults(qcb, monkeypatch):
    """Mirroring and the trunk rule come from predict's own options, so a changed default moves the bench."""
    import dataclasses

    from sarco_nn import api

    assert qcb.predict_defaults() == {"mirroring": not api.PredictOptions().fast,
                                      "trunk_only": api.PredictOptions().trunk_only}
    flipped = dataclasses.make_dataclass("Flipped", [("fast", bool, dataclasses.field(default=True)),
                                                     ("trunk_only", bool, dataclasses.field(
                                                         default=not api.PredictOptions().trunk_only))])
    monkeypatch.setattr(api, "PredictOptions", flipped)
    assert qcb.predict_defaults() == {"mirroring": False, "trunk_only": flipped().trunk_only}


def test_summary_top10_share_and_targets(qcb):
    # 20 cases, 4 large errors (share 0.2); the two highest scores are large errors: top 10 % = 2 cases
    err = [0.2, 0.3, 0.01, 0.02, 0.1, 0.07] + [0.01] * 14
    score = [0.9, 0.8, 0.1, 0.2, 0.05, 0.02] + [0.3] * 14
    s = qcb.summarise(_rows(err, score))
    assert s["top10_n"] == 2 and s["top10_large_error_share"] == 1.0
    assert s["top10_enrichment"] == pytest.approx(5.0)
    assert s["targets"]["top10_large_error_share"] == pytest.approx(0.6)  # 3 x 0.2
    assert s["targets"]["top10_met"] is True
    # two of the large errors score below every small error: 2*16 of 4*16 pairs won
    assert s["auroc"] == pytest.approx(0.5) and s["targets"]["auroc_met"] is False
    assert s["review"]["large_error_recall"] == pytest.approx(0.5)  # 0.9 and 0.8 reach 0.5
    nothing_large = qcb.summarise(_rows([0.01] * 10, [0.1 * i for i in range(10)]))
    assert nothing_large["auroc"] is None and nothing_large["targets"]["top10_met"] is False


def _stored_rows(cases, qcb, tmp_path, held_extra=None):
    """cases.csv + cases_model.json as a prediction run leaves them, for held_0000 (clean) and held_0002
    (truncated field of view), with raw values of a confident model whose mask stops short of the border."""
    import csv

    from sarco_nn.review.qc import MEASURE_VERSION

    values = {"fold_mean_dice": 0.97, "fold_sma_cv": 0.01, "entropy_area_ratio": 0.2, "plausibility_z": -0.5,
              "edge_muscle_mm": 0.0, "muscle_hu": 40.0, "components": 6.0, "speck_share": 0.0, "asymmetry": 0.02,
              "outside_trunk_share": 0.0}
    rows = []
    for i, err in ((0, 0.01), (2, 0.14)):
        plan = cases.case_plan(i)
        rows.append({"case_id": f"held_{i:04d}", "family": plan[0], "failure": plan[1], "sex": plan[2],
                     "height_m": "1.700", "true_sma_cm2": "150.00", "pred_sma_cm2": f"{150 * (1 - err):.2f}",
                     "abs_rel_error": f"{err:.4f}", "dice": "", "qc_score": "0.1000", "status": "ok",
                     "components": "{}", "values": json.dumps(values), "seconds": "1.00"})
    with open(tmp_path / "cases.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=qcb.CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    held = {"seed": cases.HELD_SEED, "matrix": cases.MATRIX, "cases_version": cases.CASES_VERSION,
            "qc_measure_version": MEASURE_VERSION, **(held_extra or {})}
    (tmp_path / "cases_model.json").write_text(json.dumps({"model": "M", "folds": ["0", "1", "2"], "held": held}))


def test_rescore_recomputes_the_score_from_stored_values_and_the_regenerated_ct(qcb, cases, tmp_path):
    """--rescore: no model; the CT-only values (the patient's outline on the border) come from the
    regenerated image, so the truncated case is found although its stored mask never touched the border."""
    import csv

    from sarco_nn.review.qc import MEASURE_VERSION, score_values

    _stored_rows(cases, qcb, tmp_path)
    summary = qcb.main(["--rescore", "--out", str(tmp_path)])
    with open(tmp_path / "cases.csv", newline="", encoding="utf-8") as f:
        clean, cut = list(csv.DictReader(f))
    clean_v, cut_v = json.loads(clean["values"]), json.loads(cut["values"])
    assert clean_v["edge_body_mm"] == 0.0 and cut_v["edge_body_mm"] > 100.0
    assert cut_v["mask_area_cm2"] == float(cut["pred_sma_cm2"])
    assert float(cut["qc_score"]) == pytest.approx(score_values(cut_v).score, abs=1e-4)
    assert cut["status"] == "review" and clean["status"] == "ok"
    assert json.loads(cut["components"])["fov_edge"] > 0.05
    assert summary["auroc"] == 1.0 and (tmp_path / "summary.md").read_text().startswith("model M folds 0+1+2")
    signature = json.loads((tmp_path / "cases_model.json").read_text())
    assert signature["held"]["qc_measure_version"] == MEASURE_VERSION


def test_rescore_refuses_values_of_another_measure(qcb, cases, tmp_path):
    _stored_rows(cases, qcb, tmp_path, {"qc_measure_version": 999})
    with pytest.raises(SarcoError, match="another qc measure"):
        qcb.main(["--rescore", "--out", str(tmp_path)])


# ---------------------------------------------------------------- end to end (tiny model)


@pytest.mark.slow
def test_bench_scores_a_single_model_and_a_seed_ensemble(qcb, qcm, tiny_model, tmp_path):
    """--workspace with one fold_all model, then --ensemble-from it and a perturbed 'other seed'."""
    import shutil

    import torch

    from sarco_nn.model_store import find_model
    from sarco_nn.models.checkpoints import load_trainer_checkpoint
    from sarco_nn.workspace import Workspace

    single = qcb.main(["--workspace", str(tiny_model.workspace), "--held", "1", "--out", str(tmp_path / "single")])
    rows = (tmp_path / "single" / "cases.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("case_id,family,failure")
    assert "fold_disagreement" not in rows[1] and "border_entropy" in rows[1]  # one model: its own probabilities
    assert single["model"]["folds"] == ["all"] and single["model"]["ensemble_of"] is None

    other = tmp_path / "seed1_ws"
    shutil.copytree(tiny_model.workspace / "nnUNet_raw", other / "nnUNet_raw")
    shutil.copytree(tiny_model.workspace / "nnUNet_results", other / "nnUNet_results")
    ckpt_path = find_model(Workspace(other)).checkpoint("all")
    ckpt = load_trainer_checkpoint(ckpt_path)
    gen = torch.Generator().manual_seed(1)
    ckpt["network_weights"] = {k: (v + 0.05 * v.float().std() * torch.randn(v.shape, generator=gen)).to(v.dtype)
                               if v.is_floating_point() and v.numel() > 1 else v
                               for k, v in ckpt["network_weights"].items()}
    torch.save(ckpt, ckpt_path)
    out = tmp_path / "ens"
    ens = qcb.main(["--ensemble-from", str(tiny_model.workspace), str(other), "--held", "1", "--out", str(out)])
    assert ens["model"]["folds"] == ["0", "1"] and len(ens["model"]["ensemble_of"]) == 2
    assert "fold_disagreement" in (out / "cases.csv").read_text()
    signature = json.loads((out / "cases_model.json").read_text())
    assert signature["ensemble_of"][1]["workspace"] == str(other.resolve())
    assert signature["held"]["mirroring"] == qcb.predict_defaults()["mirroring"]  # sarco predict's defaults
    assert signature["held"]["trunk_only"] == qcb.predict_defaults()["trunk_only"]


def test_summary_table_has_every_group(qcb):
    rows = _rows([0.2, 0.01, 0.1, 0.02] * 3, [0.9, 0.1, 0.7, 0.2] * 3, family=list("AABB") * 3,
                 failure=["none", "noise", "none", "noise"] * 3)
    text = qcb.summary_table(qcb.summarise(rows))
    assert text.startswith("AUROC 1.00 (95 % bootstrap interval 1.00-1.00; target 0.85: met)")
    for group in ("| all | 12 |", "| A | 6 |", "| noise | 6 |", "| B/none | 3 |"):
        assert group in text, group


def _hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC: an independent estimate of its spread."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    return math.sqrt((auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc))
                     / (n_pos * n_neg))


def test_auroc_interval_agrees_with_hanley_mcneil_and_is_reproducible(qcb):
    rng = np.random.default_rng(7)
    positive = np.r_[np.ones(150, bool), np.zeros(90, bool)]
    score = rng.normal(0, 1, positive.size) + 1.2 * positive  # a true AUROC of about 0.80
    auc = qcb.auroc(positive, score)
    lo, hi = qcb.auroc_interval(positive, score)
    assert lo < auc < hi and qcb.auroc_interval(positive, score) == (lo, hi)  # fixed seed: same interval
    # a 95 % interval is about +-1.96 SE wide: the bootstrap's width within 20 % of the formula's
    assert (hi - lo) == pytest.approx(2 * 1.96 * _hanley_mcneil_se(auc, 150, 90), rel=0.2)
    # ranks tie as roc_auc_score counts them: a constant score is 0.5 in every resample
    assert qcb.auroc_interval(positive, np.zeros(positive.size)) == (0.5, 0.5)
    # separated classes: every resample is 1; one class only: no interval
    assert qcb.auroc_interval(positive, positive.astype(float)) == (1.0, 1.0)
    assert qcb.auroc_interval(np.ones(5, bool), np.arange(5.0)) is None


def test_auroc_interval_narrows_with_more_cases(qcb):
    rng = np.random.default_rng(3)
    widths = []
    for n in (40, 400):
        positive = rng.random(n) < 0.5
        score = rng.normal(0, 1, n) + positive
        lo, hi = qcb.auroc_interval(positive, score)
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # ~ 1/sqrt(n): ten times the cases, about a third of the width


def test_bench_scores_with_the_image_values_that_rescore_keeps(qcb, cases, monkeypatch):
    """score_case asks qc for the measured-not-scored image values (sarco predict does not): they are the
    ones --rescore reads back from cases.csv."""
    import sarco_nn.review.fold_ensemble as fold_ensemble

    case = cases.held_case(0)
    truth = case.truth_mask.astype("uint8")

    class _Folds:
        segmentation = truth[None]

        def muscle_probabilities(self):
            return np.stack([truth, truth]).astype(np.float32)[:, None]

    monkeypatch.setattr(fold_ensemble, "predict_folds", lambda *a, **k: _Folds())
    sma, overlap, result, _ = qcb.score_case(None, case)
    assert overlap == pytest.approx(1.0)
    assert {"overcall_share", "undercall_share"} <= set(result.values)
    row = qcb.case_row(case, sma, overlap, result, 1.0)
    assert "overcall_share" in json.loads(row["values"])
