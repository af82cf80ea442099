"""Optional backend: vertebra labels from TotalSegmentator, used only when it and its weights are installed.

sarco never installs or downloads it (TotalSegmentator would fetch weights on first use; we refuse
instead, with the command to run). Its `total` task labels vertebrae by name; ids are mapped through
its own class map to the numbering of `rules.VERTEBRA_LABELS`, so a renumbering upstream cannot
silently pick the wrong vertebra.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.errors import SarcoError
from sarco_nn.l3.rules import VERTEBRA_LABELS

__all__ = [
    "INSTALL_HINT", "TOTALSEG_FAST_TASK_ID", "totalsegmentator_problem",
    "vertebrae_with_totalsegmentator"
]

#: nnU-Net dataset id of TotalSegmentator's fast (3 mm) `total` model, the one sarco runs.
TOTALSEG_FAST_TASK_ID = 297
INSTALL_HINT = ("install it into sarco's environment (pip install TotalSegmentator) and its weights "
                "(totalseg_download_weights -t total_fast), or pass --l3-from VERTEBRA_MASK / --l3-slice N")


#: One TotalSegmentator run at a time per process (`sarco predict --io-workers N` reads in threads).
_RUN_LOCK = threading.Lock()


def totalsegmentator_problem() -> str | None:
    """None when the backend can run here, else why not (package or weights missing)."""
    try:
        from totalsegmentator.config import get_weights_dir
        from totalsegmentator.python_api import totalsegmentator  # noqa: F401
    except ImportError:
        return "TotalSegmentator is not installed"
    weights = Path(get_weights_dir())
    if not any(weights.glob(f"Dataset{TOTALSEG_FAST_TASK_ID}_*")):
        return f"TotalSegmentator's weights are not installed (no Dataset{TOTALSEG_FAST_TASK_ID}_* in {weights})"
    return None


def vertebrae_with_totalsegmentator(image: sitk.Image) -> sitk.Image:
    """Vertebra labels (sarco numbering, L3 = 29) on `image`'s grid, from TotalSegmentator `total --fast`."""
    problem = totalsegmentator_problem()
    if problem:
        raise SarcoError(f"--locator totalsegmentator: {problem}", fix=INSTALL_HINT)
    from totalsegmentator.map_to_binary import class_map
    from totalsegmentator.python_api import totalsegmentator

    import torch

    their_ids = {name: int(i) for i, name in class_map["total"].items()}
    with _RUN_LOCK, tempfile.TemporaryDirectory(prefix="sarco_totalseg_") as tmp:
        ct_path = Path(tmp) / "ct.nii.gz"
        sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(ct_path), True)
        result = totalsegmentator(str(ct_path), None, ml=True, fast=True, quiet=True,
                                  device="gpu" if torch.cuda.is_available() else "cpu")
        seg_path = Path(tmp) / "seg.nii.gz"
        import nibabel as nib

        nib.save(result, str(seg_path))
        seg = sitk.ReadImage(str(seg_path))
    array = sitk.GetArrayFromImage(seg)
    labels = np.zeros(array.shape, np.uint16)
    for name, ours in VERTEBRA_LABELS.items():
        theirs = their_ids.get(f"vertebrae_{name}")
        if theirs is not None:
            labels[array == theirs] = ours
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)  # same grid: TotalSegmentator returns its output on the input grid
    return out
