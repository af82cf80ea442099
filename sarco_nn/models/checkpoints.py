"""Loading nnU-Net checkpoints without unpickling arbitrary objects (torch.load(weights_only=True))."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarco_nn.errors import InputError

__all__ = ["load_trainer_checkpoint"]

# nnU-Net checkpoints hold numpy scalars in their logs and a torch.device in init_args; these are
# plain data, allow-listed explicitly rather than turning weights_only off.
_NP_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
_SAFE_GLOBALS = [_NP_CORE.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType,
                 np.dtypes.Int64DType, np.ndarray, _NP_CORE.multiarray._reconstruct]


def load_trainer_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A checkpoint written by an nnU-Net trainer, loaded with weights_only=True."""
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a loadable sarco/nnU-Net checkpoint ({first[:200]})", path=path,
                         fix="re-train or re-copy the file; sarco never unpickles arbitrary objects.") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise InputError("checkpoint holds no 'network_weights'", path=path, fix="point at an nnU-Net checkpoint_*.pth.")
    return checkpoint
