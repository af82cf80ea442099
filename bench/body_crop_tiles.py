"""How many network tiles a phantom L3 slice needs with and without `body_crop` (no network runs).

Each slice of phantom family A and B (512², their own spacing) is windowed and resampled to the
`cpu` preset's 1 mm grid as nnU-Net's preprocessing does (window, then cubic resampling), the body
box is the one `SarcoPredictor.body_box` takes (`inference_settings.body_crop_box` over the voxels
above `BODY_CROP_LEVEL_HU`), and the tiles are nnU-Net's own count (`compute_steps_for_sliding_window`)
at the `cpu` preset's 256² patch and step 0.5.

Run: python bench/body_crop_tiles.py [--cases 12] [--patch 256] [--spacing 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiles(shape, patch, step: float = 0.5) -> int:
    """nnU-Net's number of sliding-window tiles over `shape` (padded to the patch first, as it does)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    padded = [max(s, p) for s, p in zip(shape, patch)]
    n = 1
    for steps in compute_steps_for_sliding_window(padded, patch, step):
        n *= len(steps)
    return n


def slice_tiles(ct_hu, spacing_mm, patch, target_mm: float) -> dict:
    """Tiles of one slice on the target grid, without and with the body crop."""
    import numpy as np
    from scipy import ndimage

    from sarco_nn.inference_settings import BODY_CROP_LEVEL_HU, body_crop_box
    from sarco_nn.windowing import apply_window, hu_to_window_units

    windowed = ndimage.zoom(apply_window(ct_hu), [s / target_mm for s in spacing_mm], order=3)
    box = body_crop_box(windowed > hu_to_window_units(BODY_CROP_LEVEL_HU), [target_mm] * 2, patch)
    crop = windowed.shape if box is None else tuple(b.stop - b.start for b in box)
    return {"grid": windowed.shape, "crop": crop, "tiles": tiles(windowed.shape, patch),
            "crop_tiles": tiles(crop, patch), "area_share": float(np.prod(crop) / np.prod(windowed.shape)),
            "touching_tiles": touching_tiles(windowed.shape, patch, box)}


def touching_tiles(shape, patch, box, step: float = 0.5) -> int:
    """How many of nnU-Net's own tiles over the whole grid meet `box` (None: all): what a variant
    that skips only the tiles lying wholly outside the box would run (not built; on the box its
    logits would be the uncropped ones exactly, since every tile covering a box voxel is kept)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    padded = [max(s, p) for s, p in zip(shape, patch)]
    n = 1
    for axis, steps in enumerate(compute_steps_for_sliding_window(padded, patch, step)):
        lo, hi = (0, padded[axis]) if box is None else (box[axis].start, box[axis].stop)
        n *= sum(1 for s in steps if s < hi and s + patch[axis] > lo)
    return n


def main() -> int:
    import numpy as np

    from dataset_conversion.phantoms.family_a import generate_phantom_slice
    from dataset_conversion.phantoms.family_b import generate_slice

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--spacing", type=float, default=1.0)
    args = parser.parse_args()
    patch = [args.patch] * 2
    draw = {"A": lambda rng: generate_phantom_slice(rng), "B": lambda rng: generate_slice(rng)[0]}
    for family, make in draw.items():
        rows = []
        for seed in range(args.cases):
            phantom = make(np.random.default_rng(seed))
            rows.append(slice_tiles(phantom.ct_hu, phantom.spacing_mm, patch, args.spacing))
        pairs = ", ".join(f"{r['tiles']}->{r['crop_tiles']}" for r in rows)
        print(f"family {family}: {len(rows)} slices (512², {args.spacing:g} mm grids "
              f"{min(r['grid'][0] for r in rows)}-{max(r['grid'][0] for r in rows)} px), patch {args.patch}, step 0.5; "
              f"tiles without -> with the crop: {pairs}; mean {statistics.mean(r['tiles'] for r in rows):.2f} -> "
              f"{statistics.mean(r['crop_tiles'] for r in rows):.2f}; crop area "
              f"{statistics.mean(r['area_share'] for r in rows):.0%} of the grid; whole-grid tiles meeting the box "
              f"(mean): {statistics.mean(r['touching_tiles'] for r in rows):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
