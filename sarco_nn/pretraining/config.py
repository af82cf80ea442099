"""Every pretraining hyper-parameter in one place, with the official SMIT defaults.

Official values (The-Veeraraghavan-Lab/SMIT `train_self_supervised.py`, `Cls_Patch_Loss`,
`MaskGenerator`, `iBOTHead_w_Cls_Token`): 2 mm resampling, 96^3 crops, two views per volume,
70 % of 16^3-voxel blocks masked, loss weights 1 (reconstruction) / 0.1 (image-level) /
0.1 (patch-level), heads of 8192 outputs (hidden 2048, bottleneck 256), student temperature
0.1, teacher temperature 0.04 -> 0.07 over 30 epochs (patch teacher: held at 0.04 until epoch
30, then the same warm-up), centre momentum 0.9, EMA momentum 0.996 -> 1 (cosine), AdamW at
1e-4 x batch (batch 6), linear warm-up 20 epochs then cosine, 500 epochs, last layer of the
heads frozen during the first epoch. No torch import here: the CLI reads these defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

__all__ = ["DEFAULT_SPACING_2D_MM", "OFFICIAL_SPACING_3D_MM", "PretrainConfig", "defaults", "resumed_config",
           "setting_problem"]

#: Official 3D resampling (mm, isotropic).
OFFICIAL_SPACING_3D_MM = 2.0
#: In-plane spacing of 2D pretraining when none is given: the reference study's 1.5 mm (the `cpu`
#: plan preset). Give `--spacing` equal to your plan's target spacing when it differs.
DEFAULT_SPACING_2D_MM = 1.5


@dataclass
class PretrainConfig:
    """Pretraining settings. `encoder` holds SMITConfig fields (None: Trans-Small)."""

    dims: int = 2
    crop_size: int = 96
    spacing_mm: float | None = None  # None: 2.0 (3D, official) or 1.5 in-plane (2D)
    epochs: int = 500
    steps_per_epoch: int | None = None  # None: one pass over the volumes per epoch, as the official loader
    batch_size: int = 6
    lr_per_sample: float = 1e-4  # lr = lr_per_sample x global batch size
    weight_decay: float = 0.01  # torch AdamW default, what the official script gets
    warmup_epochs: int = 20
    min_lr: float = 0.0
    # masking
    mask_ratio: float = 0.7
    mask_block: int = 16  # voxels per block edge
    # losses
    rec_weight: float = 1.0
    cls_weight: float = 0.1
    patch_weight: float = 0.1
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    teacher_temp_warmup_epochs: int = 30
    patch_temp_start_epoch: int = 30  # official `pred_start_epoch` (mim_start_epoch)
    center_momentum: float = 0.9
    # teacher
    momentum_teacher: float = 0.996
    freeze_last_layer_epochs: int = 1
    # heads
    out_dim: int = 8192
    patch_out_dim: int = 8192
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    # data
    samples_per_read: int = 1  # consecutive samples cut from one read volume (official: 1, both views from it)
    cache_volumes: int = 4  # preprocessed volumes kept per loader process (streaming: never the whole archive)
    min_body_area_cm2: float = 250.0  # 2D: slices with at least this much body (abdomen, not neck/head)
    intensity_jitter: float = 0.1  # view augmentation: scale in 1 +- j, shift in +- j/2 (window units)
    seed: int = 123  # official set_determinism(seed=123)
    encoder: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = setting_problem(f.name, getattr(self, f.name))
            if problem:
                raise ValueError(problem)
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")
        if self.crop_size % self.mask_block:
            raise ValueError(f"crop size {self.crop_size} is not a multiple of the mask block {self.mask_block}")
        if min(self.rec_weight, self.cls_weight, self.patch_weight) < 0 or not (self.rec_weight or self.distills):
            raise ValueError("loss weights must be >= 0 and at least one of them > 0")
        if self.batch_size < 1 or self.epochs < 1 or self.samples_per_read < 1:
            raise ValueError("batch size, epochs and samples per read must be at least 1")
        self.smit_config()  # an invalid encoder setting fails here, before any data is read

    @property
    def distills(self) -> bool:
        """False when both self-distillation weights are 0: masked-image modelling only (no teacher pass)."""
        return self.cls_weight > 0.0 or self.patch_weight > 0.0

    @property
    def spacing(self) -> float:
        if self.spacing_mm is not None:
            return float(self.spacing_mm)
        return OFFICIAL_SPACING_3D_MM if self.dims == 3 else DEFAULT_SPACING_2D_MM

    def smit_config(self):
        from sarco_nn.models.smit_config import SMITConfig

        return SMITConfig.from_dict(self.encoder)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spacing_mm"] = self.spacing
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PretrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def resumed_config(own: PretrainConfig, config: PretrainConfig | None,
                   typed: Mapping[str, Any] | None) -> tuple[PretrainConfig, list[str]]:
    """The one rule of `--continue`: what a resumed run trains with, and a line per request not applied.

    A resumed run continues exactly where it stopped, so it keeps `own` (its stored settings): the
    data order, the schedule and the networks depend on them. Only its length may change, and only
    when the caller chose it: `typed` holds the settings the caller typed (``sarco pretrain --epochs``
    / ``api.pretrain(settings=...)``), `config` those settings validated; an epochs left out keeps the
    run's own (it is not the official 500). `typed` None (a Python caller that gives `config` alone)
    means `config`'s epochs. Every other typed setting that differs from `own` is named as not applied.
    `own` itself is not changed.
    """
    chosen = dict(typed) if typed is not None else ({"epochs": config.epochs} if config is not None else {})
    stored = own.to_json()
    notes = []
    ignored = sorted(k for k, v in chosen.items() if k != "epochs" and stored.get(k, v) != v)
    if ignored:
        notes.append(f"continuing with the run's own settings, not the given {', '.join(ignored)}")
    if config is not None and "epochs" in chosen and config.epochs != own.epochs:
        notes.append(f"continuing with {config.epochs} epochs instead of {own.epochs}")
        own = replace(own, epochs=config.epochs)
    return own, notes


#: The least value of each numeric setting and whether it may equal it; a setting not named here
#: takes any number of its kind. A 0 crop, block or head divides by zero deep in the trainer, a
#: negative lr or spacing fails inside torch or ITK, and a 0 step count silently meant "one pass".
_LEAST: dict[str, tuple[float, bool]] = {
    **dict.fromkeys(("crop_size", "epochs", "steps_per_epoch", "batch_size", "mask_block", "out_dim", "patch_out_dim",
                     "head_hidden_dim", "head_bottleneck_dim", "samples_per_read"), (1, True)),
    **dict.fromkeys(("warmup_epochs", "teacher_temp_warmup_epochs", "patch_temp_start_epoch", "freeze_last_layer_epochs",
                     "cache_volumes", "seed", "weight_decay", "min_lr", "rec_weight", "cls_weight", "patch_weight",
                     "min_body_area_cm2", "intensity_jitter", "center_momentum", "momentum_teacher"), (0, True)),
    **dict.fromkeys(("spacing_mm", "lr_per_sample", "student_temp", "warmup_teacher_temp", "teacher_temp",
                     "warmup_teacher_patch_temp", "teacher_patch_temp"), (0, False)),
}
#: Momenta are EMA weights: at most 1.
_AT_MOST_ONE = ("center_momentum", "momentum_teacher")


def setting_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be the PretrainConfig field `name` (its kind, from the annotation, and its
    range), or None. The one check of a setting, wherever it comes from: a flag, `api.pretrain`'s
    settings or a preset's `pretraining` section (which names the preset around this message)."""
    kinds = _kinds()
    if name not in kinds:
        return f"unknown pretraining setting {name!r}"
    kind, optional = kinds[name]
    if value is None:
        return None if optional else f"{name} must be {_KIND_WORDS[kind]}, got None"
    if kind == "dict":
        return None if isinstance(value, dict) else f"{name} must be {_KIND_WORDS[kind]}, got {value!r}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (kind == "int" and not isinstance(value, int)):
        return f"{name} must be {_KIND_WORDS[kind]}, got {value!r}"
    least, inclusive = _LEAST.get(name, (-math.inf, True))
    if value < least or (value == least and not inclusive) or (name in _AT_MOST_ONE and value > 1):
        bound = f"of at least {least:g}" if inclusive else f"above {least:g}"
        bound += " and at most 1" if name in _AT_MOST_ONE else ""
        return f"{name} must be {_KIND_WORDS[kind]} {bound}, got {value!r}"
    return None


_KIND_WORDS = {"int": "a whole number", "float": "a number", "dict": "an object of SMIT network settings"}


def _kinds() -> dict[str, tuple[str, bool]]:
    """Field name -> (int, float or dict, whether None is allowed), read from the annotations
    (strings here: `from __future__ import annotations`)."""
    return {f.name: (f.type.split("|")[0].split("[")[0].strip(), "None" in f.type) for f in fields(PretrainConfig)}


def defaults() -> PretrainConfig:
    """The official defaults (what every CLI option starts from)."""
    return PretrainConfig()
