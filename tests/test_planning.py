"""Plan presets and the planner's edits, without running nnU-Net."""

from __future__ import annotations

import json

import pytest

from sarco_nn.constants import CT_WINDOW_HU
from sarco_nn.errors import SarcoError
from sarco_nn.planning import _round_patch, apply_preset, ensure_splits
from sarco_nn.presets import available_presets, load_preset, training_settings


def _plans(patch=(320, 320), strides=((1, 1), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2))):
    return {
        "foreground_intensity_properties_per_channel": {"0": {"mean": 40.0, "std": 100.0, "percentile_00_5": -900.0,
                                                              "percentile_99_5": 900.0}},
        "configurations": {"2d": {"patch_size": list(patch), "batch_size": 12, "normalization_schemes": ["ZScoreNormalization"],
                                  "use_mask_for_norm": [True], "architecture": {"arch_kwargs": {"strides": [list(s) for s in strides]}}}},
    }


def test_presets_ship_and_load():
    assert {"default", "cpu", "smoke"} <= set(available_presets())
    cpu = load_preset("cpu")
    assert cpu["target_spacing_mm"] == 1.0 and cpu["training"]["cpu_bf16"] is True
    assert training_settings(cpu, "smit")["initial_lr"] == pytest.approx(1e-3)
    assert training_settings(cpu, "nnunet")["initial_lr"] == pytest.approx(1e-2)


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(SarcoError, match="unknown plan preset"):
        load_preset("gpu-please")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SarcoError, match="not valid JSON"):
        load_preset(bad)


def test_apply_preset_windows_caps_and_rounds_patch():
    plans = _plans()
    apply_preset(plans, load_preset("cpu"))
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    lo, hi = CT_WINDOW_HU
    # CTNormalization computes (clip(x, p0.5, p99.5) - mean) / std  ==  (clip(x, lo, hi) - lo) / (hi - lo)
    assert (props["percentile_00_5"], props["percentile_99_5"], props["mean"], props["std"]) == (lo, hi, lo, hi - lo)
    config = plans["configurations"]["2d"]
    assert config["normalization_schemes"] == ["CTNormalization"] and config["use_mask_for_norm"] == [False]
    assert config["patch_size"] == [256, 256]
    assert config["batch_size"] == 2
    assert plans["sarco"]["preset"]["name"] == "cpu"


def test_round_patch_respects_every_divisor():
    assert _round_patch([40, 40], [64, 64], [32, 32]) == [32, 32]
    assert _round_patch([200, 150], None, [64, 32]) == [192, 160]
    assert _round_patch([10, 10], None, [32, 32]) == [32, 32]


def test_splits_keep_slices_of_one_patient_together(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    raw.mkdir(), pre.mkdir()
    rows = ["pid,source_case_id"] + [f"D_{i:04d},{'p' + str(i // 2)}" for i in range(12)]
    (raw / "manifest.csv").write_text("\n".join(rows) + "\n")
    cases = [f"D_{i:04d}" for i in range(12)]
    splits = json.loads(ensure_splits(raw, pre, cases).read_text())
    assert len(splits) == 5
    for split in splits:
        val = set(split["val"])
        assert not val & set(split["train"])
        for i in range(0, 12, 2):
            assert (cases[i] in val) == (cases[i + 1] in val)
    assert sorted(c for s in splits for c in s["val"]) == cases


def test_plan_with_unknown_preset_leaves_no_workspace_behind(tmp_path):
    from conftest import sarco_inprocess

    result = sarco_inprocess("plan", "--preset", "gpu-please", "--workspace", tmp_path / "ws")
    assert result.code == 2 and "unknown plan preset" in result.stderr
    assert not (tmp_path / "ws").exists()


def test_invalid_smit_network_in_a_preset_is_refused_at_plan_time():
    preset = load_preset("cpu")
    preset["trainer_overrides"]["smit"]["network"] = {"embed_dim": 24, "heads": [2, 2, 2, 2]}
    with pytest.raises(SarcoError, match="invalid SMIT network settings"):
        apply_preset(_plans(), preset)
    preset["trainer_overrides"]["smit"]["network"] = {"embed_dim": 30}  # 30 is not divisible by 4 heads
    with pytest.raises(SarcoError, match="invalid SMIT network settings"):
        apply_preset(_plans(), preset)


def test_a_dataset_of_several_tissues_gets_the_presets_multi_tissue_network():
    """#18: at the cpu budget four classes need a wider SMIT than muscle alone (bench/external_validation.py,
    lever embed32); the planner records that choice in the plans, where trainer and predictor read it."""
    from sarco_nn.planning import foreground_label_count
    from sarco_nn.presets import MULTI_TISSUE_NETWORK, preset_for_dataset, smit_network_config

    cpu = load_preset("cpu")
    muscle_only = {"labels": {"background": 0, "muscle": 1}}
    four = {"labels": {"background": 0, "muscle": 1, "imat": 2, "vat": 3, "sat": 4}}
    assert foreground_label_count(muscle_only) == 1 and foreground_label_count(four) == 4
    assert foreground_label_count({"labels": {"background": 0, "muscle": 1, "ignore": 2}}) == 1
    assert preset_for_dataset(cpu, 1) is cpu
    wide = preset_for_dataset(cpu, 4)
    base, chosen = smit_network_config(cpu), smit_network_config(wide)
    extra = cpu["trainer_overrides"]["smit"][MULTI_TISSUE_NETWORK]
    assert chosen.embed_dim == extra["embed_dim"] > base.embed_dim and chosen.num_heads == base.num_heads
    assert load_preset("cpu") == cpu  # the loaded preset is not changed by it
    # the plans record the chosen network: apply_preset writes what the trainer reads
    plans = _plans()
    apply_preset(plans, wide)
    assert smit_network_config(plans["sarco"]["preset"]).embed_dim == extra["embed_dim"]
    # a preset without the key, and a bad one refused in the preset's words
    smoke = load_preset("smoke")
    assert preset_for_dataset(smoke, 4) is smoke
    bad = {**cpu, "trainer_overrides": {**cpu["trainer_overrides"],
                                         "smit": {**cpu["trainer_overrides"]["smit"], MULTI_TISSUE_NETWORK: {"embed_dim": 33}}}}
    with pytest.raises(SarcoError, match="invalid SMIT network"):
        preset_for_dataset(bad, 4)


def test_foreground_labels_are_counted_as_nnunets_label_manager_reads_them():
    from sarco_nn.planning import foreground_label_count

    # two names of one value are one class; regions count as nnU-Net's heads (foreground regions)
    assert foreground_label_count({"labels": {"background": 0, "muscle": 1, "psoas": 1, "vat": 2}}) == 2
    regions = {"labels": {"background": 0, "body": [1, 2, 3], "muscle": [2, 3], "psoas": 3},
               "regions_class_order": [1, 2, 3]}
    assert foreground_label_count(regions) == 3
    with_ignore = {"labels": {"background": 0, "body": [1, 2], "muscle": 2, "ignore": 3},
                   "regions_class_order": [1, 2]}
    assert foreground_label_count(with_ignore) == 2
    for bad in ({"labels": {"muscle": 1}}, {"labels": {"background": 0, "muscle": 1, "ignore": 5}}):
        with pytest.raises(SarcoError, match="not nnU-Net labels"):
            foreground_label_count(bad)
