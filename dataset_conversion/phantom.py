"""Compatibility names for the phantom generator, which lives in ``dataset_conversion.phantoms``.

Why kept: tests, benches and the CLI import these names; the package splits family A along its jobs
(anatomy_a, render_a, scanner_a, family_a) and adds family B beside it.
"""

from __future__ import annotations

from dataset_conversion.phantoms.anatomy_a import Anatomy, Tissue
from dataset_conversion.phantoms.common import VERTEBRA_LABELS, PhantomSlice
from dataset_conversion.phantoms.family_a import generate_phantom_slice, sample_anatomy
from dataset_conversion.phantoms.render_a import body_extent, capsule, ellipse, render_labels, tune_muscle_scale
from dataset_conversion.phantoms.scanner_a import Grid, choose_grid, tissue_to_hu
from dataset_conversion.phantoms.writer import DropinCase, dropin_case, to_sitk, write_dropin_dataset

__all__ = [
    "Anatomy", "DropinCase", "Grid", "PhantomSlice", "Tissue", "VERTEBRA_LABELS", "body_extent", "capsule",
    "choose_grid", "dropin_case", "ellipse", "generate_phantom_slice", "render_labels", "sample_anatomy",
    "tissue_to_hu", "to_sitk", "tune_muscle_scale", "write_dropin_dataset",
]
