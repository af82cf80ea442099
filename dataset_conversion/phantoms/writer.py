"""The drop-in folder a user would give `sarco convert`, written from any phantom family.

Why one writer: every family must produce the same layout (images/, masks/, vertebrae/, clinical.csv,
truth.csv) with the same orientation tricks, or a cross-family comparison would test the writer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_conversion.phantoms.common import SMA_CUTOFF_CM2, PhantomSlice, PhantomVolume, tissue_areas_cm2
from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.errors import SarcoError

#: truth.csv columns besides muscle (whose column keeps its name, true_sma_cm2).
_OTHER_TISSUES: tuple[str, ...] = tuple(t for t in TISSUE_LABELS if t != "muscle")


@dataclass
class DropinCase:
    """One case of a drop-in dataset, before it is written (also what tests compare against)."""

    case_id: str
    phantom: PhantomSlice | PhantomVolume
    flipped: bool  # stored RAS-like: direction diag(-1, -1, 1), array flipped in x and y
    z_spacing_mm: float
    origin_z_mm: float


#: Phantom families: A is the demo's training family, A-wide the same family domain-randomised
#: (``widen_a``: wider anatomy and scanner, a training lever), B an independently designed "other site".
FAMILIES: tuple[str, ...] = ("A", "A-wide", "B")

#: Seed-stream tag of the widening draws (A-wide case i is A's patient i, widened).
_WIDE_STREAM = 0xA1DE


def check_family(family: str) -> str:
    """The family's canonical name ("A" / "A-wide" / "B", any case); refuse any other before anything is written."""
    name = {f.upper(): f for f in FAMILIES}.get(str(family).upper())
    if name is None:
        raise SarcoError(f"unknown phantom family {family!r}", fix=f"use one of {', '.join(FAMILIES)}")
    return name


