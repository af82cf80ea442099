"""Block masking of the student's view (SMIT / SimMIM style).

The crop is cut into cubes (squares in 2D) of `block` voxels; ceil(ratio x blocks) of them,
drawn without replacement, are masked. The ratio the student actually sees is therefore
ceil(ratio x n) / n (e.g. 26 / 36 = 0.722 for 0.7 of a 96^2 crop in 16^2 blocks), which is what
`applied_ratio` reports and the trainer logs. The same block mask is used at three resolutions:
patch-embedding tokens (mask-token replacement), voxels (reconstruction loss) and the patch
tokens distilled from the teacher (stride patch x 8 = 16 for Trans-Small, one token per block).
"""

from __future__ import annotations

import math

import numpy as np


def block_grid(crop_size: int, block: int, dims: int) -> tuple[int, ...]:
    if crop_size % block:
        raise ValueError(f"crop size {crop_size} is not a multiple of the mask block {block}")
    return (crop_size // block,) * dims


def blocks_masked(n_blocks: int, ratio: float) -> int:
    """How many of n blocks are masked for a declared ratio (never all of them, at least one)."""
    return min(max(int(math.ceil(n_blocks * ratio)), 1), n_blocks - 1) if n_blocks > 1 else 1


def random_block_mask(rng: np.random.Generator, crop_size: int, block: int, dims: int, ratio: float) -> np.ndarray:
    """Boolean mask of shape (crop_size // block,) * dims with `blocks_masked` True entries."""
    grid = block_grid(crop_size, block, dims)
    n = int(np.prod(grid))
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: blocks_masked(n, ratio)]] = True
    return mask.reshape(grid)


def applied_ratio(crop_size: int, block: int, dims: int, ratio: float) -> float:
    """The fraction of voxels every masked view actually has hidden."""
    n = int(np.prod(block_grid(crop_size, block, dims)))
    return blocks_masked(n, ratio) / n


def mask_at_stride(block_mask, block: int, stride: int):
    """Torch (B, *grid) block mask -> (B, *S / stride) float mask at a token stride.

    A token is masked when at least half of its voxels are (exact when stride divides the block
    or the block divides the stride, as for the defaults).
    """
    import torch
    import torch.nn.functional as F

    m = block_mask.float()
    dims = m.ndim - 1
    if block % stride == 0:
        factor = block // stride
        for axis in range(1, dims + 1):
            m = m.repeat_interleave(factor, dim=axis)
        return m
    for axis in range(1, dims + 1):
        m = m.repeat_interleave(block, dim=axis)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return (pool(m.unsqueeze(1), stride).squeeze(1) >= 0.5).float() if stride > 1 else m


def masked_fraction(mask) -> float:
    """Fraction of masked entries (what the trainer logs as the applied mask ratio)."""
    return float(mask.float().mean())


__all__ = ["applied_ratio", "block_grid", "blocks_masked", "mask_at_stride", "masked_fraction", "random_block_mask"]
