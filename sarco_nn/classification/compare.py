"""`sarco classify compare`: the classifier and the segmentation-derived flag on the same folds.

Both approaches are scored on exactly the same cases: each case's fold comes from the dataset's
splits_final.json, the classifier's probability from that fold's validation_predictions.csv, the
segmentation flag from nnU-Net's cross-validation prediction of that fold
(nnUNet_results/<Dataset>/<Trainer>__<Plans>__2d/fold_k/validation/<case>.nii.gz), measured with
`sarco_nn.measure` and cut with the same threshold set that defines the reference label. Cases
lacking any of the three are listed, not silently dropped. The segmentation's AUROC uses the
relative margin below the cut-off (1 - value / cut-off) as its score.

Writes comparison.md, comparison.csv (per fold and pooled) and comparison_cases.csv atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from sarco_nn.atomic import write_text_atomic
from sarco_nn.errors import SarcoError

__all__ = [
    "APPROACHES", "CASE_COLUMNS", "METRICS", "TABLE_COLUMNS", "classifier_probabilities", "compare",
    "segmentation_flags", "segmentation_model_dir"
]

APPROACHES = ("classifier", "segmentation")
METRICS = ("accuracy", "sensitivity", "specificity")
TABLE_COLUMNS = ["fold", "approach", "n", "tp", "fp", "tn", "fn",
                 *[f"{m}{s}" for m in METRICS for s in ("", "_ci_low", "_ci_high")], "balanced_accuracy", "auroc"]
CASE_COLUMNS = ["case_id", "fold", "sarcopenic_ref", "label_source", "classifier_probability", "classifier_flag",
                "segmentation_sma_cm2", "segmentation_flag", "compared", "reason"]


def segmentation_model_dir(workspace, dataset_name: str, trainer: str | None) -> Path:
    """The one nnU-Net result folder holding cross-validation predictions (filtered by --trainer)."""
    from sarco_nn.evaluation.evaluate import crossval_model_dirs

    _, models = crossval_model_dirs(workspace, dataset_name)
    if trainer is not None:
        models = [m for m in models if trainer in m.name]
    if not models:
        raise SarcoError(f"no nnU-Net cross-validation predictions (fold_k/validation) for {dataset_name}",
                         path=workspace.results / dataset_name,
                         fix="train the segmentation folds first (`sarco train 0` … `sarco train 4`).")
    if len(models) > 1:
        raise SarcoError(f"several segmentation models for {dataset_name}: {', '.join(m.name for m in models)}",
                         fix="choose one with --trainer.")
    return models[0]


def segmentation_flags(model_dir: Path, clinical: dict, ts, fold_of: dict[str, int]) -> dict[str, dict]:
    """{case: {fold, sma_cm2, flag, score, reason}} from nnU-Net's fold_k/validation masks."""
    from sarco_nn.evaluation.evaluate import list_masks
    from sarco_nn.image_io import read_label_image
    from sarco_nn.measure import measure_image, smi

    found: dict[str, dict] = {}
    for fold_path in sorted(model_dir.glob("fold_*")):
        fold = fold_path.name[len("fold_"):]
        if not fold.isdigit() or not (fold_path / "validation").is_dir():
            continue
        for case, mask_path in list_masks(fold_path / "validation").items():
            if case in fold_of and fold_of[case] != int(fold):
                raise SarcoError(f"case {case} is a fold_{fold} validation case of {model_dir.name} but belongs to "
                                 f"fold {fold_of[case]} in splits_final.json: the two approaches used different folds",
                                 path=mask_path, fix="train both with the dataset's current splits_final.json.")
            measured = measure_image(read_label_image(mask_path), mask_name=str(mask_path))
            sma = measured[0].sma_cm2 if measured else 0.0
            record = clinical.get(case)
            sex, height, bmi = (None, None, None) if record is None else (record.sex, record.height_m, record.bmi)
            index = smi(sma, height)
            flag = ts.is_sarcopenic(sex, sma, index, bmi)
            cutoff = ts.cutoff_for(sex, bmi)
            value = sma if ts.metric == "sma" else index
            score = None if flag is None or cutoff is None or value is None else 1.0 - value / cutoff
            reason = "" if flag is not None else (
                "not in clinical.csv" if record is None else ts.why_undecidable(sex, sma, index, bmi))
            found[case] = {"fold": int(fold), "sma_cm2": sma, "flag": flag, "score": score, "reason": reason}
    return found


