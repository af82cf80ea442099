"""The network pretrained by SMIT: the sarco SMIT encoder + a learned mask token + heads.

Student and teacher are two instances of `PretrainNetwork` (the teacher's mask token and
reconstruction head are never used). The encoder is `sarco_nn.models.smit.SMITEncoder`, the very
module `sarco train` fine-tunes, so `export_encoder(net.encoder, ...)` writes every key the
fine-tuning network expects.

Masking happens after the patch embedding, as in the official student
(`SwinTransformer_Unetr_Mask_In_Seperate`): masked embedding tokens are replaced by a learned
vector. It is done by a forward hook on `encoder.patch_embed`, so the encoder's own forward
(stage norms, window padding) runs unchanged.

Tokens for self-distillation: the normalised output of the last Swin stage before its patch
merging (`skips[3]`, width 8C at stride patch x 8 = 16 voxels, one token per mask block). The
official code takes the features after the third stage's merging through an extra LayerNorm
(same width and stride); using the stage-3 output trains that stage and its norm too, and both
are exported. The image-level vector is the mean of these tokens (official avgpool). The
reconstruction head works on the bottleneck (16C at stride 32), as the official `decoder1`.
"""

from __future__ import annotations

import torch
from torch import nn

from sarco_nn.models.smit import SMITConfig, SMITEncoder
from sarco_nn.pretraining.heads import DistillationHeads, ReconstructionHead

__all__ = ["PretrainNetwork", "TOKEN_STAGE"]

#: The distilled patch tokens come from this encoder stage (0-based): stride patch_size * 2**3.
TOKEN_STAGE = 3


class PretrainNetwork(nn.Module):
    def __init__(self, spatial_dims: int, config: SMITConfig, out_dim: int, patch_out_dim: int,
                 hidden_dim: int, bottleneck_dim: int, in_channels: int = 1):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.encoder = SMITEncoder(in_channels, spatial_dims, config)
        self.mask_token = nn.Parameter(torch.zeros(config.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        token_dim = config.embed_dim * 2**TOKEN_STAGE
        self.heads = DistillationHeads(token_dim, out_dim, patch_out_dim, hidden_dim, bottleneck_dim)
        self.reconstruction = ReconstructionHead(config.embed_dim * 2 ** len(config.depths), config.size_divisor,
                                                 spatial_dims, in_channels)
        # The stage norms of skips 0-2 feed no pretraining loss (as in the official student); frozen at their
        # initial identity so DDP does not wait for gradients that never come. They are exported unchanged.
        for i in range(len(config.depths)):
            if i != TOKEN_STAGE:
                getattr(self.encoder, f"norm{i}").requires_grad_(False)
        self._embed_mask: torch.Tensor | None = None
        self.encoder.patch_embed.register_forward_hook(self._apply_mask)

    @property
    def token_stride(self) -> int:
        return self.encoder.config.patch_size * 2**TOKEN_STAGE

    @property
    def embed_stride(self) -> int:
        return self.encoder.config.patch_size

    def _apply_mask(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if self._embed_mask is None:
            return output
        w = self._embed_mask.unsqueeze(1).to(output.dtype)  # (B, 1, *S/patch)
        token = self.mask_token.to(output.dtype).view(1, -1, *([1] * self.spatial_dims))
        return output * (1.0 - w) + token * w

    def forward(self, x: torch.Tensor, embed_mask: torch.Tensor | None = None, reconstruct: bool = True):
        """x (B, 1, *S); embed_mask (B, *S/patch) 1 = masked, None = no masking (teacher).

        Returns (cls logits (B, out_dim), patch logits (B, L, patch_out_dim), reconstruction or None).
        """
        self._embed_mask = embed_mask
        try:
            skips, bottleneck = self.encoder(x)
        finally:
            self._embed_mask = None
        tokens = skips[TOKEN_STAGE].flatten(2).transpose(1, 2)  # (B, L, 8C)
        cls_logits, patch_logits = self.heads(tokens.mean(dim=1), tokens)
        recon = self.reconstruction(bottleneck) if reconstruct else None
        return cls_logits, patch_logits, recon
