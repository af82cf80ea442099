"""Plan presets: JSON files in `sarco_nn/plans/` (package data, so a wheel carries them) applied on top of nnU-Net's automatic plan.

A preset decides what nnU-Net cannot know about the user's hardware: the in-plane target spacing,
a patch-size cap, the batch size and the training schedule. It is copied into the plans (key
`sarco`), so the trained model folder records exactly what it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sarco_nn.errors import SarcoError

PRESET_DIR = Path(__file__).resolve().parent / "plans"
DEFAULT_PRESET = "default"
REQUIRED_KEYS = ("name", "target_spacing_mm", "max_patch_size", "batch_size", "training")


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
    missing = [k for k in REQUIRED_KEYS if k not in preset]
    if missing:
        raise SarcoError(f"preset lacks keys {missing}", path=path, fix="copy sarco_nn/plans/default.json (`sarco plan --help` lists presets) and edit it.")
    return preset


def plans_identifier(preset_name: str) -> str:
    """nnU-Net plans name (and data identifier prefix) of a preset, so presets never share folders."""
    return f"sarcoPlans_{preset_name}"


def smit_network_config(preset: dict[str, Any]):
    """The SMIT network a preset names (`trainer_overrides.smit.network`; none: Trans-Small).

    The one place a preset's network settings are read and validated: the planner (patch divisor),
    the SMIT trainer and nnU-Net's predictor (via the plans) all get the same config from here.
    """
    from sarco_nn.models.smit import SMITConfig

    try:
        return SMITConfig.from_dict(training_settings(preset, "smit").get("network"))
    except (TypeError, ValueError) as exc:
        raise SarcoError(f"preset {preset.get('name')!r}: invalid SMIT network settings ({exc})",
                         fix="correct trainer_overrides.smit.network (see sarco_nn/plans/cpu.json).") from None


def training_settings(preset: dict[str, Any], trainer_key: str) -> dict[str, Any]:
    """Common training settings merged with the ones specific to one trainer family."""
    settings = dict(preset.get("training", {}))
    settings.update(preset.get("trainer_overrides", {}).get(trainer_key, {}))
    return settings
