"""SMIT segmentation network: a Swin encoder laid out like the official SMIT code + a conv U-decoder.

Why this shape: the reference study fine-tunes the SMIT student (`Trans_3D_Seg` in
The-Veeraraghavan-Lab/SMIT). Its encoder is a Swin transformer ("Trans-Small": embed 48,
depths 2-2-4-2, 4 heads per stage, 4-voxel windows, patch 2, no qkv bias, patch merging
8C -> 2C) whose per-stage outputs go through their own LayerNorms (`norm0..norm3`) before a
convolutional decoder. We build the Swin blocks from MONAI (`monai.networks.nets.swin_unetr`,
a maintained, tested implementation) instead of hand-written attention, and keep every
parameter 1:1 mappable to the official state-dict names (see `sarco_nn.models.pretrained`):

    official `transformer.*`                 this encoder (`SMITSegNet.encoder.*`)
    patch_embed.proj/norm.*                  patch_embed.proj/norm.*
    layers.{i}.blocks.{j}.mlp.fc1/fc2.*      layers{i+1}.0.blocks.{j}.mlp.linear1/linear2.*
    layers.{i}.blocks.{j}.<other>            layers{i+1}.0.blocks.{j}.<other>
    layers.{i}.downsample.reduction/norm.*   layers{i+1}.0.downsample.reduction/norm.*
    norm{i}.*                                norm{i}.*

Two details differ from MONAI's own SwinTransformer and are handled here: (1) the official
patch merging concatenates the 8 neighbours in a different order than MONAI's, so we use a
merging module with the official order (its tensors then load unchanged); (2) the official
encoder normalises each stage's output *before* patch merging with learnable LayerNorms,
which MONAI's SwinTransformer.forward does not have, so `SMITEncoder.forward` calls each stage
(MONAI's public `BasicLayer.forward`) itself and takes the pre-merging tokens with a forward
pre-hook on the merging module (see `_run_stage`).

Input sizes: every spatial size should be divisible by ``patch_size * 2**len(depths)`` (32 for
Trans-Small; `SMITConfig.size_divisor`), and the planner rounds plan patches so. Any other size
still works: `forward` zero-pads each axis at its high end up to the next multiple and crops the
logits back. sarco's plans bake the CT window into nnU-Net's normalisation (`planning.py`:
-175..250 HU -> [0, 1]), so the padded zero reads as -175 HU: fat/air level, outside any muscle,
never mistaken for it.
A feature map smaller than a window is zero-padded to one window (as the official code does;
MONAI's own shrinking mis-indexes the relative-position biases, see `_run_stage`).

Example::

    >>> net = SMITSegNet(in_channels=1, num_classes=2, spatial_dims=2)
    >>> net(torch.zeros(2, 1, 256, 256)).shape
    torch.Size([2, 2, 256, 256])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from monai.networks.nets.swin_unetr import BasicLayer, PatchMergingV2, SwinTransformer
from torch import nn

from sarco_nn.models.smit_config import TRANS_SMALL, SMITConfig

__all__ = [
    "MERGE_OFFSETS_2D", "MERGE_OFFSETS_3D", "OfficialOrderPatchMerging", "SMITConfig", "SMITDecoder",
    "SMITEncoder", "SMITSegNet", "TRANS_SMALL", "build_smit_for_plans", "count_parameters", "merge_offsets",
]

#: Neighbour order of the official SMIT patch merging (offsets along array axes 0, 1, 2).
MERGE_OFFSETS_3D: tuple[tuple[int, ...], ...] = (
    (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 1, 1),
)
#: The same order restricted to two axes (what MONAI's 2D merging also uses).
MERGE_OFFSETS_2D: tuple[tuple[int, ...], ...] = ((0, 0), (1, 0), (0, 1), (1, 1))


def merge_offsets(spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """Neighbour order used by `OfficialOrderPatchMerging` for 2 or 3 spatial axes."""
    return MERGE_OFFSETS_3D if spatial_dims == 3 else MERGE_OFFSETS_2D




class OfficialOrderPatchMerging(PatchMergingV2):
    """Patch merging (LayerNorm(2^d C) -> Linear(2^d C, 2C)) with the official neighbour order.

    Input and output are channels-last (B, *spatial, C); odd sizes are zero-padded first.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[1:-1]
        pad: list[int] = [0, 0]
        for size in reversed(spatial):
            pad += [0, size % 2]
        if any(pad):
            x = F.pad(x, pad)
        parts = [x[(slice(None),) + tuple(slice(o, None, 2) for o in off)] for off in merge_offsets(len(spatial))]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class SMITEncoder(SwinTransformer):
    """MONAI Swin transformer + the official per-stage output norms (`norm0..norm3`).

    forward(x: (B, C_in, *S)) -> (skips, bottleneck): skips[i] has embed_dim * 2**i channels at
    S / (patch * 2**i); the bottleneck has embed_dim * 16 channels at S / (patch * 16).
    """

    def __init__(self, in_channels: int, spatial_dims: int, config: SMITConfig = TRANS_SMALL):
        super().__init__(
            in_chans=in_channels,
            embed_dim=config.embed_dim,
            window_size=(config.window_size,) * spatial_dims,
            patch_size=(config.patch_size,) * spatial_dims,
            depths=config.depths,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            drop_path_rate=config.drop_path,
            norm_layer=nn.LayerNorm,
            patch_norm=True,
            spatial_dims=spatial_dims,
            downsample=OfficialOrderPatchMerging,
        )
        self.spatial_dims = spatial_dims
        self.config = config
        for i in range(len(config.depths)):
            self.add_module(f"norm{i}", nn.LayerNorm(config.embed_dim * 2**i))

    @property
    def stages(self) -> list[nn.Module]:
        return [self.layers1[0], self.layers2[0], self.layers3[0], self.layers4[0]]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.pos_drop(self.patch_embed(x))
        skips = []
        for i, stage in enumerate(self.stages):
            skip, x = _run_stage(stage, getattr(self, f"norm{i}"), x)
            skips.append(skip)
        return skips, x


