"""Hostile inputs, session 6 (HOSTILE_FINDINGS.md, h5): labels.json that does not number muscle 1.

A drop whose labels.json says muscle 2, IMAT 1 was measured by `sarco measure` as value 1 (IMAT's
area given as SMA, status ok): the SMA path counted `--label`'s default whatever labels.json said,
and the drop's labels.json (beside masks/, not in it) was not looked for at all.
"""

from __future__ import annotations

import json

import numpy as np

from conftest import sarco_inprocess
from helpers import square_label_map


def _drop(tmp_path, labels: dict[str, int]):
    """drop/labels.json + drop/masks/m.nii.gz with muscle 100×100 px at labels['muscle'], IMAT 20×20 at labels['imat']."""
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    mask = tmp_path / "masks" / "m.nii.gz"
    square_label_map(mask, {labels["muscle"]: 100, labels["imat"]: 20}, dtype=np.uint8)
    return mask


def test_measure_reads_muscle_from_the_labels_json_given_with_labels(tmp_path):
    mask = tmp_path / "m.nii.gz"
    square_label_map(mask, {2: 100, 1: 20}, dtype=np.uint8)  # muscle 2 (100 cm²), IMAT 1 (4 cm²)
    (tmp_path / "l.json").write_text('{"muscle": 2, "imat": 1}')
    obj = json.loads(sarco_inprocess("measure", mask, "--labels", tmp_path / "l.json", "--sex", "M", "--json").stdout)
    assert obj["sma_cm2"] == 100.0 and obj["imat_area_cm2"] == 4.0, obj


def test_measure_finds_the_drops_labels_json_beside_the_masks_folder(tmp_path):
    mask = _drop(tmp_path, {"muscle": 2, "imat": 1})
    obj = json.loads(sarco_inprocess("measure", mask, "--sex", "M", "--json").stdout)
    assert obj["sma_cm2"] == 100.0 and obj["status"] == "ok", obj


def test_a_label_contradicting_the_labels_json_is_refused_in_one_line(tmp_path):
    mask = _drop(tmp_path, {"muscle": 2, "imat": 1})
    result = sarco_inprocess("measure", mask, "--label", "1", "--sex", "M")
    assert result.code == 2 and len(result.error_lines()) == 1, result.output
    assert "labels.json" in result.error_lines()[0] and "muscle 2" in result.error_lines()[0]


def test_a_label_agreeing_with_the_labels_json_is_accepted(tmp_path):
    mask = _drop(tmp_path, {"muscle": 2, "imat": 1})
    obj = json.loads(sarco_inprocess("measure", mask, "--label", "2", "--json").stdout)
    assert obj["sma_cm2"] == 100.0
