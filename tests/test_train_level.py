"""`sarco train-l3 --level`: the localizer learned for another vertebra (issue 18), on generated volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import sarco_inprocess
from sarco_nn.errors import SarcoError


def test_phantom_cases_for_another_level_use_its_vertebra_labels():
    from dataset_conversion.phantom_volume import generate_phantom_volume
    from sarco_nn.l3.rules import level_index_from_labels
    from sarco_nn.l3.train_l3 import cases_from_phantoms

    l1 = cases_from_phantoms(2, seed=7, matrix=64, level="L1")
    l3 = cases_from_phantoms(2, seed=7, matrix=64)
    for i, (a, b) in enumerate(zip(l1, l3)):
        vol = generate_phantom_volume(np.random.default_rng([7, i, 31]), matrix=64)
        assert a.l3_slice_index == level_index_from_labels(vol.vertebra_labels, "L1")
        assert b.l3_slice_index == vol.l3_slice_index  # L3 training data unchanged
        assert a.l3_slice_index > b.l3_slice_index  # L1 lies cranial of L3 (canonical: 0 = most inferior)


def test_train_l3_level_l1_saves_a_localizer_for_l1_that_l3_never_uses(tmp_path):
    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume
    from sarco_nn.l3.localizer import L3Localizer
    from sarco_nn.l3.locate import locate_l3

    ws = tmp_path / "ws"
    result = sarco_inprocess("train-l3", "--phantoms", "2", "--level", "l1", "--steps", "2", "--validation", "0.5",
                             "-w", ws)
    assert result.code == 0, result.output
    assert "L1 localizer trained on 1 volumes" in result.output
    folder = ws / "localizer_L1"
    assert (folder / "l3_localizer.pt").is_file() and not (ws / "l3_localizer").exists()
    report = json.loads((folder / "l3_localizer.json").read_text())
    assert report["level"] == "L1" and report["config"]["level"] == "L1" and report["held_out"]["n_cases"] == 1
    assert L3Localizer.load(folder, "L1").level == "L1"
    with pytest.raises(SarcoError, match="trained for L1, not L3"):
        L3Localizer.load(folder)  # predict's L3 path refuses it

    vol = generate_phantom_volume(np.random.default_rng(99), matrix=64)
    image = to_sitk(vol.ct_hu, vol.spacing_mm, False, 0.0)
    with pytest.raises(SarcoError, match="trained for L1, not L3"):
        locate_l3(image, method="model", model_dir=folder)
    with pytest.raises(SarcoError, match="finds L3 only"):
        locate_l3(image, method="vertebrae", vertebra_mask=image, model_dir=folder, level="L1")
    try:  # two training steps: the answer may be "not in view", but it speaks of L1
        location = locate_l3(image, model_dir=folder, level="L1")
        assert location.method == "model"
    except SarcoError as exc:
        assert "L1 not in field of view" in str(exc)

    bad = sarco_inprocess("train-l3", "--phantoms", "1", "--level", "T5", "-w", ws)
    assert bad.code != 0 and "T5" in bad.output and len(bad.error_lines()) == 1
