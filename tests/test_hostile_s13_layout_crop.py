"""HOSTILE_FINDINGS #140-#149 (session 13, h2): the tissue-layout rule and the body_crop lever, tried as a
hostile user would (degenerate hulls, thin SAT, anisotropic pixels, stacks, slices smaller than the patch)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import swap_labels

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.inference_settings import InferenceSettings, body_crop_box
from sarco_nn.tissue_layout import MIN_MISPLACED_CM2, layout_reason, muscle_hull_sides

M, I, V, S = (TISSUE_LABELS[t] for t in ("muscle", "imat", "vat", "sat"))


def _body(n: int = 200, sat: int = 6, wall: int = 10) -> np.ndarray:
    mask = np.zeros((n, n), np.uint8)
    mask[10:n - 10, 10:n - 10] = S
    b = 10 + sat
    mask[b:n - b, b:n - b] = M
    mask[b + wall:n - b - wall, b + wall:n - b - wall] = V
    return mask


def test_a_stack_of_one_slice_is_refused_not_read_as_nothing_to_judge():
    """#140: a (1, y, x) mask's hull is flat in 3-D (QhullError): it returned None, a swapped slice unjudged."""
    swapped = swap_labels(_body(), V, S)
    assert layout_reason(swapped, TISSUE_LABELS, (1.0, 1.0)) is not None
    for stack in (swapped[None], swapped[None, None], swapped[0]):
        with pytest.raises(ValueError, match="one axial slice"):
            layout_reason(stack, TISSUE_LABELS, (1.0, 1.0))


@pytest.mark.parametrize("sat", [1, 2])
def test_a_one_or_two_pixel_sat_ring_is_judged_both_ways(sat):
    """#141: the 2 cm² floor does not hide a thin SAT ring: the normal slice passes, its swap is flagged."""
    for spacing in ((0.8, 0.8), (0.5, 2.0)):
        assert layout_reason(_body(sat=sat), TISSUE_LABELS, spacing) is None
        assert layout_reason(swap_labels(_body(sat=sat), V, S), TISSUE_LABELS, spacing) is not None


def test_the_floor_and_the_hull_use_both_pixel_spacings():
    """#142: areas are pixels × row × column spacing (anisotropic pixels), and inside-the-hull does not
    depend on the pixel's aspect (a hull through pixel centres maps onto the hull in mm: an affine map)."""
    from scipy.spatial import Delaunay

    mask = np.zeros((60, 60), np.uint8)
    mask[10:50, 10:50] = M
    mask[20:40, 20:40] = 0
    mask[25:27, 25:25 + 20] = S  # 40 "SAT" pixels inside the hull
    for spacing in ((0.5, 2.0), (2.0, 0.5), (1.0, 1.0)):
        sat = {s.tissue: s for s in muscle_hull_sides(mask, TISSUE_LABELS, spacing)}["sat"]
        assert sat.area_cm2 == pytest.approx(40 * spacing[0] * spacing[1] / 100) and sat.inside_share == 1.0
        mm = np.argwhere(mask == M) * np.array(spacing)
        assert Delaunay(mm).find_simplex(np.argwhere(mask == S) * np.array(spacing)).min() >= 0
    big = mask.copy()
    big[25:35, 25:45] = S  # 200 pixels: 2.0 cm² at 1 mm², under it at 0.99 mm²
    assert layout_reason(big, TISSUE_LABELS, (1.0, 1.0)) is not None and MIN_MISPLACED_CM2 == 2.0
    assert layout_reason(big, TISSUE_LABELS, (0.9, 1.1)) is None  # 1.98 cm²


