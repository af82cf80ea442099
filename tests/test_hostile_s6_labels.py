"""Hostile inputs, session 6 (HOSTILE_FINDINGS.md, h5): labels.json that does not number muscle 1.

A drop whose labels.json says muscle 2, IMAT 1 was measured by `sarco measure` as value 1 (IMAT's
area given as SMA, status ok): the SMA path counted `--label`'s default whatever labels.json said,
and the drop's labels.json (beside masks/, not in it) was not looked for at all.
"""

from __future__ import annotations

import json

import numpy as np

from conftest import sarco_inprocess


def _muscle_with_imat(path, muscle: int, imat: int) -> None:
    """A 1 mm map: muscle 10000 px (100 cm²) around a 20×20 IMAT square (4 cm²) lying within it, as IMAT
    does (`sarco_nn.tissue_layout`: IMAT beside the muscle, with no SAT, is a tissue_layout review)."""
    import SimpleITK as sitk

    arr = np.zeros((200, 200), np.uint8)
    arr[:100, :104] = muscle
    arr[40:60, 40:60] = imat
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.0, 1.0))
    sitk.WriteImage(image, str(path))


def _drop(tmp_path, labels: dict[str, int]):
    """drop/labels.json + drop/masks/m.nii.gz with muscle 100 cm² at labels['muscle'], IMAT 4 cm² at labels['imat']."""
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    mask = tmp_path / "masks" / "m.nii.gz"
    _muscle_with_imat(mask, labels["muscle"], labels["imat"])
    return mask


def test_measure_reads_muscle_from_the_labels_json_given_with_labels(tmp_path):
    mask = tmp_path / "m.nii.gz"
    _muscle_with_imat(mask, 2, 1)  # muscle 2 (100 cm²), IMAT 1 (4 cm²)
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
