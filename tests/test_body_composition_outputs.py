"""Issue 18's outputs: `convert --keep-tissues`, predict's model-filled tissue columns, tissue overlays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from sarco_nn.body_composition import RESULT_COLUMNS, model_tissue_labels, predicted_composition, result_columns
from sarco_nn.constants import LABELS, TISSUE_LABELS
from sarco_nn.errors import SarcoError
from sarco_nn.thresholds import get_threshold_set

FOUR = {"background": 0, "muscle": 1, "imat": 2, "vat": 3, "sat": 4}


def test_convert_keep_tissues_flag_writes_the_four_tissue_labels(tmp_path):
    from dataset_conversion.phantom import write_dropin_dataset

    drop = write_dropin_dataset(tmp_path / "drop", n_cases=2, seed=5, matrix=64)
    ws = tmp_path / "ws"
    kept = sarco_inprocess("convert", drop, "--name", "Tis", "--keep-tissues", "--id", "601", "-w", ws)
    plain = sarco_inprocess("convert", drop, "--name", "Mus", "--id", "602", "-w", ws)
    assert kept.code == 0 and plain.code == 0, kept.output + plain.output
    tis = ws / "nnUNet_raw" / "Dataset601_Tis"
    mus = ws / "nnUNet_raw" / "Dataset602_Mus"
    assert json.loads((tis / "dataset.json").read_text())["labels"] == FOUR
    assert json.loads((mus / "dataset.json").read_text())["labels"] == LABELS
    values = set()
    for path in sorted((tis / "labelsTr").glob("*.nii.gz")):
        values |= set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())
    assert values == {0, 1, 2, 3, 4}  # phantoms hold every tissue on their L3 slice
    for path in sorted((mus / "labelsTr").glob("*.nii.gz")):
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist()) == {0, 1}


def _four_tissue_slice():
    """A 40x40 slice: SAT ring rows 0-4, muscle block with fat-HU pixels inside, IMAT, VAT."""
    mask = np.zeros((40, 40), np.uint8)
    ct = np.full((40, 40), -1000, np.int16)
    mask[0:5, :] = 4
    ct[0:5, :] = -100
    mask[10:30, 5:20] = 1
    ct[10:30, 5:20] = 40
    ct[12:14, 8:10] = -80  # fat-HU inside predicted muscle: counted muscle under "label", never IMAT here
    mask[15:18, 22:26] = 2
    ct[15:18, 22:26] = -60
    mask[20:35, 25:38] = 3
    ct[20:35, 25:38] = -90
    return mask, ct


def test_four_tissue_model_fills_vat_sat_imat_from_the_model_not_derived():
    mask, ct = _four_tissue_slice()
    comp = predicted_composition(mask, (0.5, 0.8), ct, FOUR, hu_gate=False, height_m=1.6)
    row = result_columns(comp, get_threshold_set("martin_myosteatosis"), "F", None)
    pixel = 0.5 * 0.8 / 100
    assert {row[f"{t}_source"] for t in ("muscle", "imat", "vat", "sat")} == {"model"}
    assert row["imat_area_cm2"] == pytest.approx(12 * pixel) and row["vat_area_cm2"] == pytest.approx(15 * 13 * pixel)
    assert row["sat_area_cm2"] == pytest.approx(5 * 40 * pixel)
    assert comp.tissues["muscle"].n_pixels == 300  # the fat-HU pixels stay muscle under "label"
    assert row["level"] == "L3" and set(row) <= set(RESULT_COLUMNS)
    assert row["total_adipose_cm2"] == pytest.approx((12 + 195 + 200) * pixel)

    # the same prediction from a muscle-only model: IMAT derived from the HU rule, VAT/SAT absent
    muscle_only = result_columns(predicted_composition(np.where(mask == 1, 1, 0), (0.5, 0.8), ct,
                                                       {"background": 0, "muscle": 1}, False, 1.6),
                                 get_threshold_set("martin_myosteatosis"), "F", None)
    assert muscle_only["muscle_source"] == "model" and muscle_only["imat_source"] == "derived"
    assert muscle_only["vat_source"] == "absent" and muscle_only["vat_area_cm2"] is None


def test_model_tissue_labels_reads_dataset_json_labels():
    assert model_tissue_labels(FOUR) == {"muscle": 1, "imat": 2, "vat": 3, "sat": 4}
    assert model_tissue_labels(LABELS) == {"muscle": 1}
    assert model_tissue_labels(None) == {"muscle": 1}
    assert model_tissue_labels({"background": 0, "muscle": 1, "sat": 4, "bone": 7}) == {"muscle": 1, "sat": 4}
    with pytest.raises(SarcoError, match="muscle label 2"):
        model_tissue_labels({"background": 0, "muscle": 2})


def _quadrants(n: int = 80) -> np.ndarray:
    mask = np.zeros((n, n), np.uint8)
    h = n // 2
    mask[:h, :h], mask[:h, h:], mask[h:, :h], mask[h:, h:] = 1, 2, 3, 4
    return mask


def test_tissue_overlay_has_one_distinct_colour_per_tissue_and_a_legend_of_present_tissues(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    from sarco_nn.overlay import TISSUE_ALPHA, overlay_figure, save_overlay, tissue_overlay_rgb

    mask = _quadrants()
    ct = np.full(mask.shape, -1000.0)  # black in the display window: a pixel's colour is alpha * tissue colour
    tissues = {k: v for k, v in TISSUE_LABELS.items()}
    rgb = tissue_overlay_rgb(ct, mask, tissues)
    at = {name: tuple(np.round(rgb[mask == value][0], 6)) for name, value in tissues.items()}
    assert len(set(at.values())) == 4  # four distinct colours
    for name, value in tissues.items():
        assert np.all(rgb[mask == value] == rgb[mask == value][0])  # one colour per tissue
    png = save_overlay(ct, mask, (0.7, 0.7), tmp_path / "o.png", title="case  status: ok (paper)", tissues=tissues)
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    for name, colour in at.items():
        want = np.round(np.array(colour) * 255).astype(int)
        assert (np.abs(pixels - want).max(axis=1) <= 2).sum() > 500, name  # the quadrant is in the PNG
    assert np.allclose(at["muscle"], TISSUE_ALPHA * np.array([0xD5, 0x5E, 0x00]) / 255)

    fig = overlay_figure(ct, mask, (0.7, 0.7), "t", tissues=tissues)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["muscle", "IMAT", "VAT", "SAT"]
    plt.close(fig)
    no_vat = np.where(mask == 3, 0, mask)
    fig = overlay_figure(ct, no_vat, (0.7, 0.7), "title kept", tissues=tissues)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["muscle", "IMAT", "SAT"]
    assert fig.axes[0].get_title() == "title kept"
    plt.close(fig)
    fig = overlay_figure(ct, (mask == 1).astype(np.uint8), (0.7, 0.7), "muscle-only")  # the default look
    assert fig.axes[0].get_legend() is None
    plt.close(fig)
