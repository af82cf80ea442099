"""Per-tissue evaluation (muscle, IMAT, VAT, SAT): Dice, area agreement, HU bias, report sections.

Rules (also in the report):
  * A tissue is evaluated when BOTH sides carry it: the reference's label map (labels.json)
    names it, and the predictions are multi-tissue masks (one of them holds a value of another tissue
    of `constants.TISSUE_LABELS`; sarco's multi-label models write those values). Judged over the
    prediction SET: a case whose prediction holds muscle only, beside multi-tissue ones, is compared
    too (its IMAT/VAT/SAT not predicted: Dice 0 where the reference has them), never left out.
  * Compared at the reference's (annotated) slice, every labelled pixel counted (the "label" HU
    convention), so Dice and areas describe the segmentation, not an HU rule.
  * Area agreement reuses `evaluation.agreement` (Bland–Altman bias and 95 % LoA, ICC(2,1)/(3,1));
    HU bias = mean over cases of (predicted − reference) mean HU, where both are defined.
  * Tissue layout (`sarco_nn.tissue_layout`, the rule `sarco measure` and `sarco predict` apply): in a
    per-tissue evaluation both masks are judged at the compared slice, each with its own label map (the
    prediction with sarco's, the reference with its labels.json); a case either fails is listed and
    counted, and stays in every statistic (evaluate measures agreement for the labels as given; a
    swapped reference is a warning about the truth, not a reason to drop the case).
  * Both masks empty of a tissue: Dice 1 in that case's row (as `metrics.dice_iou`), area 0 on both sides;
    the summary's Dice counts only the cases where either mask holds the tissue (`dice_n`): a tissue absent
    from every reference and prediction (an annotation protocol without VAT) has no Dice (n/a), not 1.000.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sarco_nn.body_composition import TISSUES, hu_stats
from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.evaluation.agreement import agreement
from sarco_nn.evaluation.metrics import dice_iou
from sarco_nn.measure import label_mask, area_cm2
from sarco_nn.status import Reason
from sarco_nn.tissue_layout import layout_reason

TISSUE_RULE = ("each tissue named by the reference's labels.json is compared, when the predictions are multi-tissue "
               "masks (any one holds a tissue value beyond muscle), in every case (a prediction holding muscle only "
               "then predicted none of the other tissues), at the reference's slice, every labelled pixel counted; "
               "HU bias = mean(predicted − reference mean HU); the Dice summary counts only the cases where either "
               "mask holds the tissue (both empty: no evidence either way)")

LAYOUT_RULE = ("in a per-tissue evaluation, each case's prediction and reference are checked for tissue labels on the "
               "wrong side of the muscle wall (sarco_nn.tissue_layout, as measure and predict do: SAT mostly inside "
               "the muscle's convex hull, VAT mostly outside, IMAT outside beyond the SAT beside it), at the compared "
               "slice, each with its own label map; such a case is listed and stays in every statistic, its flag "
               "scored as measured (sarco predict would withhold it): evaluate measures agreement for the labels as "
               "given")

#: Per-case yes/no columns (cases.csv) of a per-tissue evaluation: the tissue-layout check failed
#: for the prediction / the reference (`LAYOUT_RULE`).
LAYOUT_COLUMNS: tuple[str, ...] = ("tissue_layout_pred", "tissue_layout_ref")


#: Per-case columns (cases.csv) for every evaluated tissue.
def case_columns(tissue: str) -> tuple[str, ...]:
    return (f"{tissue}_dice", f"{tissue}_area_ref_cm2", f"{tissue}_area_pred_cm2", f"{tissue}_area_error_cm2",
            f"{tissue}_hu_ref", f"{tissue}_hu_pred", f"{tissue}_hu_error")


ALL_CASE_COLUMNS: tuple[str, ...] = (*(c for t in TISSUES for c in case_columns(t)), *LAYOUT_COLUMNS)

_NAMES = {"muscle": "Skeletal muscle", "imat": "IMAT", "vat": "VAT", "sat": "SAT"}


def holds_tissues(values) -> bool:
    """True when a mask's label values include a tissue beyond muscle (a multi-tissue mask)."""
    others = {v for k, v in TISSUE_LABELS.items() if k != "muscle"}
    return bool(others & {int(v) for v in values})


def carries_tissues(row: dict) -> bool:
    """True when a cases.csv row was compared per tissue (it has tissue Dice columns)."""
    return any(row.get(f"{t}_dice") is not None for t in TISSUES)


def carried_tissues(ref_labels: dict[str, int] | None, pred_values,
                    multi_tissue: bool | None = None) -> dict[str, tuple[int, int]]:
    """{tissue: (reference value, prediction value)} for the tissues both sides carry; {} for muscle-only.

    multi_tissue: the prediction set is multi-tissue (`evaluate_cases` decides it over every case), so
    this case is compared even when its prediction holds muscle only; None: judged from `pred_values`.
    """
    if not ref_labels:
        return {}
    if not (holds_tissues(pred_values) if multi_tissue is None else multi_tissue):
        return {}
    carried = {t: (int(ref_labels[t]), TISSUE_LABELS[t]) for t in TISSUES if t in ref_labels}
    return carried if len(carried) > 1 else {}


