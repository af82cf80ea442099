"""Writes the evaluation outputs: cases.csv, summary.json, report.md and PNG plots.

Every file is written atomically (`sarco_nn.atomic`: temporary file beside it, then os.replace), so an
interrupted run never leaves a half-written report that looks complete. matplotlib is imported
inside the plotting functions with the Agg backend (no display, fast CLI start-up).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from sarco_nn.atomic import write_bytes_atomic as atomic_write_bytes, write_text_atomic as atomic_write_text
from sarco_nn.constants import CT_WINDOW_HU

#: Column order of cases.csv (stable: downstream scripts read it by name).
#: `overlap_slice` is where Dice/IoU/HD95/MSD/FP/FN were computed (the reference's slice);
#: `sma_pred_slice` where the predicted SMA was measured (the prediction's own level): stored indices.
CASE_COLUMNS: tuple[str, ...] = (
    "case_id", "status", "reasons", "qc_score", "in_statistics", "fold", "sex", "height_m", "bmi",
    "dice", "iou", "hd95_mm", "msd_mm", "fp_cm2", "fn_cm2", "reference_empty", "prediction_empty",
    "overlap_slice", "sma_pred_slice", "sma_ref_cm2", "sma_pred_cm2", "sma_error_cm2", "sma_error_percent",
    "smi_ref_cm2_m2", "smi_pred_cm2_m2", "smi_error_cm2_m2",
    "hu_ref", "hu_pred", "hu_error",
    "threshold", "sarcopenic_ref", "sarcopenic_pred", "sarcopenic_clinical", "flag_correct",
    "flip_k_percent", "distance_to_cutoff_percent",
    "l3_slice_ref", "l3_slice_pred", "l3_error_slices", "l3_error_mm", "sma_pred_annotated_cm2",
    "sma_error_annotated_percent", "note",
)


# ---------------------------------------------------------------------------- figures
def _save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------- tables
def clean_json(value):
    """NaN/inf → None (JSON has no NaN), numpy scalars → Python, tuples → lists, recursively."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


def write_summary_json(summary: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(clean_json(summary), indent=2, ensure_ascii=False) + "\n")


