"""Which parameters train when: the study's incremental unfreezing, and the `all` / `head` modes.

Incremental: train the new head alone on the (pretrained) features, then unfreeze blocks from the
top (most task-specific) down, one more per stage, each stage with its own epochs and a lower
learning rate, so the early generic filters move last and least. Frozen blocks also keep their
BatchNorm layers in eval mode: otherwise their running statistics would drift on CT batches
while their weights stay fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sarco_nn.classification.models import arch_spec, parameter_groups
from sarco_nn.errors import SarcoError

__all__ = ["DEFAULT_LR_DECAY", "Stage", "UNFREEZE_MODES", "apply_stage", "build_schedule", "set_train_mode"]

UNFREEZE_MODES = ("incremental", "all", "head")

#: Each incremental stage trains with this fraction of the previous stage's learning rate.
DEFAULT_LR_DECAY = 0.5


@dataclass(frozen=True)
class Stage:
    name: str
    trainable: tuple[str, ...]  # parameter groups (models.ArchSpec) that train in this stage
    epochs: int
    lr: float


def build_schedule(arch: str, mode: str, epochs: int, lr: float, lr_decay: float = DEFAULT_LR_DECAY) -> list[Stage]:
    """Stages for `mode`; `epochs` is per stage (incremental) or the total (all / head)."""
    if mode not in UNFREEZE_MODES:
        raise SarcoError(f"unknown unfreeze mode {mode!r}", fix=f"use one of: {', '.join(UNFREEZE_MODES)}.")
    if epochs < 1 or not lr > 0:
        raise SarcoError(f"epochs ({epochs}) and learning rate ({lr}) must be positive")
    spec = arch_spec(arch)
    if mode == "head":
        return [Stage("head", ("head",), epochs, lr)]
    if mode == "all":
        return [Stage("all", tuple(name for name, _ in spec.groups()), epochs, lr)]
    top_down = [name for name, _ in reversed(spec.blocks)]
    stages = [Stage("head", ("head",), epochs, lr)]
    for i, block in enumerate(top_down, start=1):
        stages.append(Stage(f"head+{'+'.join(top_down[:i])}" if i < len(top_down) else "all",
                            ("head", *top_down[:i]), epochs, lr * lr_decay**i))
    return stages


def apply_stage(model, arch: str, stage: Stage) -> int:
    """Set requires_grad for the stage (and BatchNorm modes via `set_train_mode`); return the number
    of trainable parameter tensors."""
    groups = parameter_groups(model, arch)
    unknown = set(stage.trainable) - set(groups)
    if unknown:
        raise SarcoError(f"internal: stage {stage.name} names unknown groups {sorted(unknown)}")
    trainable = {name for g in stage.trainable for name in groups[g]}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return len(trainable)


def set_train_mode(model, arch: str, stage: Stage) -> None:
    """model.train(), except the modules of frozen blocks, which stay in eval mode (BatchNorm stats)."""
    spec = arch_spec(arch)
    frozen = tuple(p for name, prefixes in spec.groups() if name not in stage.trainable for p in prefixes)
    model.train()
    for name, module in model.named_modules():
        if name and (name + ".").startswith(frozen):
            module.eval()
