"""`sarco train FOLD`: one nnU-Net fold with a sarco trainer, resumable, with provenance recorded.

The trainer is instantiated directly (nnU-Net's option A) so the preset's schedule and the
user's overrides travel inside the plans the trainer copies into its model folder.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from sarco_nn import __version__, devices
from sarco_nn.atomic import write_json_atomic as _write_json_atomic
from sarco_nn.errors import SarcoError
from sarco_nn.hashing import sha256_file
from sarco_nn.planning import CONFIGURATION
from sarco_nn.presets import plans_identifier
from sarco_nn.workspace import Workspace

PROVENANCE_FILE = "sarco_provenance.json"


def resolve_device(device: str = "auto"):
    return devices.resolve_device(device, all_cpu_threads=True)  # nnU-Net training wants every core


def find_plans(workspace: Workspace, dataset_name: str, preset: str | None) -> Path:
    """The plans file of `preset`, or the only sarco plans of the dataset when no preset is named."""
    folder = workspace.preprocessed / dataset_name
    if preset is not None:
        path = folder / f"{plans_identifier(preset)}.json"
        if not path.is_file():
            raise SarcoError(f"dataset {dataset_name} has no plans for preset {preset!r}",
                             fix=f"run `sarco plan --preset {preset}` first.")
        return path
    candidates = sorted(folder.glob(f"{plans_identifier('*')}.json"))
    if not candidates:
        raise SarcoError(f"dataset {dataset_name} is not planned yet", fix="run `sarco plan` first.")
    if len(candidates) > 1:
        names = ", ".join(p.stem.split("_", 1)[1] for p in candidates)
        raise SarcoError(f"dataset {dataset_name} has several planned presets ({names})", fix="choose one with --preset.")
    return candidates[0]


def trainer_class(trainer: str):
    """`smit` / `nnunet` / `resenc`, a sarco trainer class name, or any nnU-Net trainer name."""
    from sarco_nn.training.trainers import TRAINER_CLASSES, TRAINERS

    name = TRAINERS.get(trainer, trainer)
    if name in TRAINER_CLASSES:
        return TRAINER_CLASSES[name]
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise SarcoError(f"unknown trainer {trainer!r}", fix=f"use one of {', '.join(TRAINERS)} or an nnU-Net trainer class name.") from None


def train_fold(workspace: Workspace, fold: str, dataset: str | int | None = None, trainer: str = "smit",
               preset: str | None = None, epochs: int | None = None, iterations: int | None = None,
               device: str = "auto", continue_training: bool = False, pretrained: Path | None = None,
               validate: bool | None = None) -> Path:
    """Train one fold (0-4 or `all`) and return its output folder."""
    workspace.activate()
    fold_value: int | str = "all" if str(fold) == "all" else int(fold)
    dataset_name = workspace.dataset_name(dataset)
    plans_path = find_plans(workspace, dataset_name, preset)
    plans = json.loads(plans_path.read_text())
    overrides = {}
    if epochs is not None:
        overrides["num_epochs"] = int(epochs)
    if iterations is not None:
        overrides["iterations_per_epoch"] = int(iterations)
    plans.setdefault("sarco", {})["overrides"] = overrides
    plans["continue_training"] = continue_training
    dataset_json = json.loads((workspace.preprocessed / dataset_name / "dataset.json").read_text())
    cls = trainer_class(trainer)
    if pretrained is not None and continue_training:
        raise SarcoError("--pretrained and --continue exclude each other", fix="pretrained weights only start a training.")
    if pretrained is not None and getattr(cls, "trainer_key", None) != "smit":
        raise SarcoError("--pretrained initialises the SMIT encoder only", fix="use --trainer smit, or drop --pretrained.")

    torch_device = resolve_device(device)
    nnunet_trainer = cls(plans=plans, configuration=CONFIGURATION, fold=fold_value, dataset_json=dataset_json,
                         device=torch_device)
    out = Path(nnunet_trainer.output_folder)
    if (out / "checkpoint_final.pth").exists() and not continue_training:
        raise SarcoError(f"fold {fold} of {cls.__name__} is already trained ({out})",
                         fix="pass --continue to resume or extend it, or move that folder away to retrain.")

    pretrained_info = None
    if continue_training:
        from nnunetv2.run.run_training import maybe_load_checkpoint

        maybe_load_checkpoint(nnunet_trainer, continue_training=True, validation_only=False)
    elif pretrained is not None:
        from sarco_nn.models.pretrained import load_pretrained_encoder, write_load_report

        nnunet_trainer.initialize()
        report = load_pretrained_encoder(nnunet_trainer.network, Path(pretrained))
        write_load_report(report, out)
        print(report.summary_line())
        pretrained_info = {"path": str(Path(pretrained).resolve()), "sha256": report.sha256}

    provenance_path = out / PROVENANCE_FILE
    previous = json.loads(provenance_path.read_text()) if provenance_path.exists() else {}
    provenance = {
        "trainer": cls.__name__, "plans": plans_path.stem, "preset": plans.get("sarco", {}).get("preset", {}).get("name"),
        "dataset": dataset_name, "fold": str(fold_value), "device": str(torch_device), "sarco_version": __version__,
        "pretrained": pretrained_info or previous.get("pretrained"), "overrides": overrides,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json_atomic(provenance_path, provenance)

    from sarco_nn.training.trainers import TrainingBudgetReached

    started = time.monotonic()
    try:
        nnunet_trainer.run_training()
    except TrainingBudgetReached:
        nnunet_trainer.on_train_end()
    provenance["training_wall_s"] = round(time.monotonic() - started, 1)
    provenance["epochs_done"] = nnunet_trainer.current_epoch
    if validate if validate is not None else fold_value != "all":
        nnunet_trainer.perform_actual_validation(save_probabilities=False)
    provenance["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    provenance["checkpoint_sha256"] = sha256_file(out / "checkpoint_final.pth")
    _write_json_atomic(provenance_path, provenance)
    return out