def csv_cell(value) -> str:
    """One CSV cell in sarco's convention: empty for missing/NaN, yes/no, floats to 6 significant digits."""
    value = clean_json(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    """A table of dicts as CSV (columns in the given order), written atomically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(col)) for col in columns])
    atomic_write_text(path, out.getvalue())


def write_cases_csv(rows: list[dict], path: Path) -> None:
    """cases.csv: CASE_COLUMNS, then the per-tissue columns of the tissues evaluated (if any)."""
    from sarco_nn.evaluation.tissues import ALL_CASE_COLUMNS

    extra = [c for c in ALL_CASE_COLUMNS if any(c in row for row in rows)]
    write_csv(path, (*CASE_COLUMNS, *extra), rows)


def _fmt(value, digits: int = 2, percent: bool = False) -> str:
    value = clean_json(value)
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value * 100:.1f} %" if percent else f"{value:.{digits}f}"
    return str(value)


def _ci(summary: dict, key: str) -> str:
    low, high = (clean_json(v) for v in summary.get(f"{key}_ci") or (None, None))
    if low is None:
        return "n/a"
    return f"{low * 100:.1f}–{high * 100:.1f} %"


def write_report_md(summary: dict, rows: list[dict], path: Path, plots: dict[str, str]) -> None:
    """Human summary: the reference study's figures plus agreement and threshold sensitivity."""
    s = summary
    lines = [
        "# sarco evaluation report",
        "",
        *([f"Dataset {s['dataset']}, model {s['model']} (cross-validation).", ""] if s.get("model") else []),
        f"Cases evaluated: **{s['n_cases']}** · in the statistics: {s.get('n_cases_in_statistics', s['n_cases'])} · "
        f"classified: {s['n_cases_classified']} · "
        f"threshold set: **{s['threshold_set']}** ({s['threshold_metric'].upper()}) · muscle label: reference "
        f"{s['label']} ({s.get('label_source', 'sarco default')}), prediction {s.get('label_prediction', s['label'])}",
        "",
        *_rules_section(s),
        "## Segmentation",
        "",
        "| metric | mean | median | min |",
        "|---|---|---|---|",
        f"| Dice | {_fmt(s['dice_mean'], 4)} | {_fmt(s['dice_median'], 4)} | {_fmt(s['dice_min'], 4)} |",
        f"| IoU | {_fmt(s['iou_mean'], 4)} | | |",
        f"| HD95 (mm) | {_fmt(s['hd95_mean_mm'])} | {_fmt(s['hd95_median_mm'])} | |",
        f"| mean surface distance (mm) | {_fmt(s['msd_mean_mm'])} | | |",
        f"| false-positive area (cm²) | {_fmt(s['fp_mean_cm2'])} | | |",
        f"| false-negative area (cm²) | {_fmt(s['fn_mean_cm2'])} | | |",
        "",
        f"Empty predictions at the reference's slice: {s['n_empty_prediction']} (in every mean: Dice 0, "
        "HD95 and MSD = the slice diagonal) · failed or implausible predictions: "
        f"{s.get('n_failed_predictions', 0)} (in every statistic; withheld flags scored as wrong: "
        f"{s.get('n_flags_withheld_scored_wrong', 0)}) · empty references: {s['n_empty_reference']} "
        f"(left out of every statistic: {', '.join(s.get('excluded_from_statistics') or []) or 'none'}).",
        "",
        "## Agreement with the reference (predicted − reference)",
        "",
        "| measure | n | MAE | MAPE | bias | 95 % LoA | ICC(2,1) | ICC(3,1) | Pearson r |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for prefix, label, unit in (("sma", "SMA", "cm2"), ("smi", "SMI", "cm2_m2"), ("hu", "muscle HU", "")):
        u = f"_{unit}" if unit else ""
        lines.append(
            f"| {label} | {s.get(f'{prefix}_n', 0)} | {_fmt(s.get(f'{prefix}_mae{u}'))} | "
            f"{_fmt(s.get(f'{prefix}_mape_percent'))} % | {_fmt(s.get(f'{prefix}_bias{u}'))} | "
            f"{_fmt(s.get(f'{prefix}_loa_low{u}'))} … {_fmt(s.get(f'{prefix}_loa_high{u}'))} | "
            f"{_fmt(s.get(f'{prefix}_icc_2_1'), 3)} | {_fmt(s.get(f'{prefix}_icc_3_1'), 3)} | "
            f"{_fmt(s.get(f'{prefix}_pearson_r'), 3)} |"
        )
    lines += ["", "Units: SMA cm², SMI cm²/m², HU. MAPE in % of the reference value.", ""]
    lines += [
        "## Sarcopenia classification",
        "",
        "Truth: the threshold set applied to the reference mask's SMA/SMI; prediction: the same set applied "
        "to the predicted mask. Intervals: Wilson 95 %.",
        "",
        "| | value | 95 % CI |",
        "|---|---|---|",
    ]
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        lines.append(f"| {key} | {_fmt(s.get(key), percent=True)} | {_ci(s, key)} |")
    lines.append(f"| balanced accuracy | {_fmt(s.get('balanced_accuracy'), percent=True)} | |")
    c = s["confusion"]
    lines += [
        "",
        "| | reference sarcopenic | reference not sarcopenic |",
        "|---|---|---|",
        f"| predicted sarcopenic | {c['tp']} | {c['fp']} |",
        f"| predicted not sarcopenic | {c['fn']} | {c['tn']} |",
        "",
    ]
    vs = s.get("classification_vs_clinical")
    if vs:
        lines += [
            f"Against the `sarcopenic` column of clinical.csv ({vs['n']} cases): accuracy "
            f"{_fmt(vs['accuracy'], percent=True)} ({_ci(vs, 'accuracy')}), sensitivity "
            f"{_fmt(vs['sensitivity'], percent=True)}, specificity {_fmt(vs['specificity'], percent=True)}.",
            "",
        ]
    lines += [
        "## Threshold impact",
        "",
        "Cases whose flag (from the reference SMA/SMI) would change if the SMA were off by ±k %:",
        "",
        "| k (%) | " + " | ".join(str(k) for k in s["threshold_impact"]) + " |",
        "|---|" + "---|" * len(s["threshold_impact"]),
        "| cases at risk | " + " | ".join(str(v) for v in s["threshold_impact"].values()) + " |",
        "",
    ]
    observed = s.get("threshold_impact_observed") or {}
    if observed.get("k_percent") is not None:
        lines += [
            f"At the observed mean |SMA error| ({_fmt(s['sma_mape_percent'])} %, rounded up to k = "
            f"{observed['k_percent']} %), {observed['cases_at_risk']} case(s) are at risk; "
            f"{observed['flags_changed']} predicted flag(s) actually differ from the reference.",
            "",
        ]
    lines += _l3_section(s.get("l3"))
    from sarco_nn.evaluation.tissues import layout_lines, plot_key, report_lines as tissue_lines

    lines += tissue_lines(s.get("tissues"), _fmt, plots)
    lines += layout_lines(s)
    plots = {k: v for k, v in plots.items() if k not in {plot_key(t) for t in s.get("tissues") or {}}}
    lines += [
        "## Per fold",
        "",
        "| fold | n | mean Dice | mean abs SMA error (%) | max abs SMA error (%) | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for row in [*s["folds"], s["pooled"]]:
        lines.append(
            f"| {row['fold']} | {row['n']} | {_fmt(row['dice_mean'], 4)} | "
            f"{_fmt(row['sma_abs_error_percent_mean'])} | {_fmt(row['sma_abs_error_percent_max'])} | "
            f"{_fmt(row['accuracy'], percent=True)} |"
        )
    worst = s.get("worst_cases") or []
    if worst:
        lines += ["", "## Largest SMA errors", "", "| case | fold | ref SMA | pred SMA | error (%) | Dice |",
                  "|---|---|---|---|---|---|"]
        by_id = {r["case_id"]: r for r in rows}
        for case in worst:
            r = by_id[case]
            lines.append(f"| {case} | {r['fold']} | {_fmt(r['sma_ref_cm2'])} | {_fmt(r['sma_pred_cm2'])} | "
                         f"{_fmt(r['sma_error_percent'])} | {_fmt(r['dice'], 4)} |")
    problems = s.get("problems") or {}
    if problems:
        lines += ["", "## Problems (these cases were skipped or only partly evaluated)", ""]
        lines += [f"- {what} ({len(cases)}): {', '.join(cases)}" for what, cases in problems.items()]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({rel})" for name, rel in plots.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _rules_section(s: dict) -> list[str]:
    """The conventions that change a number, written where the numbers are shown."""
    rules = s.get("rules") or {}
    if not rules:
        return []
    return ["## Rules behind these numbers", "", *[f"- **{k}**: {v}" for k, v in rules.items()], ""]


def _l3_section(l3: dict | None) -> list[str]:
    """Localization of the L3 level on whole volumes (absent when every case was a single slice)."""
    if not l3:
        return []
    lines = [
        "## L3 level (whole volumes)",
        "",
        f"{l3['n']} volume(s) segmented at the level the localizer chose. Error of that level against the annotated "
        f"slice: mean {_fmt(l3['error_slices_mean_abs'])} slices / {_fmt(l3['error_mm_mean_abs'])} mm (median "
        f"{_fmt(l3['error_mm_median_abs'])} mm, max {_fmt(l3['error_mm_max_abs'])} mm); {l3['within_1_slice']} of "
        f"{l3['n']} within ±1 slice.",
        "",
    ]
    sma = f"Mean |SMA error| at the predicted level: {_fmt(l3['sma_abs_error_percent_at_predicted_level'])} %"
    if l3["n_with_annotated_level_prediction"]:
        sma += (f"; at the annotated slice (same model, {l3['n_with_annotated_level_prediction']} cases): "
                f"{_fmt(l3['sma_abs_error_percent_at_annotated_level'])} %.")
    else:
        sma += (" (for the error at the annotated slice: `sarco predict --l3-csv annotated_l3.csv`, then "
                "`sarco evaluate … --at-annotated THAT_OUTPUT`).")
    return lines + [sma, ""]


# ---------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bland_altman(pred, ref, path: Path, quantity: str, unit: str, bias: float, low: float, high: float) -> None:
    plt = _pyplot()
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter((pred + ref) / 2, pred - ref, s=18, color="tab:blue")
    for value, style, text in ((bias, "-", "bias"), (low, "--", "−1.96 SD"), (high, "--", "+1.96 SD")):
        if value is not None and not math.isnan(value):
            ax.axhline(value, color="tab:red", linestyle=style, linewidth=1)
            ax.annotate(f"{text} {value:.2f}", xy=(1, value), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=8, color="tab:red")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel(f"mean of predicted and reference {quantity} ({unit})")
    ax.set_ylabel(f"predicted − reference {quantity} ({unit})")
    ax.set_title(f"Bland–Altman: {quantity}")
    _save_figure(fig, path)
    plt.close(fig)


def plot_scatter(pred, ref, path: Path, quantity: str, unit: str) -> None:
    plt = _pyplot()
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(ref, pred, s=18, color="tab:blue")
    both = np.concatenate([pred, ref]) if pred.size else np.array([0.0, 1.0])
    lo, hi = float(both.min()), float(both.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linestyle="--", label="identity")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference {quantity} ({unit})")
    ax.set_ylabel(f"predicted {quantity} ({unit})")
    ax.legend(loc="upper left")
    _save_figure(fig, path)
    plt.close(fig)


def plot_fold_dice(dice_by_fold: dict[str, list[float]], path: Path) -> None:
    plt = _pyplot()
    names = list(dice_by_fold)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names) + 2), 4))
    ax.boxplot([dice_by_fold[n] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_xlabel("fold")
    ax.set_ylabel("Dice")
    ax.set_title("Dice per fold")
    _save_figure(fig, path)
    plt.close(fig)


def plot_overlay(ct2d: np.ndarray | None, ref2d: np.ndarray, pred2d: np.ndarray,
                 spacing_yx_mm: tuple[float, float], title: str, path: Path) -> None:
    """Reference (green) and prediction (red) contours on the CT slice (LPS: patient right on the left).

    Pixels are drawn with their true aspect ratio (row/column spacing), so non-square pixels are
    not distorted. Without a CT the reference mask is shown in grey instead.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    aspect = float(spacing_yx_mm[0]) / float(spacing_yx_mm[1])
    if ct2d is not None:
        ax.imshow(ct2d, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], aspect=aspect,
                  interpolation="nearest")
    else:
        ax.imshow(ref2d.astype(float) * 0.4, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
    for mask, colour in ((ref2d, "lime"), (pred2d, "red")):
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
    ax.set_title(title + "\ngreen: reference, red: prediction", fontsize=9)
    ax.axis("off")
    _save_figure(fig, path)
    plt.close(fig)
