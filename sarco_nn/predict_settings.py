"""What a `sarco predict` row is computed from: the ONE dict of run settings, and each case's inputs.

Why one place: a rerun into the same -o folder keeps a finished row only when it was computed from
what this run would compute it from (`sarco_nn.batch.row_fingerprint`). Checking settings one by
one let a changed clinical.csv, a retrained model or a retrained L3 localizer keep old SMA/SMI
and flags. Here:

- `run_settings` is every setting that changes every row (model files, thresholds, conventions,
  L3 options, test-time mirroring, the HU gate, the trunk rule, inference settings). It is the run
  file (sarco_predict.json): any change is refused unless --overwrite, naming what changed. A new
  measurement setting is one named entry of the dict; a network setting is one keyword in
  `inference` (e.g. ``inference={"bf16": True, "tile_step": 0.5}``).
- `case_inputs` is what changes one case only (its clinical record, its --l3-csv row, the
  localizer or vertebra mask that found its L3): a change recomputes that case on the rerun,
  with a note saying why.

The model enters by its files' content, folds and name (trainer, plans, configuration), not by
its absolute folder: a part resumed or merged where the workspace is mounted elsewhere is the same
model. The folder is recorded beside the settings for people (`batch.MODEL_RECORD`). Likewise
--l3-csv and --l3-from enter as given or not (their contents enter per case), a --thresholds file
by its file name and definition: their absolute paths are records too (`batch.PATHS_RECORD`).

Not in either, because no row depends on them: device (equal up to float rounding), io_workers,
progress, dicom_seg (its column is refreshed for every row at the end of each run), overwrite,
part/parts (folder identity, kept in the run file beside the settings).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePath
from typing import Any, Mapping

import os

from sarco_nn.batch import MODEL_RECORD, PATHS_RECORD, TABLES_RECORD, file_identity, settings_digest
from sarco_nn.errors import SarcoError

__all__ = ["FINGERPRINT_VERSION", "CASE_INPUTS", "run_settings", "run_records", "threshold_setting", "current_form",
           "earlier_rows_digest", "model_folder_of", "recorded_paths", "recorded_places", "locator_identities",
           "case_inputs", "describe_changes"]

#: Bumped when the meaning of an entry changes: a folder of an older version is then "other settings"
#: ("written by an earlier sarco version"), unless `current_form` can translate it (only the form changed).
#: 2: "model" is the model folder's name (trainer__plans__configuration), no longer its absolute path.
#: 3: "l3_csv" and "l3_from" say whether one is given (true/false), no longer its path; "thresholds" is a
#: named set as given or a threshold file's name, no longer its path.
FINGERPRINT_VERSION = 3
#: The settings that may be given as a file or folder, whose absolute paths `run_records` keeps.
_PATH_SETTINGS: tuple[str, ...] = ("l3_csv", "l3_from", "thresholds")
#: A setting read from the file of another (a threshold file's definition), for `recorded_places`.
_FILE_OF = {"threshold_definition": "thresholds"}
#: Names of the per-case inputs (`case_inputs`), in the order their digests appear in `computed_from`.
CASE_INPUTS: tuple[str, ...] = ("clinical", "l3_csv_row", "l3_locator")

#: What each changed input means, for the rerun's one-line note.
_CHANGE_TEXT = {
    "input": "scan changed",
    "mask": "mask file missing",
    "settings": "computed with other settings",
    "unrecorded": "written by an earlier sarco (no computed_from)",
    "clinical": "clinical record changed",
    "l3_csv_row": "--l3-csv row changed",
    "l3_locator": "L3 localizer or vertebra mask that found L3 changed",
}


def _conventions() -> dict[str, Any]:
    """The fixed conventions every measurement uses (a sarco upgrade that changes one is other settings)."""
    from sarco_nn import constants as c

    return {"ct_window_hu": c.CT_WINDOW_HU, "muscle_hu_gate": c.MUSCLE_HU_GATE, "adipose_hu_gate": c.ADIPOSE_HU_GATE,
            "hu_conventions": c.HU_CONVENTIONS, "tissue_labels": c.TISSUE_LABELS, "muscle_label": c.MUSCLE_LABEL,
            "derived_imat_max_hole_cm2": c.DERIVED_IMAT_MAX_HOLE_CM2, "level": c.DEFAULT_LEVEL}


def run_settings(model, decision: dict | None, threshold_set, *, thresholds: str, fast: bool, hu_gate: bool,
                 l3_slice: int | None, l3_csv: Path | None, l3_from: Path | None, locator: str, l3_rule: str,
                 slab: int, trunk_only: bool, inference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting that changes every row of a predict run, as one JSON-able dict (the run file).

    `model` is a `model_store.TrainedModel`; its files enter by content (`batch.file_identity`), so
    a model retrained in the same folder is other settings, and by its folder's name (trainer, plans,
    configuration), not its absolute path: the same model mounted elsewhere is the same settings.
    `threshold_set` enters by its definition (a threshold file edited in place is other settings),
    `thresholds` by `threshold_setting` (a file by its name); `l3_csv` and `l3_from` by whether they
    are given (their rows and masks enter per case, `case_inputs`): the same files mounted or copied
    elsewhere are the same settings (their paths are records, `run_records`). `trunk_only`: the trunk rule
    (`sarco_nn.trunk`), an entry of its own (a folder predicted with --keep-outside-trunk is
    refused by a default run, naming it). `inference`: further network settings (precision, tile
    step, ...), one entry each.
    """
    from sarco_nn.thresholds import DEFAULT_MYOSTEATOSIS_SET, get_threshold_set

    decision = decision or {}
    files = {name: file_identity(model.folder / name, by="content") for name in ("plans.json", "dataset.json")}
    files.update({f"fold_{fold}": file_identity(model.checkpoint(fold), by="content") for fold in model.folds})
    settings: dict[str, Any] = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "model": model.folder.name, "folds": list(model.folds), "model_files": files,
        "postprocessing": decision.get("postprocessing_fns", []),
        "postprocessing_kwargs": decision.get("postprocessing_kwargs", []),
        "tta": not fast,
        "thresholds": threshold_setting(thresholds), "threshold_definition": repr(threshold_set),
        "myosteatosis_definition": repr(get_threshold_set(DEFAULT_MYOSTEATOSIS_SET)),
        "hu_gate": hu_gate, "trunk_only": bool(trunk_only), "conventions": _conventions(),
        "l3_slice": l3_slice, "l3_csv": bool(l3_csv), "l3_from": bool(l3_from),
        "locator": locator, "l3_rule": l3_rule, "slab": slab,
    }
    for name, value in (inference or {}).items():
        if name in settings:
            raise ValueError(f"inference setting {name!r} would replace a run setting")
        settings[name] = value
    return settings


