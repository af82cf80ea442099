"""`sarco measure`: SMA / SMI / muscle HU / sarcopenia flag from an existing mask (thin CLI layer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sarco_nn.constants import MUSCLE_HU_GATE, MUSCLE_LABEL
from sarco_nn.thresholds import DEFAULT_THRESHOLD_SET


def measure(
    mask: Path = typer.Argument(..., help="Muscle mask (NIfTI/MHA/NRRD): one 2-D slice or a 3-D volume, any orientation."),
    image: Optional[Path] = typer.Option(None, "--image", help="CT the mask was drawn on (same grid): mean muscle HU, HU gate."),
    slice_index: Optional[int] = typer.Option(
        None, "--slice", help="3-D mask: slice index along the image's own slice axis as stored (ITK-SNAP/Slicer k). "
        "Default: every slice holding the label."),
    label: int = typer.Option(MUSCLE_LABEL, "--label", help="Label value of muscle in the mask."),
    sex: Optional[str] = typer.Option(None, "--sex", help="M or F (for the sarcopenia flag)."),
    height: Optional[float] = typer.Option(None, "--height", help="Height in metres (for SMI)."),
    weight: Optional[float] = typer.Option(None, "--weight", help="Weight in kg (BMI, for the martin set)."),
    hu_gate: bool = typer.Option(False, "--hu-gate", help="Count only mask pixels within the muscle HU gate (needs --image)."),
    thresholds: str = typer.Option(DEFAULT_THRESHOLD_SET, "--thresholds", help="paper, prado, martin, or a JSON/YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object; a list for a 3-D mask without --slice)."),
):
    """Measure skeletal muscle area (cm²), SMI (cm²/m²) and mean muscle HU on an existing mask.

    Area = muscle pixels × in-plane pixel spacing; the slice thickness never enters.

    Example: sarco measure l3_mask.nii.gz --image l3_ct.nii.gz --sex F --height 1.62 --json
    """
    from sarco_nn.errors import SarcoError
    from sarco_nn.image_io import read_image, read_label_image
    from sarco_nn.measure import measure_image, smi
    from sarco_nn.thresholds import get_threshold_set, normalise_sex

    ts = get_threshold_set(thresholds)
    sex_code = normalise_sex(sex)
    if sex is not None and sex_code is None:
        raise SarcoError(f"--sex {sex!r} not understood", fix="use M or F.")
    for name, value in (("--height", height), ("--weight", weight)):
        if value is not None and not value > 0:
            raise SarcoError(f"{name} {value} must be positive", fix="height in metres (e.g. 1.62), weight in kg.")
    if height is not None and height > 3.0:
        raise SarcoError(f"--height {height} looks like centimetres", fix="give the height in metres, e.g. 1.62.")
    if hu_gate and image is None:
        raise SarcoError("--hu-gate needs the CT", fix="pass it with --image CT.")
    mask_img = read_label_image(mask)
    ct_img = read_image(image) if image is not None else None
    from sarco_nn.status import Verdict

    verdict = Verdict()
    if ct_img is not None:  # never a muscle HU or a flag from something that is not a CT of a body (#14)
        from sarco_nn.ct_checks import file_reasons, refuse_unless_ct

        verdict.extend([*file_reasons(image), *refuse_unless_ct(ct_img, image)])
        if not as_json:
            for reason in verdict.reasons:
                typer.echo(f"warning: {reason}", err=True)
    blocking = not verdict.flag_allowed
    results = measure_image(mask_img, ct_img, label=label, slice_index=slice_index,
                            hu_gate=MUSCLE_HU_GATE if hu_gate else None, mask_name=str(mask),
                            ct_name=None if image is None else str(image))
    if not results:
        raise SarcoError(f"{mask}: no slice contains label {label}", fix="check --label, or give --slice N.")
    bmi = weight / height**2 if weight is not None and height is not None else None
    objects = []
    for m in results:
        smi_value = smi(m.sma_cm2, height)
        objects.append({
            "sma_cm2": round(m.sma_cm2, 4),
            "smi_cm2_m2": None if smi_value is None else round(smi_value, 4),
            "muscle_hu_mean": None if m.muscle_hu_mean is None else round(m.muscle_hu_mean, 2),
            "slice_index": m.slice_index,
            "hu_gate": None if m.hu_gate is None else list(m.hu_gate),
            "sarcopenic": None if blocking else ts.is_sarcopenic(sex_code, m.sma_cm2, smi_value, bmi),
            "threshold_set": ts.name,
            "threshold": ts.describe(sex_code, bmi),
            "status": verdict.status.value,
            "reasons": [str(r) for r in verdict.reasons],
        })
    if as_json:
        single = len(objects) == 1 and (slice_index is not None or mask_img.GetDimension() == 2
                                        or _n_axial_slices(mask_img) == 1)
        typer.echo(json.dumps(objects[0] if single else objects, ensure_ascii=False))
        return
    for o in objects:
        parts = [f"slice {o['slice_index']}:", f"SMA {o['sma_cm2']:.2f} cm²"]
        if o["smi_cm2_m2"] is not None:
            parts.append(f"SMI {o['smi_cm2_m2']:.2f} cm²/m²")
        if o["muscle_hu_mean"] is not None:
            parts.append(f"muscle HU {o['muscle_hu_mean']:.1f}")
        gate = o["hu_gate"]
        parts.append(f"(HU gate {gate[0]:g}..{gate[1]:g} applied)" if gate else "(no HU gate)")
        flag = {True: "yes", False: "no", None: "undecided"}[o["sarcopenic"]]
        parts.append(f"sarcopenic: {flag} [{o['threshold']}]")
        typer.echo("  ".join(parts))


def _n_axial_slices(image) -> int:
    from sarco_nn.measure import axial_stack

    return axial_stack(image).array.shape[0]
