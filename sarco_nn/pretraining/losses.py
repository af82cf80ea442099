"""The three SMIT losses: masked-voxel L1, image-level and patch-level self-distillation.

Self-distillation (DINO/iBOT, as the official `Cls_Patch_Loss`): the teacher's logits are centred
(running mean, momentum 0.9, all-reduced over DDP ranks) and sharpened by a low temperature; the
student's are divided by 0.1; the loss is the cross-entropy between the two softmaxes.
  * image level: teacher view q against student view v for q != v (the two views swap);
  * patch level: same view, only the tokens the student had masked, averaged per image.
Teacher temperatures follow the official schedule per epoch: linear warm-up from 0.04 to 0.07
over 30 epochs; the patch teacher is held at 0.04 until `patch_temp_start_epoch` and then warms
up the same way. Returned losses are unweighted; the trainer applies the weights.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["SelfDistillationLoss", "masked_l1", "warmup_value"]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over masked voxels only. voxel_mask (B, *S) or (B, 1, *S), 1 = masked."""
    m = voxel_mask.float()
    if m.ndim == pred.ndim - 1:
        m = m.unsqueeze(1)
    err = (pred.float() - target.float()).abs() * m
    return err.sum() / (m.sum() * pred.shape[1] + 1e-5)


def warmup_value(epoch: int, start: float, end: float, warmup_epochs: int, delay: int = 0) -> float:
    """`start` until `delay`, then linear to `end` over `warmup_epochs` epochs (official np.linspace), then `end`."""
    e = epoch - delay
    if e < 0:
        return start
    if warmup_epochs <= 1:
        return end
    if e >= warmup_epochs - 1:
        return end
    return start + (end - start) * e / (warmup_epochs - 1)


class SelfDistillationLoss(nn.Module):
    """Centred, sharpened teacher vs student cross-entropy at image and patch level (see module doc)."""

    def __init__(self, out_dim: int, patch_out_dim: int, student_temp: float = 0.1,
                 warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07,
                 warmup_teacher_patch_temp: float = 0.04, teacher_patch_temp: float = 0.07,
                 warmup_epochs: int = 30, patch_start_epoch: int = 30, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.temps = (warmup_teacher_temp, teacher_temp, warmup_teacher_patch_temp, teacher_patch_temp)
        self.warmup_epochs, self.patch_start_epoch = warmup_epochs, patch_start_epoch
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_patch", torch.zeros(1, 1, patch_out_dim))

    def teacher_temperatures(self, epoch: int) -> tuple[float, float]:
        w0, w1, p0, p1 = self.temps
        return (warmup_value(epoch, w0, w1, self.warmup_epochs),
                warmup_value(epoch, p0, p1, self.warmup_epochs, self.patch_start_epoch))

    def forward(self, student_cls: torch.Tensor, student_patch: torch.Tensor, teacher_cls: torch.Tensor,
                teacher_patch: torch.Tensor, token_mask: torch.Tensor, epoch: int, n_views: int = 2,
                update_center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs are view-major: rows [view 0 of every sample, view 1 of every sample].

        student/teacher_cls (V*B, D), *_patch (V*B, L, D), token_mask (V*B, L) with 1 = masked.
        Returns (image-level loss, patch-level loss).
        """
        temp, temp_patch = self.teacher_temperatures(epoch)
        s_cls = (student_cls.float() / self.student_temp).chunk(n_views)
        s_patch = (student_patch.float() / self.student_temp).chunk(n_views)
        with torch.no_grad():
            t_cls = F.softmax((teacher_cls.float() - self.center) / temp, dim=-1).chunk(n_views)
            t_patch = F.softmax((teacher_patch.float() - self.center_patch) / temp_patch, dim=-1).chunk(n_views)
        masks = token_mask.float().chunk(n_views)
        cls_terms, patch_terms = [], []
        for q in range(n_views):
            for v in range(n_views):
                if q == v:
                    ce = torch.sum(-t_patch[q] * F.log_softmax(s_patch[v], dim=-1), dim=-1)  # (B, L)
                    per_image = (ce * masks[v]).sum(-1) / masks[v].sum(-1).clamp(min=1.0)
                    patch_terms.append(per_image.mean())
                else:
                    cls_terms.append(torch.sum(-t_cls[q] * F.log_softmax(s_cls[v], dim=-1), dim=-1).mean())
        if update_center:
            self.update_center(teacher_cls, teacher_patch)
        return torch.stack(cls_terms).mean(), torch.stack(patch_terms).mean()

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor) -> None:
        cls_sum = teacher_cls.float().sum(dim=0, keepdim=True)
        patch_sum = teacher_patch.float().mean(dim=1).sum(dim=0, keepdim=True).unsqueeze(0)
        count = torch.tensor([float(len(teacher_cls))], device=cls_sum.device)
        if dist.is_available() and dist.is_initialized():
            for t in (cls_sum, patch_sum, count):
                dist.all_reduce(t)
        m = self.center_momentum
        self.center.mul_(m).add_(cls_sum / count * (1 - m))
        self.center_patch.mul_(m).add_(patch_sum / count * (1 - m))
