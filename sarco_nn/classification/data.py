"""L3 slices and sarcopenia labels for the classifier, from a converted nnU-Net raw dataset.

Labels: the explicit `sarcopenic` column of clinical.csv where a case has one, otherwise the
reference mask's SMA (or SMI) through `sarco_nn.measure` and a threshold set — the same code
path `sarco evaluate` uses, so the classifier learns exactly the flag segmentation is judged on.

Input geometry: the slice is resampled to a FIXED physical field of view (`CLASSIFIER_FOV_MM`
across the input edge), not stretched to fill it. Why: the flag is a cut-off on an absolute area
(cm²); if every scan's reconstruction FOV were scaled to the same input size, a small patient on
a small FOV would look exactly like a large one and the network could not see the area. The
aspect ratio is kept (non-square pixels included), the image is centred on the body's bounding
box and padded with 0 (= the window floor) or cropped. `fov_mm=None` fits the whole image instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarco_nn.constants import FILE_ENDING
from sarco_nn.errors import SarcoError
from sarco_nn.windowing import apply_window

__all__ = [
    "CLASSIFIER_FOV_MM", "IMAGE_SUFFIX", "LabelledCase", "as_rgb", "case_folds", "case_ids",
    "derive_labels", "fold_cases", "load_splits", "prepare_slice", "read_case_slice", "slice_array",
    "window",
]

#: Physical width (mm) the network input spans; abdominal CT reconstructions are 350-500 mm wide.
CLASSIFIER_FOV_MM: float = 500.0

#: Windowed intensity above which a pixel counts as body when centring (0 = window floor).
_BODY_LEVEL = 0.1

IMAGE_SUFFIX = "_0000" + FILE_ENDING


@dataclass(frozen=True)
class LabelledCase:
    """One training case: its slice file, its label and where the label came from."""

    case_id: str
    image_path: Path
    label: bool
    source: str  # "clinical.csv" or e.g. "mask SMA 120.3 cm², SMA<144 cm² (paper, M)"
    sma_cm2: float | None = None


#: The segmentation CT window (constants.CT_WINDOW_HU) mapped to [0, 1], float32.
window = apply_window


def prepare_slice(hu2d: np.ndarray, spacing_yx_mm: tuple[float, float], size: int,
                  fov_mm: float | None = CLASSIFIER_FOV_MM) -> np.ndarray:
    """Windowed slice on a size×size grid of fov_mm/size mm pixels, aspect kept, centred on the body."""
    import torch
    import torch.nn.functional as F

    hu2d = np.asarray(hu2d)
    if hu2d.ndim != 2 or min(hu2d.shape) < 2:
        raise SarcoError(f"expected one 2-D axial slice, got an array of shape {hu2d.shape}")
    rows, cols = hu2d.shape
    sy, sx = (float(v) for v in spacing_yx_mm)
    fov = max(rows * sy, cols * sx) if fov_mm is None else float(fov_mm)
    pixel_mm = fov / size
    new_shape = (max(1, round(rows * sy / pixel_mm)), max(1, round(cols * sx / pixel_mm)))
    tensor = torch.from_numpy(window(hu2d))[None, None]
    resized = F.interpolate(tensor, size=new_shape, mode="bilinear", align_corners=False,
                            antialias=True)[0, 0].numpy()
    body = np.argwhere(resized > _BODY_LEVEL)
    if len(body):
        centre = (body.min(axis=0) + body.max(axis=0)) / 2.0
    else:
        centre = (np.array(resized.shape) - 1) / 2.0
    canvas = np.zeros((size, size), dtype=np.float32)
    # top-left of the resized image on the canvas so that the body centre lands on the canvas centre
    offset = np.round((size - 1) / 2.0 - centre).astype(int)
    src0 = np.maximum(-offset, 0)
    dst0 = np.maximum(offset, 0)
    extent = np.minimum(np.array(resized.shape) - src0, size - dst0)
    if np.all(extent > 0):
        canvas[dst0[0]:dst0[0] + extent[0], dst0[1]:dst0[1] + extent[1]] = \
            resized[src0[0]:src0[0] + extent[0], src0[1]:src0[1] + extent[1]]
    return canvas


def as_rgb(batch):
    """(B, 1, H, W) → (B, 3, H, W): the grey slice replicated, as RGB-pretrained networks expect."""
    return batch.expand(-1, 3, -1, -1)


def slice_array(image) -> tuple[np.ndarray, tuple[float, float]]:
    """HU array and (row, column) spacing of a one-slice canonical image (a converted case, or
    what `image_io.load_axial_slice` returns)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise SarcoError(f"expected one axial slice, got {array.shape[0]}")
        array = array[0]
    spacing = image.GetSpacing()
    return array, (float(spacing[1]), float(spacing[0]))


