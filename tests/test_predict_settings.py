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


def _as_version_2(settings: dict, *, l3_csv=None, l3_from=None, thresholds=None) -> dict:
    """`settings` (this version's, normalised) as version 2 wrote them: --l3-csv and --l3-from by their
    path as given (null when not given), --thresholds as given (a file by its path)."""
    return {**settings, "fingerprint_version": 2, "l3_csv": str(l3_csv) if l3_csv else None,
            "l3_from": str(l3_from) if l3_from else None, "thresholds": str(thresholds or settings["thresholds"])}


def test_an_earlier_version_is_translated_only_where_the_form_alone_changed(tmp_path):
    """Version 1 recorded the model's absolute folder: read in this version's form it equals a run of
    the same model, so its rows resume (re-stamped from `earlier_rows_digest`). A file without a
    version, or one lacking a setting, is not made to match by the translation."""
    model = _model(tmp_path)
    current = normalised_settings(_settings(model))
    assert current["fingerprint_version"] == FINGERPRINT_VERSION == 3
    v1 = {**_as_version_2(current), "fingerprint_version": 1, "model": str(model.folder)}
    assert current_form(v1) == current
    assert earlier_rows_digest(v1) == settings_digest(v1) != settings_digest(current)
    assert earlier_rows_digest(current) is None
    retrained = {**v1, "model_files": {**v1["model_files"], "fold_0": "9:other"}}
    assert changed_settings(current_form(retrained), current) == ["model_files"]
    no_trunk_rule = {k: v for k, v in v1.items() if k != "trunk_only"}
    assert changed_settings(current_form(no_trunk_rule), current) == ["trunk_only"]
    unversioned = {k: v for k, v in v1.items() if k != "fingerprint_version"}
    assert "fingerprint_version" in changed_settings(current_form(unversioned), current)


def test_a_version_2_file_whose_settings_named_files_by_path_is_translated_exactly(tmp_path):
    """Version 2 held the paths of --l3-csv, --l3-from and a --thresholds file; this version whether the
    first two are given and the threshold file's name. A version-2 (or 1) file of the same run reads
    back as this run's settings exactly, wherever its files were mounted then; a file given then and
    not now, a named set for a file, or another file name is still other settings."""
    model = _model(tmp_path)
    site = tmp_path / "now" / "site.json"
    site.parent.mkdir()
    site.write_text(json.dumps({"name": "site", "metric": "smi", "male": 50.0, "female": 39.0}))
    given = dict(l3_csv=tmp_path / "now" / "l3.csv", l3_from=tmp_path / "now" / "vertebrae")
    current = normalised_settings(_settings(model, threshold=str(site), **given))
    assert (current["l3_csv"], current["l3_from"], current["thresholds"]) == (True, True, "site.json")
    then = {name: f"/mnt/old/{Path(path).name}" for name, path in given.items()}  # the earlier mount
    v2 = _as_version_2(current, thresholds="/mnt/old/site.json", **then)
    assert v2["l3_csv"] == "/mnt/old/l3.csv" and v2["thresholds"] == "/mnt/old/site.json"
    assert current_form(v2) == current
    assert current_form({**v2, "fingerprint_version": 1, "model": str(model.folder)}) == current
    assert earlier_rows_digest(v2) == settings_digest(v2) != settings_digest(current)
    assert changed_settings(current_form({**v2, "l3_csv": None}), current) == ["l3_csv"]
    assert changed_settings(current_form({**v2, "l3_from": None}), current) == ["l3_from"]
    assert changed_settings(current_form({**v2, "thresholds": "/mnt/old/other.json"}), current) == ["thresholds"]
    named = _as_version_2(normalised_settings(_settings(model)))
    assert current_form(named)["thresholds"] == "paper" and current_form(named) == normalised_settings(_settings(model))
    assert changed_settings(current_form(named), current) == ["l3_csv", "l3_from", "threshold_definition", "thresholds"]
    odd = {**v2, "l3_csv": 7}  # not a form version 2 wrote: left as read, so it differs
    assert changed_settings(current_form(odd), current) == ["l3_csv"]


def test_settings_given_as_files_enter_by_what_they_are_not_where_they_are_mounted(tmp_path):
    """--l3-csv / --l3-from enter as given or not (their rows and masks enter per case), a threshold
    file by its name and definition: the same files at another path are the same settings. Their
    absolute paths are records (`run_records`), for people."""
    from sarco_nn.batch import MODEL_RECORD, PATHS_RECORD, run_settings_in
    from sarco_nn.predict_settings import recorded_places, recorded_paths, run_records

    model = _model(tmp_path)
    rule = {"name": "site", "metric": "smi", "male": 50.0, "female": 39.0}
    for mount in ("a", "b"):
        (tmp_path / mount).mkdir()
        (tmp_path / mount / "site.json").write_text(json.dumps(rule))

    def at(mount, **changes):
        folder = tmp_path / mount
        options = dict(threshold=str(folder / "site.json"), l3_csv=folder / "l3.csv", l3_from=folder / "vertebrae")
        return _settings(model, **{**options, **changes})

    assert settings_digest(at("a")) == settings_digest(at("b"))
    assert str(tmp_path) not in json.dumps(at("a"))  # no absolute path in what rows are keyed by
    assert changed_settings(normalised_settings(at("a")), at("b", l3_csv=None)) == ["l3_csv"]
    assert changed_settings(normalised_settings(at("a")), at("b", l3_from=None)) == ["l3_from"]
    (tmp_path / "b" / "site.json").write_text(json.dumps({**rule, "male": 52.0}))  # other contents
    assert changed_settings(normalised_settings(at("a")), at("b")) == ["threshold_definition"]
    (tmp_path / "b" / "copy.json").write_text(json.dumps(rule))  # same contents, another file name
    assert changed_settings(normalised_settings(at("a")), at("b", threshold=str(tmp_path / "b" / "copy.json"))) == [
        "thresholds"]
    records = run_records(model, thresholds=str(tmp_path / "a" / "site.json"), l3_csv=tmp_path / "a" / "l3.csv",
                          l3_from=None)
    from sarco_nn.batch import TABLES_RECORD, file_identity

    assert records == {MODEL_RECORD: str(model.folder), PATHS_RECORD: {
        "l3_csv": str(tmp_path / "a" / "l3.csv"), "thresholds": str(tmp_path / "a" / "site.json")},
        TABLES_RECORD: {"l3_csv": file_identity(tmp_path / "a" / "l3.csv", by="content")}}
    assert run_records(model, thresholds="Paper", l3_csv=None, l3_from=None)[PATHS_RECORD] == {}
    run = {**normalised_settings(at("a")), **records}
    assert run_settings_in(run) == normalised_settings(at("a"))  # records are never compared
    assert recorded_paths(run) == records[PATHS_RECORD]
    assert recorded_places(run, ["thresholds"]) == f"{model.folder}, thresholds was {tmp_path / 'a' / 'site.json'}"
    assert recorded_places(run, ["threshold_definition"]) == recorded_places(run, ["thresholds"])  # read from it
    assert recorded_places(run, ["slab"]) == str(model.folder)
    v2 = _as_version_2(normalised_settings(at("a")), l3_csv="/old/l3.csv", thresholds="/old/site.json")
    assert recorded_paths(v2) == {"l3_csv": "/old/l3.csv", "thresholds": "/old/site.json"}  # as version 2 held them
    assert recorded_paths(_as_version_2(normalised_settings(_settings(model)))) == {}  # "paper" is no path
