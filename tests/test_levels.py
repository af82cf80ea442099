"""Measuring at several vertebral levels (`sarco measure --level L1 --level L3 --vertebrae ...`, issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from sarco_nn.errors import SarcoError
from sarco_nn.l3.result import L3NotFound, LevelNotFound
from sarco_nn.l3.rules import VERTEBRA_LABELS, l3_index_from_labels, level_index_from_labels


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A T12-S1 phantom volume: CT, four-tissue mask on every slice, TotalSegmentator vertebra labels."""
    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume

    vol = generate_phantom_volume(np.random.default_rng([18, 3]), matrix=64)
    folder = tmp_path_factory.mktemp("vol")
    paths = {}
    for name, array in (("ct", vol.ct_hu), ("mask", vol.tissue_mask), ("vert", vol.vertebra_labels)):
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(to_sitk(array, vol.spacing_mm, False, 0.0), str(paths[name]), True)
    return vol, paths


def _measure(paths, *args):
    result = sarco_inprocess("measure", paths["mask"], "--image", paths["ct"], "--sex", "M", "--height", "1.80",
                             "--json", *args)
    return result


def test_level_index_from_labels_finds_each_vertebra_and_l3_rule_is_unchanged(volume):
    vol, _ = volume
    labels = vol.vertebra_labels
    assert l3_index_from_labels(labels) == level_index_from_labels(labels, "L3")
    indices = [level_index_from_labels(labels, lv) for lv in ("L5", "L4", "L3", "L2", "L1")]
    assert indices == sorted(indices) and len(set(indices)) == 5  # caudal to cranial, one slice each
    for level, index in zip(("L5", "L4", "L3", "L2", "L1"), indices):
        assert (labels[index] == VERTEBRA_LABELS[level]).any()
    cut = labels.copy()
    cut[: indices[1]] = 0  # L5 gone
    with pytest.raises(LevelNotFound, match="L5 not in field of view"):
        level_index_from_labels(cut, "L5")
    with pytest.raises(L3NotFound):
        level_index_from_labels(np.where(labels == VERTEBRA_LABELS["L3"], 0, labels), "L3")


def test_one_row_per_level_with_level_column_and_a_flag_only_at_l3(volume):
    vol, paths = volume
    result = _measure(paths, "--level", "L1", "--level", "L3", "--vertebrae", paths["vert"], "--tissues")
    assert result.code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["level"] for r in rows] == ["L1", "L3"]
    assert all(r["level_source"] == "vertebrae (centroid)" for r in rows)
    l1, l3 = rows
    assert l1["slice_index"] == level_index_from_labels(vol.vertebra_labels, "L1")
    assert l3["slice_index"] == l3_index_from_labels(vol.vertebra_labels)  # the L3 rule, unchanged
    assert abs(l3["slice_index"] - vol.l3_slice_index) <= 1  # the phantom's body-centre slice
    pixel = vol.spacing_mm[1] * vol.spacing_mm[2] / 100.0
    for row in rows:  # every tissue measured at its level's slice, exactly
        k = row["slice_index"]
        assert row["sma_cm2"] == pytest.approx(np.count_nonzero(vol.tissue_mask[k] == 1) * pixel, abs=1e-4)
        assert row["vat_area_cm2"] == pytest.approx(np.count_nonzero(vol.tissue_mask[k] == 3) * pixel, abs=1e-4)
    assert isinstance(l3["sarcopenic"], bool) and "paper" in l3["threshold"]
    # never L3's cut-offs at L1: areas only, with the reason
    assert l1["sarcopenic"] == "unknown" and "no paper cut-off published for L1" in l1["threshold"]
    assert l1["myosteatosis"] == "unknown" and "L1" in l1["myosteatosis_threshold"]
    assert l1["sma_cm2"] > 0 and l1["sma_cm2"] != l3["sma_cm2"]