def case_tissue_metrics(ref2d: np.ndarray, pred2d: np.ndarray, carried: dict[str, tuple[int, int]],
                        spacing_yx_mm: tuple[float, float], ct2d: np.ndarray | None = None) -> dict:
    """Flat per-case columns (`case_columns`) of every carried tissue at one slice."""
    out: dict = {}
    for tissue, (ref_value, pred_value) in carried.items():
        ref, pred = label_mask(ref2d, ref_value), label_mask(pred2d, pred_value)
        dice, _ = dice_iou(pred, ref)
        a_ref, a_pred = area_cm2(int(ref.sum()), spacing_yx_mm), area_cm2(int(pred.sum()), spacing_yx_mm)
        hu_ref = hu_pred = None
        if ct2d is not None:
            hu_ref, hu_pred = (None if m is None else float(m) for m in (hu_stats(ct2d[ref])[0], hu_stats(ct2d[pred])[0]))
        out.update({
            f"{tissue}_dice": dice,
            f"{tissue}_area_ref_cm2": a_ref,
            f"{tissue}_area_pred_cm2": a_pred,
            f"{tissue}_area_error_cm2": a_pred - a_ref,
            f"{tissue}_hu_ref": hu_ref,
            f"{tissue}_hu_pred": hu_pred,
            f"{tissue}_hu_error": None if hu_ref is None or hu_pred is None else hu_pred - hu_ref,
        })
    return out


def case_layout(ref2d: np.ndarray, pred2d: np.ndarray, ref_labels: dict[str, int],
                spacing_yx_mm: tuple[float, float]) -> tuple[dict, Reason | None, Reason | None]:
    """(`LAYOUT_COLUMNS` cells, the reference's reason, the prediction's reason) of one compared slice:
    `tissue_layout.layout_reason` of each mask with its own label map (the prediction's: sarco's
    `TISSUE_LABELS`, which its multi-tissue models write)."""
    ref_reason = layout_reason(ref2d, ref_labels, spacing_yx_mm, "reference")
    pred_reason = layout_reason(pred2d, TISSUE_LABELS, spacing_yx_mm, "prediction")
    return ({"tissue_layout_pred": pred_reason is not None, "tissue_layout_ref": ref_reason is not None},
            ref_reason, pred_reason)


def layout_summary(rows: list[dict]) -> dict:
    """Summary keys of the tissue-layout check: the cases whose prediction / reference failed it
    (empty lists, and counts 0, also for a muscle-only evaluation, where nothing is judged:
    `n_tissue_layout_judged` 0 then)."""
    judged = [r for r in rows if r.get("tissue_layout_pred") is not None]
    pred = [r["case_id"] for r in judged if r["tissue_layout_pred"]]
    ref = [r["case_id"] for r in judged if r["tissue_layout_ref"]]
    return {"n_tissue_layout_judged": len(judged),
            "n_tissue_layout_predictions": len(pred), "tissue_layout_predictions": pred,
            "n_tissue_layout_references": len(ref), "tissue_layout_references": ref}


def layout_lines(summary: dict) -> list[str]:
    """The report.md paragraph of the tissue-layout check (none when no case was judged)."""
    n = summary.get("n_tissue_layout_judged") or 0
    if not n:
        return []
    pred, ref = summary.get("tissue_layout_predictions") or [], summary.get("tissue_layout_references") or []
    return ["## Tissue layout", "",
            f"Of {n} case(s) compared per tissue, {len(pred)} prediction(s) ({', '.join(pred) or 'none'}) and "
            f"{len(ref)} reference(s) ({', '.join(ref) or 'none'}) have tissue labels on the wrong side of the muscle "
            "wall (`tissue_layout`: swapped or mislabelled tissues). They stay in every statistic above and below: "
            "evaluate measures agreement for the labels as given (a flagged prediction's sarcopenia flag is scored "
            "as measured, though `sarco predict` would withhold it); a flagged reference is a doubt about the "
            "truth: check its labels.", ""]


