"""The only module nnU-Net imports from `nnUNet_extTrainer`: it re-exports sarco's trainers by name."""

from sarco_nn.training.trainers import SarcoResEncTrainer, SarcoSMITTrainer, SarcoUNetTrainer  # noqa: F401
