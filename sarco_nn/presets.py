"""Plan presets: JSON files in `sarco_nn/plans/` (package data, so a wheel carries them) applied on top of nnU-Net's automatic plan.

A preset decides what nnU-Net cannot know about the user's hardware: the in-plane target spacing,
a patch-size cap, the batch size and the training schedule. It is copied into the plans (key
`sarco`), so the trained model folder records exactly what it was trained with.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.errors import SarcoError

PRESET_DIR = Path(__file__).resolve().parent / "plans"  # package data: ships in the wheel
REQUIRED_KEYS = ("name", "target_spacing_mm", "max_patch_size", "batch_size", "training")
#: The loss terms `training.label_loss_weights` may weight (`training.label_loss_weight_terms`; the first is the
#: default): "dice+ce" = CE class weights and the weighted soft Dice; "dice" = the soft Dice only, nnU-Net's CE
#: as it is (a CE class weight also moves the decision boundary: muscle weighted 2 in both over-called muscle, #18).
LOSS_WEIGHT_TERMS: tuple[str, ...] = ("dice+ce", "dice")


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """A preset by name (`cpu`) or by path to a JSON file of the same schema."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise SarcoError(
            f"unknown plan preset {str(name_or_path)!r}",
            fix=f"use one of {', '.join(available_presets())} or a path to a preset JSON file.",
        )
    try:
        preset = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SarcoError(f"not valid JSON ({exc})", path=path, fix="correct the preset file.") from None
    if not isinstance(preset, dict):
        raise SarcoError("a preset is a JSON object", path=path, fix="copy sarco_nn/plans/default.json and edit it.")
    missing = [k for k in REQUIRED_KEYS if k not in preset]
    if missing:
        raise SarcoError(f"preset lacks keys {missing}", path=path, fix="copy sarco_nn/plans/default.json and edit it.")
    problem = _invalid_field(preset)
    if problem:
        raise SarcoError(f"preset {problem}", path=path, fix="correct that field (see sarco_nn/plans/default.json).")
    return preset


