"""`sarco measure`: SMA / SMI / muscle HU / sarcopenia flag from an existing mask (thin CLI layer).

With `--tissues` (or a `--labels` file, or a mask holding muscle plus another tissue value of
`constants.TISSUE_LABELS`) it also reports the body composition of `sarco_nn.body_composition`:
muscle, IMAT, VAT, SAT (area, HU mean/SD), indices and the myosteatosis flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sarco_nn.constants import MUSCLE_LABEL, TISSUE_LABELS
from sarco_nn.mask_measurement import check_patient, ct_input_reasons, measure_objects
from sarco_nn.status import FLAG_UNKNOWN
from sarco_nn.thresholds import DEFAULT_MYOSTEATOSIS_SET, DEFAULT_THRESHOLD_SET, get_threshold_set


def measure(
    mask: Path = typer.Argument(..., help="Muscle mask (NIfTI/MHA/NRRD): one 2-D slice or a 3-D volume, any orientation."),
    image: Optional[Path] = typer.Option(None, "--image", help="CT the mask was drawn on (same grid): mean muscle HU, HU gate."),
    slice_index: Optional[int] = typer.Option(
        None, "--slice", help="3-D mask: slice index along the image's own slice axis as stored (ITK-SNAP/Slicer k). "
        "Default: every slice holding the label."),
    label: int = typer.Option(MUSCLE_LABEL, "--label", help="Label value of muscle in the mask."),
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
    from sarco_nn.errors import SarcoError
    from sarco_nn.image_io import read_image, read_label_image

    ts = get_threshold_set(thresholds)
    sex_code = check_patient(sex, height, weight, label, cli=True)
    if hu_gate and image is None:
        raise SarcoError("--hu-gate needs the CT", fix="pass it with --image CT.")
    from sarco_nn.body_composition import check_convention, check_level

    for name in level or []:
        check_level(name)  # a wrong level is refused before any file is read

    convention = check_convention(hu_convention or ("alberta" if hu_gate else "label"))
    if hu_gate and convention != "alberta":
        raise SarcoError(f"--hu-gate contradicts --hu-convention {convention}", fix="drop one of them.")
    if convention == "alberta" and image is None:
        raise SarcoError("the alberta HU convention needs the CT", fix="pass it with --image CT.")
    mask_img = read_label_image(mask)
    ct_img = read_image(image) if image is not None else None
    input_reasons = ct_input_reasons(ct_img, image)
    if not as_json:
        for reason in input_reasons:
            typer.echo(f"warning: {reason}", err=True)
    tissue_labels = resolve_tissue_labels(mask_img, mask, labels_file, label, force=tissues)
    from sarco_nn.levels import level_slices

    plan = level_slices(level, mask_img, vertebrae, slice_index=slice_index, mask_name=str(mask))
    objects = []
    for at in plan:  # one row per (slice, level); a flag only where `ts` was published for that level
        found = measure_objects(mask_img, ct_img, ts, sex_code, height, weight, label=label, slice_index=at.slice_index,
                                hu_gate=convention == "alberta", mask_name=str(mask),
                                ct_name=None if image is None else str(image), level=at.level,
                                input_reasons=input_reasons)
        if tissue_labels is not None:
            add_body_composition(found, mask_img, ct_img, tissue_labels, convention, at.level, sex_code, height,
                                 weight, get_threshold_set(myosteatosis), mask_name=str(mask),
                                 ct_name=None if image is None else str(image))
        objects += [{**o, "level": at.level, "level_source": at.source} for o in found]
    if as_json:
        single = len(objects) == 1 and len(plan) == 1 and (
            slice_index is not None or mask_img.GetDimension() == 2 or _n_axial_slices(mask_img) == 1)
        typer.echo(json.dumps(objects[0] if single else objects, ensure_ascii=False))
        return
    for o in objects:
        parts = [f"slice {o['slice_index']}" + (f" ({o['level']}):" if len(plan) > 1 or vertebrae else ":"),
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


def _n_axial_slices(image) -> int:
    from sarco_nn.measure import axial_stack

    return axial_stack(image).array.shape[0]


def resolve_tissue_labels(mask_img, mask_path: Path, labels_file: Path | None, label: int,
                          force: bool) -> dict[str, int] | None:
    """The tissue label map for body composition, or None when only the SMA is asked for.

    --labels FILE wins; else a labels.json beside the mask (a tissue it names but the mask lacks
    measures 0 cm²); else TISSUE_LABELS with muscle = --label, keeping only the values the mask holds.
    Without --tissues/--labels, body composition is reported only when the mask holds the muscle
    value and at least one other tissue value of that map (a multi-tissue mask).
    """
    import SimpleITK as sitk

    from sarco_nn.cases import LABELS_FILE, read_labels_json
    from sarco_nn.mask_checks import labels_in

    beside = Path(mask_path).parent / LABELS_FILE
    if labels_file is not None:
        labels = read_labels_json(labels_file)
    elif beside.is_file():
        labels = read_labels_json(beside)
    else:
        labels = {**TISSUE_LABELS, "muscle": label}
        labels = {k: v for k, v in labels.items() if k == "muscle" or v != label}
    present = set(labels_in(sitk.GetArrayViewFromImage(mask_img)))
    others = {v for k, v in labels.items() if k in TISSUE_LABELS and k != "muscle"}
    if not (force or labels_file is not None or (labels["muscle"] in present and present & others)):
        return None
    if labels_file is None and not beside.is_file():
        # no declared map: a tissue value the mask does not hold is "absent" (not 0 cm²); IMAT then derivable
        labels = {k: v for k, v in labels.items() if k == "muscle" or v in present}
    return labels


def add_body_composition(objects: list[dict], mask_img, ct_img, labels: dict[str, int], convention: str,
                         level: str, sex_code: str | None, height: float | None, weight: float | None,
                         myo_set, *, mask_name: str | None = None, ct_name: str | None = None) -> None:
    """Add every tissue (areas cm², HU mean/SD, indices) and the myosteatosis flag to each slice's object."""
    from sarco_nn.body_composition import measure_composition_image, result_columns
    from sarco_nn.thresholds import bmi as exact_bmi

    bmi = exact_bmi(height, weight)
    for o in objects:
        comp = measure_composition_image(mask_img, ct_img, labels, convention, level, height, o["slice_index"],
                                         mask_name=mask_name, ct_name=ct_name)[0]
        withheld = o["status"] == "failed" or bool(o["reasons"])  # every measure reason blocks a flag
        row = result_columns(comp, myo_set, sex_code, bmi, withheld=withheld, unknown=FLAG_UNKNOWN,
                             digits={"area": 4, "hu": 2})
        o.update({k: v for k, v in row.items() if k not in o})  # shared keys (SMI, muscle HU) are the SMA path's


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
