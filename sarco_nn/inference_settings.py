"""How the network is run at prediction time: the preset's `inference` block, one place for its defaults.

Three speed levers, each measured against nnU-Net's own setting (fp32, tile step 0.5) for agreement
and accuracy in `bench/inference_bench.py --agreement` (README "Inference speed"):

- ``bf16``: the forward under CPU bfloat16 autocast (`sarco_nn.training.cpu_autocast`, as training
  with `cpu_bf16`), only where the CPU computes bf16 natively; the logits come back float32 and are
  accumulated as nnU-Net does. On a GPU nnU-Net's own CUDA autocast applies and this is ignored.
- ``tile_step_size``: nnU-Net's sliding-window step (0.5 = half-overlapping tiles, its default).
- ``whole_slice``: one tile spanning the whole slice (rounded up to the network's size divisor)
  instead of the plan's training patch: a 400-px slice at a 256 patch is 9 tiles at step 0.5 or one
  here. Slices with an edge over ``whole_slice_max_px`` keep the sliding window (memory).

One lever that keeps the answers (`sarco_nn.predictor.FrozenFolds`), so it is no part of a result's
settings (`as_dict`, `label`):

- ``jit_freeze``: each fold's network traced at the plan's patch and frozen (`torch.jit.freeze`:
  weights prepacked for oneDNN), once per fold per process; the same logits (README "Inference
  speed": measured on the trained `cpu` models). Opt-in: the one-off trace (~1-2 CPU s per fold)
  costs more than it saves for a handful of slices.

A model's plans carry its preset (`plans["sarco"]["preset"]`), so a preset's `inference` block
travels with the model; fields it leaves out take the defaults below. The effective settings (bf16
only where it runs) are part of `sarco predict`'s settings signature and of every results row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sarco_nn.errors import SarcoError


@dataclass(frozen=True)
class InferenceSettings:
    """The preset's `inference` block. Defaults: see README "Inference speed" for the measurements.

    bf16 is opt-in: against fp32 it agreed to Dice >= 0.998 and a mean |SMA difference| of ~0.1 %
    on held-out phantoms of two families, but at two threads it saves only 5-7 % of the network
    time, and on an under-trained model (probabilities near 0.5) it flips large areas. The tile levers change
    the trained `cpu` models' masks (mean Dice vs step 0.5: 0.92-0.95, single slices down to 0.82)
    and stay opt-in."""

    bf16: bool = False
    tile_step_size: float = 0.5
    whole_slice: bool = False
    whole_slice_max_px: int = 1024
    jit_freeze: bool = False

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None) -> "InferenceSettings":
        """Settings from a preset's `inference` block (None or missing fields: defaults)."""
        problem = invalid_inference_block(block)
        if problem:
            raise SarcoError(f"preset inference block: {problem}",
                             fix="correct the `inference` block (see README 'Inference speed').")
        return cls(**(block or {}))

    @classmethod
    def of_plans(cls, plans: dict[str, Any]) -> "InferenceSettings":
        """The settings a model's plans (the preset they were planned with) ask for."""
        return cls.from_dict(((plans.get("sarco") or {}).get("preset") or {}).get("inference"))

    def effective(self, device_type: str, cpu_bf16: bool | None = None) -> "InferenceSettings":
        """What actually runs on `device_type`: bf16 only on a CPU with native bfloat16; jit_freeze
        only on a CPU without bf16 (a graph traced in fp32 does not follow autocast, nor nnU-Net's
        CUDA autocast)."""
        settings = self._effective_precision(device_type, cpu_bf16)
        frozen_ok = device_type == "cpu" and not settings.bf16
        return replace(settings, jit_freeze=False) if settings.jit_freeze and not frozen_ok else settings

    def _effective_precision(self, device_type: str, cpu_bf16: bool | None) -> "InferenceSettings":
        if self.bf16 and device_type == "cpu":
            if cpu_bf16 is None:
                from sarco_nn.devices import cpu_bf16_supported

                cpu_bf16 = cpu_bf16_supported()
            return self if cpu_bf16 else replace(self, bf16=False)
        return replace(self, bf16=False) if self.bf16 else self

    def as_dict(self) -> dict[str, Any]:
        """The fields that may change a result (the answer-keeping ones left out: rows and output
        folders computed with and without them are the same results)."""
        return {k: v for k, v in asdict(self).items() if k not in ANSWER_KEEPING}

    def label(self) -> str:
        """Short text for results.csv's `inference` column, e.g. `bf16, whole slice` or `fp32, step 0.5`."""
        tiles = f"whole slice <= {self.whole_slice_max_px} px" if self.whole_slice else f"step {self.tile_step_size:g}"
        return f"{'bf16' if self.bf16 else 'fp32'}, {tiles}"


#: Settings that change the speed only, never a logit: not part of a result's settings.
ANSWER_KEEPING = frozenset({"jit_freeze"})


def invalid_inference_block(block: Any) -> str | None:
    """Why a preset's `inference` block would be misread, else None (also used by `load_preset`)."""
    if block is None:
        return None
    if not isinstance(block, dict):
        return "must be an object, e.g. {\"bf16\": true}"
    known = {f.name for f in fields(InferenceSettings)}
    unknown = sorted(set(block) - known)
    if unknown:
        return f"unknown field(s) {unknown} (known: {sorted(known)})"
    for key in ("bf16", "whole_slice", "jit_freeze"):
        if key in block and not isinstance(block[key], bool):
            return f"{key} {block[key]!r} must be true or false"
    step = block.get("tile_step_size", 0.5)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not (0 < step <= 1) or not math.isfinite(step):
        return f"tile_step_size {step!r} must be a number in (0, 1] (nnU-Net's default 0.5)"
    edge = block.get("whole_slice_max_px", 1024)
    if isinstance(edge, bool) or not isinstance(edge, int) or edge < 32:
        return f"whole_slice_max_px {edge!r} must be a whole number of pixels (at least 32)"
    return None


def whole_slice_tile(spatial: tuple[int, ...] | list[int], divisors: list[int], max_px: int) -> list[int] | None:
    """The one tile covering `spatial` (each edge rounded up to its divisor), or None when an edge
    would exceed `max_px` (then the plan's sliding window runs)."""
    tile = [max(d, int(math.ceil(s / d)) * d) for s, d in zip(spatial, divisors)]
    return None if max(tile) > max_px else tile
