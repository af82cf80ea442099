"""The small CNN of the learned L3 localizer (imports torch at module level: import this lazily).

Input: (B, 2, Z, W) bone-window maximum-intensity projections (channel 0 sagittal, 1 coronal) on a
fixed mm grid, Z rows along the head-feet axis (row 0 most inferior), W columns across the body.
Output: per-row logits (B, Z) for "the L3 level is this row", one logit (B,) for "L3 is not in the
field of view", and per-row offsets (B, Z) to the L3 level (every row votes where L3 is; votes of a real
abdomen agree, those of anatomy the network does not know scatter). A softmax over [rows..., absent] makes "not in view" a learned answer that competes
with every row, instead of a threshold bolted on afterwards.

Shape: 2-D convolutions with pooling across W only (the z resolution is kept), a mean+max pool over W,
then dilated 1-D convolutions along z whose receptive field (about ±60 rows = ±240 mm at 4 mm rows)
spans from the sacrum or the lowest ribs to L3: identifying L3 means counting vertebrae from a landmark.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MipLocalizerNet", "OFFSET_SCALE_ROWS"]

#: Offsets are predicted in units of this many rows (keeps the regression target near unit scale).
OFFSET_SCALE_ROWS: float = 10.0


def _block2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d((1, 2)))


class _Dilated(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.conv(x)))


class MipLocalizerNet(nn.Module):
    """Per-row L3 logits and offsets plus an 'absent' logit from two projections. ~25k parameters."""

    def __init__(self, in_channels: int = 2, width: int = 8, dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1)):
        super().__init__()
        self.encoder = nn.Sequential(_block2d(in_channels, width), _block2d(width, width * 2),
                                     _block2d(width * 2, width * 2), _block2d(width * 2, width * 2))
        channels = width * 4  # mean and max over W, concatenated
        self.sequence = nn.Sequential(*[_Dilated(channels, d) for d in dilations])
        self.row_head = nn.Conv1d(channels, 2, 1)  # L3 logit and offset (rows) to L3
        self.absent_head = nn.Linear(2 * channels, 1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, Z, W); valid (B, Z) bool marks real rows of zero-padded batches.

        Returns row logits (B, Z), absent logit (B,), and per-row offsets (B, Z): how many rows
        above (+) or below (-) each row the L3 level lies, in units of OFFSET_SCALE_ROWS.
        """
        f = self.encoder(x)  # (B, c, Z, W / 16)
        f = torch.cat([f.mean(dim=3), f.amax(dim=3)], dim=1)  # (B, 2c, Z)
        if valid is not None:
            f = f * valid[:, None, :].to(f.dtype)
        f = self.sequence(f)
        head = self.row_head(f)
        rows, offsets = head[:, 0], head[:, 1]
        if valid is None:
            pooled = torch.cat([f.mean(dim=2), f.amax(dim=2)], dim=1)
        else:
            m = valid[:, None, :].to(f.dtype)
            mean = (f * m).sum(dim=2) / m.sum(dim=2).clamp(min=1.0)
            peak = f.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=2)
            pooled = torch.cat([mean, peak], dim=1)
            rows = rows.masked_fill(~valid, float("-inf"))
        return rows, self.absent_head(pooled)[:, 0], offsets
