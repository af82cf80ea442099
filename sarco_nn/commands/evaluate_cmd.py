"""`sarco evaluate` (over `api.evaluate`): predictions vs reference masks → cases.csv, summary.json, report.md, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sarco_nn import api
from sarco_nn.thresholds import DEFAULT_THRESHOLD_SET


def evaluate(
    pred_dir: Optional[Path] = typer.Argument(
        None, help="Predicted masks (<case>.nii.gz), or a `sarco predict` output folder. Not with --crossval."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Reference (manual) masks, same case names."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", "-c", help="clinical.csv (case_id, sex, height_m, …)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Report folder (default PRED_DIR/evaluation; crossval: <model>/sarco_evaluation)."),
    thresholds: str = typer.Option(DEFAULT_THRESHOLD_SET, "--thresholds", help="paper, prado, martin, or a JSON/YAML file."),
    images: Optional[Path] = typer.Option(None, "--images", help="CT images (<case>.nii.gz or <case>_0000.nii.gz): HU, overlays."),
    at_annotated: Optional[Path] = typer.Option(
        None, "--at-annotated",
        help="Volumes: predictions made at the annotated L3 slices (sarco predict --l3-csv REPORT/annotated_l3.csv)."),
    crossval: bool = typer.Option(False, "--crossval", help="Evaluate nnU-Net's cross-validation predictions per fold."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset id or name (crossval)."),
    trainer: Optional[str] = typer.Option(
        None, "--trainer", help="Crossval, when several models exist: smit/nnunet/resenc, a trainer class name or a "
        "whole model folder name (matched exactly)."),
    label: Optional[int] = typer.Option(
        None, "--label", help="Muscle value in the REFERENCE masks (default: the drop's labels.json beside them, "
        "else 1). Predictions are read with sarco's own label 1."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace (default $SARCO_HOME or ./sarco_workspace)."),
):
    """Dice/HD95, SMA agreement (Bland–Altman, ICC), sarcopenia accuracy with Wilson CIs, threshold impact.

    Exit status 1 when a case was skipped (a prediction or reference without its pair, an unreadable
    file, a file name that gives no case id): the report is still written, each skipped case is a
    `failed` row of cases.csv saying why, and the summary line counts them; a script then sees that
    the statistics cover fewer cases than were given.

    Whole volumes: the prediction's level (the slice `sarco predict` chose) is compared with the
    annotated slice, in slices and mm, and SMA is measured at each one's own level.

    Examples:
      sarco evaluate results/ --reference manual_masks/ --clinical clinical.csv -o report/
      sarco evaluate --crossval --dataset Freeman
    """
    summary = api.evaluate(pred_dir, reference=reference, clinical=clinical, output=output, thresholds=thresholds,
                           images=images, at_annotated=at_annotated, crossval=crossval, dataset=dataset,
                           trainer=trainer, label=label, workspace=workspace, cli_names=True)
    _print_cases(Path(summary["report_dir"]) / "cases.csv")
    _print_summary(summary)
    if summary.get("n_cases_skipped"):
        raise typer.Exit(1)


def _print_cases(cases_csv: Path, limit: int = 50) -> None:
    """Per-case table (true vs predicted SMA, Dice, flags) for small cohorts such as the demo."""
    import csv

    if not cases_csv.exists():
        return
    with open(cases_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or len(rows) > limit:
        return
    def num(value: str, digits: int) -> str:
        try:
            return f"{float(value):.{digits}f}"
        except ValueError:
            return value or "n/a"

    typer.echo(f"{'case':<22}{'SMA ref':>10}{'SMA pred':>10}{'err %':>8}{'Dice':>8}  flag ref/pred")
    for r in rows:
        typer.echo(f"{r['case_id']:<22}{num(r['sma_ref_cm2'], 1):>10}{num(r['sma_pred_cm2'], 1):>10}"
                   f"{num(r['sma_error_percent'], 1):>8}{num(r['dice'], 3):>8}  "
                   f"{r['sarcopenic_ref'] or '?'}/{r['sarcopenic_pred'] or '?'}")


def _print_summary(s: dict) -> None:
    def f(value, digits=2, pct=False):
        if value is None:
            return "n/a"
        return f"{value * 100:.1f} %" if pct else f"{value:.{digits}f}"

    skipped = s.get("n_cases_skipped") or 0
    typer.echo(f"cases: {s['n_cases']} (in the statistics {s['n_cases_in_statistics']}, classified "
               f"{s['n_cases_classified']}), threshold set {s['threshold_set']}"
               + (f"; skipped {skipped} (not evaluated, failed rows in cases.csv: "
                  f"{', '.join(s['skipped_cases'][:5])}{', …' if skipped > 5 else ''})" if skipped else ""))
    if s["excluded_from_statistics"]:
        typer.echo(f"left out of the statistics (reference without muscle): {', '.join(s['excluded_from_statistics'])}")
    if s["failed_predictions"]:
        typer.echo(f"failed predictions, counted against the model: {', '.join(s['failed_predictions'])}")
    typer.echo(f"Dice {f(s['dice_mean'], 4)} (median {f(s['dice_median'], 4)}), HD95 {f(s['hd95_mean_mm'])} mm "
               "(max of the two directed 95th percentiles, at the reference's slice)")
    typer.echo(f"SMA: MAE {f(s['sma_mae_cm2'])} cm² ({f(s['sma_mape_percent'])} %), bias {f(s['sma_bias_cm2'])} cm², "
               f"LoA {f(s['sma_loa_low_cm2'])}..{f(s['sma_loa_high_cm2'])} cm², ICC(2,1) {f(s['sma_icc'], 3)}")
    typer.echo(f"sarcopenia: accuracy {f(s['accuracy'], pct=True)}, sensitivity {f(s['sensitivity'], pct=True)}, "
               f"specificity {f(s['specificity'], pct=True)}")
    tissue_line = api.evaluation_tissue_line(s)
    if tissue_line:
        typer.echo(tissue_line)
    l3 = s.get("l3")
    if l3:
        at_annotated = (f", at the annotated slice {f(l3['sma_abs_error_percent_at_annotated_level'])} %"
                        if l3["n_with_annotated_level_prediction"] else "")
        typer.echo(f"L3 level ({l3['n']} volumes): error {f(l3['error_slices_mean_abs'])} slices / "
                   f"{f(l3['error_mm_mean_abs'])} mm (max {f(l3['error_mm_max_abs'])} mm), "
                   f"{l3['within_1_slice']}/{l3['n']} within ±1 slice; |SMA err| at predicted level "
                   f"{f(l3['sma_abs_error_percent_at_predicted_level'])} %{at_annotated}")
    for row in [*s["folds"], s["pooled"]]:
        typer.echo(f"  fold {row['fold']}: n {row['n']}, Dice {f(row['dice_mean'], 4)}, "
                   f"|SMA err| mean {f(row['sma_abs_error_percent_mean'])} % max {f(row['sma_abs_error_percent_max'])} %, "
                   f"accuracy {f(row['accuracy'], pct=True)}")
    for what, cases in (s.get("problems") or {}).items():
        typer.echo(f"warning: {what} ({len(cases)}): {', '.join(cases)}", err=True)
    typer.echo(f"report: {s['report_dir']}")