def threshold_setting(thresholds: str | PurePath) -> str:
    """What --thresholds enters the settings as: a named set as given (``paper``), a file by its name
    (``site.json``), not its path: its definition enters by content (``threshold_definition``)."""
    from sarco_nn.thresholds import is_named_set

    return str(thresholds) if is_named_set(thresholds) else PurePath(str(thresholds)).name


#: `run_records`' default for a table its caller does not pass: not recorded (unknown), unlike None (not given).
_NOT_PASSED: Any = object()


def run_records(model, *, thresholds: str, l3_csv: Path | None, l3_from: Path | None,
                clinical_csv: Path | None = _NOT_PASSED) -> dict[str, Any]:
    """The records a run file keeps beside its settings, never compared by a rerun: the model's
    absolute folder (`batch.MODEL_RECORD`) and the absolute path of each setting given as a file or
    folder (`batch.PATHS_RECORD`), for people; the content of each per-case table given
    (`batch.TABLES_RECORD`: --l3-csv, and --clinical when passed), so `predict-merge` can refuse
    parts of one batch that were given different tables."""
    from sarco_nn.thresholds import is_named_set

    given = {"l3_csv": l3_csv, "l3_from": l3_from, "thresholds": None if is_named_set(thresholds) else thresholds}
    paths = {name: os.path.abspath(os.path.expanduser(str(value))) for name, value in given.items() if value}
    tables = {"l3_csv": l3_csv, **({} if clinical_csv is _NOT_PASSED else {"clinical": clinical_csv})}
    contents = {name: file_identity(Path(value), by="content") if value else None for name, value in tables.items()}
    return {MODEL_RECORD: str(model.folder), PATHS_RECORD: paths, TABLES_RECORD: contents}


