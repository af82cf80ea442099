"""How far normal slices and planted relabellings lie from the `tissue_layout` rule (HOSTILE_FINDINGS #104/#105).

For every phantom family (A, B, A-wide) it draws `--cases` L3 slices (`--matrix`; `--volumes` adds every
slice of T12-S1 volumes at 128²), and, where the real CT is present, the 30 slices of TotalSegmentator's
`example_ct_sm` with its own tissue segmentation (skeletal muscle 1, torso fat as VAT 3, subcutaneous fat
as SAT 4). Each slice is judged as it is and with its labels planted wrong (VAT/SAT swapped, SAT saved as
IMAT, IMAT/SAT swapped, muscle/SAT swapped). Printed per family and variant: slices flagged, and the extremes of each tissue's share
inside the muscle hull and of IMAT's outside area over the SAT area.

    PYTHONPATH=$PWD python bench/tissue_layout_margins.py --cases 30 --matrix 512
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.tissue_layout import layout_reason, muscle_hull_sides

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalsegmentator"
M, I, V, S = (TISSUE_LABELS[t] for t in ("muscle", "imat", "vat", "sat"))


def _swap(mask: np.ndarray, a: int, b: int) -> np.ndarray:
    out = mask.copy()
    out[mask == a], out[mask == b] = b, a
    return out


def planted(mask: np.ndarray):
    """(name, mask) of the slice as labelled and with its labels planted wrong."""
    yield "normal", mask
    yield "vat_sat_swap", _swap(mask, V, S)
    yield "sat_as_imat", np.where(mask == S, I, mask)
    yield "imat_sat_swap", _swap(mask, I, S)
    yield "muscle_sat_swap", _swap(mask, M, S)


def phantom_slices(family: str, cases: int, matrix: int, volumes: bool):
    from dataset_conversion.phantoms.writer import dropin_case

    for i in range(cases):
        ph = dropin_case(7, i, matrix, volumes=volumes, family=family).phantom
        if volumes:
            for z in range(ph.tissue_mask.shape[0]):
                if (ph.tissue_mask[z] == M).any():
                    yield ph.tissue_mask[z], tuple(ph.spacing_mm[1:])
        else:
            yield ph.tissue_mask, tuple(ph.spacing_mm)


def real_slices():
    import SimpleITK as sitk

    if not (REAL / "example_ct_sm.nii.gz").is_file():
        return
    ct = sitk.ReadImage(str(REAL / "example_ct_sm.nii.gz"))
    part = {n: sitk.GetArrayFromImage(sitk.ReadImage(str(REAL / "example_seg_tissue_types" / f"{n}.nii.gz"))) > 0
            for n in ("skeletal_muscle", "subcutaneous_fat", "torso_fat")}
    mask = np.zeros(part["torso_fat"].shape, np.uint8)
    mask[part["torso_fat"]] = V
    mask[part["subcutaneous_fat"]] = S
    mask[part["skeletal_muscle"]] = M
    spacing = (ct.GetSpacing()[1], ct.GetSpacing()[0])
    for z in range(mask.shape[0]):
        if (mask[z] == M).sum() >= 10:
            yield mask[z], spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--volumes", action="store_true", help="every slice of T12-S1 volumes (128²) instead")
    args = parser.parse_args()
    sources = {f: phantom_slices(f, args.cases, 128 if args.volumes else args.matrix, args.volumes)
               for f in ("A", "B", "A-wide")}
    sources["real CT (T11-L2)"] = real_slices()
    for source, slices in sources.items():
        table: dict[str, dict] = collections.defaultdict(lambda: {"n": 0, "flagged": 0, "share": {}, "imat_vs_sat": 0.0})
        for mask, spacing in slices:
            for variant, labelled in planted(mask):
                row = table[variant]
                row["n"] += 1
                row["flagged"] += layout_reason(labelled, TISSUE_LABELS, spacing) is not None
                sides = {s.tissue: s for s in muscle_hull_sides(labelled, TISSUE_LABELS, spacing)}
                for tissue, side in sides.items():
                    lo, hi = row["share"].get(tissue, (1.0, 0.0))
                    row["share"][tissue] = (min(lo, side.inside_share), max(hi, side.inside_share))
                if "imat" in sides and variant == "normal":
                    sat = sides["sat"].area_cm2 if "sat" in sides else 0.0
                    row["imat_vs_sat"] = max(row["imat_vs_sat"], sides["imat"].wrong_cm2 / sat if sat else np.inf)
        for variant, row in table.items():
            shares = ", ".join(f"{t} {lo:.3f}-{hi:.3f}" for t, (lo, hi) in sorted(row["share"].items()))
            extra = f"; IMAT outside / SAT ≤ {row['imat_vs_sat']:.3f}" if variant == "normal" and row["imat_vs_sat"] else ""
            print(f"{source:17s} {variant:16s} flagged {row['flagged']:4d}/{row['n']:<4d} inside hull: {shares}{extra}")


if __name__ == "__main__":
    main()