def _positive_number(value: Any) -> bool:
    """A real positive finite number; JSON strings ("1,0"), booleans and NaN are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _invalid_field(preset: dict[str, Any]) -> str | None:
    """The first field a planner or trainer would misread (a wrong spacing plans a wrong model silently)."""
    if not isinstance(preset["name"], str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", preset["name"]):
        return f"name {preset['name']!r} must be letters, digits, '-' or '_' (it names the plans folder)"
    spacing = preset["target_spacing_mm"]
    if spacing is not None and not (_positive_number(spacing) and spacing <= 10):
        return f"target_spacing_mm {spacing!r} must be null (nnU-Net's choice) or a number of mm in (0, 10], e.g. 1.0"
    patch = preset["max_patch_size"]
    if patch is not None and not (isinstance(patch, list) and len(patch) == 2 and all(_positive_int(p) for p in patch)):
        return f"max_patch_size {patch!r} must be null or two positive whole numbers, e.g. [256, 256]"
    if preset["batch_size"] is not None and not _positive_int(preset["batch_size"]):
        return f"batch_size {preset['batch_size']!r} must be null or a positive whole number"
    training = preset["training"]
    if not isinstance(training, dict):
        return "training must be an object of training settings"
    for key in ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch", "save_every", "plot_every"):
        if key in training and not _positive_int(training[key]):
            return f"training.{key} {training[key]!r} must be a positive whole number"
    if "ct_augmentation" in training and not isinstance(training["ct_augmentation"], bool):
        return f"training.ct_augmentation {training['ct_augmentation']!r} must be true or false (CT site-shift augmentation)"
    weights = training.get("label_loss_weights")
    if weights is not None and not (isinstance(weights, dict) and weights
                                    and all(k in TISSUE_LABELS and _positive_number(v) for k, v in weights.items())):
        return (f"training.label_loss_weights {weights!r} must be null (nnU-Net's loss) or map label names "
                f"({', '.join(TISSUE_LABELS)}) to positive numbers, e.g. {{\"muscle\": 2}}")
    problem = loss_weight_terms_problem(training)
    if problem:
        return problem
    if training.get("time_budget_s") is not None and not _positive_number(training["time_budget_s"]):
        return f"training.time_budget_s {training['time_budget_s']!r} must be null or a positive number of seconds"
    from sarco_nn.inference_settings import invalid_inference_block

    problem = invalid_inference_block(preset.get("inference"))
    return f"inference: {problem}" if problem else None


def loss_weight_terms(training: dict[str, Any]) -> str:
    """The loss terms the label weights go into (`training.label_loss_weight_terms`; absent or null: the default)."""
    terms = training.get("label_loss_weight_terms")
    return LOSS_WEIGHT_TERMS[0] if terms is None else terms


def loss_weight_terms_problem(training: dict[str, Any]) -> str | None:
    """What is wrong with `training.label_loss_weight_terms` (None: nothing). Checked when a preset is loaded and
    again by the trainer, which may read settings edited into the plans. A value without label_loss_weights
    would change nothing, so it is refused rather than ignored."""
    terms = training.get("label_loss_weight_terms")
    if terms is None:
        return None
    allowed = " or ".join(f'"{t}"' for t in LOSS_WEIGHT_TERMS)
    if terms not in LOSS_WEIGHT_TERMS:
        return (f"training.label_loss_weight_terms {terms!r} must be {allowed} (the loss terms "
                f"training.label_loss_weights weights; null: \"{LOSS_WEIGHT_TERMS[0]}\")")
    if not training.get("label_loss_weights"):
        return (f"training.label_loss_weight_terms {terms!r} needs training.label_loss_weights (it says which loss "
                f"terms those weights go into): add the weights, e.g. {{\"muscle\": 2}}, or remove the key")
    return None


def plans_identifier(preset_name: str) -> str:
    """nnU-Net plans name (and data identifier prefix) of a preset, so presets never share folders."""
    return f"sarcoPlans_{preset_name}"


def smit_network_config(preset: dict[str, Any]):
    """The SMIT network a preset names (`trainer_overrides.smit.network`; none: Trans-Small).

    The one place a preset's network settings are read and validated: the planner (patch divisor),
    the SMIT trainer and nnU-Net's predictor (via the plans) all get the same config from here.
    """
    from sarco_nn.models.smit_config import SMITConfig

    try:
        return SMITConfig.from_dict(training_settings(preset, "smit").get("network"))
    except (TypeError, ValueError) as exc:
        raise SarcoError(f"preset {preset.get('name')!r}: invalid SMIT network settings ({exc})",
                         fix="correct trainer_overrides.smit.network (see sarco_nn/plans/cpu.json).") from None


#: A preset's SMIT network for a dataset of several tissues (`trainer_overrides.smit.multi_tissue_network`,
#: merged over `network`): four classes share what one network learns, and at the cpu budget the width of
#: the muscle-only network cost the four-tissue model's muscle (issue #18, bench/external_validation.py).
MULTI_TISSUE_NETWORK = "multi_tissue_network"


def preset_for_dataset(preset: dict[str, Any], foreground_labels: int) -> dict[str, Any]:
    """The preset as it applies to a dataset of that many foreground labels: with more than one, the SMIT
    network gets the preset's `multi_tissue_network` settings (none: unchanged). What the planner records in
    the plans, so the trainer and the predictor read one network from there."""
    smit = (preset.get("trainer_overrides") or {}).get("smit") or {}
    extra = smit.get(MULTI_TISSUE_NETWORK)
    if foreground_labels <= 1 or not extra:
        return preset
    merged = {**preset, "trainer_overrides": {**preset["trainer_overrides"],
                                              "smit": {**smit, "network": {**(smit.get("network") or {}), **extra}}}}
    smit_network_config(merged)  # refuse a bad multi-tissue network in the preset's own words
    return merged


def training_settings(preset: dict[str, Any], trainer_key: str) -> dict[str, Any]:
    """Common training settings merged with the ones specific to one trainer family."""
    settings = dict(preset.get("training", {}))
    settings.update(preset.get("trainer_overrides", {}).get(trainer_key, {}))
    return settings


def pretraining_defaults(preset: dict[str, Any]) -> dict[str, Any]:
    """The preset's `pretraining` section: `sarco pretrain` settings measured to work at that preset's
    scale (e.g. a recipe from bench/pretraining_ablation.py). They replace the official SMIT defaults;
    options the user gives replace them in turn. Keys must be PretrainConfig fields, each value of
    its kind and range (checked here, so the message names the preset, not a command-line option)."""
    section = preset.get("pretraining", {})
    example = 'write it as e.g. "pretraining": {"cls_weight": 0.0, "epochs": 50}'
    if not isinstance(section, dict):
        raise SarcoError(f"preset {preset.get('name')!r}: 'pretraining' must be an object of sarco pretrain settings",
                         fix=example + ".")
    from sarco_nn.pretraining.config import PretrainConfig, setting_problem  # a dataclass module: no torch at import

    allowed = set(PretrainConfig.__dataclass_fields__) - {"encoder"}  # the network is the preset's own
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise SarcoError(f"preset {preset.get('name')!r}: unknown pretraining setting(s) {', '.join(unknown)}",
                         fix="use PretrainConfig field names (sarco pretrain --help); the network comes from "
                             "trainer_overrides.smit.network.")
    for key, value in section.items():
        problem = setting_problem(key, value)
        if problem:
            raise SarcoError(f"preset {preset.get('name')!r}: pretraining.{problem}", fix=example + ".")
    return dict(section)
