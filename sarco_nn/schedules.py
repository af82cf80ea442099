"""The one learning-rate shape of sarco: linear warm-up, then half-cosine down to a floor.

Used by the SMIT segmentation trainer (`training.schedule.ProgressLRScheduler`, progress = epoch
or wall-clock fraction) and by SMIT pretraining (`pretraining.trainer.lr_factor`, progress =
optimizer step / total steps), so both warm up and anneal the same way.
"""

from __future__ import annotations

import math

__all__ = ["WARMUP_FLOOR", "warmup_cosine"]

#: Smallest warm-up factor: the first step trains at 1 % of the base learning rate, never at 0
#: (an lr of 0 wastes the step and, with AdamW, still decays nothing: a silent no-op).
WARMUP_FLOOR: float = 0.01


def warmup_cosine(progress: float, warmup_fraction: float = 0.0, min_factor: float = 0.0) -> float:
    """Learning-rate factor (multiplies the base lr) at `progress` through training.

    Args:
        progress: fraction of training done, 0..1 (clamped).
        warmup_fraction: leading fraction of training with a linear ramp from `WARMUP_FLOOR` to 1;
            0 means no warm-up.
        min_factor: factor reached at the end of the cosine (0 = anneal to lr 0).

    Example:
        >>> warmup_cosine(0.0, 0.1), warmup_cosine(0.1, 0.1), round(warmup_cosine(1.0, 0.1, 0.01), 3)
        (0.01, 1.0, 0.01)
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, WARMUP_FLOOR)
    span = max(1.0 - warmup_fraction, 1e-8)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min((progress - warmup_fraction) / span, 1.0)))
    return min_factor + (1.0 - min_factor) * cosine
