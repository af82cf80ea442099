"""nnU-Net trainer subclasses used by sarco. Each overrides only what differs from nnU-Net:
the network, the optimizer/schedule and the preset-driven length of training.

Found by nnU-Net through `nnUNet_extTrainer` (see sarco_nn/training/nnunet_trainers/), so
nnU-Net's own tools (nnUNetv2_predict, find_best_configuration) can load our models too.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from sarco_nn.atomic import write_json_atomic
from sarco_nn.presets import training_settings
from sarco_nn.models.checkpoints import load_trainer_checkpoint
from sarco_nn.training.names import TRAINERS  # noqa: F401  (CLI name → class name; re-exported)
from sarco_nn.training.schedule import ProgressLRScheduler

PROGRESS_FILE = "sarco_progress.json"


def _skip_plot(*args, **kwargs) -> None:
    """Stands in for nnU-Net's progress plot on epochs between two `plot_every` plots."""


class TrainingBudgetReached(Exception):
    """Raised at an epoch end when an explicit wall-clock budget (preset `time_budget_s`) would be exceeded."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators: nnU-Net draws weight initialisation, patch
    sampling and augmentation from them, so one seed fixes the whole training on one machine."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: JSON of training-setting overrides (num_epochs, iterations_per_epoch, ...) set by `sarco train`.
OVERRIDES_ENV = "SARCO_TRAINING_OVERRIDES"


class SarcoTrainerBase(nnUNetTrainer):
    """Schedule, augmentation and checkpoint safety shared by every sarco trainer."""

    trainer_key = "nnunet"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        sarco = self.plans_manager.plans.get("sarco", {})
        self.settings: dict[str, Any] = training_settings(sarco.get("preset", {}), self.trainer_key)
        self.settings.update(sarco.get("overrides", {}))
        # `sarco train --epochs/--iterations` through nnU-Net's run_training (and its DDP ranks), which
        # read the plans from disk: the overrides travel in the environment and are recorded in the plans
        env_overrides = json.loads(os.environ.get(OVERRIDES_ENV) or "{}")
        self.settings.update(env_overrides)
        self.plans_manager.plans.setdefault("sarco", {}).setdefault("overrides", {}).update(env_overrides)
        s = self.settings
        self.num_epochs = int(s.get("num_epochs", self.num_epochs))
        self.num_iterations_per_epoch = int(s.get("iterations_per_epoch", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = int(s.get("val_iterations_per_epoch", self.num_val_iterations_per_epoch))
        self.initial_lr = float(s.get("initial_lr", self.initial_lr))
        self.weight_decay = float(s.get("weight_decay", self.weight_decay))
        self.save_every = int(s.get("save_every", self.save_every))
        # nnU-Net redraws progress.png every epoch (~0.8 s on 2 CPU cores: 15 % of a short CPU epoch)
        self.plot_every = max(1, int(s.get("plot_every", 1)))
        # Reproducible by default: presets fix epochs x iterations; a wall-clock budget is an explicit opt-in
        # (it makes the model depend on machine load: three runs of one command gave 2.8 / 4.3 / 7.1 % SMA error).
        self.time_budget_s: float | None = s.get("time_budget_s")
        self.seed = int(s.get("seed", 0))
        self.deterministic_data = bool(s.get("deterministic_data", True))
        self._elapsed_before_s = 0.0
        self._clock_start: float | None = None
        self._progress_bar = None

    def initialize(self):
        if not self.was_initialized:
            seed_everything(self.seed)  # the network's initial weights
        super().initialize()
        self._attach_cpu_autocast()

    def get_dataloaders(self):
        """nnU-Net's loaders, seeded and (preset `deterministic_data`, default on) in this process.

        nnU-Net's multi-process augmenter hands out batches in the order its unseeded workers finish them,
        so two runs see different batches. nnU-Net's own switch `nnUNet_n_proc_DA=0` selects its
        single-threaded augmenter, which draws from the generators seeded here (on 2 CPU cores the
        workers only competed with the network for the same cores).
        """
        seed_everything(self.seed + 1 + self.current_epoch)  # a --continue resumes on a stream of its own
        if not self.deterministic_data:
            return super().get_dataloaders()
        saved = os.environ.get("nnUNet_n_proc_DA")
        os.environ["nnUNet_n_proc_DA"] = "0"
        try:
            return super().get_dataloaders()
        finally:
            if saved is None:
                os.environ.pop("nnUNet_n_proc_DA", None)
            else:
                os.environ["nnUNet_n_proc_DA"] = saved

    def _attach_cpu_autocast(self) -> None:
        """Preset field `cpu_bf16`: bf16 autocast for the forward on CPUs that compute bf16 natively."""
        from sarco_nn.training.cpu_autocast import attach_cpu_bf16_autocast, cpu_bf16_supported

        if self.device.type != "cpu" or not self.settings.get("cpu_bf16", False):
            return
        if not cpu_bf16_supported():
            self.print_to_log_file("cpu_bf16 requested but this CPU has no native bfloat16: training in float32.")
            return
        network = getattr(self.network, "_orig_mod", self.network)
        attach_cpu_bf16_autocast(network)
        self.print_to_log_file("Training forward passes run under CPU bfloat16 autocast (preset cpu_bf16).")

    def print_plans(self):
        """nnU-Net dumps the whole plans dict to the console at train start; keep it in the training log
        only (`sarco plan` already printed the summary a person reads)."""
        import functools

        self.print_to_log_file = functools.partial(nnUNetTrainer.print_to_log_file, self, also_print_to_console=False)
        try:
            super().print_plans()
        finally:
            del self.print_to_log_file

    # ---- progress and time budget -------------------------------------------------------------
    def elapsed_s(self) -> float:
        running = 0.0 if self._clock_start is None else time.monotonic() - self._clock_start
        return self._elapsed_before_s + running

    def training_progress(self, epoch: int) -> float:
        fraction = epoch / max(self.num_epochs, 1)
        if self.time_budget_s:
            fraction = max(fraction, self.elapsed_s() / float(self.time_budget_s))
        return min(fraction, 1.0)

    def _progress_path(self) -> str:
        return os.path.join(self.output_folder, PROGRESS_FILE)

    def on_train_start(self):
        if os.path.isfile(self._progress_path()) and self.current_epoch > 0:
            self._elapsed_before_s = json.loads(open(self._progress_path()).read()).get("elapsed_s", 0.0)
        super().on_train_start()
        self._clock_start = time.monotonic()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        from tqdm import tqdm

        self._progress_bar = tqdm(total=self.num_iterations_per_epoch, desc=f"epoch {self.current_epoch}",
                                  unit="it", leave=False, dynamic_ncols=True)

    def train_step(self, batch: dict) -> dict:
        out = super().train_step(batch)
        if self._progress_bar is not None:
            self._progress_bar.update(1)
            self._progress_bar.set_postfix(loss=f"{float(out['loss']):.3f}")
        return out

    def on_train_epoch_end(self, train_outputs):
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None
        super().on_train_epoch_end(train_outputs)

    def on_epoch_end(self):
        epoch_s = time.time() - self.logger.get_value("epoch_start_timestamps", step=-1)
        if (self.current_epoch + 1) % self.plot_every:
            self.logger.plot_progress_png = _skip_plot  # instance attribute shadows the method for this epoch
        try:
            super().on_epoch_end()
        finally:
            self.logger.__dict__.pop("plot_progress_png", None)
        state = {"elapsed_s": self.elapsed_s(), "epochs_done": self.current_epoch}
        write_json_atomic(self._progress_path(), state, indent=None)
        if self.time_budget_s and self.elapsed_s() + epoch_s > float(self.time_budget_s):
            self.print_to_log_file(f"Time budget of {self.time_budget_s:g} s reached after {self.current_epoch} epochs.")
            raise TrainingBudgetReached()

    def run_training(self):
        """nnU-Net's loop; the preset's time budget ends it as a last epoch would (also under nnUNetv2_train)."""
        try:
            super().run_training()
        except TrainingBudgetReached:
            self.on_train_end()

    def on_train_end(self):
        if self.local_rank == 0 and self.plot_every > 1:  # the last epochs may not have been drawn
            self.logger.plot_progress_png(self.output_folder)
        super().on_train_end()

    # ---- augmentation: the preset decides rotation and mirroring ----------------------------------
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        patch_size = self.configuration_manager.patch_size
        if len(patch_size) == 2 and "rotation_deg" in self.settings:
            radians = float(self.settings["rotation_deg"]) / 180.0 * np.pi
            rotation = (-radians, radians)
            initial_patch = get_patch_size(patch_size, rotation, rotation, rotation, (0.85, 1.25))
        if "mirror_axes" in self.settings:
            mirror_axes = tuple(self.settings["mirror_axes"]) or None
        self.inference_allowed_mirroring_axes = mirror_axes
        return rotation, dummy_2d, initial_patch, mirror_axes

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training pipeline; preset `ct_augmentation` (default off) adds the CT site-shift
        transforms of `ct_augmentation.py` after its spatial transform. Off, nnU-Net's object as it is."""
        pipeline = super().get_training_transforms(*args, **kwargs)
        if not self.settings.get("ct_augmentation", False):
            return pipeline
        from sarco_nn.training.ct_augmentation import add_ct_augmentation

        pipeline = add_ct_augmentation(pipeline)
        if getattr(self, "log_file", None):
            self.print_to_log_file("CT site-shift augmentation on (preset ct_augmentation): "
                                   + ", ".join(type(getattr(t, "transform", t)).__name__ for t in pipeline.transforms))
        return pipeline

    # ---- loss: the preset may weight labels ---------------------------------------------------------
    def _build_loss(self):
        """nnU-Net's Dice + CE loss; preset `label_loss_weights` (default none: nnU-Net's loss as it is)
        weights the named labels in its soft Dice and, unless `label_loss_weight_terms` is "dice", its CE
        (`loss_weights.py`), at every deep-supervision scale."""
        from sarco_nn.errors import SarcoError
        from sarco_nn.presets import loss_weight_terms, loss_weight_terms_problem

        loss = super()._build_loss()
        preset = self.plans_manager.plans.get("sarco", {}).get("preset", {}).get("name", "?")
        problem = loss_weight_terms_problem(self.settings)  # the plans may have been edited after sarco plan
        if problem:
            raise SarcoError(f"preset {preset!r}: {problem}", fix="correct the preset (or the plans' sarco.preset).")
        label_weights = self.settings.get("label_loss_weights")
        if not label_weights:
            return loss
        from sarco_nn.training.loss_weights import class_weights, weight_labels

        if self.label_manager.has_regions:
            raise SarcoError("label_loss_weights weights labels, but this dataset trains regions",
                             fix="remove training.label_loss_weights from the preset.")
        weights = class_weights(label_weights, self.dataset_json["labels"], f"preset {preset!r}")
        terms = loss_weight_terms(self.settings)
        if getattr(self, "log_file", None):
            self.print_to_log_file(f"Loss class weights (preset label_loss_weights, in {terms}): {weights}")
        return weight_labels(loss, weights, self.device, compile_dice=self._do_i_compile(), terms=terms)

    # ---- checkpoints: never unpickle arbitrary objects ------------------------------------------
    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's restore, but loaded with weights_only=True.

        nnunetv2 2.8.1's own load_checkpoint cannot take a dict (it reads an unassigned local),
        so the restore of network, optimizer and logs is done here with nnU-Net's own objects.
        """
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = load_trainer_checkpoint(checkpoint, map_location=self.device)
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)
        own_keys = network.state_dict().keys()
        weights = {(k[7:] if k not in own_keys and k.startswith("module.") else k): v
                   for k, v in checkpoint["network_weights"].items()}
        network.load_state_dict(weights)
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written beside the target and renamed: a run killed while saving never
        leaves a half-written checkpoint_latest.pth for `--continue` to choke on."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        from sarco_nn.atomic import atomic_path

        with atomic_path(Path(filename)) as tmp:
            super().save_checkpoint(str(tmp))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=0.99, nesterov=True)
        return optimizer, ProgressLRScheduler(optimizer, self.training_progress, kind="poly")


class SarcoUNetTrainer(SarcoTrainerBase):
    """nnU-Net's default U-Net (from the plans) on sarco's preset schedule: the baseline `--trainer nnunet`."""

    trainer_key = "nnunet"


class SarcoResEncTrainer(SarcoTrainerBase):
    """nnU-Net's residual-encoder U-Net (ResEnc) on the same plan: the baseline `--trainer resenc`."""

    trainer_key = "resenc"

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        from sarco_nn.models.resenc import resenc_blocks_per_stage  # block counts from nnU-Net's ResEnc planner

        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs.pop("n_conv_per_stage", None)
        kwargs["n_blocks_per_stage"], kwargs["n_conv_per_stage_decoder"] = resenc_blocks_per_stage(kwargs["n_stages"])
        return get_network_from_plans(
            "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels,
            allow_init=True, deep_supervision=enable_deep_supervision)


