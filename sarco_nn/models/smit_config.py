"""SMIT network hyper-parameters, importable without torch or MONAI.

Presets (`sarco_nn.presets.smit_network_config`) and the planner read and validate a preset's
network here, so configuration never imports the network itself (`sarco_nn.models.smit`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SMITConfig", "TRANS_SMALL"]


@dataclass(frozen=True)
class SMITConfig:
    """Encoder/decoder hyper-parameters. Defaults are the official "Trans-Small" encoder.

    `window_size` and `patch_size` are per axis (isotropic). `decoder_base` is the channel
    count of the full-resolution decoder stage (None: embed_dim // 2, 24 as in the official
    `Trans_3D_Seg`); the other decoder stages mirror the encoder widths so skips concatenate.
    """

    embed_dim: int = 48
    depths: tuple[int, ...] = (2, 2, 4, 2)
    num_heads: tuple[int, ...] = (4, 4, 4, 4)
    window_size: int = 4
    patch_size: int = 2
    mlp_ratio: float = 4.0
    qkv_bias: bool = False  # official Trans-Small: config.qkv_bias = False
    drop_path: float = 0.1  # official SSL used 0.3; 0.1 suits short fine-tuning on few cases
    decoder_base: int | None = None
    norm_name: str = "instance"

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError("SMITConfig needs exactly 4 stages (MONAI's SwinTransformer builds 4).")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i}: width {self.embed_dim * 2**i} not divisible by {heads} heads")

    @classmethod
    def from_dict(cls, values: dict | None) -> "SMITConfig":
        """A config from JSON-like values (lists become tuples); None or {} is Trans-Small.

        Unknown keys are an error: a typo in a preset must not silently train the default network.
        """
        if not values:
            return cls()
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown SMIT network setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @property
    def size_divisor(self) -> int:
        """Every input size must be a multiple of this (patch size x one halving per stage)."""
        return self.patch_size * 2 ** len(self.depths)

    @property
    def base_channels(self) -> int:
        return self.decoder_base if self.decoder_base is not None else max(self.embed_dim // 2, 1)


TRANS_SMALL = SMITConfig()
