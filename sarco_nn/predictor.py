"""nnU-Net's predictor with sarco's inference settings (`sarco_nn.inference_settings`) plugged in.

Only hooks, no second sliding window: the tile step is nnU-Net's own `tile_step_size`; a whole-slice
tile swaps the configuration's patch size for the duration of one
`predict_sliding_window_return_logits` call, so nnU-Net pads and tiles with it as with the plan's
patch (without Gaussian weighting: one tile needs none); bf16 is `cpu_autocast`'s forward hooks on
the network, so every tile and mirrored copy runs in bf16 and returns float32 logits to nnU-Net's
accumulation. `body_crop` hands nnU-Net's `predict_sliding_window_return_logits` (with or without
the whole-slice tile) the box around the body and pastes its logits into a grid of background
logits, once per fold inside nnU-Net's own fold loop, so mirroring, the ensemble and resampling are
nnU-Net's. `jit_freeze` wraps the network in `FrozenFolds` (below) at either of nnU-Net's
initialisations, so nnU-Net's own fold loop (`load_state_dict`, then the tile forwards) runs a
frozen graph per fold. `batch_mirroring` replaces nnU-Net's per-tile mirroring hook
(`_internal_maybe_mirror_and_predict`) with one forward of every view stacked along the batch axis.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass, field

import torch
from torch._dynamo import OptimizedModule
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from sarco_nn.inference_settings import InferenceSettings, body_crop_box, body_crop_level, whole_slice_tile

#: Logit of every foreground channel outside the body crop (background's is 0): softmax gives
#: background 1 - 4e-44, i.e. 1.0 in float32, and the rest 0, what nnU-Net's own revert of its crop
#: writes in probabilities. Finite, because nnU-Net interpolates logits when it resamples, and far
#: inside float16's range (65504), in which nnU-Net sums the folds.
_OUTSIDE_LOGIT = -100.0


def _snapshot(state_dict) -> dict[str, torch.Tensor] | None:
    """An owned copy of a weights dict's values, which its caller cannot reach or edit: what a trace
    made from these weights holds. None where an entry is no tensor (such a dict is never traced)."""
    if not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
        return None
    with torch.no_grad():
        return {name: t.detach().clone() for name, t in state_dict.items()}


def _same_values(snapshot: dict[str, torch.Tensor], state_dict) -> bool:
    """Does `state_dict` hold exactly the snapshot's weights (names, dtypes, shapes, values)?"""
    if snapshot.keys() != state_dict.keys():
        return False
    for name, kept in snapshot.items():
        now = state_dict[name]
        if not (isinstance(now, torch.Tensor) and now.dtype == kept.dtype and now.shape == kept.shape
                and now.device == kept.device and torch.equal(now, kept)):
            return False
    return True


@dataclass(eq=False)
class _Fold:
    """One weights dict seen by `load_state_dict` and, once its first patch ran, its frozen traces
    (one per batch size: 1, or the views of `batch_mirroring`), all on one device."""

    params: dict  # held: matched with `is`, so no other dict can take its place (an id() could be reused)
    snapshot: dict[str, torch.Tensor]  # its values when first loaded: the weights its trace is made of
    trace: dict[int, torch.jit.ScriptModule] = field(default_factory=dict)
    device: torch.device | None = None


