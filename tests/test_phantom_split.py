"""Family A's output is pinned: splitting or extending its code must not change a seed's phantom."""

from __future__ import annotations

import hashlib

import numpy as np

from dataset_conversion.phantoms.family_a import generate_phantom_slice, generate_phantom_volume

#: sha256 of family A's CT and muscle arrays for the seeds below, taken before the generator was split
#: into dataset_conversion/phantoms/ (commit 57dca8b). numpy/scipy builds that round floats differently
#: would change it; on the project's pinned environment it must never move.
FAMILY_A_SHA256 = "c611840b395ecde0441c62a6cd7009b06939d46d169b136c0bbe3594a8f25ad1"


def family_a_digest() -> str:
    h = hashlib.sha256()
    for seed in range(3):
        ph = generate_phantom_slice(np.random.default_rng(seed), matrix=96)
        h.update(ph.ct_hu.tobytes())
        h.update(ph.muscle_mask.tobytes())
        h.update(repr(ph.spacing_mm).encode())
    vol = generate_phantom_volume(np.random.default_rng(5), matrix=48, slice_spacing_mm=5.0)
    for arr in (vol.ct_hu, vol.muscle_mask, vol.vertebra_labels):
        h.update(arr.tobytes())
    return h.hexdigest()


def test_family_a_output_is_byte_identical_to_before_the_split():
    assert family_a_digest() == FAMILY_A_SHA256
