"""nnU-Net's predictor with sarco's inference settings (`sarco_nn.inference_settings`) plugged in.

Only hooks, no second sliding window: the tile step is nnU-Net's own `tile_step_size`; a whole-slice
tile swaps the configuration's patch size for the duration of one
`predict_sliding_window_return_logits` call, so nnU-Net pads and tiles with it as with the plan's
patch (without Gaussian weighting: one tile needs none); bf16 is `cpu_autocast`'s forward hooks on
the network, so every tile and mirrored copy runs in bf16 and returns float32 logits to nnU-Net's
accumulation. `jit_freeze` wraps the network in `FrozenFolds` (below) at either of nnU-Net's
initialisations, so nnU-Net's own fold loop (`load_state_dict`, then the tile forwards) runs a
frozen graph per fold.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch._dynamo import OptimizedModule
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from sarco_nn.inference_settings import InferenceSettings, whole_slice_tile


def _stamp(state_dict) -> tuple | None:
    """What a weights dict holds now: each entry's tensor object and its in-place version counter, so a
    dict whose tensors were swapped or edited in place no longer matches its trace. None where torch
    keeps no counter (tensors made under `torch.inference_mode`): such weights are never traced."""
    try:
        return tuple((name, t, t._version) for name, t in state_dict.items())
    except (AttributeError, RuntimeError):
        return None


def _same_stamp(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(na == nb and ta is tb and va == vb for (na, ta, va), (nb, tb, vb) in zip(a, b))


@dataclass(eq=False)
class _Fold:
    """One weights dict seen by `load_state_dict` and, once its first patch ran, its frozen trace."""

    params: dict  # held: matched with `is`, so no other dict can take its place (an id() could be reused)
    stamp: tuple
    trace: torch.jit.ScriptModule | None = None
    device: torch.device | None = None


class FrozenFolds(torch.nn.Module):
    """The network, run as one `torch.jit.freeze`-d trace per fold at the plan's patch.

    nnU-Net's `predict_logits_from_preprocessed_data` calls `network.load_state_dict(params)` with
    each entry of `list_of_parameters` (the same dict objects case after case) and then runs every
    tile through `network(x)`. Here `load_state_dict` also notes which fold is loaded, and the
    forward of a patch-sized tile runs that fold's frozen trace (made at its first tile: a copy of
    the network with these weights, traced and frozen, so oneDNN gets prepacked weights and
    conv+bias folding; the logits are the eager forward's). Any other shape (a whole-slice tile)
    runs the eager network. Parameters, state_dict and hooks are the wrapped network's.

    A fold is its dict object, held and compared with `is` (never `id()`, which CPython hands to a new
    object once the old one is freed, and which a copy of this module would carry over to dicts it
    never saw), together with `_stamp`: a dict whose tensors were replaced or changed in place
    is traced again. A partial load (`strict=False`) leaves the network eager until a full one."""

    def __init__(self, network: torch.nn.Module, patch: list[int] | tuple[int, ...]) -> None:
        super().__init__()
        self.network = network
        self.patch = tuple(int(p) for p in patch)
        self._loaded: _Fold | None = None
        self._folds: list[_Fold] = []

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._loaded = None  # until the weights are in
        result = self.network.load_state_dict(state_dict, strict=strict, assign=assign)
        stamp = _stamp(state_dict) if strict else None
        if stamp is not None:
            self._folds = [f for f in self._folds if f.params is not state_dict or _same_stamp(f.stamp, stamp)]
            self._loaded = next((f for f in self._folds if f.params is state_dict), None)
            if self._loaded is None:
                self._loaded = _Fold(state_dict, stamp)
                self._folds.append(self._loaded)
        return result

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)

    @property
    def traces(self) -> int:
        """How many folds have a trace now (each made once per process, unless its weights changed)."""
        return sum(f.trace is not None for f in self._folds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = self._loaded
        if fold is None or tuple(x.shape[2:]) != self.patch or x.shape[0] != 1:
            return self.network(x)
        if fold.trace is None or fold.device != x.device:
            fold.trace, fold.device = self._trace(x), x.device
        return fold.trace(x)

    def _trace(self, x: torch.Tensor) -> torch.jit.ScriptModule:
        with warnings.catch_warnings():  # the trace's notes on Python branches over the (fixed) shape
            warnings.simplefilter("ignore")
            frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(self.network).eval(), x, check_trace=False))
        return frozen


class SarcoPredictor(nnUNetPredictor):
    """`nnUNetPredictor` that runs a whole slice as one tile when `settings.whole_slice` asks for it."""

    def __init__(self, settings: InferenceSettings, divisors: list[int] | None = None, **kwargs) -> None:
        super().__init__(tile_step_size=settings.tile_step_size, **kwargs)
        self.sarco_settings = settings
        self.sarco_divisors = divisors
        self._bf16_hooks: list = []

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

    def predict_sliding_window_return_logits(self, input_image):
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
