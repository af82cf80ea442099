"""The one CT-window application: HU → [0, 1] through `constants.CT_WINDOW_HU` (or another window).

Segmentation gets the same mapping from nnU-Net's CTNormalization with the window baked into the
plans (`planning.py`); the classifier and SMIT pretraining, which read CT themselves, call this.
"""

from __future__ import annotations

import numpy as np

from sarco_nn.constants import CT_WINDOW_HU

__all__ = ["apply_window", "hu_difference_to_window_units", "hu_to_window_units", "window_units_to_hu"]


def apply_window(hu: np.ndarray, window_hu: tuple[float, float] = CT_WINDOW_HU) -> np.ndarray:
    """Clip `hu` to `window_hu` and scale linearly to [0, 1] (float32, same shape).

    Args:
        hu: intensities in Hounsfield units, any shape.
        window_hu: (low, high) in HU; low maps to 0, high to 1. Default: the study's soft-tissue
            window `CT_WINDOW_HU` (-175..250 HU), so 0 is fat-level and below.

    Example:
        >>> apply_window(np.array([-1000.0, 37.5, 250.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    lo, hi = (float(v) for v in window_hu)
    return ((np.clip(np.asarray(hu, dtype=np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)



def hu_to_window_units(hu, window_hu: tuple[float, float] = CT_WINDOW_HU):
    """An HU level in the network's normalised space, unclipped (window low → 0, high → 1).

    For augmentation that must state a CT level in the space nnU-Net's windowed CTNormalization
    hands the network. Works on floats, NumPy arrays and torch tensors alike.
    """
    lo, hi = (float(v) for v in window_hu)
    return (hu - lo) / (hi - lo)


def hu_difference_to_window_units(delta_hu, window_hu: tuple[float, float] = CT_WINDOW_HU):
    """An HU difference (noise sigma, contrast offset) in normalised units: delta / window width."""
    lo, hi = (float(v) for v in window_hu)
    return delta_hu / (hi - lo)


def window_units_to_hu(units, window_hu: tuple[float, float] = CT_WINDOW_HU):
    """Inverse of `hu_to_window_units` (meaningful inside the window, where nothing was clipped)."""
    lo, hi = (float(v) for v in window_hu)
    return lo + units * (hi - lo)
