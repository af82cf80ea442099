"""How the network is run at prediction time: the preset's `inference` block, one place for its defaults.

Four speed levers, each measured against nnU-Net's own setting (fp32, tile step 0.5) for agreement
and accuracy in `bench/inference_bench.py --agreement` (README "Inference speed"):

- ``bf16``: the forward under CPU bfloat16 autocast (`sarco_nn.training.cpu_autocast`, as training
  with `cpu_bf16`), only where the CPU computes bf16 natively; the logits come back float32 and are
  accumulated as nnU-Net does. On a GPU nnU-Net's own CUDA autocast applies and this is ignored.
- ``tile_step_size``: nnU-Net's sliding-window step (0.5 = half-overlapping tiles, its default).
- ``whole_slice``: one tile spanning the whole slice (rounded up to the network's size divisor)
  instead of the plan's training patch: a 400-px slice at a 256 patch is 9 tiles at step 0.5 or one
  here. Slices with an edge over ``whole_slice_max_px`` keep the sliding window (memory).
- ``body_crop``: the sliding window (or whole-slice tile) runs on the box around what the network can
  see of the body (`body_crop_box`: every region, arms included, plus `BODY_CROP_MARGIN_MM`, never
  smaller than the patch); outside it the logits are background's. On 512² phantom slices at 1 mm a
  9-tile slice (256², step 0.5) needs 3-6 (`bench/body_crop_tiles.py`). Not answer-keeping to the bit
  (the tiles sit elsewhere, and each tile's output depends on all of it), so it is part of the
  settings; off by default.

Two levers that keep the answers, so they are no part of a result's settings (`as_dict`, `label`):

- ``jit_freeze``: each fold's network traced at the plan's patch and frozen (`torch.jit.freeze`:
  weights prepacked for oneDNN), once per fold per process; the same logits (README "Inference
  speed": measured on the trained `cpu` models). Opt-in: the one-off trace (~1-2 CPU s per fold)
  costs more than it saves for a handful of slices.
- ``batch_mirroring``: each tile's mirrored views (nnU-Net's original plus every combination of
  mirror axes) stacked along the batch axis and run as one forward (`SarcoPredictor`), then
  unflipped and averaged as nnU-Net does. Each view's logits are the ones it gets alone (every
  layer of an eval-mode network works per sample), up to float rounding. At batch 1 a GPU is
  launch-bound: on one H200 the 5-fold x 2-view network work of a 512² slice took 0.19 s one view at
  a time and 0.10 s batched (README "GPU suite"). None (the default): on for CUDA, off elsewhere
  (a CPU gains little from a larger batch, and `jit_freeze` traces once more per batch size).

A model's plans carry its preset (`plans["sarco"]["preset"]`), so a preset's `inference` block
travels with the model; fields it leaves out take the defaults below. The effective settings (bf16
only where it runs) are part of `sarco predict`'s settings signature and of every results row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from sarco_nn.constants import CT_WINDOW_HU
from sarco_nn.errors import SarcoError

#: Margin (mm) kept around the body's box. Context beyond the body is not needed: air is air, and
#: outside the box the network's input is the window's floor, the value nnU-Net pads with too. The
#: margin only has to cover what the box's level cannot see (skin's partial volume, fat below the
#: window, the ringing of nnU-Net's resampling: a few mm) and keep the network's predicted background
#: band around the skin inside the crop, so the pasted background never meets tissue.
BODY_CROP_MARGIN_MM: float = 15.0

#: The level (HU) above which a voxel of the network's input counts as body for the box. The box is
#: taken on nnU-Net's preprocessed input, where the CT window clips everything at or below its floor
#: (`constants.CT_WINDOW_HU`, -175 HU) to one value: `constants.BODY_HU` (-500) cannot be seen there, and
#: what the network cannot tell apart from air needs no tile. 25 HU above the floor, so the tails of the
#: cubic resampling around the clipped floor (hundredths of the window, decaying by ~4x per voxel) are
#: not taken for body. Every region counts (arms, table): the box only has to hold all the network sees.
BODY_CROP_LEVEL_HU: float = CT_WINDOW_HU[0] + 25.0


def body_crop_level(window_hu: tuple[float, float] | list[float] | None = None) -> float:
    """The body level in the network's input units for a model whose plans baked in `window_hu`
    (their `sarco.ct_window_hu` record; None: `CT_WINDOW_HU`): 25 HU above that window's floor, as
    `BODY_CROP_LEVEL_HU` is above sarco's. Why the model's own window: its input was normalised with
    it, so a later change of `CT_WINDOW_HU` must not move the box of a model planned before."""
    from sarco_nn.windowing import hu_to_window_units

    window = tuple(float(v) for v in (CT_WINDOW_HU if window_hu is None else window_hu))
    return float(hu_to_window_units(window[0] + (BODY_CROP_LEVEL_HU - CT_WINDOW_HU[0]), window))


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
    body_crop: bool = False
    batch_mirroring: bool | None = None

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
        CUDA autocast); batch_mirroring as the preset says, else on CUDA only."""
        settings = self._effective_precision(device_type, cpu_bf16)
        if settings.batch_mirroring is None:  # not asked for either way: where it pays
            settings = replace(settings, batch_mirroring=device_type == "cuda")
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
        folders computed with and without them are the same results).
        The off value of a lever added later (`OFF_WHEN_ABSENT`) is left out too: it is what every
        result computed before the lever existed ran with, so their folders keep their signature."""
        return {k: v for k, v in asdict(self).items()
                if k not in ANSWER_KEEPING and not (k in OFF_WHEN_ABSENT and v == OFF_WHEN_ABSENT[k])}

    def label(self) -> str:
        """Short text for results.csv's `inference` column, e.g. `bf16, whole slice` or `fp32, step 0.5`
        (`, body crop 15 mm` appended when `body_crop` runs)."""
        tiles = f"whole slice <= {self.whole_slice_max_px} px" if self.whole_slice else f"step {self.tile_step_size:g}"
        crop = f", body crop {BODY_CROP_MARGIN_MM:g} mm" if self.body_crop else ""
        return f"{'bf16' if self.bf16 else 'fp32'}, {tiles}{crop}"


#: Settings that change the speed only, never a logit: not part of a result's settings.
ANSWER_KEEPING = frozenset({"jit_freeze", "batch_mirroring"})

#: Levers added after results were first recorded, with their off value: recorded only when on.
OFF_WHEN_ABSENT: dict[str, Any] = {"body_crop": False}


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
    for key in ("bf16", "whole_slice", "jit_freeze", "body_crop"):
        if key in block and not isinstance(block[key], bool):
            return f"{key} {block[key]!r} must be true or false"
    if block.get("batch_mirroring") is not None and not isinstance(block["batch_mirroring"], bool):
        return f"batch_mirroring {block['batch_mirroring']!r} must be true, false or null (null: on CUDA only)"
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


def body_crop_box(body: np.ndarray, spacing_mm: tuple[float, ...] | list[float], patch: tuple[int, ...] | list[int],
                  margin_mm: float = BODY_CROP_MARGIN_MM) -> tuple[slice, ...] | None:
    """The box (one slice per axis of `body`) the network runs on with `body_crop`, or None when it
    would be the whole image (nothing to gain) or `body` is empty (no body: the whole image runs, as
    without the lever, and the result's own checks say what it is).

    body: bool array over the patch's axes (e.g. (y, x)), True where the network sees body.
    The box is the body's bounding box plus `margin_mm` (rounded up to whole voxels of `spacing_mm`),
    then grown about its centre to at least `patch` on each axis (a smaller crop would only be padded
    by nnU-Net, with zeros, not with the image) and kept inside the image (shifted, then clipped)."""
    body = np.asarray(body, bool)
    if body.ndim != len(patch) or len(spacing_mm) != len(patch):
        raise ValueError(f"body_crop_box: body {body.shape}, spacing {list(spacing_mm)} and patch {list(patch)} "
                         "must have one entry per axis")
    if not body.any():
        return None
    box = []
    for axis, (size, sp, tile) in enumerate(zip(body.shape, spacing_mm, patch)):
        hit = np.flatnonzero(body.any(axis=tuple(a for a in range(body.ndim) if a != axis)))
        margin = int(math.ceil(margin_mm / float(sp) - 1e-9))
        lo, hi = max(0, int(hit[0]) - margin), min(size, int(hit[-1]) + 1 + margin)
        short = int(tile) - (hi - lo)
        if short > 0:  # grow about the centre, then shift back inside the image
            lo -= short // 2
            hi += short - short // 2
            lo, hi = (0, hi - lo) if lo < 0 else (lo, hi)
            lo, hi = (lo - (hi - size), size) if hi > size else (lo, hi)
            lo = max(0, lo)
        box.append(slice(lo, hi))
    if all(b.start == 0 and b.stop == size for b, size in zip(box, body.shape)):
        return None
    return tuple(box)
