"""The `sarco` command: one thin function per command over `sarco_nn.api` (parse options, call, print).

`sarco X` calls `api.X` (hyphens as underscores); the work lives in the library modules behind it,
so a script and the command line cannot disagree. `api` keeps its heavy imports inside its
functions, so `sarco --help` stays fast.
"""

from __future__ import annotations

from sarco_nn.commands.startup import exit_130_on_ctrl_c

_restore_ctrl_c = exit_130_on_ctrl_c()  # first: a Ctrl-C during the imports below is one line, exit 130
try:  # an import that fails (a broken install) gives the importer its own Ctrl-C back, as a finished one does
    from pathlib import Path  # noqa: E402  (after the Ctrl-C handler, as every import below)
    from typing import Optional

    import typer

    from sarco_nn import api
    from sarco_nn.commands.runner import resumes, run_app
except BaseException:
    _restore_ctrl_c()
    raise

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Skeletal muscle area at L3 on CT and sarcopenia detection, built on nnU-Net v2 with a SMIT trainer.")

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $SARCO_HOME or ./sarco_workspace).")
DatasetOpt = typer.Option(None, "--dataset", "-d", help="Dataset id or name (default: the only one in the workspace).")


@app.command("demo-data")
def demo_data(out_dir: Path = typer.Argument(..., help="New folder for the drop-in phantom dataset."),
              cases: int = typer.Option(40, help="Number of phantom cases."),
              seed: int = typer.Option(0, help="Random seed (different seeds give disjoint cohorts)."),
              matrix: int = typer.Option(512, help="Image matrix size in pixels."),
              volumes: bool = typer.Option(False, help="Whole T12-S1 volumes with the mask on the L3 slice."),
              case_prefix: str = typer.Option("case", help="Prefix of the case ids."),
              family: str = typer.Option("A", help="Phantom family: A (the demo's training site), A-wide (A "
                                                   "domain-randomised: arms, kernels, noise, contrast, wide air, "
                                                   "truncation) or B (an independently designed external site).")):
    """Write synthetic L3 phantoms in the drop-in layout (images/, masks/, labels.json, clinical.csv, truth.csv).

    Masks hold muscle 1, IMAT 2, VAT 3, SAT 4 (declared in labels.json). Example:
    sarco demo-data demo/drop --cases 40 --seed 1;  sarco demo-data demo/site_b --family B --seed 3
    """
    folder = api.demo_data(out_dir, cases=cases, seed=seed, matrix=matrix, volumes=volumes, case_prefix=case_prefix,
                           family=family)
    typer.echo(f"wrote {cases} family-{api.phantom_family(family)} phantom cases to {folder}")


