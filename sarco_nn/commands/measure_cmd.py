"""`sarco measure`: SMA / SMI / muscle HU / sarcopenia flag from an existing mask (over `api.measure`).

With `--tissues` (or a `--labels` file, or a mask holding muscle plus another tissue value of
`constants.TISSUE_LABELS`) it also reports the body composition of `sarco_nn.body_composition`:
muscle, IMAT, VAT, SAT (area, HU mean/SD), indices and the myosteatosis flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sarco_nn import api
from sarco_nn.constants import DEFAULT_LEVEL
from sarco_nn.status import FLAG_UNKNOWN
from sarco_nn.thresholds import DEFAULT_MYOSTEATOSIS_SET, DEFAULT_THRESHOLD_SET


def measure(
    mask: Path = typer.Argument(..., help="Muscle mask (NIfTI/MHA/NRRD): one 2-D slice or a 3-D volume, any orientation."),
    image: Optional[Path] = typer.Option(None, "--image", help="CT the mask was drawn on (same grid): mean muscle HU, HU gate."),
    slice_index: Optional[int] = typer.Option(
        None, "--slice", help="3-D mask: slice index along the image's own slice axis as stored (ITK-SNAP/Slicer k). "
        "Default: every slice holding the label."),
    label: Optional[int] = typer.Option(None, "--label", help="Label value of muscle in the mask "
                                        "(default: the muscle of labels.json beside the mask or its folder, else 1)."),
    sex: Optional[str] = typer.Option(None, "--sex", help="M/F, male/female or man/woman (for the sarcopenia flag)."),
    height: Optional[float] = typer.Option(None, "--height", help="Height in metres (for SMI)."),
    weight: Optional[float] = typer.Option(None, "--weight", help="Weight in kg (BMI, for the martin set)."),
    hu_gate: bool = typer.Option(False, "--hu-gate", help="Count only mask pixels within the muscle HU gate (needs --image)."),
    thresholds: str = typer.Option(DEFAULT_THRESHOLD_SET, "--thresholds", help="paper, prado, martin, or a JSON/YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object; a list for a 3-D mask without --slice)."),
    tissues: bool = typer.Option(False, "--tissues", help="Body composition: muscle, IMAT, VAT, SAT, indices, myosteatosis."),
    labels_file: Optional[Path] = typer.Option(None, "--labels", help="labels.json naming the tissue values "
                                               "(default muscle 1, imat 2, vat 3, sat 4); implies --tissues."),
    level: Optional[list[str]] = typer.Option(None, "--level", help="Vertebral level of the slice (T12…L5, "
                                              "default L3); repeat with --vertebrae for one row per level. Flags only "
                                              "where the threshold set was published for that level."),
    vertebrae: Optional[Path] = typer.Option(None, "--vertebrae", help="Vertebra labels on the mask's grid "
                                             "(TotalSegmentator numbering, or its output folder): each --level's "
                                             "slice by the centroid rule."),
    hu_convention: Optional[str] = typer.Option(None, "--hu-convention", help="Tissue HU rule: label (every labelled "
                                                "pixel) or alberta (muscle −29…150, adipose −190…−30 HU). "
                                                "Default: alberta with --hu-gate, else label."),
    myosteatosis: str = typer.Option(DEFAULT_MYOSTEATOSIS_SET, "--myosteatosis",
                                     help="Myosteatosis set (muscle HU cut-offs): martin_myosteatosis or a JSON file."),
):
    """Measure skeletal muscle area (cm²), SMI (cm²/m²) and mean muscle HU on an existing mask.

    Area = muscle pixels × in-plane pixel spacing; the slice thickness never enters.

    Example: sarco measure l3_mask.nii.gz --image l3_ct.nii.gz --sex F --height 1.62 --json
    """
    results = api.measure(mask, image=image, slice_index=slice_index, label=label, sex=sex, height_m=height,
                          weight_kg=weight, hu_gate=hu_gate, thresholds=thresholds, tissues=tissues,
                          labels_file=labels_file, level=_levels(level), vertebrae=vertebrae,
                          hu_convention=hu_convention, myosteatosis=myosteatosis, cli_names=True)
    objects = [dict(m.record) for m in results]
    failed = [o for o in objects if o["status"] == "failed"]
    if as_json:
        single = len(results) == 1 and (slice_index is not None or results[0].mask_slices == 1)
        typer.echo(json.dumps(objects[0] if single else objects, ensure_ascii=False))
        _exit_if_failed(failed, len(objects))
        return
    for warning in results[0].ct_warnings if results else ():
        typer.echo(f"warning: {warning}", err=True)
    by_level = vertebrae is not None or len({m.level for m in results}) > 1
    for o in objects:
        if o["status"] == "failed":  # a level the vertebra labels cannot place: no numbers, its reason
            typer.echo(f"level {o['level']}: status: failed")
            for reason in o["reasons"]:
                typer.echo(f"  {reason['code']}: {reason['message']}")
            continue
        parts = [f"slice {o['slice_index']}" + (f" ({o['level']}):" if by_level else ":"),
                 f"SMA {o['sma_cm2']:.2f} cm²"]
        if o["smi_cm2_m2"] is not None:
            parts.append(f"SMI {o['smi_cm2_m2']:.2f} cm²/m²")
        if o["muscle_hu_mean"] is not None:
            parts.append(f"muscle HU {o['muscle_hu_mean']:.1f}")
        gate = o["hu_gate"]
        parts.append(f"(HU gate {gate[0]:g}..{gate[1]:g} applied)" if gate else "(no HU gate)")
        flag = {True: "yes", False: "no"}.get(o["sarcopenic"], FLAG_UNKNOWN)
        parts.append(f"sarcopenic: {flag} [{o['threshold']}]")
        parts.append(f"status: {o['status']}")
        typer.echo("  ".join(parts))
        if "hu_convention" in o:
            typer.echo("  " + _composition_text(o))
        for reason in o["reasons"]:
            typer.echo(f"  {reason['code']}: {reason['message']}")
    _exit_if_failed(failed, len(objects))


def _exit_if_failed(failed: list[dict], total: int) -> None:
    """A failed row (a level not in view) is one line on stderr and exit status 1, as `sarco predict` does for a
    failed case: the measured rows are printed, the failure cannot pass unseen."""
    if not failed:
        return
    named = ", ".join(f"{o['level']} ({o['reasons'][0]['code']})" for o in failed)
    typer.echo(f"{len(failed)} of {total} row(s) failed: {named}; the others are measured", err=True)
    raise typer.Exit(1)


def _levels(given: Optional[list[str]]) -> str | list[str]:
    """--level as api.measure takes it: one level as a string, several (repeated --level) as a list."""
    if not given:
        return DEFAULT_LEVEL
    return given[0] if len(given) == 1 else list(given)


def _composition_text(o: dict) -> str:
    parts = [f"level {o['level']}, HU convention {o['hu_convention']}"
             f" (muscle {o['muscle_hu_range'] or 'all'}, adipose {o['adipose_hu_range'] or 'all'} HU)"]
    for tissue in ("muscle", "imat", "vat", "sat"):
        if o[f"{tissue}_source"] == "absent":
            parts.append(f"{tissue.upper()}: absent")
            continue
        area, hu = (o["sma_cm2"], o["muscle_hu_mean"]) if tissue == "muscle" else (o[f"{tissue}_area_cm2"],
                                                                                   o[f"{tissue}_hu_mean"])
        text = f"{tissue.upper()} {area:.2f} cm²"
        if hu is not None:
            text += f" HU {hu:.1f}±{o[f'{tissue}_hu_sd']:.1f}"
        if o[f"{tissue}_source"] == "derived":
            text += " (derived)"
        parts.append(text)
    for key, name, unit in (("vati_cm2_m2", "VATI", "cm²/m²"), ("sati_cm2_m2", "SATI", "cm²/m²"),
                            ("vat_sat_ratio", "VAT/SAT", ""), ("total_adipose_cm2", "adipose", "cm²"),
                            ("imat_pct_of_sma", "IMAT", "% of SMA"), ("muscle_attenuation_hu", "attenuation", "HU")):
        if o[key] is not None:
            parts.append(f"{name} {o[key]:.2f} {unit}".rstrip())
    flag = {True: "yes", False: "no"}.get(o["myosteatosis"], FLAG_UNKNOWN)
    parts.append(f"myosteatosis: {flag} [{o['myosteatosis_threshold']}]")
    return "  ".join(parts)