def test_a_set_published_for_l1_flags_at_l1_and_not_at_l3(volume, tmp_path):
    _, paths = volume
    custom = tmp_path / "l1_set.json"
    custom.write_text(json.dumps({"name": "l1_only", "metric": "sma", "male": 450, "female": 450, "level": "L1"}))
    rows = json.loads(_measure(paths, "--level", "L3", "--level", "L1", "--vertebrae", paths["vert"],
                               "--thresholds", custom).stdout)
    assert [r["level"] for r in rows] == ["L3", "L1"]
    assert rows[1]["sarcopenic"] is True  # SMA < 450 cm² at L1 (1000 would flag every patient: refused, #117)
    assert rows[0]["sarcopenic"] == "unknown" and "no l1_only cut-off published for L3" in rows[0]["threshold"]


def test_several_levels_need_vertebra_labels_and_a_missing_level_is_one_line(volume, tmp_path):
    vol, paths = volume
    result = _measure(paths, "--level", "L1", "--level", "L3")
    assert result.code != 0 and "need vertebra labels" in result.output and "--vertebrae" in result.output
    assert len(result.error_lines()) == 1
    no_l1 = sitk.ReadImage(str(paths["vert"]))
    array = sitk.GetArrayFromImage(no_l1)
    array[array == VERTEBRA_LABELS["L1"]] = 0
    cut = sitk.GetImageFromArray(array)
    cut.CopyInformation(no_l1)
    sitk.WriteImage(cut, str(tmp_path / "cut.nii.gz"))
    result = _measure(paths, "--level", "L1", "--vertebrae", tmp_path / "cut.nii.gz")
    assert result.code != 0 and len(result.error_lines()) == 1
    assert "L1 not in field of view" in result.output and "cut.nii.gz" in result.output
    with pytest.raises(SarcoError, match="--slice and --vertebrae"):
        from sarco_nn.levels import level_slices

        level_slices(["L3"], sitk.ReadImage(str(paths["mask"])), paths["vert"], slice_index=3)


def test_totalsegmentator_folder_of_per_level_files(volume, tmp_path):
    vol, paths = volume
    from dataset_conversion.phantom import to_sitk

    folder = tmp_path / "ts"
    folder.mkdir()
    for level in ("L2", "L4"):
        binary = (vol.vertebra_labels == VERTEBRA_LABELS[level]).astype(np.uint8)
        sitk.WriteImage(to_sitk(binary, vol.spacing_mm, False, 0.0), str(folder / f"vertebrae_{level}.nii.gz"))
    rows = json.loads(_measure(paths, "--level", "L4", "--level", "L2", "--vertebrae", folder).stdout)
    assert [(r["level"], r["slice_index"]) for r in rows] == [
        ("L4", level_index_from_labels(vol.vertebra_labels, "L4")), ("L2", level_index_from_labels(vol.vertebra_labels, "L2"))]


def test_single_declared_level_keeps_the_default_path(volume):
    vol, paths = volume
    k = vol.l3_slice_index
    row = json.loads(_measure(paths, "--slice", str(k)).stdout)
    assert row["level"] == "L3" and row["level_source"] == "declared" and isinstance(row["sarcopenic"], bool)
    row = json.loads(_measure(paths, "--slice", str(k), "--level", "L2").stdout)
    assert row["level"] == "L2" and row["sarcopenic"] == "unknown"


def test_api_measure_takes_several_levels_as_the_command_does(volume):
    """The multi-level loop lives under api.measure: a script gets the rows `sarco measure` prints."""
    from sarco_nn import api

    _, paths = volume
    printed = json.loads(_measure(paths, "--level", "L1", "--level", "L3", "--vertebrae", paths["vert"]).stdout)
    got = api.measure(paths["mask"], image=paths["ct"], sex="M", height_m=1.80, level=["l1", "L3", "L1"],
                      vertebrae=paths["vert"])
    assert [dict(m.record) for m in got] == printed  # "l1" canonical, a repeated level measured once
    assert [(m.level, m.level_source) for m in got] == [("L1", "vertebrae (centroid)"), ("L3", "vertebrae (centroid)")]
    assert got[0].sarcopenic is None and isinstance(got[1].sarcopenic, bool)
    with pytest.raises(SarcoError, match="level 'T5' is not supported"):
        api.measure(paths["mask"], level=["L3", "T5"], vertebrae=paths["vert"])
