"""`sarco train FOLD`: one nnU-Net fold with a sarco trainer, through nnU-Net's own training functions.

One GPU or CPU: nnU-Net's `get_trainer_from_args` and `maybe_load_checkpoint`, cudnn as nnU-Net's
`run_training` sets it, the trainer's own loop, `--val-best` as nnU-Net does it. Several GPUs:
nnU-Net's `run_training(num_gpus=N)` (its DDP path, one process per GPU). What nnU-Net cannot be
told through its API travels where its spawned ranks see it: `--epochs/--iterations` in
`SARCO_TRAINING_OVERRIDES` (read by the sarco trainers), pretrained SMIT encoder weights as an
nnU-Net-format start checkpoint written by sarco's own (weights_only) loader. Provenance is
recorded beside the checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sarco_nn import __version__, devices
from sarco_nn.atomic import atomic_path
from sarco_nn.atomic import write_json_atomic as _write_json_atomic
from sarco_nn.errors import SarcoError
from sarco_nn.hashing import sha256_file
from sarco_nn.planning import CONFIGURATION
from sarco_nn.presets import plans_identifier
from sarco_nn.workspace import Workspace

PROVENANCE_FILE = "sarco_provenance.json"
#: nnU-Net-format start checkpoint holding the pretrained encoder (multi-GPU runs only).
PRETRAINED_INIT_FILE = "sarco_pretrained_init.pth"
#: Folds sarco's patient-grouped splits define, plus nnU-Net's `all` (every case, no validation).
FOLDS = ("0", "1", "2", "3", "4", "all")


def parse_fold(fold: str | int) -> int | str:
    """0-4 or `all`; anything else (nnU-Net would make a random, not patient-grouped split) is refused."""
    text = str(fold).strip().lower()
    if text not in FOLDS:
        raise SarcoError(f"fold {str(fold)!r} does not exist",
                         fix="use 0, 1, 2, 3, 4 (the patient-grouped folds), `all` or `5fold`.")
    return "all" if text == "all" else int(text)


def expand_folds(fold: str | int) -> list[str]:
    """`sarco train FOLD`'s folds: `5fold` means 0-4 in turn; each is checked before any is trained."""
    folds = [str(f) for f in range(5)] if str(fold).strip().lower() == "5fold" else [str(fold)]
    for f in folds:
        parse_fold(f)  # `sarco train 7` / `abc`: one line, before anything is touched
    return folds


def check_positive(name: str, value: int | None) -> None:
    """Epochs and iterations must be >= 1: zero or negative would save an untrained checkpoint_final."""
    if value is not None and value < 1:
        raise SarcoError(f"{name} {value} must be a positive whole number",
                         fix=f"give {name} 1 or more, or leave it out to use the preset's value.")


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


def _check_gpus(num_gpus: int, device: str) -> None:
    if num_gpus < 1:
        raise SarcoError(f"--num-gpus {num_gpus} must be 1 or more", fix="give the number of GPUs to train on.")
    if num_gpus == 1:
        return
    import torch

    if device not in ("auto", "cuda"):
        raise SarcoError(f"--num-gpus {num_gpus} trains on CUDA GPUs, not on --device {device}",
                         fix="drop --device (or use --device cuda), or train with --num-gpus 1.")
    available = torch.cuda.device_count()
    if available < num_gpus:
        raise SarcoError(f"--num-gpus {num_gpus}, but torch sees {available} CUDA GPU(s)",
                         fix="lower --num-gpus, or set CUDA_VISIBLE_DEVICES to the GPUs to use.")


def _load_pretrained(trainer, pretrained: Path, out: Path) -> dict:
    """sarco's encoder loader (weights_only, every key accounted for) into an initialised trainer."""
    from sarco_nn.models.pretrained import load_pretrained_encoder, write_load_report

    if not trainer.was_initialized:
        trainer.initialize()
    report = load_pretrained_encoder(trainer.network, Path(pretrained))
    write_load_report(report, out)
    print(report.summary_line())
    return {"path": str(Path(pretrained).resolve()), "sha256": report.sha256}


def _pretrained_start_checkpoint(cls, plans: dict, dataset_json: dict, fold: int | str, pretrained: Path,
                                 out: Path) -> tuple[Path, dict]:
    """For nnU-Net's DDP path, which only takes nnU-Net checkpoints: the whole network with the encoder
    loaded, as {"network_weights": ...} (nnU-Net's pretrained-weights format; every key present)."""
    import torch

    helper = cls(plans=json.loads(json.dumps(plans)), configuration=CONFIGURATION, fold=fold,
                 dataset_json=dataset_json, device=torch.device("cpu"))
    info = _load_pretrained(helper, pretrained, out)
    network = getattr(helper.network, "_orig_mod", helper.network)
    path = out / PRETRAINED_INIT_FILE
    with atomic_path(path) as tmp:
        torch.save({"network_weights": network.state_dict()}, tmp)
    return path, info