def test_degenerate_muscles_and_missing_tissues_are_not_judged():
    """#143: one or two muscle pixels, a line of them, muscle absent beside fat, IMAT only, labels
    beyond the four: nothing to judge (mask_checks reports such masks), never an exception."""
    fat = np.full((50, 50), V, np.uint8)
    fat[10:40, 10:40] = S
    for k in (1, 2, 3):
        line = fat.copy()
        line[25, 25:25 + k] = M
        assert layout_reason(line, TISSUE_LABELS, (1.0, 1.0)) is None
    diagonal = fat.copy()
    diagonal[np.arange(10, 40), np.arange(10, 40)] = M
    assert layout_reason(diagonal, TISSUE_LABELS, (1.0, 1.0)) is None
    assert layout_reason(fat, TISSUE_LABELS, (1.0, 1.0)) is None  # no muscle at all
    imat = np.zeros((50, 50), np.uint8)
    imat[10:20, 10:20] = I
    assert layout_reason(imat, TISSUE_LABELS, (1.0, 1.0)) is None
    extra = _body()
    extra[0:5, 0:5], extra[5:8, :] = 7, 255  # bone, a 255 border: ignored, the four tissues judged
    assert layout_reason(extra, TISSUE_LABELS, (1.0, 1.0)) is None
    assert layout_reason(swap_labels(extra, V, S), TISSUE_LABELS, (1.0, 1.0)) is not None


def test_body_crop_box_margin_in_px_per_axis_and_a_slice_smaller_than_the_patch():
    """#144: mm → px per axis (ceil(15 / 0.7) = 22 rows, ceil(15 / 3) = 5 columns), a 1-px body, and a slice
    smaller than the patch (the whole slice runs, as without the lever)."""
    line = np.zeros((200, 100), bool)
    line[100, 50] = True
    assert body_crop_box(line, (0.7, 3.0), (16, 8), 15.0) == (slice(78, 123), slice(45, 56))
    small = np.zeros((20, 24), bool)
    small[5:10, 5:10] = True
    assert body_crop_box(small, (1.0, 1.0), (32, 32)) is None


def test_body_crop_on_a_slice_smaller_than_the_patch_gives_the_uncropped_logits():
    import torch

    from test_inference_settings import _toy_predictor

    plain, _ = _toy_predictor(InferenceSettings())
    cropped, _ = _toy_predictor(InferenceSettings(body_crop=True))
    cropped.network.load_state_dict(plain.network.state_dict())
    image = torch.zeros(1, 1, 20, 24)
    image[0, 0, 5:10, 5:10] = 0.5
    assert cropped.body_box(image) is None
    assert torch.equal(plain.predict_sliding_window_return_logits(image),
                       cropped.predict_sliding_window_return_logits(image))


def test_body_crop_takes_the_body_level_in_the_models_own_window():
    """#147: the level was put in input units through today's `CT_WINDOW_HU`, not the window the model's
    plans baked in (`sarco.ct_window_hu`): a model planned with another window was cropped at another HU."""
    from types import SimpleNamespace

    import torch

    from sarco_nn.inference_settings import BODY_CROP_LEVEL_HU, body_crop_level
    from sarco_nn.windowing import hu_to_window_units
    from test_inference_settings import _toy_predictor

    assert body_crop_level() == pytest.approx(float(hu_to_window_units(BODY_CROP_LEVEL_HU)))
    assert body_crop_level([-1000, 1000]) == pytest.approx(25 / 2000)
    predictor, _ = _toy_predictor(InferenceSettings(body_crop=True))
    image = torch.zeros(1, 1, 120, 100)
    image[0, 0, 50:60, 40:50] = 0.03  # -940 HU in a -1000..1000 window (body there); below sarco's level
    predictor.plans_manager = SimpleNamespace(plans={"sarco": {"ct_window_hu": [-175.0, 250.0]}})
    assert predictor.body_box(image) is None  # nothing above sarco's level: the whole image runs
    predictor.plans_manager = SimpleNamespace(plans={"sarco": {"ct_window_hu": [-1000.0, 1000.0]}})
    assert predictor.body_box(image) == (slice(None), slice(None), slice(35, 75), slice(25, 65))
