"""The teacher: an exponential moving average of the student, never trained by gradients.

Momentum follows the official cosine schedule from `momentum_teacher` (0.996) to 1 over all
training steps (DINO `cosine_scheduler(0.996, 1, epochs, steps)`), so the teacher moves less and
less as training converges.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ema_update", "make_teacher", "teacher_momentum"]


def teacher_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """Momentum at a global step: base at step 0, rising to 1 by a half cosine at total_steps."""
    if total_steps <= 0:
        return 1.0
    t = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


def make_teacher(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """Copy the student's weights into `teacher`, freeze it and put it in eval mode (no dropout/drop-path)."""
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (same names)."""
    t_params = dict(teacher.named_parameters())
    pairs = [(t_params[name], p) for name, p in student.named_parameters() if name in t_params]
    t_list = [t for t, _ in pairs]
    s_list = [s.detach().to(t.dtype) for t, s in pairs]
    torch._foreach_mul_(t_list, momentum)
    torch._foreach_add_(t_list, s_list, alpha=1.0 - momentum)
