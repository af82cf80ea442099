"""Compatibility names for family A's T12→S1 phantom volumes (``dataset_conversion.phantoms.family_a``).

Why kept: the L3 localizer, its tests and the pretraining bench import these names.
"""

from __future__ import annotations

from dataset_conversion.phantoms.common import PhantomVolume
from dataset_conversion.phantoms.family_a import generate_phantom_volume

__all__ = ["PhantomVolume", "generate_phantom_volume"]