def current_form(settings: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier run file's settings in this version's form, where only the form changed; others as read.

    Why translate rather than bump and refuse: version 1 differs from 2 only in "model" (the model's
    absolute folder then, its name now), and the model files it recorded by content are compared
    as before. Refusing every version-1 folder ("written by an earlier sarco version") would make
    each user of a half-finished batch pass --overwrite and measure every case again for nothing;
    comparing "by the fields both have" would also pass a folder of an older sarco that lacked a
    setting (e.g. the trunk rule) as this run's. So a version-1 file is translated exactly (its
    folder's name; the folder itself moves to the record `batch.MODEL_RECORD`), every other field
    is compared as it stands, and an untranslatable version is still other settings.

    Version 2 differs from 3 only in "l3_csv", "l3_from" (a path or null then, whether given now) and
    "thresholds" (a path then for a file, its name now; a named set as it was): their contents were
    and are compared per case and by definition. A version-2 file is translated the same way (a
    version-1 file through 2 to 3); a field of another type is left as read (and so differs)."""
    settings = dict(settings)
    if settings.get("fingerprint_version") == 1 and isinstance(settings.get("model"), str):
        settings.update(fingerprint_version=2, model=PurePath(settings["model"]).name)
    if settings.get("fingerprint_version") == 2:
        settings["fingerprint_version"] = 3
        for name in ("l3_csv", "l3_from"):
            if name in settings and (settings[name] is None or isinstance(settings[name], str)):
                settings[name] = bool(settings[name])
        if isinstance(settings.get("thresholds"), str):
            settings["thresholds"] = threshold_setting(settings["thresholds"])
    return settings


def earlier_rows_digest(run: Mapping[str, Any]) -> str | None:
    """The settings digest the rows of an earlier run file (its settings, `batch.run_settings_in`)
    carry, when `current_form` translated it: those rows are then re-stamped with this run's
    (`batch.restamp_rows`) once the settings are found equal. None for a file of this version."""
    if current_form(run) == dict(run):
        return None
    return settings_digest({k: v for k, v in run.items() if k not in ("part", "parts")})


def model_folder_of(run: Mapping[str, Any]) -> str | None:
    """The model's absolute folder a run file records, for a message (`batch.MODEL_RECORD`; an
    earlier version's "model")."""
    folder = run.get(MODEL_RECORD) or run.get("model")
    return str(folder) if folder else None


def recorded_paths(run: Mapping[str, Any]) -> dict[str, str]:
    """{setting: absolute path} of the settings a run file records as given by a file or folder
    (`batch.PATHS_RECORD`; an earlier version's file: the paths its settings held)."""
    from sarco_nn.thresholds import is_named_set

    record = run.get(PATHS_RECORD)
    if isinstance(record, dict):
        return {str(k): str(v) for k, v in record.items() if v}
    if run.get("fingerprint_version") == FINGERPRINT_VERSION:
        return {}
    return {name: run[name] for name in _PATH_SETTINGS if isinstance(run.get(name), str) and run[name]
            and not (name == "thresholds" and is_named_set(run[name]))}


def recorded_places(run: Mapping[str, Any], changed: list[str]) -> str:
    """Where an earlier run file says its model and changed file settings were read, for the message
    refusing it: "/ws/nnUNet_results/D/T__P__2d, thresholds was /data/site.json"."""
    paths = recorded_paths(run)
    changed_files = {_FILE_OF.get(name, name) for name in changed}
    places = [model_folder_of(run), *(f"{name} was {paths[name]}" for name in _PATH_SETTINGS
                                      if name in paths and name in changed_files)]
    return ", ".join(place for place in places if place)


def locator_identities(l3_model_dir: Path) -> dict[str, str]:
    """{l3_method: identity} of the locators a row's L3 may come from that are not per case: the
    trained localizer's checkpoint and the installed TotalSegmentator version."""
    from sarco_nn.l3.localizer import CHECKPOINT_FILE

    identities = {"model": file_identity(Path(l3_model_dir) / CHECKPOINT_FILE, by="content")}
    try:
        from importlib.metadata import version

        identities["totalsegmentator"] = version("TotalSegmentator")
    except Exception:  # not installed: such rows cannot be recomputed the same way anyway
        identities["totalsegmentator"] = "absent"
    return identities


def case_inputs(case_id: str, l3_method: str | None, clinical: Mapping, l3_rows: Mapping, l3_from: Path | None,
                locators: Mapping[str, str]) -> dict[str, Any]:
    """What one case's row depends on beyond the run settings (names: `CASE_INPUTS`).

    `l3_method` is the row's own (`l3_method` column): the localizer's identity matters only to a
    row whose L3 it found, a vertebra mask's only to a row located from it, so retraining the
    localizer recomputes the volumes it located, not the single slices."""
    from sarco_nn.l3.choose import vertebra_mask_for

    record = clinical.get(case_id)
    method = l3_method or ""
    if method == "vertebrae":
        try:
            locator = file_identity(vertebra_mask_for(l3_from, case_id), by="content")
        except SarcoError:
            locator = "missing"
    else:
        locator = locators.get(method, "")
    return {"clinical": dataclasses.asdict(record) if record is not None else None,
            "l3_csv_row": l3_rows.get(case_id), "l3_locator": locator}


def describe_changes(n_cases: int, counts: Mapping[str, int]) -> str:
    """The one-line note of a rerun that measures finished cases again, e.g. "note: 2 finished
    case(s) of this folder are measured again: clinical record changed (2)"."""
    why = ", ".join(f"{_CHANGE_TEXT.get(name, name)} ({n})" for name, n in sorted(counts.items()))
    return f"note: {n_cases} finished case(s) of this folder are measured again: {why}"