def dropin_case(seed: int, index: int, matrix: int = 512, volumes: bool = False, case_prefix: str = "case",
                family: str = "A") -> DropinCase:
    """Case `index` of the dataset `seed`: sexes alternate, sarcopenic every other pair; independent of n_cases.

    Family B draws from its own stream ([seed, index, 0xB]) so an A and a B set with one seed share nothing.
    """
    family = check_family(family)
    sex = "M" if index % 2 == 0 else "F"
    sarcopenic = (index // 2) % 2 == 1
    flipped = index % 3 == 1
    ph: PhantomSlice | PhantomVolume
    if family == "B":
        from dataset_conversion.phantoms import family_b

        rng = np.random.default_rng([seed, index, 0xB])
        if volumes:
            ph = family_b.generate_volume(rng, matrix=matrix, sex=sex, sarcopenic=sarcopenic)
            dz = float(ph.spacing_mm[0])
        else:
            ph, dz = family_b.generate_slice(rng, sex=sex, matrix=matrix, sarcopenic=sarcopenic)
        return DropinCase(f"{case_prefix}_{index:03d}", ph, flipped, dz, float(rng.uniform(-900.0, 200.0)))
    from dataset_conversion.phantoms.family_a import generate_phantom_slice, generate_phantom_volume

    rng = np.random.default_rng([seed, index])
    wide_rng = np.random.default_rng([seed, index, _WIDE_STREAM]) if family == "A-wide" else None
    if volumes:
        ph = generate_phantom_volume(rng, matrix=matrix, sex=sex, sarcopenic=sarcopenic, wide_rng=wide_rng)
        dz = float(ph.spacing_mm[0])
    else:
        ph = generate_phantom_slice(rng, sex=sex, matrix=matrix, sarcopenic=sarcopenic, wide_rng=wide_rng)
        dz = float(rng.choice([2.5, 3.0, 5.0]))
    return DropinCase(f"{case_prefix}_{index:03d}", ph, flipped, dz, float(rng.uniform(-600.0, -100.0)))


def to_sitk(array_zyx: np.ndarray, spacing_zyx: tuple[float, float, float], flipped: bool, origin_z: float):
    """SimpleITK image of an LPS-layout array; `flipped` stores it RAS-like with the same physical anatomy."""
    import SimpleITK as sitk

    sz, sy, sx = spacing_zyx
    nz, ny, nx = array_zyx.shape
    origin = np.array([-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, origin_z])
    if flipped:
        array_zyx = array_zyx[:, ::-1, ::-1]
        origin = origin + np.array([(nx - 1) * sx, (ny - 1) * sy, 0.0])
        direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    else:
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    img.SetSpacing((sx, sy, sz))
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetDirection(direction)
    return img


def write_dropin_dataset(out_dir: Path, n_cases: int, seed: int = 0, matrix: int = 512,
                         volumes: bool = False, case_prefix: str = "case", family: str = "A") -> Path:
    """Write the folder a user would drop: images/, masks/, (vertebrae/), labels.json, clinical.csv, truth.csv.

    Masks hold the four body-composition tissues (sarco_nn.constants.TISSUE_LABELS, declared in
    labels.json), so `sarco convert` keeps muscle (1) and a multi-tissue reader gets all four.
    truth.csv gives the exact area of each. Never writes into an existing non-empty folder.
    Deterministic for a given seed and family; case i is the same whatever n_cases is. Volume cases
    hold the mask on the L3 slice only.
    """
    import SimpleITK as sitk

    family = check_family(family)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SarcoError("folder exists and is not empty; the phantom writer never overwrites",
                         path=out_dir, fix="give a new or empty output folder")
    if n_cases < 1:
        raise SarcoError(f"n_cases must be at least 1, got {n_cases}")
    for sub in ("images", "masks") + (("vertebrae",) if volumes else ()):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    (out_dir / "labels.json").write_text(json.dumps(TISSUE_LABELS) + "\n")
    clinical, truth = [], []
    for i in range(n_cases):
        case = dropin_case(seed, i, matrix, volumes, case_prefix, family)
        ph = case.phantom
        if isinstance(ph, PhantomVolume):
            sz, sy, sx = ph.spacing_mm
            ct = ph.ct_hu
            mask = np.zeros_like(ph.tissue_mask)
            li = ph.l3_slice_index
            mask[li] = ph.tissue_mask[li]
            sitk.WriteImage(to_sitk(ph.vertebra_labels, (sz, sy, sx), case.flipped, case.origin_z_mm),
                            str(out_dir / "vertebrae" / f"{case.case_id}.nii.gz"), True)
        else:
            sy, sx = ph.spacing_mm
            sz = case.z_spacing_mm
            ct, mask = ph.ct_hu[None], ph.tissue_mask[None]
        spacing = (sz, sy, sx)
        sitk.WriteImage(to_sitk(ct.astype(np.int16), spacing, case.flipped, case.origin_z_mm),
                        str(out_dir / "images" / f"{case.case_id}.nii.gz"), True)
        sitk.WriteImage(to_sitk(mask.astype(np.uint8), spacing, case.flipped, case.origin_z_mm),
                        str(out_dir / "masks" / f"{case.case_id}.nii.gz"), True)
        areas = tissue_areas_cm2(mask.max(axis=0), (sy, sx))  # one annotated slice per case
        sma = areas["muscle"]
        clinical.append([case.case_id, ph.sex, f"{ph.height_m:.3f}", f"{ph.weight_kg:.1f}", ph.age])
        row = [case.case_id, repr(sma), int(sma < SMA_CUTOFF_CM2[ph.sex]), repr(sy), repr(sx)]
        row += [repr(areas[t]) for t in _OTHER_TISSUES]
        truth.append(row + ([ph.l3_slice_index] if isinstance(ph, PhantomVolume) else []))
    _write_csv(out_dir / "clinical.csv", ["case_id", "sex", "height_m", "weight_kg", "age"], clinical)
    head = ["case_id", "true_sma_cm2", "sarcopenic_truth", "spacing_y_mm", "spacing_x_mm"]
    head += [f"true_{t}_cm2" for t in _OTHER_TISSUES]
    _write_csv(out_dir / "truth.csv", head + (["l3_slice_index"] if volumes else []), truth)
    return out_dir


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)

