"""Trainer names users type (`--trainer smit`) → nnU-Net trainer class names, importable without torch.

Model lookup and the evaluator only need the names; importing `training.trainers` for them would
load torch and nnU-Net. `training.trainers` defines the classes and must keep these names.
"""

from __future__ import annotations

__all__ = ["TRAINERS"]

#: CLI name → trainer class name.
TRAINERS: dict[str, str] = {"smit": "SarcoSMITTrainer", "nnunet": "SarcoUNetTrainer", "resenc": "SarcoResEncTrainer"}
