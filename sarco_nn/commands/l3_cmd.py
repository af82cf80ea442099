"""`sarco locate` and `sarco train-l3`: thin typer layers over sarco_nn.l3 (the lead registers them in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


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

    Example: sarco locate ct.nii.gz --l3-from vertebrae.nii.gz --rule max-area --json
    """
    from sarco_nn.l3.locate import locate_l3, read_volume
    from sarco_nn.l3.localizer import default_model_dir
    from sarco_nn.l3.result import L3NotFound

    level = level.strip().upper()
    model_dir = model_dir or default_model_dir(workspace, level)
    try:
        location = locate_l3(volume, method=locator, vertebra_mask=l3_from, rule=rule, model_dir=model_dir,
                             level=level)
    except L3NotFound as exc:  # LevelNotFound too
        if as_json:
            typer.echo(json.dumps({"found": False, "reason": str(exc)}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    if thumbnail is not None:
        from sarco_nn.l3.thumbnail import save_l3_thumbnail

        save_l3_thumbnail(read_volume(volume)[1], location, thumbnail, title=volume.name)
    if as_json:
        typer.echo(json.dumps({"found": True, **location.as_dict()}))
        return
    rule_text = f", rule {location.rule}" if location.rule else ""
    typer.echo(f"{level}: slice {location.slice_index} (0 = most inferior; slice {location.stored_index} in the file's "
               f"own order), z {location.z_mm:.1f} mm [{location.method}{rule_text}, "
               f"confidence {location.confidence:.2f}]")


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
    import torch

    from sarco_nn.errors import SarcoError
    from sarco_nn.l3.localizer import default_model_dir
    from sarco_nn.l3.train_l3 import train_from_sources

    if source is None and phantoms < 1:
        raise SarcoError("nothing to train on", fix="give a drop-in folder of volumes, or --phantoms N")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    level = level.strip().upper()
    out = model_dir or default_model_dir(workspace, level)
    path, report = train_from_sources(out, source, drop_dir, phantoms, validation, steps,
                                      None if max_minutes is None else 60.0 * max_minutes, seed, level=level)
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