class FrozenFolds(torch.nn.Module):
    """The network, run as one `torch.jit.freeze`-d trace per fold at the plan's patch.

    nnU-Net's `predict_logits_from_preprocessed_data` calls `network.load_state_dict(params)` with
    each entry of `list_of_parameters` (the same dict objects case after case) and then runs every
    tile through `network(x)`. Here `load_state_dict` also notes which fold is loaded, and the
    forward of a patch-sized tile runs that fold's frozen trace for its batch size (made at its
    first such tile: a copy of the network with these weights, traced and frozen, so oneDNN gets
    prepacked weights and conv+bias folding; the logits are the eager forward's; the batch sizes are
    1 and, with `batch_mirroring`, the number of views). Any other spatial shape (a whole-slice
    tile) runs the eager network. Parameters, state_dict and hooks are the wrapped network's.

    What the cache protects against: a trace bakes its weights in, so it must never run for weights
    other than those just loaded. Two ways that could happen: another dict taking a traced one's
    place (a fold is its dict object, held and compared with `is`, never `id()`, which CPython hands
    to a new object once the old one is freed, and which a copy of this module would carry over to
    dicts it never saw), and a traced dict whose tensors were swapped or edited in place since (nnU-Net
    never does it; a caller reusing its dicts may). Against the second, each fold keeps an owned
    snapshot of its values, taken when first loaded, and every load compares the dict with it
    (`torch.equal`, public and exact): a dict that differs gets a new snapshot and trace. The price is
    one copy of each fold's weights in memory and one read of them per load, about what
    `load_state_dict`'s own copy costs (a weight that is NaN never compares equal: traced again each
    time, still correct). A partial load (`strict=False`) leaves the network eager until a full one."""

    def __init__(self, network: torch.nn.Module, patch: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        self.network = network
        self.patch = tuple(int(p) for p in patch)
        self._loaded: _Fold | None = None
        self._folds: list[_Fold] = []

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._loaded = None  # until the weights are in
        result = self.network.load_state_dict(state_dict, strict=strict, assign=assign)
        if strict:
            fold = next((f for f in self._folds if f.params is state_dict), None)
            if fold is not None and not _same_values(fold.snapshot, state_dict):
                self._folds.remove(fold)  # its trace holds the old weights
                fold = None
            snapshot = _snapshot(state_dict) if fold is None else None
            if snapshot is not None:
                fold = _Fold(state_dict, snapshot)
                self._folds.append(fold)
            self._loaded = fold
        return result

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)

    @property
    def traces(self) -> int:
        """How many folds have a trace now (each made once per process, unless its weights changed)."""
        return sum(bool(f.trace) for f in self._folds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = self._loaded
        if fold is None or tuple(x.shape[2:]) != self.patch:
            return self.network(x)
        if fold.device != x.device:
            fold.trace, fold.device = {}, x.device
        batch = int(x.shape[0])
        if batch not in fold.trace:
            fold.trace[batch] = self._trace(x)
        return fold.trace[batch](x)

    def _trace(self, x: torch.Tensor) -> torch.jit.ScriptModule:
        with warnings.catch_warnings():  # the trace's notes on Python branches over the (fixed) shape
            warnings.simplefilter("ignore")
            frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(self.network).eval(), x, check_trace=False))
        return frozen


