"""DINO/iBOT projection heads: image-level (one vector per view) and patch-level (one per token).

As in the official non-shared head (`iBOTHead_w_Cls_Token`, shared_head=False): one MLP
(in -> hidden -> hidden -> bottleneck, GELU) for every token, L2 normalisation, then two
separate weight-normalised linear layers to `out_dim` (image) and `patch_out_dim` (patch).
The official heads freeze the weight-norm gain at 1 (norm_last_layer=True); `NormalizedLinear`
is exactly that: rows of the weight normalised to unit length, no gain parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DistillationHeads", "NormalizedLinear", "ReconstructionHead"]


class NormalizedLinear(nn.Module):
    """Linear layer without bias whose weight rows are L2-normalised at every call (weight norm, g = 1)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DistillationHeads(nn.Module):
    """(cls (N, C), patch (N, L, C)) -> (cls logits (N, out_dim), patch logits (N, L, patch_out_dim))."""

    def __init__(self, in_dim: int, out_dim: int, patch_out_dim: int, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = NormalizedLinear(bottleneck_dim, out_dim)
        self.last_layer2 = NormalizedLinear(bottleneck_dim, patch_out_dim)

    def last_layers(self) -> list[nn.Module]:
        return [self.last_layer, self.last_layer2]

    def forward(self, cls: torch.Tensor, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.cat([cls.unsqueeze(1), patch], dim=1)
        z = F.normalize(self.mlp(tokens), dim=-1)
        return self.last_layer(z[:, 0]), self.last_layer2(z[:, 1:])


class ReconstructionHead(nn.Module):
    """Bottleneck features (N, C, *S/stride) -> image (N, 1, *S): 1x1 conv + pixel shuffle (SimMIM/SMIT).

    The official student uses exactly this light head (`decoder1`, stride 32) on the deepest
    features, so the reconstruction task must be solved by the encoder, not by a decoder.
    """

    def __init__(self, in_dim: int, stride: int, spatial_dims: int, out_channels: int = 1):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.stride, self.spatial_dims, self.out_channels = stride, spatial_dims, out_channels
        self.proj = conv(in_dim, out_channels * stride**spatial_dims, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        if self.spatial_dims == 2:
            return F.pixel_shuffle(y, self.stride)
        n, _, d, h, w = y.shape
        r = self.stride
        y = y.view(n, self.out_channels, r, r, r, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return y.reshape(n, self.out_channels, d * r, h * r, w * r)
