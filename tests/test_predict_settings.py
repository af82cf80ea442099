"""What a predict row is computed from (`sarco_nn.predict_settings`), without a trained model: every
row-changing setting moves the run's digest, every per-case input moves only that case's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarco_nn.batch import changed_settings, fingerprint_changes, normalised_settings, row_fingerprint, settings_digest
from sarco_nn.clinical import ClinicalRecord
from sarco_nn.l3.localizer import CHECKPOINT_FILE
from sarco_nn.model_store import TrainedModel
from sarco_nn.predict_settings import (CASE_INPUTS, FINGERPRINT_VERSION, case_inputs, current_form,
                                      earlier_rows_digest, locator_identities, run_settings)
from sarco_nn.thresholds import get_threshold_set


def _model(tmp_path: Path) -> TrainedModel:
    folder = tmp_path / "Dataset501_X" / "SarcoSMITTrainer__sarcoPlans_cpu__2d"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "muscle": 1}}))
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights-1")
    return TrainedModel(folder, ["0"])


def _settings(model, threshold="paper", **changes):
    options = dict(thresholds=threshold, fast=True, hu_gate=False, l3_slice=None, l3_csv=None, l3_from=None,
                   locator="auto", l3_rule="centroid", slab=1, trunk_only=True)
    options.update(changes)
    return run_settings(model, None, get_threshold_set(threshold), **options)


def test_every_row_changing_setting_moves_the_run_digest(tmp_path):
    model = _model(tmp_path)
    base = settings_digest(_settings(model))
    assert settings_digest(_settings(model)) == base  # an identical rerun
    for changed in (dict(fast=False), dict(hu_gate=True), dict(l3_slice=3), dict(locator="model"),
                    dict(l3_rule="max-area"), dict(slab=3), dict(threshold="prado"), dict(trunk_only=False),
                    dict(inference={"bf16": True}), dict(inference={"tile_step": 0.75})):
        assert settings_digest(_settings(model, **changed)) != base, changed
    (model.folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights-2")  # retrained in place
    assert settings_digest(_settings(model)) != base
    with pytest.raises(ValueError, match="would replace"):
        _settings(model, inference={"tta": False})
    with pytest.raises(ValueError, match="would replace"):  # the trunk rule is a setting of its own
        _settings(model, inference={"trunk_only": False})


def test_a_folder_predicted_with_or_without_the_trunk_rule_names_it_as_the_change(tmp_path):
    """The trunk rule is a named run setting: a folder of --keep-outside-trunk rows (or of a sarco
    that had no such entry) is refused by a default run naming `trunk_only`, not an opaque change."""
    model = _model(tmp_path)
    default = _settings(model)
    assert default["trunk_only"] is True
    kept_outside = normalised_settings(_settings(model, trunk_only=False))
    assert changed_settings(kept_outside, default) == ["trunk_only"]
    older = {k: v for k, v in kept_outside.items() if k != "trunk_only"}
    assert changed_settings(older, default) == ["trunk_only"]


def test_a_threshold_file_edited_in_place_is_other_settings(tmp_path):
    model = _model(tmp_path)
    path = tmp_path / "site.json"
    path.write_text(json.dumps({"name": "site", "metric": "smi", "male": 50.0, "female": 39.0}))
    before = settings_digest(_settings(model, threshold=str(path)))
    path.write_text(json.dumps({"name": "site", "metric": "smi", "male": 52.0, "female": 39.0}))
    assert settings_digest(_settings(model, threshold=str(path))) != before


def test_case_inputs_change_only_the_case_whose_input_changed(tmp_path):
    l3_dir = tmp_path / "l3_localizer"
    l3_dir.mkdir()
    (l3_dir / CHECKPOINT_FILE).write_bytes(b"localizer-1")
    clinical = {"a": ClinicalRecord("a", "F", 1.60), "b": ClinicalRecord("b", "M", 1.80)}
    run = settings_digest({"model": "/m"})

    def fingerprints(clinical, l3_rows, methods):
        locators = locator_identities(l3_dir)
        return {c: row_fingerprint(run, case_inputs(c, methods[c], clinical, l3_rows, None, locators)) for c in methods}

    methods = {"a": "model", "b": "single-slice"}
    first = fingerprints(clinical, {}, methods)
    assert fingerprints(clinical, {}, methods) == first
    taller = fingerprints({**clinical, "a": ClinicalRecord("a", "F", 1.70)}, {}, methods)
    assert fingerprint_changes(first["a"], taller["a"], CASE_INPUTS) == ["clinical"] and taller["b"] == first["b"]
    with_row = fingerprints(clinical, {"b": 12}, methods)
    assert fingerprint_changes(first["b"], with_row["b"], CASE_INPUTS) == ["l3_csv_row"] and with_row["a"] == first["a"]
    (l3_dir / CHECKPOINT_FILE).write_bytes(b"localizer-2")  # retrained: only the volume it located
    retrained = fingerprints(clinical, {}, methods)
    assert fingerprint_changes(first["a"], retrained["a"], CASE_INPUTS) == ["l3_locator"]
    assert retrained["b"] == first["b"]


def test_a_changed_vertebra_mask_changes_the_case_it_located(tmp_path):
    masks = tmp_path / "vertebrae"
    masks.mkdir()
    (masks / "a.nii.gz").write_bytes(b"labels-1")
    before = case_inputs("a", "vertebrae", {}, {}, masks, {})
    (masks / "a.nii.gz").write_bytes(b"labels-2")
    assert case_inputs("a", "vertebrae", {}, {}, masks, {}) != before
    assert case_inputs("b", "vertebrae", {}, {}, masks, {})["l3_locator"] == "missing"


def test_the_model_is_its_files_and_name_not_the_path_it_is_mounted_at(tmp_path):
    """A workspace copied to another node (another absolute path, new mtimes) is the same settings;
    a checkpoint of other content, or other folds, is not."""
    import shutil

    model = _model(tmp_path / "node_a")
    base = _settings(model)
    assert str(tmp_path) not in json.dumps(base)  # no absolute path of the model in what rows are keyed by
    shutil.copytree(tmp_path / "node_a", tmp_path / "node_b")
    moved = TrainedModel(tmp_path / "node_b" / model.folder.relative_to(tmp_path / "node_a"), ["0"])
    assert settings_digest(_settings(moved)) == settings_digest(base)
    (moved.folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights-2")
    assert changed_settings(normalised_settings(base), _settings(moved)) == ["model_files"]


def test_an_earlier_version_is_translated_only_where_the_form_alone_changed(tmp_path):
    """Version 1 recorded the model's absolute folder: read in this version's form it equals a run of
    the same model, so its rows resume (re-stamped from `earlier_rows_digest`). A file without a
    version, or one lacking a setting, is not made to match by the translation."""
    model = _model(tmp_path)
    current = normalised_settings(_settings(model))
    assert current["fingerprint_version"] == FINGERPRINT_VERSION == 2
    v1 = {**current, "fingerprint_version": 1, "model": str(model.folder)}
    assert changed_settings(current_form(v1), current) == []
    assert earlier_rows_digest(v1) == settings_digest(v1) != settings_digest(current)
    assert earlier_rows_digest(current) is None
    retrained = {**v1, "model_files": {**v1["model_files"], "fold_0": "9:other"}}
    assert changed_settings(current_form(retrained), current) == ["model_files"]
    no_trunk_rule = {k: v for k, v in v1.items() if k != "trunk_only"}
    assert changed_settings(current_form(no_trunk_rule), current) == ["trunk_only"]
    unversioned = {k: v for k, v in v1.items() if k != "fingerprint_version"}
    assert "fingerprint_version" in changed_settings(current_form(unversioned), current)
