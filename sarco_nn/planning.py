"""`sarco plan`: nnU-Net fingerprint → planner → preset → preprocessing, through nnU-Net's own API.

The CT window is baked into the plans data: CTNormalization keeps its name and gets fixed
statistics (percentiles -175/250, mean -175, std 425), so it computes (clip(x) + 175) / 425 in
[0, 1]. No fork of nnU-Net's normalisation (nnU-Net looks custom normalisers up by name only in
its own package, and a monkeypatch would have to run in every spawned worker); it survives spawned
workers, model sharing and inference because the plans travel with the model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

from sarco_nn.atomic import write_json_atomic
from sarco_nn.constants import CT_WINDOW_HU, SLICE_AXIS_SPACING_MM
from sarco_nn.errors import SarcoError
from sarco_nn.presets import load_preset, plans_identifier, preset_for_dataset, smit_network_config
from sarco_nn.workspace import Workspace

CONFIGURATION = "2d"
#: nnU-Net's planning printout, per dataset in the preprocessed folder.
PLAN_LOG = "sarco_plan.log"


def _window_plans(plans: dict[str, Any]) -> None:
    """Make nnU-Net's CTNormalization compute (clip(x, lo, hi) - lo) / (hi - lo), i.e. the study's window → [0, 1]."""
    lo, hi = CT_WINDOW_HU
    for channel in plans["foreground_intensity_properties_per_channel"].values():
        channel.update({"percentile_00_5": lo, "percentile_99_5": hi, "mean": lo, "std": hi - lo})
    for config in plans["configurations"].values():
        if "normalization_schemes" in config:
            config["normalization_schemes"] = ["CTNormalization"] * len(config["normalization_schemes"])
            config["use_mask_for_norm"] = [False] * len(config["use_mask_for_norm"])


def _round_patch(patch: list[int], cap: list[int] | None, divisors: list[int]) -> list[int]:
    """Cap the patch, then round each edge to a multiple of its divisor (never below one divisor)."""
    capped = [min(p, c) for p, c in zip(patch, cap)] if cap else list(patch)
    return [max(d, int(round(p / d)) * d) for p, d in zip(capped, divisors)]


def patch_divisors(config: dict[str, Any], preset: dict[str, Any]) -> list[int]:
    """Per axis, what every trainer's input edge must be a multiple of (plan patch, whole-slice tile).

    Every trainer (U-Net, ResEnc, SMIT) must accept the same patch, so this divides by all their
    downsamplings; it also refuses bad SMIT network settings early."""
    strides = config["architecture"]["arch_kwargs"]["strides"]
    smit_divisor = smit_network_config(preset).size_divisor
    return [math.lcm(math.prod(s[axis] for s in strides), smit_divisor) for axis in range(len(strides[0]))]


def apply_preset(plans: dict[str, Any], preset: dict[str, Any]) -> None:
    """Edit nnU-Net's 2d plan in place: patch cap/rounding, batch size, CT window, preset record."""
    _window_plans(plans)
    config = plans["configurations"][CONFIGURATION]
    divisors = patch_divisors(config, preset)
    config["patch_size"] = _round_patch(config["patch_size"], preset.get("max_patch_size"), divisors)
    if preset.get("batch_size"):
        config["batch_size"] = int(preset["batch_size"])
    plans["sarco"] = {"preset": preset, "ct_window_hu": list(CT_WINDOW_HU)}


def _make_planner_class(preset: dict[str, Any]):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    class SarcoPlanner(ExperimentPlanner):
        """nnU-Net's default planner; the preset is applied to the plan just before it is saved."""

        def generate_data_identifier(self, configuration_name: str) -> str:
            return self.plans_identifier + "_" + configuration_name

        def save_plans(self, plans: dict) -> None:
            apply_preset(plans, preset_for_dataset(preset, foreground_label_count(self.dataset_json)))
            super().save_plans(plans)

    return SarcoPlanner


