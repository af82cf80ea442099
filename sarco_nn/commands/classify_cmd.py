"""`sarco classify train|predict|compare`: the study's CNN classification baseline.

Thin wrappers over `api.classify_train` / `classify_predict` / `classify_compare`, registered
with `app.add_typer(classify_app, name="classify")`. Heavy imports stay inside the api functions
so `sarco --help` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sarco_nn import api
from sarco_nn.commands.runner import resumes

classify_app = typer.Typer(no_args_is_help=True, add_completion=False,
                           help="Sarcopenic / not straight from the L3 slice (DenseNet121, ResNet50, InceptionV3, "
                                "InceptionResNetV2), compared with the segmentation-derived flag.")

_WORKSPACE = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $SARCO_HOME or ./sarco_workspace).")
_DATASET = typer.Option(None, "--dataset", "-d", help="Dataset id or name (default: the only one in the workspace).")
_THRESHOLDS = typer.Option("paper", "--thresholds", help="Threshold set deriving labels from masks: paper, prado, martin, or a JSON file.")


@classify_app.command("train")
@resumes()  # a rerun resumes the fold's earlier run unless --restart
def train(fold: str = typer.Argument(..., help="Fold 0-4 of splits_final.json, `all` (every case) or `5fold` (0-4 in turn)."),
          arch: str = typer.Option("densenet121", "--arch", "-a", help="densenet121, resnet50, inception_v3 or inception_resnet_v2 (needs timm)."),
          weights: Optional[Path] = typer.Option(None, "--weights", help="Local state dict (RadImageNet or ImageNet); random init without it."),
          unfreeze: Optional[str] = typer.Option(None, "--unfreeze", help="incremental (default with --weights), all (default without), or head."),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per stage (incremental) or in total (all/head)."),
          batch_size: int = typer.Option(16, "--batch-size", help="Slices per batch."),
          lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the first stage (later stages: halved each)."),
          input_size: Optional[int] = typer.Option(None, "--input-size", help="Input edge in pixels (default 224, inception 299)."),
          patience: int = typer.Option(8, "--patience", help="Epochs without a better validation loss before a stage stops."),
          balance: str = typer.Option("weights", "--balance", help="weights (class-weighted loss) or sampler (balanced batches)."),
          thresholds: str = _THRESHOLDS,
          restart: bool = typer.Option(False, "--restart", help="Discard this fold's earlier run instead of resuming it."),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          dataset: Optional[str] = _DATASET,
          workspace: Optional[Path] = _WORKSPACE):
    """Train (or resume) one fold of the classifier on the converted dataset's L3 slices.

    Example: sarco classify train 0 --arch densenet121 --weights RadImageNet-DenseNet121.pt
    """
    from sarco_nn.training.run import expand_folds  # the one `5fold` rule, shared with `sarco train`

    folds = expand_folds(fold)
    for f in folds:
        out = api.classify_train(f, arch=arch, weights=weights, unfreeze=unfreeze, epochs=epochs, batch_size=batch_size,
                                 lr=lr, input_size=input_size, patience=patience, balance=balance,
                                 thresholds=thresholds, restart=restart, device=device, dataset=dataset,
                                 workspace=workspace, log=typer.echo)
        typer.echo(f"fold {f}: {out}")


@classify_app.command("predict")
def predict(inputs: Path = typer.Option(..., "--input", "-i", help="CT file, DICOM series folder, or folder of scans."),
            out_dir: Path = typer.Option(..., "--output", "-o", help="Output folder (predictions.csv)."),
            arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Which trained architecture (default: the only one)."),
            folds: Optional[str] = typer.Option(None, "--folds", help="Comma-separated folds (default: every cross-validation fold)."),
            l3_slice: Optional[int] = typer.Option(None, "--l3-slice", help="Axial slice index to use in a volume."),
            device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
            dataset: Optional[str] = _DATASET,
            workspace: Optional[Path] = _WORKSPACE):
    """Probability that each scan is sarcopenic (mean of the fold classifiers).

    Example: sarco classify predict -i scans/ -o classified/
    """
    chosen = None if folds is None else [f.strip() for f in folds.split(",") if f.strip()]
    result = api.classify_predict(inputs, out_dir, arch=arch, folds=chosen, l3_slice=l3_slice, device=device,
                                  dataset=dataset, workspace=workspace, log=typer.echo)
    typer.echo(f"predictions: {result.predictions_csv}")
    if result.n_failed:
        typer.echo(f"{result.n_failed} scan(s) failed; see the status/reason columns", err=True)
        raise typer.Exit(1)


@classify_app.command("compare")
def compare(arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Which trained architecture (default: the only one)."),
            trainer: Optional[str] = typer.Option(None, "--trainer", "-t", help="Segmentation model folder (or part of its name) when several exist."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report folder (default sarco_classification/<Dataset>/<arch>/comparison)."),
            thresholds: str = _THRESHOLDS,
            dataset: Optional[str] = _DATASET,
            workspace: Optional[Path] = _WORKSPACE):
    """Classifier vs segmentation-derived flag on the same folds (Wilson CIs, AUROC, missed patients).

    Per fold and pooled: accuracy, sensitivity, specificity, balanced accuracy and AUROC of both
    approaches, and the sarcopenic patients each one missed (comparison.md / .csv).

    Example: sarco classify compare --arch densenet121 --trainer SarcoSMITTrainer
    """
    summary = api.classify_compare(arch=arch, trainer=trainer, output=output, thresholds=thresholds, dataset=dataset,
                                   workspace=workspace, log=typer.echo)
    for row in summary["rows"]:
        if row["fold"] == "pooled":
            typer.echo(f"{row['approach']:<13} n {row['n']}: accuracy {_pct(row['accuracy'])}, sensitivity "
                       f"{_pct(row['sensitivity'])}, specificity {_pct(row['specificity'])}, balanced "
                       f"{_pct(row['balanced_accuracy'])}")
    for approach, missed in summary["missed_sarcopenic"].items():
        typer.echo(f"sarcopenic missed by {approach}: {', '.join(missed) or 'none'}")


def _pct(value) -> str:
    import math

    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f} %"
