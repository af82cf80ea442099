"""HOSTILE #121: `sarco measure --level L3 --level L5` with L5 cut by the scan edge gives one row per level.

L3 is measured (the same numbers as measuring L3 alone on the whole volume), L5 is a `failed` row with
`l3_not_in_view` and its fix; the exit status is 1 and one stderr line names the failed level. When no
asked level can be placed the command is still refused in one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from sarco_nn.l3.rules import level_index_from_labels


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """A T12-S1 phantom volume whole, and the same cropped so its lowest slice is L5's centre (L5 cut)."""
    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume

    vol = generate_phantom_volume(np.random.default_rng([18, 3]), matrix=64)
    start = level_index_from_labels(vol.vertebra_labels, "L5")
    folder = tmp_path_factory.mktemp("vol121")
    paths = {}
    for crop, first in (("whole", 0), ("cut", start)):
        for name, array in (("ct", vol.ct_hu), ("mask", vol.tissue_mask), ("vert", vol.vertebra_labels)):
            paths[crop, name] = folder / f"{crop}_{name}.nii.gz"
            sitk.WriteImage(to_sitk(np.ascontiguousarray(array[first:]), vol.spacing_mm, False, 0.0),
                            str(paths[crop, name]), True)
    return vol, start, paths


def _measure(paths, crop, *args):
    return sarco_inprocess("measure", paths[crop, "mask"], "--image", paths[crop, "ct"], "--sex", "M",
                           "--height", "1.80", "--vertebrae", paths[crop, "vert"], *args)


def test_a_cut_level_is_a_failed_row_and_the_other_level_is_measured(volumes):
    vol, start, paths = volumes
    [whole_l3] = json.loads(_measure(paths, "whole", "--level", "L3", "--json").stdout)
    result = _measure(paths, "cut", "--level", "L3", "--level", "L5", "--json")
    assert result.code == 1, result.output
    l3, l5 = json.loads(result.stdout)
    assert (l3["level"], l3["status"], l5["level"], l5["status"]) == ("L3", whole_l3["status"], "L5", "failed")
    assert l3["slice_index"] == whole_l3["slice_index"] - start  # the same vertebra slice, cropped
    assert l3["sma_cm2"] == pytest.approx(whole_l3["sma_cm2"]) and l3["sma_cm2"] > 0
    # independently: muscle pixels of that slice × in-plane spacing
    muscle = int((vol.tissue_mask[l3["slice_index"] + start] == 1).sum())
    assert l3["sma_cm2"] == pytest.approx(muscle * vol.spacing_mm[1] * vol.spacing_mm[2] / 100, rel=1e-6)
    assert l5["sma_cm2"] is None and l5["slice_index"] is None and l5["sarcopenic"] == "unknown"
    [reason] = l5["reasons"]
    assert reason["code"] == "l3_not_in_view"
    assert "L5 not in field of view" in reason["message"] and "edge of the scan" in reason["message"]
    assert "Fix:" in reason["message"] and "drop --level L5" in reason["message"]
    assert set(l5) == set(l3)  # one shape for every row
    assert result.stderr.strip() == "1 of 2 row(s) failed: L5 (l3_not_in_view); the others are measured"


def test_the_text_output_shows_both_rows_in_the_order_asked(volumes):
    _, _, paths = volumes
    result = _measure(paths, "cut", "--level", "L5", "--level", "L3")
    assert result.code == 1 and not result.error_lines()
    lines = result.stdout.splitlines()
    assert lines[0] == "level L5: status: failed" and lines[1].startswith("  l3_not_in_view: ")
    assert any(line.startswith("slice ") and "(L3):" in line and "SMA " in line for line in lines[2:])


def test_body_composition_rows_keep_one_shape_with_a_failed_level(volumes):
    from sarco_nn import api

    _, _, paths = volumes
    l5, l3 = api.measure(paths["cut", "mask"], image=paths["cut", "ct"], tissues=True, level=["L5", "L3"],
                         vertebrae=paths["cut", "vert"])
    assert l5.status == "failed" and l5.sma_cm2 is None and l5.reasons[0][0] == "l3_not_in_view"
    assert l3.sma_cm2 > 0 and l3.status != "failed" and l3.record["sat_area_cm2"] is not None
    assert set(l5.record) == set(l3.record) and l5.record["sat_area_cm2"] is None
    assert l5.record["myosteatosis"] == "unknown"


@pytest.mark.parametrize("levels", [["L5"], ["L5", "L3"]])
def test_when_no_asked_level_can_be_placed_the_command_is_refused_in_one_line(volumes, levels, tmp_path):
    from sarco_nn.l3.rules import VERTEBRA_LABELS

    _, _, paths = volumes
    labels = sitk.ReadImage(str(paths["cut", "vert"]))
    array = sitk.GetArrayFromImage(labels)
    array[array == VERTEBRA_LABELS["L3"]] = 0  # L3 absent as well: nothing asked can be placed
    no_l3 = sitk.GetImageFromArray(array)
    no_l3.CopyInformation(labels)
    sitk.WriteImage(no_l3, str(tmp_path / "no_l3.nii.gz"))
    args = [a for level in levels for a in ("--level", level)]
    result = sarco_inprocess("measure", paths["cut", "mask"], "--vertebrae", tmp_path / "no_l3.nii.gz", *args)
    assert result.code == 2 and len(result.error_lines()) == 1 and result.stdout == ""
    assert "L5 not in field of view" in result.output and "no_l3.nii.gz" in result.output


def test_a_whole_volume_still_exits_0_with_every_level_measured(volumes):
    _, _, paths = volumes
    result = _measure(paths, "whole", "--level", "L3", "--level", "L5", "--json")
    assert result.code == 0 and result.stderr == ""
    assert [r["status"] != "failed" for r in json.loads(result.stdout)] == [True, True]
