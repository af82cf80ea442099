"""Hostile inputs, session 6 (HOSTILE_FINDINGS.md, h5): a vertebra label in two pieces.

TotalSegmentator sometimes gives a piece of another vertebra the L3 label. The centroid of both pieces
then falls between them, in another vertebra, and that slice was measured and flagged as "L3".
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from sarco_nn.l3.result import L3NotFound
from sarco_nn.l3.rules import VERTEBRA_LABELS, level_index_from_labels


def _vertebrae(stray: bool) -> np.ndarray:
    labels = np.zeros((40, 32, 32), np.uint8)
    labels[5:10, 10:20, 10:20] = VERTEBRA_LABELS["L4"]
    labels[10:15, 10:20, 10:20] = VERTEBRA_LABELS["L3"]
    labels[15:20, 10:20, 10:20] = VERTEBRA_LABELS["L2"]
    if stray:
        labels[30:33, 10:20, 10:20] = VERTEBRA_LABELS["L3"]  # a mislabelled piece higher up
    return labels


def test_one_piece_gives_its_centroid():
    assert level_index_from_labels(_vertebrae(stray=False), "L3") == 12


@pytest.mark.parametrize("rule", ["centroid", "max-area"])
def test_a_label_in_two_pieces_places_no_slice(rule):
    with pytest.raises(L3NotFound, match="2 separate pieces"):
        level_index_from_labels(_vertebrae(stray=True), "L3", rule)


def test_measure_with_a_two_piece_level_is_refused_in_one_line(tmp_path):
    mask = np.zeros((40, 32, 32), np.uint8)
    mask[:, 2:30, 2:30] = 1
    for array, name in ((mask, "mask.nii.gz"), (_vertebrae(stray=True), "vert.nii.gz")):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((1.0, 1.0, 2.5))
        sitk.WriteImage(img, str(tmp_path / name))
    result = sarco_inprocess("measure", tmp_path / "mask.nii.gz", "--vertebrae", tmp_path / "vert.nii.gz",
                             "--level", "L3", "--sex", "M")
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    assert "separate pieces" in result.error_lines()[0] and "SMA" not in result.stdout
