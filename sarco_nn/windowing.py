"""The one CT-window application: HU → [0, 1] through `constants.CT_WINDOW_HU` (or another window).

Segmentation gets the same mapping from nnU-Net's CTNormalization with the window baked into the
plans (`planning.py`); the classifier and SMIT pretraining, which read CT themselves, call this.
"""

from __future__ import annotations

import numpy as np

from sarco_nn.constants import CT_WINDOW_HU

__all__ = ["apply_window"]


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