def tissue_summary(rows: list[dict]) -> dict:
    """{tissue: {n, dice_mean/median/min, area agreement, hu_bias, hu_n}} over rows carrying it."""
    summary = {}
    for tissue in TISSUES:
        have = [r for r in rows if r.get(f"{tissue}_dice") is not None]
        if not have:
            continue
        held = [r for r in have if r[f"{tissue}_area_ref_cm2"] > 0 or r[f"{tissue}_area_pred_cm2"] > 0]
        dice = np.array([r[f"{tissue}_dice"] for r in held], dtype=float)
        area = agreement([r[f"{tissue}_area_pred_cm2"] for r in have], [r[f"{tissue}_area_ref_cm2"] for r in have])
        hu_err = [r[f"{tissue}_hu_error"] for r in have if r.get(f"{tissue}_hu_error") is not None]
        summary[tissue] = {
            "n": len(have),
            "dice_n": len(held),
            "dice_mean": float(dice.mean()) if held else None,
            "dice_median": float(np.median(dice)) if held else None,
            "dice_min": float(dice.min()) if held else None,
            "area_agreement_cm2": area.to_dict(),
            "hu_n": len(hu_err),
            "hu_bias": float(np.mean(hu_err)) if hu_err else math.nan,
        }
    return summary


def plot_key(tissue: str) -> str:
    """The `plots` key (summary.json "plots", report.md) of a tissue's area Bland–Altman plot."""
    return f"Bland–Altman {_NAMES.get(tissue, tissue)} area"


def write_plots(rows: list[dict], tissues: dict | None, out_dir: Path) -> dict[str, str]:
    """One area Bland–Altman plot per evaluated tissue (bland_altman_<tissue>.png); {plot_key: file}.

    Why: the report's per-tissue section shows the agreement, not only its numbers (the SMA gets the same)."""
    from sarco_nn.evaluation.report import plot_bland_altman

    plots: dict[str, str] = {}
    for tissue, t in (tissues or {}).items():
        have = [r for r in rows if r.get(f"{tissue}_dice") is not None]
        if not have:
            continue
        a = t["area_agreement_cm2"]
        name = f"bland_altman_{tissue}.png"
        plot_bland_altman([r[f"{tissue}_area_pred_cm2"] for r in have], [r[f"{tissue}_area_ref_cm2"] for r in have],
                          Path(out_dir) / name, f"{_NAMES.get(tissue, tissue)} area", "cm²",
                          _nan(a.get("bias")), _nan(a.get("loa_low")), _nan(a.get("loa_high")))
        plots[plot_key(tissue)] = name
    return plots


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def console_line(tissues: dict | None) -> str | None:
    """The one line `sarco evaluate` prints per run for the tissues evaluated (None for muscle only), so
    a four-tissue run shows IMAT/VAT/SAT where the muscle figures are shown, not only in report.md."""
    if not tissues:
        return None

    def num(value, digits: int, sign: str = "") -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{sign}.{digits}f}"

    parts = [f"{_NAMES.get(t, t)} {num(v['dice_mean'], 3)}{'' if v.get('dice_n', 1) else ' (absent in every case)'} / {num(v['area_agreement_cm2'].get('bias'), 2, '+')} cm² / "
             f"{num(v['hu_bias'], 1, '+')} HU" for t, v in tissues.items()]
    return "per tissue (Dice mean / area bias / HU bias): " + " · ".join(parts)


def report_lines(tissues: dict | None, fmt, plots: dict[str, str] | None = None) -> list[str]:
    """One markdown section per evaluated tissue (empty when no tissue beyond muscle was compared),
    with its area Bland–Altman plot when `plots` holds it (`write_plots`)."""
    if not tissues:
        return []
    plots = plots or {}
    lines = [f"Per-tissue rule: {TISSUE_RULE}.", ""]
    for tissue, t in tissues.items():
        a = t["area_agreement_cm2"]
        lines += [
            f"## Tissue: {_NAMES.get(tissue, tissue)}",
            "",
            "| n | Dice mean | Dice median | Dice min | area bias (cm²) | 95 % LoA (cm²) | ICC(2,1) | ICC(3,1) | "
            "HU bias (n) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {t['n']} | {fmt(t['dice_mean'], 4)} | {fmt(t['dice_median'], 4)} | {fmt(t['dice_min'], 4)} | "
            f"{fmt(a['bias'])} | {fmt(a['loa_low'])} … {fmt(a['loa_high'])} | {fmt(a['icc_2_1'], 3)} | "
            f"{fmt(a['icc_3_1'], 3)} | {fmt(t['hu_bias'])} ({t['hu_n']}) |",
            "",
            *([f"Dice over the {t['dice_n']} of {t['n']} case(s) where either mask holds it; in the others "
               "neither does (Dice undefined, not counted).", ""] if t.get("dice_n", t["n"]) < t["n"] else []),
            *([f"![{plot_key(tissue)}]({plots[plot_key(tissue)]})", ""] if plot_key(tissue) in plots else []),
        ]
    return lines


__all__ = ["ALL_CASE_COLUMNS", "LAYOUT_COLUMNS", "LAYOUT_RULE", "TISSUE_RULE", "carried_tissues", "carries_tissues",
           "case_columns", "case_layout", "case_tissue_metrics", "holds_tissues", "layout_lines", "layout_summary",
           "console_line", "plot_key", "report_lines", "tissue_summary", "write_plots"]
