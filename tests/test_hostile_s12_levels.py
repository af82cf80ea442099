"""Hostile inputs, session 12 (HOSTILE_FINDINGS.md #110-#112, h3): vertebra labels that do not read as one
TotalSegmentator v2 column. Each was measured and flagged as "L3", status ok: TotalSegmentator v1 numbering (its
29 is T6), L3 and L4 swapped, and one L3 label over L3 and L4."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from helpers import DATA, needs_data
from sarco_nn.l3.result import L3NotFound, LevelMislabelled
from sarco_nn.l3.rules import VERTEBRA_LABELS, V1_VERTEBRA_OFFSET, level_index_from_labels

ORDER = ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{k}" for k in range(12, 0, -1)]
HEIGHT = 6  # slices per vertebra


def _column(numbering: dict[str, int], nz: int = 130) -> np.ndarray:
    """Vertebrae stacked from slice 2 upwards, S1 first, one HEIGHT-slice box each, in `numbering`."""
    labels = np.zeros((nz, 24, 24), np.uint8)
    for i, name in enumerate(ORDER):
        z = 2 + i * HEIGHT
        if name in numbering and z + HEIGHT < nz - 1:
            labels[z:z + HEIGHT, 8:16, 8:16] = numbering[name]
    return labels


V2 = {name: VERTEBRA_LABELS[name] for name in ORDER}
V1 = {name: VERTEBRA_LABELS[name] - V1_VERTEBRA_OFFSET for name in ORDER if name != "S1"}  # L5 = 18 ... T1 = 34


def _l3_centre() -> int:
    z = 2 + ORDER.index("L3") * HEIGHT
    return int(np.floor(z + (HEIGHT - 1) / 2 + 0.5))


def test_a_v2_column_places_l3_at_its_own_centre():
    assert level_index_from_labels(_column(V2), "L3") == _l3_centre()


def test_totalsegmentator_v1_numbering_is_refused_where_label_29_is_t6():
    labels = _column(V1)
    assert V1["T6"] == VERTEBRA_LABELS["L3"]  # the trap: v1's T6 carries v2's L3 value
    with pytest.raises(LevelMislabelled, match=r"TotalSegmentator v1 numbering.*label 29 is T6") as caught:
        level_index_from_labels(labels, "L3")
    assert "add 9" in caught.value.fix


def test_a_v1_map_of_an_abdomen_without_label_29_names_the_numbering_not_the_field_of_view():
    labels = _column({k: v for k, v in V1.items() if k in ("L5", "L4", "L3", "L2", "L1", "T12")})
    with pytest.raises(LevelMislabelled, match="v1 numbering"):
        level_index_from_labels(labels, "L3")


def test_swapped_l3_and_l4_are_refused():
    labels = _column({**V2, "L3": V2["L4"], "L4": V2["L3"]})
    with pytest.raises(LevelMislabelled, match=r"L3 \(label 29\) does not lie above L4"):
        level_index_from_labels(labels, "L3")


def test_one_l3_label_over_l3_and_l4_is_refused():
    labels = _column({**V2, "L4": V2["L3"]})
    with pytest.raises(LevelMislabelled, match=r"2\.0x the voxels of its neighbour L2"):
        level_index_from_labels(labels, "L3")
    assert isinstance(LevelMislabelled("L3", "x"), L3NotFound)  # predict's --l3-from rows treat it as not in view


@needs_data
def test_the_real_totalsegmentator_maps_still_place_every_lumbar_level():
    """example_ct's vertebra map and its 61-class map (organs 18-25 in v2) give the slices of tests/test_l3.py."""
    from sarco_nn.image_io import to_canonical

    folder = DATA / "totalsegmentator"
    for name in ("example_ct_vertebrae_totalseg.nii.gz", "example_seg_fast_force_split.nii.gz"):
        labels = sitk.GetArrayFromImage(to_canonical(sitk.ReadImage(str(folder / name))))
        assert abs(level_index_from_labels(labels, "L3") - 73.5) <= 1  # README: L3 centroid ≈ slice 73.5
        for level in ("L1", "L2", "L4", "L5"):
            level_index_from_labels(labels, level)


def test_measure_with_a_v1_vertebra_map_is_one_line_not_a_t6_sma(tmp_path):
    labels = _column(V1)
    mask = np.zeros_like(labels)
    mask[:, 1:23, 1:23] = 1
    for array, name in ((labels, "vert.nii.gz"), (mask, "mask.nii.gz")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 5.0))
        sitk.WriteImage(image, str(tmp_path / name))
    result = sarco_inprocess("measure", tmp_path / "mask.nii.gz", "--vertebrae", tmp_path / "vert.nii.gz")
    assert result.code == 2 and len(result.error_lines()) == 1 and "v1 numbering" in result.output
    assert "SMA" not in result.stdout


def test_l3_whose_lower_half_carries_the_l4_label_is_refused():
    """#119: the centre of the remaining upper half was measured as L3 (a slice near the L2 disc)."""
    labels = _column(V2)
    l3 = np.flatnonzero((labels == V2["L3"]).any(axis=(1, 2)))
    lower = labels[l3[0]:l3[0] + HEIGHT // 2]  # a view: the lower half of L3 relabelled L4
    lower[lower == V2["L3"]] = V2["L4"]
    # L3 keeps 3 of 6 slices, L4 grows to 9: L3 holds 3/9 of its lower neighbour's voxels
    with pytest.raises(LevelMislabelled, match=r"only 0\.33x the voxels of its neighbour L4"):
        level_index_from_labels(labels, "L3")
