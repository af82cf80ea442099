"""`sarco locate-l3` and `sarco train-l3`: thin typer layers over `api.locate_l3` / `api.train_l3`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sarco_nn import api


def locate(
    volume: Path = typer.Argument(..., help="CT volume: NIfTI/MHA/NRRD file or DICOM series folder."),
    l3_from: Optional[Path] = typer.Option(None, "--l3-from", help="Vertebra label map on the CT's grid "
                                           "(TotalSegmentator numbering, L3 = 29) or TotalSegmentator's output folder."),
    rule: str = typer.Option("centroid", "--rule", help="L3 slice rule for vertebra labels: centroid or max-area."),
    locator: str = typer.Option("auto", "--locator", help="auto, vertebrae, model or totalsegmentator."),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="Trained localizer (default <workspace>/l3_localizer)."),
    thumbnail: Optional[Path] = typer.Option(None, "--thumbnail", help="Write a sagittal PNG marking the level."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (found: false when L3 is not in view)."),
    level: str = typer.Option("L3", "--level", help="Vertebra to find; not L3: a localizer trained with "
                              "`sarco train-l3 --level` (default <workspace>/localizer_<LEVEL>)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (for the default model)."),
):
    """Find the L3 slice of a CT volume (0 = most inferior slice) and its z position in mm.

    Exit status 1 when L3 is not in the field of view.

    Example: sarco locate-l3 ct.nii.gz --l3-from vertebrae.nii.gz --rule max-area --json
    """
    try:
        location = api.locate_l3(volume, l3_from=l3_from, rule=rule, locator=locator, model_dir=model_dir,
                                 thumbnail=thumbnail, level=level, workspace=workspace)
    except api.L3NotFound as exc:  # LevelNotFound too
        if as_json:
            typer.echo(json.dumps({"found": False, "reason": str(exc)}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"found": True, **location.as_dict()}))
        return
    rule_text = f", rule {location.rule}" if location.rule else ""
    typer.echo(f"{level.strip().upper()}: slice {location.slice_index} (0 = most inferior; "
               f"slice {location.stored_index} in the file's own order), z {location.z_mm:.1f} mm "
               f"[{location.method}{rule_text}, confidence {location.confidence:.2f}]")


def train_l3(
    source: Optional[Path] = typer.Argument(None, help="Drop-in folder of whole volumes (mask on the L3 slice), "
                                            "or a converted dataset folder with manifest.csv (then --drop-dir)."),
    drop_dir: Optional[Path] = typer.Option(None, "--drop-dir", help="Original drop folder of a converted dataset."),
    phantoms: int = typer.Option(0, "--phantoms", help="Add N phantom volumes (T12-S1) to the training set."),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="Output folder (default <workspace>/l3_localizer)."),
    steps: int = typer.Option(1500, "--steps", help="Training steps (batches of 8 random crops)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop early after this many minutes."),
    validation: float = typer.Option(0.2, "--validation", help="Share of volumes held out for the error report."),
    seed: int = typer.Option(0, "--seed"),
    level: str = typer.Option("L3", "--level", help="Vertebra to localize (T12…L5): the drop's masks lie on that "
                              "level's slice; phantoms use their vertebra labels. Not L3: saved to "
                              "<workspace>/localizer_<LEVEL>."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder."),
):
    """Train the L3 localizer (CNN on bone-window projections) on CPU and report its held-out error.

    Example: sarco train-l3 ~/l3_drop --validation 0.2 ;  sarco train-l3 ~/l1_drop --level L1
    """
    trained = api.train_l3(source, drop_dir=drop_dir, phantoms=phantoms, model_dir=model_dir, steps=steps,
                           max_minutes=max_minutes, validation=validation, seed=seed, level=level, workspace=workspace)
    path, report = trained.checkpoint, trained.report
    t = report["training"]
    typer.echo(f"{report['level']} localizer trained on {t['cases']} volumes, {t['steps']} steps in {t['seconds']} s "
               f"-> {path}")
    for note in report.get("notes", [])[:10]:
        typer.echo(f"  note: {note}")
    held = report.get("held_out")
    if held and held["mean_abs_error_mm"] is not None:
        typer.echo(f"held-out ({held['n_cases']} volumes): mean |error| {held['mean_abs_error_mm']:.1f} mm "
                   f"({held['mean_abs_error_slices']:.2f} slices), max {held['max_abs_error_mm']:.1f} mm, "
                   f"not found {held['n_not_found']}")
    elif held:
        typer.echo(f"held-out ({held['n_cases']} volumes): L3 found in none; train longer or on more volumes")
