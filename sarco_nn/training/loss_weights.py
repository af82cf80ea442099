"""Per-label loss weights (preset `training.label_loss_weights`) on nnU-Net's own Dice + CE loss.

Why: nnU-Net's soft Dice is the plain mean over the foreground classes, so a four-tissue model
(muscle, IMAT, VAT, SAT) gives muscle a quarter of the Dice term a muscle-only model gives it
(issue #18: muscle Dice 0.944 vs 0.956 at the same budget). A weight raises a label's share in
the terms `training.label_loss_weight_terms` names (presets.LOSS_WEIGHT_TERMS): "dice+ce" (default)
CE class weights (torch's weighted mean) and a weighted mean of nnU-Net's per-class soft Dice;
"dice" the soft Dice only, nnU-Net's CE left as it is (a CE class weight also shifts the decision
boundary: muscle weighted 2 in both over-called muscle). nnU-Net's loss object is edited, not
replaced, so deep supervision and the ignore label keep working; without weights the trainer keeps
nnU-Net's loss untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from torch import nn

from sarco_nn.errors import SarcoError
from sarco_nn.presets import LOSS_WEIGHT_TERMS

FIX = 'write it as e.g. "label_loss_weights": {"muscle": 2} with names of the dataset\'s labels (dataset.json)'


class ClassWeightedSoftDice(nn.Module):
    """A weighted mean of nnU-Net's per-class soft Dice (MemoryEfficientSoftDiceLoss takes the plain mean).

    Each class's Dice is nnU-Net's own computation (smoothing, batch Dice, DDP gather, loss mask),
    run on that class's probability channel and one-hot target: weights all 1 give nnU-Net's value.
    """

    def __init__(self, dice: MemoryEfficientSoftDiceLoss, weights: Sequence[float]):
        super().__init__()
        self.apply_nonlin = dice.apply_nonlin
        self.do_bg = dice.do_bg
        self.per_class = MemoryEfficientSoftDiceLoss(apply_nonlin=None, batch_dice=dice.batch_dice, do_bg=True,
                                                     smooth=dice.smooth, ddp=dice.ddp)
        # one weight per channel the Dice sees (the foreground ones unless do_bg)
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))

    def forward(self, x: torch.Tensor, y: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        with torch.no_grad():  # the one-hot target exactly as MemoryEfficientSoftDiceLoss builds it
            if x.ndim != y.ndim:
                y = y.view((y.shape[0], 1, *y.shape[1:]))
            if x.shape == y.shape:
                y_onehot = y.to(torch.float32)
            else:
                y_onehot = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
                y_onehot.scatter_(1, y.long(), 1)
        first = 0 if self.do_bg else 1
        if x.shape[1] - first != len(self.weights):
            raise ValueError(f"{x.shape[1] - first} Dice classes but {len(self.weights)} weights")
        dice = torch.stack([-self.per_class(x[:, c:c + 1], y_onehot[:, c:c + 1], loss_mask)
                            for c in range(first, x.shape[1])])
        weights = self.weights.to(dice.device)
        return -(dice * weights).sum() / weights.sum()


def class_weights(label_weights: Mapping[str, Any], labels: Mapping[str, Any], where: str) -> list[float]:
    """One weight per segmentation channel (label value order, background 1): the named labels' weights.

    `labels` is dataset.json's name → value map; a name it lacks or a weight that is not a positive
    number is refused in one line naming `where` (the preset)."""
    labels = {name: value for name, value in labels.items() if name != "ignore"}  # nnU-Net's ignore label: no channel
    unknown = sorted(set(label_weights) - {name for name in labels if name != "background"})
    if unknown:
        raise SarcoError(f"{where}: training.label_loss_weights names {', '.join(unknown)}, not a foreground label of "
                         f"this dataset ({', '.join(n for n in labels if n != 'background')})", fix=FIX + ".")
    bad = {k: v for k, v in label_weights.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")}
    if bad:
        raise SarcoError(f"{where}: training.label_loss_weights {bad} must be positive numbers", fix=FIX + ".")
    values = {int(v): 1.0 for v in labels.values()}
    for name, weight in label_weights.items():
        values[int(labels[name])] = float(weight)
    if sorted(values) != list(range(len(values))):
        raise SarcoError(f"{where}: label_loss_weights needs consecutive label values 0..N, got {sorted(values)}",
                         fix="use label (not region) training with dataset.json labels 0, 1, ...")
    return [values[v] for v in range(len(values))]


def weight_labels(loss: nn.Module, weights: Sequence[float], device: torch.device,
                  compile_dice: bool = False, terms: str = LOSS_WEIGHT_TERMS[0]) -> nn.Module:
    """nnU-Net's Dice + CE loss (deep-supervision wrapped or not) with `weights` (one per channel) in the
    `terms` (one of presets.LOSS_WEIGHT_TERMS): the soft Dice always, the CE only with "dice+ce".

    Edits the loss in place and returns it. `compile_dice`: compile the new Dice as nnU-Net compiles its own."""
    if terms not in LOSS_WEIGHT_TERMS:
        raise ValueError(f"loss weight terms {terms!r}, not one of {LOSS_WEIGHT_TERMS}")
    inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
    if not isinstance(inner, DC_and_CE_loss):
        raise SarcoError(f"label_loss_weights applies to nnU-Net's Dice + CE loss, not {type(inner).__name__}",
                         fix="remove training.label_loss_weights for region-based training.")
    if "ce" in terms.split("+"):
        inner.ce = RobustCrossEntropyLoss(weight=torch.tensor(list(weights), dtype=torch.float32, device=device),
                                          ignore_index=inner.ce.ignore_index)
    dice = getattr(inner.dc, "_orig_mod", inner.dc)  # nnU-Net may have compiled it
    dice_weights = weights if dice.do_bg else weights[1:]
    inner.dc = ClassWeightedSoftDice(dice, dice_weights).to(device)
    if compile_dice:
        inner.dc = torch.compile(inner.dc)
    return loss