class SarcoSMITTrainer(SarcoTrainerBase):
    """SMIT student (Swin encoder + conv decoder), AdamW with warm-up + cosine, optional layer-wise lr decay.

    Deep supervision follows the preset (`deep_supervision`, default off); when on, the loss targets
    use the network's own output scales, so network and nnU-Net's loss always agree.
    """

    trainer_key = "smit"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = bool(self.settings.get("deep_supervision", False))
        self.layer_decay = float(self.settings.get("layer_decay", 1.0))
        self.warmup_fraction = float(self.settings.get("warmup_fraction", 0.05))
        # a pretrained encoder may be kept fixed while the fresh decoder settles (pretraining recipe, #20)
        self.freeze_encoder_epochs = int(self.settings.get("freeze_encoder_epochs", 0))

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        from sarco_nn.models.smit import build_smit_for_plans

        return build_smit_for_plans(num_input_channels, num_output_channels, configuration_manager.patch_size,
                                    deep_supervision=enable_deep_supervision,
                                    config=SarcoSMITTrainer.network_config(plans_manager.plans))

    @staticmethod
    def network_config(plans: dict):
        """The SMIT configuration the preset names (`trainer_overrides.smit.network`; none: Trans-Small).

        Static and read from the plans, so nnU-Net's predictor rebuilds exactly the trained network.
        """
        from sarco_nn.presets import smit_network_config

        return smit_network_config(plans.get("sarco", {}).get("preset", {}))

    def _smit(self):
        network = self.network.module if self.is_ddp else self.network
        return getattr(network, "_orig_mod", network)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        from sarco_nn.models.smit import SMITSegNet

        network = self._smit() if self.network is not None else None
        if network is None:  # scales are needed before the network exists
            network = SMITSegNet(1, 2, len(self.configuration_manager.patch_size),
                                 self.network_config(self.plans_manager.plans))
        return network.deep_supervision_scales

    def set_deep_supervision_enabled(self, enabled: bool):
        self._smit().set_deep_supervision(enabled)

    def on_train_epoch_start(self):
        """Encoder frozen for the first `freeze_encoder_epochs` epochs: its parameters stay in the
        optimizer (built with every parameter) but get no gradient, so AdamW leaves them as they are."""
        if self.freeze_encoder_epochs > 0:
            train_encoder = self.current_epoch >= self.freeze_encoder_epochs
            for name, param in self._smit().named_parameters():
                if name.startswith("encoder."):
                    param.requires_grad_(train_encoder)
        super().on_train_epoch_start()

    def _param_groups(self) -> list[dict]:
        """Layer-wise lr decay for a pretrained encoder: the patch embedding (depth 0) and Swin stages
        `encoder.layers1..4` get lr * decay**(5 - depth); decoder and head get the full lr."""
        groups: dict[float, list] = {}
        for name, param in self.network.named_parameters():
            if not param.requires_grad:
                continue
            scale = 1.0
            if self.layer_decay < 1.0 and name.startswith("encoder."):
                match = re.search(r"\.(?:layers|norm)(\d)", name)
                depth = int(match.group(1)) + (1 if ".norm" in name else 0) if match else 0
                scale = self.layer_decay ** (5 - min(depth, 4))
            groups.setdefault(scale, []).append(param)
        return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self._param_groups(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, ProgressLRScheduler(optimizer, self.training_progress, kind="cosine",
                                              warmup_fraction=self.warmup_fraction)


TRAINER_CLASSES = {cls.__name__: cls for cls in (SarcoSMITTrainer, SarcoUNetTrainer, SarcoResEncTrainer)}
