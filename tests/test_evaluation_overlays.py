"""Evaluate's worst-case overlays show every tissue of a multi-tissue evaluation (they drew the
muscle outline only), in the colours of predict's overlays (`sarco_nn.overlay`)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.overlay import TISSUE_ALPHA, TISSUE_COLOURS


def _write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array[None].astype(np.uint8))
    image.SetSpacing((0.75, 0.75, 5.0))
    sitk.WriteImage(image, str(path))


def _quadrants(n: int = 120, margin: int = 0) -> np.ndarray:
    """Muscle, IMAT, VAT, SAT in the four quadrants (sarco's values 1-4), each `margin` px smaller."""
    mask = np.zeros((n, n), np.uint8)
    h = n // 2
    for value, (rows, cols) in zip((1, 2, 3, 4), ((0, 0), (0, h), (h, 0), (h, h))):
        mask[rows + 4 + margin:rows + h - 4 - margin, cols + 4 + margin:cols + h - 4 - margin] = value
    return mask


def _pixels_near(pixels: np.ndarray, rgb: np.ndarray, tolerance: int = 3) -> int:
    return int((np.abs(pixels - np.round(rgb * 255).astype(int)).max(axis=1) <= tolerance).sum())


def test_four_tissue_worst_case_overlay_fills_and_outlines_every_tissue_in_its_colour(tmp_path):
    from PIL import Image

    from sarco_nn.evaluation.evaluate import evaluate_folder

    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    (tmp_path / "ref" / "labels.json").write_text(json.dumps({k: v for k, v in TISSUE_LABELS.items()}))
    _write(_quadrants(), tmp_path / "ref" / "case.nii.gz")
    _write(_quadrants(margin=6), tmp_path / "pred" / "case.nii.gz")  # every tissue under-segmented
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    assert set(summary["tissues"]) == set(TISSUE_LABELS)
    png = tmp_path / "out" / summary["plots"]["worst case case"]
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    for name, hex_colour in TISSUE_COLOURS.items():
        colour = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
        filled = _pixels_near(pixels, TISSUE_ALPHA * colour)  # the prediction over a black (no-CT) background
        outlined = _pixels_near(pixels, colour, tolerance=40)  # the reference outline, on black around the fill
        assert filled > 1000, (name, filled)
        assert outlined > 150, (name, outlined)  # more than the legend's swatch alone


def test_muscle_only_evaluation_keeps_the_green_and_red_outlines(tmp_path):
    from PIL import Image

    from sarco_nn.evaluation.evaluate import evaluate_folder

    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
    _write((_quadrants() == 1).astype(np.uint8), tmp_path / "ref" / "case.nii.gz")
    _write((_quadrants(margin=6) == 1).astype(np.uint8), tmp_path / "pred" / "case.nii.gz")
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", None, tmp_path / "out")
    pixels = np.asarray(Image.open(tmp_path / "out" / summary["plots"]["worst case case"]).convert("RGB"))
    pixels = pixels.reshape(-1, 3).astype(int)
    vermillion = np.array([0xD5, 0x5E, 0x00]) / 255.0
    assert _pixels_near(pixels, TISSUE_ALPHA * vermillion) == 0  # no tissue fill: the muscle-only look
    assert _pixels_near(pixels, np.array([1.0, 0.0, 0.0]), tolerance=40) > 50  # red: the prediction outline