@app.command()
def convert(drop_dir: Path = typer.Argument(..., help="Dropped folder with images/, masks/ and clinical.csv."),
            name: str = typer.Option(..., "--name", "-n", help="Dataset name, e.g. Freeman."),
            dataset_id: Optional[int] = typer.Option(None, "--id", help="nnU-Net dataset id (default: next free from 501)."),
            overwrite: bool = typer.Option(False, help="Replace the converted dataset of that name (its plans are removed: run sarco plan again)."),
            keep_tissues: bool = typer.Option(False, "--keep-tissues", help="Keep IMAT/VAT/SAT as labels.json names "
                                              "them (muscle 1, imat 2, vat 3, sat 4): train a body-composition model."),
            workspace: Optional[Path] = WorkspaceOpt):
    """Turn a dropped dataset into an nnU-Net raw dataset (one L3 slice per case, pseudonymised ids).

    Example: sarco convert ~/l3_drop --name Freeman ; sarco convert demo/drop --name Tissues --keep-tissues
    """
    result = api.convert(drop_dir, name=name, dataset_id=dataset_id, overwrite=overwrite, keep_tissues=keep_tissues,
                         workspace=workspace)
    typer.echo(f"{result.dataset_name}: {result.n_cases} cases written to {result.dataset_dir}")
    for note in result.notes:
        typer.echo(f"  note: {note}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
def plan(dataset: Optional[str] = typer.Argument(None, help="Dataset id or name (default: every dataset not yet planned)."),
         preset: str = typer.Option("default", "--preset", "-p", help="Plan preset from sarco_nn/plans/ (default, cpu, smoke) or a JSON file."),
         processes: Optional[int] = typer.Option(None, help="Worker processes (default: up to 4)."),
         workspace: Optional[Path] = WorkspaceOpt):
    """Fingerprint, plan and preprocess with nnU-Net, then apply a preset (CT window -175..250 HU -> [0,1]).

    Example: sarco plan --preset cpu
    """
    summaries = api.plan(dataset, preset=preset, processes=processes, workspace=workspace)
    if not summaries:
        typer.echo(f"every dataset is already planned with preset {preset!r}; name one to re-plan it.")
        return
    for summary in summaries:
        typer.echo(f"\n{summary['dataset']} planned with preset {summary['preset']} ({summary['plans']})")
        for key in ("cases", "median_inplane_spacing_mm", "target_spacing_mm", "patch_size", "batch_size", "network",
                    "normalization"):
            typer.echo(f"  {key.replace('_', ' ')}: {summary[key]}")


@app.command()
@resumes("run it again with --continue to resume from the fold's last checkpoint (without it, training starts over)")
def train(fold: str = typer.Argument(..., help="Fold 0-4, `all` (every case, no validation) or `5fold` (0-4 in turn)."),
          dataset: Optional[str] = DatasetOpt,
          trainer: str = typer.Option("smit", "--trainer", "-t", help="smit (default), nnunet, resenc, or an nnU-Net trainer class."),
          preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Which planned preset (default: the only one)."),
          epochs: Optional[int] = typer.Option(None, help="Override the preset's number of epochs."),
          iterations: Optional[int] = typer.Option(None, help="Override the preset's iterations per epoch."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          continue_training: bool = typer.Option(False, "--continue", "-c", help="Resume from the last checkpoint."),
          pretrained: Optional[Path] = typer.Option(None, help="SMIT encoder weights (sarco pretrain output or official checkpoint)."),
          num_gpus: int = typer.Option(1, "--num-gpus", help="Train on N CUDA GPUs (nnU-Net's DDP, one process per GPU)."),
          val_best: bool = typer.Option(False, "--val-best", help="Validate with checkpoint_best instead of checkpoint_final (nnU-Net's --val_best)."),
          workspace: Optional[Path] = WorkspaceOpt):
    """Train one nnU-Net fold with the SMIT trainer (or a baseline); resumable with --continue.

    Example: sarco train 0 --trainer smit --pretrained encoder.pt ; sarco train 0 --num-gpus 4
    """
    from sarco_nn.training.run import expand_folds

    options = api.TrainOptions(dataset=dataset, trainer=trainer, preset=preset, epochs=epochs, iterations=iterations,
                               device=device, continue_training=continue_training, pretrained=pretrained,
                               num_gpus=num_gpus, val_best=val_best)
    for f in expand_folds(fold):
        out = api.train(f, options, workspace=workspace)
        typer.echo(f"fold {f} done: {out}")


@app.command()
def postprocess(dataset: Optional[str] = DatasetOpt,
                trainer: Optional[str] = typer.Option(None, "--trainer", "-t"),
                preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Which planned preset (default: the only one)."),
                workspace: Optional[Path] = WorkspaceOpt):
    """Let nnU-Net decide the postprocessing on the cross-validation predictions (run after all folds).

    Example: sarco postprocess --trainer smit
    """
    decision = api.postprocess(dataset=dataset, trainer=trainer, preset=preset, workspace=workspace)
    before = decision.get("input_folder", {}).get("foreground_mean", {}).get("Dice")
    after = decision.get("postprocessed", {}).get("foreground_mean", {}).get("Dice")
    typer.echo(f"postprocessing: {decision.get('postprocessing_fns') or 'none'} (cross-validation Dice {before} -> {after})")


@app.command()
@resumes()  # finished cases are kept (results.csv, the journal); a rerun does the rest
def predict(inputs: Path = typer.Option(..., "--input", "-i", help="CT file, DICOM series folder, or folder of scans."),
            out_dir: Path = typer.Option(..., "--output", "-o", help="Output folder (masks/, overlays/, results.csv)."),
            clinical: Optional[Path] = typer.Option(None, help="clinical.csv (case_id, sex, height_m) for SMI and flags."),
            thresholds: str = typer.Option("paper", help="Threshold set: paper, prado, martin, or a JSON file."),
            fast: bool = typer.Option(False, "--fast", help="No test-time mirroring."),
            l3_slice: Optional[int] = typer.Option(None, "--l3-slice", help="L3 slice of every volume, counted along the file's own slice axis (not with --l3-csv or --l3-from: refused)."),
            l3_csv: Optional[Path] = typer.Option(None, "--l3-csv", help="CSV case_id,l3_slice giving each volume's L3 slice."),
            l3_from: Optional[Path] = typer.Option(None, "--l3-from", help="Vertebra label map (TotalSegmentator numbering, L3 = 29): a file or a folder of <case>.nii.gz."),
            locator: str = typer.Option("auto", "--locator", help="L3 localizer for volumes: auto, vertebrae, model, totalsegmentator."),
            l3_rule: str = typer.Option("centroid", "--l3-rule", help="L3 slice from vertebra labels: centroid or max-area."),
            slab: int = typer.Option(1, "--slab", help="Measure the mean of N slices around the L3 level (1 = the slice)."),
            hu_gate: bool = typer.Option(False, "--hu-gate", help="Count only muscle pixels within -29..150 HU."),
            dataset: Optional[str] = DatasetOpt,
            trainer: Optional[str] = typer.Option(None, "--trainer", "-t", help="Which trained model (default: the only one)."),
            preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Which planned preset (default: the only one)."),
            device: str = typer.Option("auto", help="auto, cpu or cuda."),
            overwrite: bool = typer.Option(False, help="Allow an output folder holding another model's results."),
            dicom_seg: bool = typer.Option(False, "--dicom-seg", help="Also write a DICOM SEG per DICOM scan (dicom_seg/). "
                                           "Opt-in: the one output that carries patient identity."),
            part: Optional[int] = typer.Option(None, "--part", help="Predict only share PART (0..PARTS-1) of the inputs, e.g. $SLURM_ARRAY_TASK_ID; give each part its own -o."),
            parts: Optional[int] = typer.Option(None, "--parts", help="Number of shares the batch is split into (merge them with `sarco predict-merge`)."),
            io_workers: int = typer.Option(api.PredictOptions.io_workers, "--io-workers", min=1, help="Threads reading the next scans and writing masks/overlays while the network runs (1: one scan at a time)."),
            trunk_only: bool = typer.Option(api.PredictOptions.trunk_only, "--trunk-only/--keep-outside-trunk", help="Count tissue only inside the trunk, the largest body region of the slice (the default: arms in the field of view are not SMA; measured on site-B phantoms, README 'External validity'). --keep-outside-trunk counts every predicted pixel."),
            workspace: Optional[Path] = WorkspaceOpt):
    """Segment muscle with the fold ensemble and report SMA (cm²), SMI, muscle HU and the sarcopenia flag.

    Example: sarco predict -i scans/ -o results/ --clinical clinical.csv
    """
    options = api.PredictOptions(dataset=dataset, trainer=trainer, preset=preset, clinical_csv=clinical,
                                 thresholds=thresholds, fast=fast, device=device, l3_slice=l3_slice, l3_csv=l3_csv,
                                 l3_from=l3_from, locator=locator, l3_rule=l3_rule, slab=slab, hu_gate=hu_gate,
                                 overwrite=overwrite, part=part, parts=parts, dicom_seg=dicom_seg,
                                 io_workers=io_workers, trunk_only=trunk_only)
    result = api.predict(inputs, out_dir, options, workspace=workspace)
    typer.echo(f"results: {result.results_csv}")
    if result.n_failed:
        for reasons in result.errors:
            typer.echo(f"error: {reasons}", err=True)
        typer.echo(f"{result.n_failed} case(s) failed; see {result.results_csv.parent / 'errors.log'}", err=True)
        raise typer.Exit(1)


@app.command("predict-merge")
def predict_merge(parts: list[Path] = typer.Argument(..., help="The -o folders of every `sarco predict --part I --parts N` run."),
                  out_dir: Path = typer.Option(..., "--output", "-o", help="New folder for the merged results.csv (not a part folder)."),
                  allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Merge a batch whose parts have not finished every scan: each missing scan gets a failed row (reason not_predicted); exit status 1.")):
    """Merge the results.csv of the parts of one batch into one (masks stay in the part folders).

    A part that has not finished every one of its scans (killed, or still running) is refused,
    naming the part and its missing cases, unless --allow-incomplete.

    Example: sarco predict-merge out/part0 out/part1 out/part2 -o out/all
    """
    merged = api.predict_merge(parts, output=out_dir, allow_incomplete=allow_incomplete)
    for line in merged.warnings:
        typer.echo(f"warning: {line}", err=True)
    missing = f", {merged.n_missing} of them not predicted" if merged.n_missing else ""
    typer.echo(f"merged {merged.n_rows} row(s) of {merged.n_parts} part(s){missing}: {merged.results_csv}")
    if merged.n_missing:
        raise typer.Exit(1)


def _register_command_modules() -> None:
    from sarco_nn.commands.check_weights_cmd import check_weights
    from sarco_nn.commands.classify_cmd import classify_app
    from sarco_nn.commands.evaluate_cmd import evaluate
    from sarco_nn.commands.l3_cmd import locate, train_l3
    from sarco_nn.commands.measure_cmd import measure
    from sarco_nn.commands.pretrain_cmd import pretrain

    app.command()(measure)
    app.command()(evaluate)
    app.command("check-weights")(check_weights)
    app.command()(pretrain)
    app.command("locate-l3")(locate)
    app.command("train-l3")(train_l3)
    app.add_typer(classify_app, name="classify", help="Image-level sarcopenia classifier baseline (DenseNet/ResNet/Inception).")


try:
    _register_command_modules()
finally:  # imported (or failed to): Ctrl-C is KeyboardInterrupt again, which run_app (or an importer) handles
    _restore_ctrl_c()


def main() -> None:
    """Entry point of the `sarco` console script."""
    run_app(app)


if __name__ == "__main__":
    main()
