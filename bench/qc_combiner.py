"""Would a learned combination of the QC evidence rank large SMA errors better than `qc_score`? (#19)

`qc_score` adds the evidence by hand-set rules (`sarco_nn/review/qc.py`). If the AUROC target is missed
because the rules combine the evidence badly, a model fitted on the same raw values should do better; if it
does no better, the evidence itself is the limit. This bench answers that from the stored raw values of
`bench/results/qc/cases.csv` (the `values` column: what `qc.py` measured per case), so it needs no network:

  * **seen → fresh**: fitted on the 120 cases that were read while the score was designed, scored on the
    360 fresh ones never looked at (the same "fresh" row as qc_bench's summary);
  * **5-fold CV on all 480**: out-of-fold scores, folds stratified by large error, seed fixed.

Combiners: L2 logistic regression on standardised values (C over a grid), and gradient-boosted trees
(depth 1-3, three seeds each since they subsample). Each is compared with `qc_score` on the same cases.
The AUROC, its bootstrap interval and the top-10 % share are qc_bench's own functions.

    python bench/qc_combiner.py            # prints the table, writes bench/results/qc/combiner.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.qc_bench import LARGE_ERROR, TOP_SHARE, auroc, auroc_interval, split_of  # noqa: E402

CASES = ROOT / "bench" / "results" / "qc" / "cases.csv"
OUT = ROOT / "bench" / "results" / "qc" / "combiner.json"
LOGISTIC_C = (0.03, 0.1, 0.3, 1.0, 3.0)
GBM_DEPTHS = (1, 2, 3)
GBM_SEEDS = (0, 1, 2)
CV_FOLDS = 5
CV_SEED = 0


def read_cases(path: Path) -> tuple[list[dict], list[str], np.ndarray]:
    """Rows, the feature names (every raw value all rows hold, sorted) and the feature matrix."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"error: {path} holds no cases; run bench/qc_bench.py first")
    values = [json.loads(r["values"]) for r in rows]
    names = sorted(set.intersection(*(set(v) for v in values)))
    x = np.array([[float(v[n]) for n in names] for v in values], float)
    return rows, names, np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def combiners() -> dict[str, object]:
    """Every combiner this bench fits, by name (fresh, unfitted estimators)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, object] = {}
    for c in LOGISTIC_C:
        out[f"logistic C={c:g}"] = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    for depth in GBM_DEPTHS:
        for seed in GBM_SEEDS:
            out[f"gbm depth {depth} seed {seed}"] = GradientBoostingClassifier(
                max_depth=depth, n_estimators=100, learning_rate=0.05, subsample=0.8, random_state=seed)
    return out


def ranking(large: np.ndarray, score: np.ndarray) -> dict:
    """AUROC with its bootstrap interval and the large-error share of the top 10 % by score."""
    n_top = max(1, int(np.ceil(TOP_SHARE * len(score) - 1e-9)))
    top = np.argsort(-score, kind="stable")[:n_top]
    return {"n": int(len(score)), "auroc": auroc(large, score), "auroc_ci95": auroc_interval(large, score),
            "top10_large_error_share": float(large[top].mean()), "large_error_share": float(large.mean())}


def seen_to_fresh(x: np.ndarray, large: np.ndarray, fresh: np.ndarray, model) -> np.ndarray:
    """Scores of the fresh cases from a combiner fitted on the seen ones only."""
    model.fit(x[~fresh], large[~fresh])
    return model.predict_proba(x[fresh])[:, 1]


def cross_validated(x: np.ndarray, large: np.ndarray, model) -> np.ndarray:
    """Out-of-fold scores of every case (stratified folds, fixed seed)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    scores = np.empty(len(large))
    for train, test in StratifiedKFold(CV_FOLDS, shuffle=True, random_state=CV_SEED).split(x, large):
        scores[test] = clone(model).fit(x[train], large[train]).predict_proba(x[test])[:, 1]
    return scores


def run(cases: Path = CASES) -> dict:
    """Every combiner under both protocols, beside `qc_score` on the same cases, and per family."""
    from sklearn.base import clone

    rows, names, x = read_cases(cases)
    large = np.array([float(r["abs_rel_error"]) > LARGE_ERROR for r in rows])
    qc = np.array([float(r["qc_score"]) for r in rows])
    fresh = np.array([split_of(r["case_id"]) == "fresh" for r in rows])
    family = np.array([r["family"] for r in rows])
    if fresh.all() or not fresh.any():
        raise SystemExit(f"error: {cases} needs both seen and fresh cases (qc_bench --held 480)")
    result = {"cases": str(cases.relative_to(ROOT)) if cases.is_relative_to(ROOT) else str(cases),
              "features": names, "large_error": LARGE_ERROR,
              "qc_score": {"fresh": ranking(large[fresh], qc[fresh]), "all": ranking(large, qc),
                           "fresh_by_family": {f: ranking(large[fresh & (family == f)], qc[fresh & (family == f)])
                                               for f in sorted(set(family))}},
              "combiners": {}}
    for name, model in combiners().items():
        fresh_scores = seen_to_fresh(x, large, fresh, clone(model))
        cv_scores = cross_validated(x, large, model)
        result["combiners"][name] = {
            "fresh": ranking(large[fresh], fresh_scores), "cv_all": ranking(large, cv_scores),
            "fresh_by_family": {f: ranking(large[fresh][family[fresh] == f], fresh_scores[family[fresh] == f])
                                for f in sorted(set(family))}}
    return result


def table(result: dict) -> str:
    """The markdown table the README quotes."""
    def f(r: dict) -> str:
        lo, hi = r["auroc_ci95"] or (float("nan"), float("nan"))
        return f"{r['auroc']:.3f} ({lo:.2f}-{hi:.2f})"

    q = result["qc_score"]
    lines = ["| scorer | fresh 360: AUROC (95 %) | fresh top-10 % share | CV on all 480: AUROC | fresh A | fresh B |",
             "|---|---|---|---|---|---|",
             f"| qc_score (hand-set rules) | {f(q['fresh'])} | {q['fresh']['top10_large_error_share']:.1%} | "
             f"{f(q['all'])} (same cases) | {q['fresh_by_family']['A']['auroc']:.3f} | "
             f"{q['fresh_by_family']['B']['auroc']:.3f} |"]
    for name, r in result["combiners"].items():
        lines.append(f"| {name} | {f(r['fresh'])} | {r['fresh']['top10_large_error_share']:.1%} | {f(r['cv_all'])} | "
                     f"{r['fresh_by_family']['A']['auroc']:.3f} | {r['fresh_by_family']['B']['auroc']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=CASES, help="qc_bench's cases.csv (raw values per case)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the figures go (JSON)")
    args = parser.parse_args(argv)
    result = run(args.cases)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, args.out)  # atomic: a killed run leaves the last complete file
    print(table(result))
    return result


if __name__ == "__main__":
    main()
