"""nnU-Net's predictor with sarco's inference settings (`sarco_nn.inference_settings`) plugged in.

Only hooks, no second sliding window: the tile step is nnU-Net's own `tile_step_size`; a whole-slice
tile swaps the configuration's patch size for the duration of one
`predict_sliding_window_return_logits` call, so nnU-Net pads and tiles with it as with the plan's
patch (without Gaussian weighting: one tile needs none); bf16 is `cpu_autocast`'s forward hooks on
the network, so every tile and mirrored copy runs in bf16 and returns float32 logits to nnU-Net's
accumulation.
"""

from __future__ import annotations

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from sarco_nn.inference_settings import InferenceSettings, whole_slice_tile


class SarcoPredictor(nnUNetPredictor):
    """`nnUNetPredictor` that runs a whole slice as one tile when `settings.whole_slice` asks for it."""

    def __init__(self, settings: InferenceSettings, divisors: list[int] | None = None, **kwargs) -> None:
        super().__init__(tile_step_size=settings.tile_step_size, **kwargs)
        self.sarco_settings = settings
        self.sarco_divisors = divisors
        self._bf16_hooks: list = []

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