def background_logits(label_manager, spatial: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """Logits of pure background on a grid of `spatial` (heads first): background channel 0 and the
    others `_OUTSIDE_LOGIT` (softmax: background 1); with regions (sigmoid per channel) every channel
    `_OUTSIDE_LOGIT` (no region)."""
    heads = label_manager.num_segmentation_heads
    logits = torch.full((heads, *spatial), _OUTSIDE_LOGIT, dtype=dtype, device=device)
    if not getattr(label_manager, "has_regions", False):
        logits[0] = 0.0
    return logits


def mirror_views(x: torch.Tensor, mirror_axes) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """`x` and its mirrored copies stacked along the batch axis, with the tensor dims each copy is
    flipped on (() for the original): nnU-Net's views, in its order (the original, then every
    combination of `mirror_axes`, which count from the first spatial axis)."""
    dims = [int(m) + 2 for m in mirror_axes]
    combinations = [c for i in range(len(dims)) for c in itertools.combinations(dims, i + 1)]
    return torch.cat([x] + [torch.flip(x, axes) for axes in combinations], 0), [()] + combinations


def mean_of_views(output: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    """nnU-Net's mirroring average of a stacked forward's `output`: each view unflipped, added in
    nnU-Net's order onto the original's logits, divided by the number of views."""
    chunks = output.chunk(len(flips), 0)
    prediction = chunks[0].clone()
    for chunk, axes in zip(chunks[1:], flips[1:]):
        prediction += torch.flip(chunk, axes)
    prediction /= len(flips)
    return prediction


class SarcoPredictor(nnUNetPredictor):
    """`nnUNetPredictor` that runs a whole slice as one tile when `settings.whole_slice` asks for it,
    only the box around the body when `settings.body_crop` does, and each tile's mirrored views as
    one batch when `settings.batch_mirroring` does."""

    def __init__(self, settings: InferenceSettings, divisors: list[int] | None = None, **kwargs) -> None:
        super().__init__(tile_step_size=settings.tile_step_size, **kwargs)
        self.sarco_settings = settings
        self.sarco_divisors = divisors
        self._bf16_hooks: list = []
        self._views_fit = True  # False after the stacked views ran out of GPU memory once

    def manual_initialization(self, network, *args, **kwargs) -> None:
        super().manual_initialization(network, *args, **kwargs)
        self._freeze_if_asked()

    def initialize_from_trained_model_folder(self, *args, **kwargs) -> None:
        super().initialize_from_trained_model_folder(*args, **kwargs)
        self._freeze_if_asked()

    def _freeze_if_asked(self) -> None:
        """`jit_freeze`: the network nnU-Net just set, wrapped in `FrozenFolds` (a fresh one per
        initialisation, so a reloaded network never meets an older network's traces)."""
        if self.sarco_settings.jit_freeze and not isinstance(self.network, (OptimizedModule, FrozenFolds)):
            self.network = FrozenFolds(self.network, self.configuration_manager.patch_size)  # nnUNet_compile wins

    def attach_bf16(self) -> None:
        """CPU bf16 autocast on the network's forward (call after the network is set)."""
        from sarco_nn.training.cpu_autocast import attach_cpu_bf16_autocast

        if not self._bf16_hooks:
            self._bf16_hooks = attach_cpu_bf16_autocast(self.network)

    def body_box(self, input_image: torch.Tensor) -> tuple[slice, ...] | None:
        """The index of the body crop in `input_image` (channels first, then every axis), or None
        (no body seen, or the box is the whole image). Every channel and every plane of a volume
        counts: one box for the stack, so a volume runs as one call, as nnU-Net runs it."""
        plan = self.configuration_manager
        axes = len(plan.patch_size)
        plans = getattr(getattr(self, "plans_manager", None), "plans", None) or {}
        level = body_crop_level((plans.get("sarco") or {}).get("ct_window_hu"))  # the model's own window
        seen = (input_image > level)
        seen = seen.reshape(-1, *seen.shape[-axes:]).any(0).cpu().numpy()
        box = body_crop_box(seen, list(plan.spacing)[-axes:], plan.patch_size)
        return None if box is None else (slice(None),) * (input_image.ndim - axes) + box

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        """nnU-Net's mirroring (the logits averaged over the original and every combination of
        mirror axes), with `batch_mirroring` as one forward of the views stacked along the batch
        axis. A GPU that cannot hold the stacked views falls back to nnU-Net's one view at a time,
        for this predictor's remaining tiles (the answers are the same)."""
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
        if not (self.sarco_settings.batch_mirroring and mirror_axes and self._views_fit):
            return super()._internal_maybe_mirror_and_predict(x)
        assert max(mirror_axes) <= x.ndim - 3, "mirror_axes does not match the dimension of the input!"
        views, flips = mirror_views(x, mirror_axes)
        try:
            output = self.network(views)
        except torch.cuda.OutOfMemoryError:  # torch's one out-of-memory class (torch.OutOfMemoryError too)
            del views
            self._views_fit = False
            torch.cuda.empty_cache()
            return super()._internal_maybe_mirror_and_predict(x)
        return mean_of_views(output, flips)

    def predict_sliding_window_return_logits(self, input_image):
        box = self.body_box(input_image) if self.sarco_settings.body_crop else None
        if box is None:
            return self._tiles(input_image)
        crop = self._tiles(input_image[box].contiguous())
        logits = background_logits(self.label_manager, tuple(input_image.shape[1:]), crop.dtype, crop.device)
        logits[box] = crop
        return logits

    def _tiles(self, input_image):
        """nnU-Net's sliding window over `input_image`, as one whole-slice tile when asked for."""
        settings, plan = self.sarco_settings, self.configuration_manager
        if not settings.whole_slice:
            return super().predict_sliding_window_return_logits(input_image)
        spatial = tuple(input_image.shape[-len(plan.patch_size):])
        divisors = self.sarco_divisors or [1] * len(spatial)
        tile = whole_slice_tile(spatial, divisors, settings.whole_slice_max_px)
        if tile is None:
            return super().predict_sliding_window_return_logits(input_image)
        # the reader thread may preprocess the next case meanwhile: it reads spacing and normalisation
        # from the configuration, which the copy shares; only the patch differs. One tile needs no
        # Gaussian blending (it cancels), and without it the slice's corners, far from the tile centre,
        # keep their precision in nnU-Net's float16 accumulator
        gaussian = self.use_gaussian
        self.configuration_manager = ConfigurationManager({**plan.configuration, "patch_size": tile})
        self.use_gaussian = False
        try:
            return super().predict_sliding_window_return_logits(input_image)
        finally:
            self.configuration_manager, self.use_gaussian = plan, gaussian