def _run_stage(stage: BasicLayer, norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One MONAI `BasicLayer` run through its own public forward, with the official stage norm.

    (B, C, *S) -> (skip (B, C, *S), merged (B, 2C, *S/2)). MONAI's forward runs the blocks and then
    the patch merging; the official encoder also needs the blocks' output itself (normalised by
    `norm`) as the skip. A forward pre-hook on the merging module receives exactly that tensor
    (channels-last), keeps it, and hands the merging the same tensor, so nothing of MONAI's
    forward is re-implemented here.

    An axis shorter than the window is zero-padded to one window first (and the hook crops it
    back before merging). MONAI would shrink the window instead and then index its
    relative-position table with `[:n, :n]`, which is only right when the shrunk axis is the first
    one (e.g. a (4, 2) 2D window gets a (2, 4) window's biases); padding keeps pretrained biases
    meaningful and matches the official code.
    """
    spatial = tuple(x.shape[2:])
    short = [max(w - s, 0) for s, w in zip(spatial, stage.window_size)]
    if any(short):
        pad: list[int] = []
        for extra in reversed(short):
            pad += [0, extra]
        x = F.pad(x, pad)
    seen: list[torch.Tensor] = []

    def keep_tokens(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        tokens = args[0][(slice(None),) + tuple(slice(0, s) for s in spatial)].contiguous()  # (B, *S, C)
        seen.append(tokens)
        return (tokens,)

    handle = stage.downsample.register_forward_pre_hook(keep_tokens)
    try:
        down = stage(x).contiguous()
    finally:
        handle.remove()
    skip = norm(seen[0]).movedim(-1, 1).contiguous()
    return skip, down


class SMITDecoder(nn.Module):
    """Conv decoder (residual blocks, transposed-conv upsampling, skip concatenation).

    Like SwinUNETR, a residual conv block on the raw input gives a full-resolution skip (the
    official decoder upsamples the last stage without one; muscle borders gain from it).
    `deep_supervision` is the flag nnU-Net's `set_deep_supervision_enabled` toggles.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int, config: SMITConfig,
                 deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        widths = [config.embed_dim * 2**i for i in range(len(config.depths) + 1)]
        base = config.base_channels
        kw = dict(spatial_dims=spatial_dims, kernel_size=3, norm_name=config.norm_name, res_block=True)
        self.stem = UnetrBasicBlock(in_channels=in_channels, out_channels=base, stride=1, **kw)
        # ups[i]: widths[i+1] at S/(p*2^(i+1)) -> widths[i] at S/(p*2^i), skip = encoder stage i
        self.ups = nn.ModuleList(
            UnetrUpBlock(in_channels=widths[i + 1], out_channels=widths[i], upsample_kernel_size=2, **kw)
            for i in range(len(config.depths))
        )
        self.up_full = UnetrUpBlock(in_channels=widths[0], out_channels=base,
                                    upsample_kernel_size=config.patch_size, **kw)
        self.head = UnetOutBlock(spatial_dims, base, num_classes)
        self.ds_heads = nn.ModuleList(
            UnetOutBlock(spatial_dims, widths[i], num_classes) for i in range(len(config.depths))
        )

    def forward(self, x_in: torch.Tensor, skips: list[torch.Tensor], bottleneck: torch.Tensor):
        x = bottleneck
        per_level: list[torch.Tensor] = [None] * len(skips)  # type: ignore[list-item]
        for i in reversed(range(len(skips))):
            x = self.ups[i](x, skips[i])
            per_level[i] = x
        full = self.head(self.up_full(x, self.stem(x_in)))
        if not self.deep_supervision:
            return full
        return [full] + [head(level) for head, level in zip(self.ds_heads, per_level)]


class SMITSegNet(nn.Module):
    """SMIT segmentation network for nnU-Net: (B, C_in, *S) -> logits (B, num_classes, *S).

    spatial_dims 2 (L3 slices, S = (y, x)) or 3 (slabs/volumes, S = (z, y, x)).
    deep_supervision=True returns [full, 1/2, 1/4, 1/8, 1/16] logits (highest resolution first,
    like nnU-Net, for its DeepSupervisionWrapper); `deep_supervision_scales` gives their scales.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int,
                 config: SMITConfig = TRANS_SMALL, deep_supervision: bool = False):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.config = config
        self.encoder = SMITEncoder(in_channels, spatial_dims, config)
        self.decoder = SMITDecoder(in_channels, num_classes, spatial_dims, config, deep_supervision)

    def set_deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = enabled

    @property
    def deep_supervision_scales(self) -> list[list[float]]:
        """Scale of each deep-supervision output relative to the input, per axis (nnU-Net format)."""
        n = 1 + len(self.config.depths)
        return [[1.0 / (self.config.patch_size * 2 ** (k - 1)) if k else 1.0] * self.spatial_dims for k in range(n)]

    def forward(self, x: torch.Tensor):
        spatial = tuple(x.shape[2:])
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"expected {self.spatial_dims} spatial axes, got input of shape {tuple(x.shape)}")
        d = self.config.size_divisor
        pad_to = [int(math.ceil(s / d)) * d for s in spatial]
        if list(spatial) != pad_to:
            pad: list[int] = []
            for s, t in zip(reversed(spatial), reversed(pad_to)):
                pad += [0, t - s]
            x = F.pad(x, pad)
        skips, bottleneck = self.encoder(x)
        out = self.decoder(x, skips, bottleneck)
        if list(spatial) == pad_to:
            return out
        if isinstance(out, torch.Tensor):
            return _crop(out, spatial)
        return [_crop(o, [int(math.ceil(s * sc)) for s, sc in zip(spatial, scale)])
                for o, scale in zip(out, self.deep_supervision_scales)]


def _crop(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return t[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]


def build_smit_for_plans(num_input_channels: int, num_classes: int, patch_size: Sequence[int],
                         deep_supervision: bool, config: SMITConfig = TRANS_SMALL) -> SMITSegNet:
    """The network for an nnU-Net configuration: 2D or 3D from the plan's patch size.

    The patch size only picks the dimensionality; sizes that are not multiples of
    `config.size_divisor` still work (padded inside forward) but waste compute, which is why
    the planner (`planning.py`) rounds the plan's patch to multiples of it.
    """
    return SMITSegNet(num_input_channels, num_classes, len(patch_size), config, deep_supervision)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