def classifier_probabilities(fold_dirs: list[Path], fold_of: dict[str, int]) -> dict[str, float]:
    """{case: P(sarcopenic)} from each cross-validation fold's validation_predictions.csv."""
    from sarco_nn.classification.train import VALIDATION_FILE, read_validation_predictions

    probabilities: dict[str, float] = {}
    for fold_path in fold_dirs:
        fold = fold_path.name[len("fold_"):]
        if not fold.isdigit() or not (fold_path / VALIDATION_FILE).is_file():
            continue
        for case, p in read_validation_predictions(fold_path / VALIDATION_FILE).items():
            if fold_of.get(case) != int(fold):
                raise SarcoError(f"case {case} was validated in classifier fold {fold} but splits_final.json puts it "
                                 f"in fold {fold_of.get(case)}", path=fold_path / VALIDATION_FILE,
                                 fix="retrain the classifier folds with --restart.")
            probabilities[case] = p
    return probabilities


def compare(workspace=None, dataset: str | int | None = None, arch: str | None = None, trainer: str | None = None,
            thresholds: str = "paper", out_dir: Path | str | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Score both approaches per fold and pooled; write the tables; return the summary."""
    from sarco_nn.classification.data import case_folds, derive_labels, load_splits
    from sarco_nn.classification.metrics import flag_summary
    from sarco_nn.classification.predict import find_models
    from sarco_nn.classification.train import DECISION_THRESHOLD, RESULTS_DIR
    from sarco_nn.clinical import read_clinical_csv
    from sarco_nn.thresholds import get_threshold_set
    from sarco_nn.workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    name = ws.dataset_name(dataset)
    ts = get_threshold_set(thresholds)
    labelled, excluded = derive_labels(ws.raw / name, thresholds)
    splits = load_splits(ws, name)
    fold_of = case_folds(splits)
    name, arch, fold_dirs = find_models(ws, name, arch, None)
    probabilities = classifier_probabilities(fold_dirs, fold_of)
    if not probabilities:
        raise SarcoError(f"no cross-validation fold of the {arch} classifier has validation predictions",
                         fix="train folds 0-4 (`sarco classify train 0` …), not only `all`.")
    model_dir = segmentation_model_dir(ws, name, trainer)
    clinical_path = ws.raw / name / "clinical.csv"
    clinical = read_clinical_csv(clinical_path) if clinical_path.exists() else {}
    segmentation = segmentation_flags(model_dir, clinical, ts, fold_of)

    cases = []
    for case in sorted(fold_of, key=lambda c: (fold_of[c], c)):
        truth = labelled.get(case)
        p = probabilities.get(case)
        seg = segmentation.get(case, {})
        reasons = [r for r, missing in (
            (f"no reference label ({excluded.get(case, 'unlabelled')})", truth is None),
            ("no classifier prediction (fold not trained?)", p is None),
            ("no segmentation prediction", not seg),
            (f"segmentation flag undecidable ({seg.get('reason')})", bool(seg) and seg.get("flag") is None)) if missing]
        cases.append({
            "case_id": case, "fold": fold_of[case], "sarcopenic_ref": None if truth is None else truth.label,
            "label_source": None if truth is None else truth.source, "classifier_probability": p,
            "classifier_flag": None if p is None else p >= DECISION_THRESHOLD,
            "segmentation_sma_cm2": seg.get("sma_cm2"), "segmentation_flag": seg.get("flag"),
            "segmentation_score": seg.get("score"), "compared": not reasons, "reason": "; ".join(reasons)})

    compared = [c for c in cases if c["compared"]]
    if not compared:
        raise SarcoError(f"no case of {name} has a label, a classifier prediction and a segmentation flag "
                         f"(e.g. {cases[0]['case_id'] if cases else '-'}: {cases[0]['reason'] if cases else 'no cases'})")
    rows = []
    for fold in sorted({c["fold"] for c in compared}) + ["pooled"]:
        subset = [c for c in compared if fold == "pooled" or c["fold"] == fold]
        truth = [c["sarcopenic_ref"] for c in subset]
        for approach in APPROACHES:
            score_key = "classifier_probability" if approach == "classifier" else "segmentation_score"
            s = flag_summary([c[f"{approach}_flag"] for c in subset], truth, [c[score_key] for c in subset])
            rows.append({"fold": str(fold), "approach": approach, **s})
    missed = {a: [c["case_id"] for c in compared if c["sarcopenic_ref"] and not c[f"{a}_flag"]] for a in APPROACHES}

    out = Path(out_dir) if out_dir is not None else ws.root / RESULTS_DIR / name / arch / "comparison"
    summary = {"dataset": name, "arch": arch, "segmentation_model": model_dir.name, "threshold_set": ts.name,
               "n_cases": len(cases), "n_compared": len(compared), "rows": rows, "missed_sarcopenic": missed,
               "not_compared": {c["case_id"]: c["reason"] for c in cases if not c["compared"]},
               "report_dir": str(out)}
    _write_table_csv(rows, out / "comparison.csv")
    _write_cases_csv(cases, out / "comparison_cases.csv")
    write_text_atomic(out / "comparison.md", _markdown(summary, cases))
    from sarco_nn.evaluation.report import clean_json

    write_text_atomic(out / "comparison.json", json.dumps(clean_json(summary), indent=2, ensure_ascii=False) + "\n")
    log(f"compared {len(compared)}/{len(cases)} cases: {out / 'comparison.md'}")
    return summary


def _write_table_csv(rows: list[dict], path: Path) -> None:
    from sarco_nn.evaluation.report import write_csv

    flat = [{**row, **{f"{m}_ci_low": row[f"{m}_ci"][0] for m in METRICS},
             **{f"{m}_ci_high": row[f"{m}_ci"][1] for m in METRICS}} for row in rows]
    write_csv(path, TABLE_COLUMNS, flat)


def _write_cases_csv(cases: list[dict], path: Path) -> None:
    from sarco_nn.evaluation.report import write_csv

    write_csv(path, CASE_COLUMNS, cases)


def _pct(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f} %"
    if ci and not any(math.isnan(v) for v in ci):
        text += f" [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]"
    return text


def _markdown(summary: dict, cases: list[dict]) -> str:
    lines = [f"# Classifier ({summary['arch']}) vs segmentation ({summary['segmentation_model']}) — {summary['dataset']}",
             "",
             f"Reference label: clinical.csv `sarcopenic` column where given, else the reference mask with the "
             f"`{summary['threshold_set']}` thresholds (the segmentation flag uses the same set). "
             f"{summary['n_compared']} of {summary['n_cases']} cases compared, each in its splits_final.json fold. "
             "Proportions with Wilson 95 % intervals.",
             "",
             "| fold | approach | n | accuracy | sensitivity | specificity | balanced accuracy | AUROC |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        auroc = "n/a" if r["auroc"] is None or math.isnan(r["auroc"]) else f"{r['auroc']:.3f}"
        lines.append(f"| {r['fold']} | {r['approach']} | {r['n']} | {_pct(r['accuracy'], r['accuracy_ci'])} | "
                     f"{_pct(r['sensitivity'], r['sensitivity_ci'])} | {_pct(r['specificity'], r['specificity_ci'])} | "
                     f"{_pct(r['balanced_accuracy'])} | {auroc} |")
    lines += ["", "## Sarcopenic patients missed", ""]
    fold = {c["case_id"]: c["fold"] for c in cases}
    for approach, missed in summary["missed_sarcopenic"].items():
        listing = ", ".join(f"{c} (fold {fold[c]})" for c in missed) or "none"
        lines.append(f"- {approach}: {len(missed)} — {listing}")
    if summary["not_compared"]:
        lines += ["", "## Not compared", ""]
        lines += [f"- {case}: {reason}" for case, reason in summary["not_compared"].items()]
    return "\n".join(lines) + "\n"
