"""Learning-rate schedules driven by training progress, where progress may be wall-clock time.

A CPU user trains for a time budget rather than a number of epochs; the schedule must still
warm up and anneal over that budget, so progress = max(epoch fraction, time fraction).
"""

from __future__ import annotations

from typing import Callable

from sarco_nn.schedules import warmup_cosine


class ProgressLRScheduler:
    """Sets every param group's lr to base_lr * scale * factor(progress); called once per epoch by nnU-Net."""

    def __init__(self, optimizer, progress: Callable[[int], float], kind: str = "cosine",
                 warmup_fraction: float = 0.0, min_factor: float = 0.0, exponent: float = 0.9):
        self.optimizer = optimizer
        self.progress = progress
        self.kind = kind
        self.warmup_fraction = warmup_fraction
        self.min_factor = min_factor
        self.exponent = exponent
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group.setdefault("lr_scale", 1.0)

    def factor(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if self.kind == "poly":
            if self.warmup_fraction > 0 and progress < self.warmup_fraction:
                return warmup_cosine(progress, self.warmup_fraction)  # the shared linear warm-up ramp
            return (1.0 - progress) ** self.exponent
        return warmup_cosine(progress, self.warmup_fraction, self.min_factor)

    def step(self, epoch: int | None = None) -> None:
        f = self.factor(self.progress(epoch or 0))
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * group["lr_scale"] * f

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