def foreground_label_count(dataset_json: dict[str, Any]) -> int:
    """Classes a model of this dataset segments, as nnU-Net's `LabelManager` reads dataset.json: its
    foreground regions with region-based labels, else its foreground label values (background and the
    ignore label left out; two names of one value are one class). The planner calls it after nnU-Net's
    integrity check, which builds the same `LabelManager`; a label dict it refuses is a SarcoError."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    try:
        labels = LabelManager(dataset_json.get("labels") or {}, dataset_json.get("regions_class_order"))
    except (AssertionError, RuntimeError, TypeError, ValueError) as exc:
        raise SarcoError(f"dataset.json labels {dataset_json.get('labels')!r} are not nnU-Net labels ({exc})",
                         fix="background must be 0, the ignore label the highest value (see nnU-Net's "
                             "dataset format).") from None
    return len(labels.foreground_regions if labels.has_regions else labels.foreground_labels)


def _patient_groups(raw_dataset_dir: Path, case_ids: list[str]) -> dict[str, list[str]]:
    """Cases grouped by source patient (manifest.csv), so slices of one patient never straddle folds."""
    import csv

    groups: dict[str, list[str]] = {}
    manifest = raw_dataset_dir / "manifest.csv"
    source = {}
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as f:
            source = {row["pid"]: row.get("source_case_id") or row["pid"] for row in csv.DictReader(f)}
    for case in sorted(case_ids):
        groups.setdefault(source.get(case, case), []).append(case)
    return groups


def ensure_splits(raw_dataset_dir: Path, preprocessed_dir: Path, case_ids: list[str]) -> Path:
    """5-fold splits by patient (nnU-Net's own generator and seed), written once so every trainer and the
    classifier share them."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits_file = preprocessed_dir / "splits_final.json"
    if not splits_file.exists():
        groups = _patient_groups(raw_dataset_dir, case_ids)
        if len(groups) < 2:
            raise SarcoError(f"only {len(groups)} patient(s): cross-validation needs at least 2",
                             fix="add cases, or train fold `all`.")
        patient_splits = generate_crossval_split(sorted(groups), seed=12345, n_splits=min(5, len(groups)))
        splits = [{part: sorted(c for p in split[part] for c in groups[p]) for part in ("train", "val")}
                  for split in patient_splits]
        write_json_atomic(splits_file, splits, indent=1)
    return splits_file


def check_raw_dataset(raw_dataset_dir: Path) -> None:
    """What nnU-Net's fingerprinting needs, checked first: it would end in a traceback otherwise."""
    fix = "convert the dropped data with `sarco convert DROP --name NAME`, or move this folder out of nnUNet_raw."
    dataset_json = raw_dataset_dir / "dataset.json"
    if not dataset_json.is_file():
        raise SarcoError("raw dataset has no dataset.json", path=raw_dataset_dir, fix=fix)
    try:
        content = json.loads(dataset_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SarcoError(f"dataset.json is not valid JSON ({exc})", path=dataset_json, fix=fix) from None
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if not isinstance(content, dict) or k not in content]
    if missing:
        raise SarcoError(f"dataset.json lacks {missing}", path=dataset_json, fix=fix)
    if not any((raw_dataset_dir / "imagesTr").glob(f"*_0000{content['file_ending']}")):
        raise SarcoError("raw dataset has no training images (imagesTr/*_0000" + content["file_ending"] + ")",
                         path=raw_dataset_dir, fix=fix)


def plan_dataset(workspace: Workspace, dataset: str | int | None = None, preset_name: str = "default",
                 num_processes: int | None = None) -> dict[str, Any]:
    """Fingerprint, plan and preprocess one dataset; return a short summary for humans."""
    workspace.activate()
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, plan_experiment_dataset, preprocess_dataset)

    preset = load_preset(preset_name)
    dataset_name = workspace.dataset_name(dataset)
    dataset_id = Workspace.dataset_id(dataset_name)
    check_raw_dataset(workspace.raw / dataset_name)
    n_proc = num_processes or max(1, min(4, os.cpu_count() or 1))

    spacing = preset.get("target_spacing_mm")
    target = None if spacing is None else [SLICE_AXIS_SPACING_MM, float(spacing), float(spacing)]
    log_path = workspace.preprocessed / dataset_name / PLAN_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # nnU-Net prints its integrity banner and the whole configuration dict: kept in a log, off the console
    # (the summary below is what a person reads); progress bars (stderr) stay visible
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        extract_fingerprint_dataset(dataset_id, num_processes=n_proc, check_dataset_integrity=True, clean=True,
                                    verbose=False)
        plans, identifier = plan_experiment_dataset(
            dataset_id, _make_planner_class(preset), overwrite_target_spacing=target,
            overwrite_plans_name=plans_identifier(preset["name"]))
    fingerprint = json.loads((workspace.preprocessed / dataset_name / "dataset_fingerprint.json").read_text())
    if CONFIGURATION not in plans["configurations"]:
        raise SarcoError(f"nnU-Net planned no 2d configuration for {dataset_name}",
                         fix="convert the dataset with `sarco convert` (one axial slice per case).")
    preprocess_dataset(dataset_id, identifier, configurations=(CONFIGURATION,), num_processes=(n_proc,))
    case_ids = [p.name[: -len("_0000.nii.gz")] for p in (workspace.raw / dataset_name / "imagesTr").glob("*_0000.nii.gz")]
    ensure_splits(workspace.raw / dataset_name, workspace.preprocessed / dataset_name, case_ids)

    config = plans["configurations"][CONFIGURATION]
    spacings = fingerprint["spacings"]
    median_inplane = sorted(s[-1] for s in spacings)[len(spacings) // 2]
    return {
        "dataset": dataset_name,
        "plans": identifier,
        "preset": preset["name"],
        "cases": len(case_ids),
        "median_inplane_spacing_mm": round(median_inplane, 3),
        "target_spacing_mm": config["spacing"][-2:],
        "patch_size": config["patch_size"],
        "batch_size": config["batch_size"],
        "network": f"{preset['training'].get('trainer', 'smit')} (default trainer); nnU-Net U-Net baseline: "
                   f"{len(config['architecture']['arch_kwargs']['strides'])} stages",
        "normalization": f"CT window {CT_WINDOW_HU[0]:g}..{CT_WINDOW_HU[1]:g} HU -> [0, 1]",
    }
