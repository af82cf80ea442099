"""bench/qc_combiner.py: the learned-combiner check of #19 (does the evidence or its combination limit qc_score?)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("qc_combiner", ROOT / "bench" / "qc_combiner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pairwise_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Independent AUROC: the share of (positive, negative) pairs ranked right, ties counting one half."""
    pos, neg = score[positive], score[~positive]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


def test_ranking_auroc_and_top_share_match_an_independent_count():
    bench = _bench()
    rng = np.random.default_rng(3)
    score = np.round(rng.random(200), 1)  # many ties
    large = rng.random(200) < 0.3 + 0.4 * score
    r = bench.ranking(large, score)
    assert abs(r["auroc"] - _pairwise_auroc(large, score)) < 1e-12
    lo, hi = r["auroc_ci95"]
    assert lo < r["auroc"] < hi
    top = np.argsort(-score, kind="stable")[:20]
    assert r["top10_large_error_share"] == large[top].mean()


def _write_cases(path: Path, n: int, label_of) -> None:
    """A cases.csv of n cases whose large error follows `label_of(index, signal)`; one informative value."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["case_id", "family", "abs_rel_error", "qc_score", "values"])
        writer.writeheader()
        for i in range(n):
            signal = float(rng.random())
            large = label_of(i, signal)
            writer.writerow({"case_id": f"held_{i:04d}", "family": "AB"[i % 2],
                             "abs_rel_error": 0.2 if large else 0.01, "qc_score": float(rng.random()),
                             "values": json.dumps({"signal": signal, "noise": float(rng.random())})})


def test_combiners_learn_the_evidence_and_never_see_the_fresh_cases(tmp_path):
    bench = _bench()
    cases = tmp_path / "cases.csv"
    # seen cases (< 120): large when the signal is high; fresh cases: the opposite rule. A combiner fitted on
    # the seen cases alone must then rank the fresh ones backwards; cross-validation over both sees both rules.
    _write_cases(cases, 240, lambda i, s: (s > 0.5) if i < 120 else (s < 0.5))
    result = bench.main(["--cases", str(cases), "--out", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text())["features"] == ["noise", "signal"]
    logistic = result["combiners"]["logistic C=1"]
    assert logistic["fresh"]["auroc"] < 0.1 and logistic["fresh"]["n"] == 120
    assert 0.3 < result["qc_score"]["fresh"]["auroc"] < 0.7  # the random stored score ranks nothing

    _write_cases(cases, 240, lambda i, s: s > 0.5)  # one rule everywhere: learned, fresh and out of fold
    result = bench.run(cases)
    for name in ("logistic C=1", "gbm depth 2 seed 0"):
        assert result["combiners"][name]["fresh"]["auroc"] > 0.95
        assert result["combiners"][name]["cv_all"]["auroc"] > 0.95


def test_the_committed_figures_score_qc_score_as_qc_bench_does():
    """The combiner bench reads the same cases qc_bench summarised: its qc_score row is qc_bench's."""
    committed = json.loads((ROOT / "bench" / "results" / "qc" / "combiner.json").read_text())
    summary = json.loads((ROOT / "bench" / "results" / "qc" / "summary.json").read_text())
    assert abs(committed["qc_score"]["fresh"]["auroc"] - summary["splits"]["fresh"]["auroc"]) < 1e-9
    assert abs(committed["qc_score"]["all"]["auroc"] - summary["auroc"]) < 1e-9
    assert len(committed["combiners"]) == len(_bench().combiners())