def read_case_slice(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """HU slice and spacing of a converted imagesTr/<case>_0000.nii.gz (already LPS, one slice)."""
    from sarco_nn.image_io import read_image

    return slice_array(read_image(path))


def case_ids(raw_dir: Path) -> list[str]:
    """Every case of a raw dataset (imagesTr/<case>_0000.nii.gz), sorted."""
    images = Path(raw_dir) / "imagesTr"
    if not images.is_dir():
        raise SarcoError("no imagesTr folder", path=raw_dir, fix="convert the dataset with `sarco convert` first.")
    from sarco_nn.cases import case_id_from_path  # the one case-id rule

    return sorted(case_id_from_path(p) for p in images.glob("*" + IMAGE_SUFFIX))


def derive_labels(raw_dir: Path, thresholds: str = "paper") -> tuple[dict[str, LabelledCase], dict[str, str]]:
    """({case: LabelledCase}, {case: why it has no label}) for every case of a raw dataset."""
    from sarco_nn.clinical import read_clinical_csv
    from sarco_nn.image_io import read_label_image
    from sarco_nn.constants import MUSCLE_LABEL
    from sarco_nn.mask_checks import mask_reasons
    from sarco_nn.measure import axial_stack, measure_image, smi
    from sarco_nn.thresholds import get_threshold_set

    raw_dir = Path(raw_dir)
    ts = get_threshold_set(thresholds)
    clinical_path = raw_dir / "clinical.csv"
    clinical = read_clinical_csv(clinical_path) if clinical_path.exists() else {}
    labelled: dict[str, LabelledCase] = {}
    excluded: dict[str, str] = {}
    for case in case_ids(raw_dir):
        image = raw_dir / "imagesTr" / f"{case}{IMAGE_SUFFIX}"
        record = clinical.get(case)
        if record is not None and record.sarcopenic is not None:
            labelled[case] = LabelledCase(case, image, bool(record.sarcopenic), "clinical.csv")
            continue
        mask_path = raw_dir / "labelsTr" / f"{case}{FILE_ENDING}"
        if not mask_path.exists():
            excluded[case] = "no reference mask and no sarcopenic column"
            continue
        mask_img = read_label_image(mask_path)
        found = measure_image(mask_img, mask_name=str(mask_path))
        problems = mask_reasons(found[0], axial_stack(mask_img).spacing_yx_mm, label=MUSCLE_LABEL) if found else None
        if not found or problems:  # an empty or implausible mask never becomes a label (#13)
            excluded[case] = f"label undecidable: {problems[0] if problems else 'empty reference mask'}"
            continue
        sma = found[0].sma_cm2
        sex = None if record is None else record.sex
        height = None if record is None else record.height_m
        bmi = None if record is None else record.bmi
        flag = ts.is_sarcopenic(sex, sma, smi(sma, height), bmi, height_m=height)
        if flag is None:
            reason = "not in clinical.csv" if record is None else ts.why_undecidable(sex, sma, smi(sma, height), bmi)
            excluded[case] = f"label undecidable: {reason}"
            continue
        labelled[case] = LabelledCase(case, image, flag, f"mask SMA {sma:.1f} cm², {ts.describe(sex, bmi)}", sma)
    if not labelled:
        raise SarcoError(f"no case of {raw_dir.name} has a sarcopenia label ({len(excluded)} excluded, e.g. "
                         f"{next(iter(excluded.values()), 'no cases')})", path=clinical_path,
                         fix="give clinical.csv a sex and height_m per case, or a sarcopenic column.")
    return labelled, excluded


def load_splits(workspace, dataset_name: str) -> list[dict[str, list[str]]]:
    """nnU-Net's splits_final.json for the dataset; written the way `sarco plan` writes it if absent."""
    from sarco_nn.planning import ensure_splits

    raw_dir = workspace.raw / dataset_name
    preprocessed = workspace.preprocessed / dataset_name
    splits_file = preprocessed / "splits_final.json"
    if not splits_file.exists():
        preprocessed.mkdir(parents=True, exist_ok=True)
        ensure_splits(raw_dir, preprocessed, case_ids(raw_dir))
    try:
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise SarcoError("splits_final.json is not valid JSON", path=splits_file,
                         fix="delete it and run `sarco plan` again.") from None
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s for s in splits):
        raise SarcoError("splits_final.json is not a list of {train, val}", path=splits_file,
                         fix="delete it and run `sarco plan` again.")
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: str | int) -> tuple[list[str], list[str]]:
    """(training cases, validation cases) of a fold; fold `all` trains on every case, no validation."""
    text = str(fold)
    if text == "all":
        every = sorted({c for s in splits for part in ("train", "val") for c in s[part]})
        return every, []
    if not text.isdigit() or int(text) >= len(splits):
        raise SarcoError(f"fold {text!r} does not exist ({len(splits)} folds in splits_final.json)",
                         fix=f"use a fold between 0 and {len(splits) - 1}, or `all`.")
    split = splits[int(text)]
    return sorted(split["train"]), sorted(split["val"])


def case_folds(splits: list[dict[str, list[str]]]) -> dict[str, int]:
    """{case: the fold whose validation set holds it}."""
    return {case: k for k, split in enumerate(splits) for case in split["val"]}
