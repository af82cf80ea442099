"""Finding a trained sarco model in the workspace and loading it for inference (weights_only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sarco_nn.errors import SarcoError
from sarco_nn.planning import CONFIGURATION
from sarco_nn.workspace import Workspace


@dataclass
class TrainedModel:
    folder: Path                   # <results>/<Dataset>/<Trainer>__<Plans>__2d
    folds: list[str]               # "0".."4" or ["all"]
    trainer_name: str = field(init=False)
    plans_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.trainer_name, self.plans_name, _ = self.folder.name.split("__")

    def checkpoint(self, fold: str) -> Path:
        return self.folder / f"fold_{fold}" / "checkpoint_final.pth"

    def provenance(self) -> dict:
        """Trainer, plans, folds and pretrained source of the model, for results.csv."""
        pretrained = set()
        for fold in self.folds:
            path = self.folder / f"fold_{fold}" / "sarco_provenance.json"
            if path.exists():
                info = json.loads(path.read_text()).get("pretrained")
                if info:
                    pretrained.add(f"{Path(info['path']).name}@{info['sha256'][:12]}")
        return {"trainer": self.trainer_name, "plans": self.plans_name, "folds": "+".join(self.folds),
                "pretrained": ";".join(sorted(pretrained)) or "none"}


def trained_folds(model_folder: Path) -> list[str]:
    """Cross-validation folds with a final checkpoint; fold `all` only when no numbered fold exists."""
    numbered = sorted(p.parent.name[5:] for p in model_folder.glob("fold_[0-9]*/checkpoint_final.pth"))
    if numbered:
        return numbered
    return ["all"] if (model_folder / "fold_all" / "checkpoint_final.pth").exists() else []


def match_model_folders(folders: list[Path], trainer: str | None = None, preset: str | None = None) -> list[Path]:
    """The model folders (<Trainer>__<Plans>__<config>) that `--trainer` / `--preset` name: the ONE lookup rule.

    trainer: an alias (smit / nnunet / resenc), a trainer class name, or a whole folder name; it
    must match EXACTLY (never a substring: "nnUNetTrainer" must not pick "nnUNetTrainerSMIT").
    preset: a preset name, matched exactly against the plans identifier.
    A trainer or preset that matches none of `folders` is an error listing the candidates.
    """
    from sarco_nn.presets import plans_identifier
    from sarco_nn.training.names import TRAINERS

    chosen = list(folders)
    if trainer:
        name = TRAINERS.get(trainer, trainer)
        chosen = [f for f in chosen if f.name == trainer or f.name.split("__")[0] == name]
    if preset:
        plans = plans_identifier(preset)
        chosen = [f for f in chosen if f.name.split("__")[1:2] == [plans]]
    if (trainer or preset) and folders and not chosen:
        wanted = " and ".join(x for x in (trainer and f"--trainer {trainer!r}", preset and f"--preset {preset!r}") if x)
        raise SarcoError(f"no trained model matches {wanted} (candidates: {', '.join(f.name for f in folders)})",
                         fix=f"give one of the trainer names exactly ({', '.join(sorted(TRAINERS))} or a class "
                             "name as in the folder), or a whole folder name.")
    return chosen


def find_model(workspace: Workspace, dataset: str | int | None = None, trainer: str | None = None,
               preset: str | None = None) -> TrainedModel:
    """The one trained model matching the filters (trainer: smit/nnunet/resenc or a class name)."""
    dataset_name = workspace.dataset_name(dataset)
    root = workspace.results / dataset_name
    folders = [f for f in (sorted(root.glob(f"*__*__{CONFIGURATION}")) if root.is_dir() else []) if trained_folds(f)]
    candidates = match_model_folders(folders, trainer, preset)
    if not candidates:
        raise SarcoError(f"no trained model for {dataset_name} in {workspace.root}",
                         fix="run `sarco train FOLD` first (or check --trainer / --preset).")
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise SarcoError(f"several trained models ({names})", fix="choose with --trainer and/or --preset.")
    return TrainedModel(candidates[0], trained_folds(candidates[0]))


def build_predictor(model: TrainedModel, device, use_mirroring: bool = True, settings=None):
    """nnU-Net's predictor, initialised by hand so checkpoints load with weights_only=True.

    settings: `InferenceSettings` to run with; None takes the model's preset's `inference` block
    (`InferenceSettings.of_plans`). The predictor's `sarco_settings` are the effective ones (bf16
    only where it runs): what `sarco predict` records with every result."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from sarco_nn.inference_settings import InferenceSettings
    from sarco_nn.models.checkpoints import load_trainer_checkpoint
    from sarco_nn.planning import patch_divisors
    from sarco_nn.predictor import SarcoPredictor
    from sarco_nn.training.run import trainer_class

    plans_manager = PlansManager(str(model.folder / "plans.json"))
    dataset_json = json.loads((model.folder / "dataset.json").read_text())
    checkpoints = [load_trainer_checkpoint(model.checkpoint(f)) for f in model.folds]
    configuration_manager = plans_manager.get_configuration(checkpoints[0]["init_args"]["configuration"])
    cls = trainer_class(checkpoints[0]["trainer_name"])
    network = cls.build_network_architecture(
        plans_manager, configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, False)
    mirror_axes = checkpoints[0].get("inference_allowed_mirroring_axes")
    settings = (settings or InferenceSettings.of_plans(plans_manager.plans)).effective(device.type)
    preset = (plans_manager.plans.get("sarco") or {}).get("preset") or {}
    predictor = SarcoPredictor(settings, patch_divisors(configuration_manager.configuration, preset),
                               use_gaussian=True, use_mirroring=use_mirroring and bool(mirror_axes),
                               perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                               verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager,
                                    [c["network_weights"] for c in checkpoints], dataset_json,
                                    checkpoints[0]["trainer_name"], mirror_axes)
    if settings.bf16:
        predictor.attach_bf16()
    return predictor


def inference_settings(model: TrainedModel, device_type: str):
    """The effective `InferenceSettings` `build_predictor` will run `model` with on `device_type`
    (known before any weights load: `sarco predict`'s settings signature needs it)."""
    from sarco_nn.inference_settings import InferenceSettings

    plans = json.loads((model.folder / "plans.json").read_text())
    return InferenceSettings.of_plans(plans).effective(device_type)
