"""CT site-shift augmentation (preset `training.ct_augmentation`): each transform changes what it
simulates and keeps the labels consistent; off, the trainer hands nnU-Net's pipeline through unchanged."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from dataset_conversion.phantoms.family_a import generate_phantom_slice
from sarco_nn.errors import SarcoError
from sarco_nn.presets import load_preset
from sarco_nn.training import ct_augmentation as cta
from sarco_nn.training.trainers import SarcoSMITTrainer, SarcoUNetTrainer
from sarco_nn.windowing import apply_window, hu_difference_to_window_units, hu_to_window_units

PATCH = (96, 96)
NNUNET_ARGS = (PATCH, (-0.26, 0.26), None, None, False)


@pytest.fixture(scope="module")
def sample() -> dict:
    """A family-A L3 slice as the network gets it: windowed image (1, X, Y), muscle labels (1, X, Y)."""
    ph = generate_phantom_slice(np.random.default_rng(4), matrix=96)
    return {"hu": ph.ct_hu.astype(np.float32), "muscle": ph.muscle_mask.astype(bool)}


def _data(sample: dict) -> dict:
    img = torch.from_numpy(apply_window(sample["hu"]))[None]
    seg = torch.from_numpy(sample["muscle"].astype(np.int16))[None]
    return {"image": img.clone(), "segmentation": seg.clone()}


def _strip_addresses(text: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def _trainer(cls, settings: dict):
    trainer = object.__new__(cls)  # the hook only reads the preset settings
    trainer.settings = settings
    return trainer


# ---- the switch -------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [{}, {"ct_augmentation": False}])
def test_off_is_nnunets_pipeline_unchanged(settings):
    ours = _trainer(SarcoUNetTrainer, settings).get_training_transforms(*NNUNET_ARGS)
    theirs = nnUNetTrainer.get_training_transforms(*NNUNET_ARGS)
    assert [type(t) for t in ours.transforms] == [type(t) for t in theirs.transforms]
    assert _strip_addresses(repr(ours.transforms)) == _strip_addresses(repr(theirs.transforms))
    assert not any(isinstance(getattr(t, "transform", t), (cta.KernelTransform, cta.AirPaddingTransform))
                   for t in ours.transforms)


def test_on_inserts_the_ct_transforms_after_the_spatial_one_and_keeps_nnunets_order():
    ours = _trainer(SarcoSMITTrainer, {"ct_augmentation": True}).get_training_transforms(*NNUNET_ARGS)
    theirs = nnUNetTrainer.get_training_transforms(*NNUNET_ARGS)
    inner = [type(getattr(t, "transform", t)) for t in ours.transforms]
    ct = [cta.AirPaddingTransform, cta.FOVTruncationTransform, cta.ContrastPhaseTransform,
          cta.PartialVolumeTransform, cta.KernelTransform, cta.LowDoseNoiseTransform]
    at = inner.index(cta.AirPaddingTransform)
    assert inner[at:at + len(ct)] == ct
    assert type(ours.transforms[at - 1]).__name__ == "SpatialTransform"
    kept = ours.transforms[:at] + ours.transforms[at + len(ct):]
    assert _strip_addresses(repr(kept)) == _strip_addresses(repr(theirs.transforms))
    assert all(0 < t.apply_probability < 1 for t in ours.transforms[at:at + len(ct)])


def test_preset_field_is_validated_at_plan_time(tmp_path):
    preset = load_preset("smoke")
    for value, ok in ((True, True), (False, True), ("yes", False), (1, False)):
        preset["training"]["ct_augmentation"] = value
        path = tmp_path / f"p{len(str(value))}{ok}.json"
        path.write_text(json.dumps(preset))
        if ok:
            assert load_preset(path)["training"]["ct_augmentation"] is value
        else:
            with pytest.raises(SarcoError, match="ct_augmentation"):
                load_preset(path)


def test_the_whole_augmented_pipeline_runs_on_a_patch_with_padding(sample):
    torch.manual_seed(0)
    pipeline = cta.add_ct_augmentation(nnUNetTrainer.get_training_transforms(*NNUNET_ARGS))
    for _ in range(4):
        data = _data(sample)
        data["segmentation"][:, :4] = -1  # nnU-Net's padding outside the sampled image
        out = pipeline(**data)
        assert out["image"].shape == (1, *PATCH) and out["segmentation"].shape == (1, *PATCH)
        assert set(torch.unique(out["segmentation"]).tolist()) <= {0, 1}


# ---- each transform ---------------------------------------------------------------------------
def _gradient_energy(img: torch.Tensor) -> float:
    return float((img[:, 1:] - img[:, :-1]).pow(2).sum() + (img[:, :, 1:] - img[:, :, :-1]).pow(2).sum())


def test_kernel_blurs_or_sharpens_and_leaves_labels(sample):
    t = cta.KernelTransform()
    base = _data(sample)
    blurred = t.apply(_data(sample), sharpen=False, sigma=1.2, amount=0.0)
    sharp = t.apply(_data(sample), sharpen=True, sigma=1.0, amount=1.2)
    assert _gradient_energy(blurred["image"]) < 0.8 * _gradient_energy(base["image"])
    assert _gradient_energy(sharp["image"]) > 1.2 * _gradient_energy(base["image"])
    for out in (blurred, sharp):
        assert torch.equal(out["segmentation"], base["segmentation"])
        assert out["image"].min() >= 0 and out["image"].max() <= 1


def test_low_dose_noise_has_the_asked_hu_sigma_inside_the_window_and_spares_air(sample):
    torch.manual_seed(1)
    t = cta.LowDoseNoiseTransform(sigma_hu=(30.0, 30.0), correlation_px=(0.0, 0.0))
    base = _data(sample)
    out = t(**_data(sample))
    inside = (base["image"] > 0.05) & (base["image"] < 0.95)  # far from the clip edges
    diff = (out["image"] - base["image"])[inside]
    assert float(diff.std()) == pytest.approx(hu_difference_to_window_units(30.0), rel=0.1)
    air = base["image"] == 0
    assert air.any() and torch.equal(out["image"][air], base["image"][air])
    assert torch.equal(out["segmentation"], base["segmentation"])


def test_contrast_phase_shifts_organs_not_muscle_nor_fat(sample):
    t = cta.ContrastPhaseTransform()
    base = _data(sample)
    out = t.apply(_data(sample), offset_hu=0.0, scale=1.0, organ_shift_hu=60.0)
    img, muscle = base["image"][0], base["segmentation"][0] == 1
    from scipy.ndimage import binary_dilation, binary_erosion

    core = torch.from_numpy(binary_erosion(muscle.numpy(), iterations=3))
    one_hu = hu_difference_to_window_units(1.0)
    assert core.any() and torch.allclose(out["image"][0][core], img[core], atol=one_hu)
    organ_seed = ~muscle & (img > hu_to_window_units(0.0)) & (img < hu_to_window_units(150.0))
    near_organ = torch.from_numpy(binary_dilation((~muscle & (img >= hu_to_window_units(-30.0))).numpy(), iterations=4))
    fat = (img > 0) & (img < hu_to_window_units(-60.0)) & ~near_organ
    assert fat.any() and torch.allclose(out["image"][0][fat], img[fat], atol=one_hu)
    organ = torch.from_numpy(binary_erosion(organ_seed.numpy(), iterations=2))
    assert organ.any()
    lift = (out["image"][0][organ] - img[organ]).median()
    assert float(lift) == pytest.approx(hu_difference_to_window_units(60.0), rel=0.05)
    assert torch.equal(out["segmentation"], base["segmentation"])
    calib = t.apply(_data(sample), offset_hu=10.0, scale=1.0, organ_shift_hu=0.0)
    assert float((calib["image"][0][core] - img[core]).mean()) == pytest.approx(
        hu_difference_to_window_units(10.0), rel=0.05)


def test_partial_volume_coarsens_with_a_factor_per_axis(sample):
    t = cta.PartialVolumeTransform()
    base = _data(sample)
    out = t.apply(_data(sample), apply_to_channel=torch.tensor([0]), scales=torch.tensor([[0.4, 0.7]]))
    assert out["image"].shape == base["image"].shape
    assert _gradient_energy(out["image"]) < 0.7 * _gradient_energy(base["image"])
    assert float(out["image"].mean()) == pytest.approx(float(base["image"].mean()), rel=0.02)
    assert torch.equal(out["segmentation"], base["segmentation"])
    np.random.seed(3)
    factors = t.get_parameters(**_data(sample))["scales"][0].tolist()
    assert len(factors) == 2 and factors[0] != factors[1] and all(0.35 <= f <= 0.8 for f in factors)


def test_partial_volume_averages_thin_planes_where_nearest_neighbour_would_alias():
    """1-pixel stripes at half the resolution: a coarse pixel is their average (the library's nearest
    neighbour down-sampling would keep one phase, all 0 or all 1)."""
    stripes = (torch.arange(64) % 2).float()[:, None].expand(64, 64)[None].clone()
    out = cta.PartialVolumeTransform().apply({"image": stripes}, apply_to_channel=torch.tensor([0]),
                                             scales=torch.tensor([[0.5, 1.0]]))["image"]
    assert torch.allclose(out[0, 2:-2], torch.full((60, 64), 0.5), atol=0.05)


@pytest.mark.parametrize("params", [{"mode": "band", "edge": 3, "width": 0.3},
                                    {"mode": "circle", "radius": 0.4, "cx": 0.5, "cy": 0.5}])
def test_truncation_turns_the_cut_field_into_air_and_background(sample, params):
    base = _data(sample)
    out = cta.FOVTruncationTransform().apply(_data(sample), **params)
    cut = cta._fov_outside(tuple(base["image"].shape), params)
    assert cut.float().mean() > 0.1
    assert torch.all(out["image"][0][cut] == 0) and torch.all(out["segmentation"][0][cut] == 0)
    assert torch.equal(out["image"][0][~cut], base["image"][0][~cut])
    assert torch.equal(out["segmentation"][0][~cut], base["segmentation"][0][~cut])
    assert base["segmentation"][0][cut].any()  # the test cuts muscle, so the label change is exercised


def test_air_padding_shrinks_the_body_into_uniform_air_with_its_labels(sample):
    t = cta.AirPaddingTransform()
    base = _data(sample)
    base["segmentation"][:, :3] = -1
    out = t.apply({k: v.clone() for k, v in base.items()}, zoom=0.5, offset=[1.0, 0.0])
    img, seg = out["image"][0], out["segmentation"][0]
    assert float((img == 0).float().mean()) >= 0.75 - 0.01  # three quarters of the patch is air
    assert torch.all(seg[img == 0][seg[img == 0] != 0] == 1) and int(seg.min()) == 0
    area_ratio = float((seg == 1).sum()) / float((base["segmentation"] == 1).sum())
    assert area_ratio == pytest.approx(0.25, rel=0.15)
    muscle_hu = float(img[seg == 1].mean()), float(base["image"][0][base["segmentation"][0] == 1].mean())
    assert muscle_hu[0] == pytest.approx(muscle_hu[1], abs=hu_difference_to_window_units(25.0))
    assert torch.all(seg[:48] == 0) and torch.all(img[:48] == 0)  # offset 1 on X: the body sits at the far end
    empty = t.apply({k: v.clone() for k, v in base.items()}, zoom=0.0, offset=[0.0, 0.0])
    assert torch.all(empty["image"] == 0) and torch.all(empty["segmentation"] == 0)


def test_a_seed_fixes_the_augmentation(sample):
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        np.random.seed(7)  # batchgeneratorsv2 samples with NumPy (seed_everything seeds both)
        pipeline = cta.ComposeTransforms(cta.ct_transforms())
        outs.append([pipeline(**_data(sample))["image"] for _ in range(5)])
    assert all(torch.equal(a, b) for a, b in zip(*outs))
    assert any(not torch.equal(o, _data(sample)["image"]) for o in outs[0])