def train_fold(workspace: Workspace, fold: str, dataset: str | int | None = None, trainer: str = "smit",
               preset: str | None = None, epochs: int | None = None, iterations: int | None = None,
               device: str = "auto", continue_training: bool = False, pretrained: Path | None = None,
               validate: bool | None = None, num_gpus: int = 1, val_best: bool = False,
               settings: dict[str, Any] | None = None) -> Path:
    """Train one fold (0-4 or `all`) and return its output folder.

    `settings`: further training-setting overrides (preset `training` keys, e.g. val_iterations_per_epoch)
    for benches and tests; recorded like --epochs/--iterations."""
    fold_value = parse_fold(fold)
    check_positive("--epochs", epochs)
    check_positive("--iterations", iterations)
    _check_gpus(num_gpus, device)
    validate = (fold_value != "all") if validate is None else validate
    if val_best and not validate:
        raise SarcoError("--val-best validates with checkpoint_best, but fold `all` has no validation cases",
                         fix="use --val-best with folds 0-4.")
    workspace.activate()
    dataset_name = workspace.dataset_name(dataset)
    plans_path = find_plans(workspace, dataset_name, preset)
    plans = json.loads(plans_path.read_text())
    cls = trainer_class(trainer)
    if pretrained is not None and continue_training:
        raise SarcoError("--pretrained and --continue exclude each other", fix="pretrained weights only start a training.")
    if pretrained is not None and getattr(cls, "trainer_key", None) != "smit":
        raise SarcoError("--pretrained initialises the SMIT encoder only", fix="use --trainer smit, or drop --pretrained.")

    from nnunetv2.utilities.file_path_utilities import get_output_folder

    out = Path(get_output_folder(dataset_name, cls.__name__, plans_path.stem, CONFIGURATION, fold_value))
    if (out / "checkpoint_final.pth").exists() and not continue_training:
        raise SarcoError(f"fold {fold} of {cls.__name__} is already trained ({out})",
                         fix="pass --continue to resume or extend it, or move that folder away to retrain.")
    out.mkdir(parents=True, exist_ok=True)

    from sarco_nn.training.trainers import OVERRIDES_ENV

    overrides = dict(settings or {})
    if epochs is not None:
        overrides["num_epochs"] = int(epochs)
    if iterations is not None:
        overrides["iterations_per_epoch"] = int(iterations)
    os.environ[OVERRIDES_ENV] = json.dumps(overrides)  # seen by this process's trainer and every DDP rank
    torch_device = resolve_device("cuda" if num_gpus > 1 else device)
    dataset_json = json.loads((workspace.preprocessed / dataset_name / "dataset.json").read_text())

    provenance_path = out / PROVENANCE_FILE
    previous = json.loads(provenance_path.read_text()) if provenance_path.exists() else {}
    provenance = {
        "trainer": cls.__name__, "plans": plans_path.stem, "preset": plans.get("sarco", {}).get("preset", {}).get("name"),
        "dataset": dataset_name, "fold": str(fold_value), "device": str(torch_device), "num_gpus": num_gpus,
        "sarco_version": __version__, "pretrained": previous.get("pretrained"), "overrides": overrides,
        "val_best": val_best, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    started = time.monotonic()
    if num_gpus > 1:
        epochs_done = _train_ddp(cls, plans, plans_path.stem, dataset_name, dataset_json, fold_value, num_gpus,
                                 continue_training, pretrained, val_best, out, provenance, provenance_path)
    else:
        epochs_done = _train_one_process(cls, plans_path.stem, dataset_name, fold_value, torch_device,
                                         continue_training, pretrained, validate, val_best, out, provenance,
                                         provenance_path)
    provenance["training_wall_s"] = round(time.monotonic() - started, 1)
    provenance["epochs_done"] = epochs_done
    provenance["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    provenance["checkpoint_sha256"] = sha256_file(out / "checkpoint_final.pth")
    _write_json_atomic(provenance_path, provenance)
    return out


def _set_cudnn_as_nnunet() -> None:
    """What nnU-Net's run_training does before training: non-deterministic cudnn with autotuning."""
    import torch
    from torch.backends import cudnn

    if torch.cuda.is_available():
        cudnn.deterministic = False
        cudnn.benchmark = True


def _train_one_process(cls, plans_name: str, dataset_name: str, fold: int | str, torch_device, continue_training: bool,
                       pretrained: Path | None, validate: bool, val_best: bool, out: Path, provenance: dict,
                       provenance_path: Path) -> int:
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    nnunet_trainer = get_trainer_from_args(dataset_name, CONFIGURATION, fold, cls.__name__, plans_name,
                                           continue_training, device=torch_device)
    if pretrained is not None:
        provenance["pretrained"] = _load_pretrained(nnunet_trainer, pretrained, out)
    else:  # resume through nnU-Net's checkpoint choice; the sarco trainers load it with weights_only=True
        maybe_load_checkpoint(nnunet_trainer, continue_training, validation_only=False)
    _write_json_atomic(provenance_path, provenance)
    _set_cudnn_as_nnunet()
    nnunet_trainer.run_training()  # a preset's time budget ends it cleanly inside the trainer
    epochs_done = nnunet_trainer.current_epoch
    if validate:
        if val_best:
            nnunet_trainer.load_checkpoint(str(out / "checkpoint_best.pth"))
        nnunet_trainer.perform_actual_validation(save_probabilities=False)
    return epochs_done


def _train_ddp(cls, plans: dict, plans_name: str, dataset_name: str, dataset_json: dict, fold: int | str,
               num_gpus: int, continue_training: bool, pretrained: Path | None, val_best: bool, out: Path,
               provenance: dict, provenance_path: Path) -> int:
    import torch
    from nnunetv2.run.run_training import run_training

    start = None
    if pretrained is not None:
        start, provenance["pretrained"] = _pretrained_start_checkpoint(cls, plans, dataset_json, fold, pretrained, out)
    _write_json_atomic(provenance_path, provenance)
    run_training(dataset_name, CONFIGURATION, fold, cls.__name__, plans_name,
                 pretrained_weights=None if start is None else str(start), num_gpus=num_gpus,
                 continue_training=continue_training, val_with_best=val_best, device=torch.device("cuda"))
    if start is not None:
        start.unlink(missing_ok=True)
    from sarco_nn.training.trainers import PROGRESS_FILE

    progress = out / PROGRESS_FILE
    return json.loads(progress.read_text()).get("epochs_done", 0) if progress.is_file() else 0
