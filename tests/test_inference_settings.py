"""Inference speed levers (preset `inference` block): validated, plumbed through nnU-Net's predictor,
recorded with every result, and bf16 agreeing with fp32."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from sarco_nn.errors import SarcoError
from sarco_nn.inference_settings import InferenceSettings, invalid_inference_block, whole_slice_tile


@pytest.mark.parametrize("block, words", [
    ({"bf16": "yes"}, "bf16"), ({"tile_step_size": 0}, "tile_step_size"), ({"tile_step_size": 1.5}, "tile_step_size"),
    ({"whole_slice": 1}, "whole_slice"), ({"whole_slice_max_px": 8}, "whole_slice_max_px"), ({"tiles": 1}, "unknown"),
    ([], "object"),
])
def test_bad_inference_block_is_refused_with_the_field(block, words):
    assert words in invalid_inference_block(block)
    with pytest.raises(SarcoError, match=words):
        InferenceSettings.from_dict(block)


def test_a_preset_with_a_bad_inference_block_is_refused(tmp_path):
    from sarco_nn.presets import PRESET_DIR, load_preset

    preset = json.loads((PRESET_DIR / "cpu.json").read_text())
    preset["inference"] = {"tile_step_size": "0.5"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    with pytest.raises(SarcoError, match="inference: tile_step_size"):
        load_preset(path)
    preset["inference"] = {"bf16": True, "whole_slice": True}
    path.write_text(json.dumps(preset))
    assert load_preset(path)["inference"] == {"bf16": True, "whole_slice": True}


def test_settings_come_from_the_plans_and_bf16_only_runs_where_it_is_native():
    plans = {"sarco": {"preset": {"inference": {"bf16": True, "tile_step_size": 1.0}}}}
    settings = InferenceSettings.of_plans(plans)
    assert (settings.bf16, settings.tile_step_size, settings.whole_slice) == (True, 1.0, False)
    assert InferenceSettings.of_plans({}) == InferenceSettings()  # a model planned before the block: defaults
    assert settings.effective("cpu", cpu_bf16=True).bf16 is True
    assert settings.effective("cpu", cpu_bf16=False).bf16 is False  # emulated bf16 would be slower than fp32
    assert settings.effective("cuda").bf16 is False  # nnU-Net's own CUDA autocast applies there
    assert settings.effective("cpu", cpu_bf16=True).label() == "bf16, step 1"
    assert InferenceSettings(bf16=False, whole_slice=True).label() == "fp32, whole slice <= 1024 px"
    assert InferenceSettings().effective("cpu", cpu_bf16=True).label() == "fp32, step 0.5"  # the default


def test_whole_slice_tile_rounds_up_to_the_divisor_and_respects_the_cap():
    assert whole_slice_tile((400, 390), [64, 64], 1024) == [448, 448]
    assert whole_slice_tile((20, 64), [32, 32], 1024) == [32, 64]
    assert whole_slice_tile((1100, 300), [64, 64], 1024) is None  # then the plan's sliding window runs


def _toy_predictor(settings: InferenceSettings, patch=(32, 32), divisors=(16, 16), kernel: int = 3):
    """A SarcoPredictor around a 2-layer conv net, wired by hand (what manual_initialization sets);
    `kernel` 1 makes every pixel's logits a function of that pixel alone, whatever the tiling."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from sarco_nn.predictor import SarcoPredictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, kernel, padding=kernel // 2), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 2, kernel, padding=kernel // 2))
    predictor = SarcoPredictor(settings, list(divisors), use_gaussian=True, use_mirroring=False,
                               perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                               allow_tqdm=False)
    predictor.network = net
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=2)
    predictor.allowed_mirroring_axes = None
    predictor.configuration_manager = ConfigurationManager(
        {"patch_size": list(patch), "spacing": [1.0] * len(patch),
         "architecture": {"network_class_name": "toy", "arch_kwargs": {},
                                                     "_kw_requires_import": []}})
    seen: list[tuple] = []
    net[0].register_forward_pre_hook(lambda module, args: seen.append(  # inside the network's own hooks
        (tuple(args[0].shape), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    return predictor, seen


def test_whole_slice_runs_one_tile_through_nnunets_sliding_window_and_restores_the_plan():
    import torch

    image = torch.randn(1, 1, 70, 50)
    predictor, seen = _toy_predictor(InferenceSettings())
    tiled = predictor.predict_sliding_window_return_logits(image)
    assert len(seen) == 12 and {s[0] for s in seen} == {(1, 1, 32, 32)}  # nnU-Net's 0.5 step: 4 x 3 tiles
    assert predictor.use_gaussian
    predictor, seen = _toy_predictor(InferenceSettings(tile_step_size=1.0))
    predictor.predict_sliding_window_return_logits(image)
    assert len(seen) == 6  # step 1.0: 3 x 2 tiles
    predictor, seen = _toy_predictor(InferenceSettings(whole_slice=True))
    whole = predictor.predict_sliding_window_return_logits(image)
    assert [s[0] for s in seen] == [(1, 1, 80, 64)]  # one tile, each edge rounded up to 16
    assert predictor.configuration_manager.patch_size == [32, 32] and predictor.use_gaussian  # the plan is back
    assert whole.shape == tiled.shape == (2, 1, 70, 50)
    predictor, seen = _toy_predictor(InferenceSettings(whole_slice=True, whole_slice_max_px=64))
    predictor.predict_sliding_window_return_logits(image)
    assert len(seen) == 12  # over the cap: the sliding window


def test_bf16_runs_the_forward_under_cpu_autocast_and_returns_float32_logits():
    import torch

    image = torch.randn(1, 1, 40, 40)
    # one whole-slice tile: no Gaussian weights, whose float16 accumulation blurs the corners of both
    reference, _ = _toy_predictor(InferenceSettings(bf16=False, whole_slice=True))
    expected = reference.predict_sliding_window_return_logits(image).float()
    predictor, seen = _toy_predictor(InferenceSettings(bf16=True, whole_slice=True))
    predictor.attach_bf16()
    got = predictor.predict_sliding_window_return_logits(image).float()
    assert seen and all(enabled and dtype == torch.bfloat16 for _, enabled, dtype in seen)
    assert not torch.is_autocast_enabled("cpu")  # the context closes with the forward
    assert torch.allclose(got, expected, atol=0.05, rtol=0.05)
    assert (got.argmax(0) == expected.argmax(0)).float().mean() > 0.98


@pytest.mark.slow  # needs the tiny trained model
def test_bf16_prediction_agrees_with_fp32_on_the_tiny_model(tiny_model):
    import SimpleITK as sitk
    import torch

    from sarco_nn.model_store import build_predictor, find_model
    from sarco_nn.review.fold_ensemble import predict_folds
    from sarco_nn.training.cpu_autocast import cpu_bf16_supported
    from sarco_nn.workspace import Workspace

    model = find_model(Workspace(tiny_model.workspace))
    fp32 = build_predictor(model, torch.device("cpu"), use_mirroring=False, settings=InferenceSettings(bf16=False))
    bf16 = build_predictor(model, torch.device("cpu"), use_mirroring=False, settings=InferenceSettings(bf16=True))
    whole = build_predictor(model, torch.device("cpu"), use_mirroring=False,
                            settings=InferenceSettings(bf16=True, whole_slice=True))
    assert bf16.sarco_settings.bf16 is cpu_bf16_supported() and whole.sarco_settings.whole_slice
    assert not fp32.sarco_settings.bf16 and fp32.tile_step_size == 0.5
    bf16.attach_bf16()  # exercised even on a CPU without native bf16 (there it is only slower)
    for path in sorted((tiny_model.held / "images").iterdir()):
        image = sitk.ReadImage(str(path))
        ct = sitk.GetArrayFromImage(image).astype("float32").reshape(1, 1, *image.GetSize()[:2][::-1])
        spacing = [10.0, *list(image.GetSpacing())[:2][::-1]]
        a = predict_folds(fp32, ct, {"spacing": spacing}).probabilities
        b = predict_folds(bf16, ct, {"spacing": spacing}).probabilities
        assert a.shape == b.shape and np.abs(a - b).max() < 0.05
        confident = np.abs(a[1] - 0.5) > 0.05  # an untrained model's 0.5s may flip either way
        assert (a.argmax(0) == b.argmax(0))[confident].mean() > 0.99
        c = predict_folds(whole, ct, {"spacing": spacing}).probabilities  # another tiling: other numbers
        assert c.shape == a.shape and np.allclose(c.sum(0), 1.0, atol=1e-3)


@pytest.mark.slow  # needs the tiny trained model
def test_predict_records_the_inference_settings_and_keys_results_by_them(tiny_model, tmp_path):
    import csv

    from sarco_nn.inference import RUN_FILE, predict
    from sarco_nn.workspace import Workspace

    ws_root = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, ws_root)
    ws = Workspace(ws_root)
    out = tmp_path / "out"
    results, _ = predict(ws, tiny_model.held / "images", out, fast=True, device="cpu", progress=False)
    with open(results, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    from sarco_nn.model_store import find_model, inference_settings

    expected = inference_settings(find_model(ws), "cpu")
    assert rows and {r["inference"] for r in rows} == {expected.label()}
    assert json.loads((out / RUN_FILE).read_text())["inference"] == expected.as_dict()
    # the same model asked to run other settings: the folder's results are not this run's
    plans_path = next(ws_root.glob("nnUNet_results/*/*__*__2d/plans.json"))
    plans = json.loads(plans_path.read_text())
    plans["sarco"]["preset"]["inference"] = {"tile_step_size": 1.0}
    plans_path.write_text(json.dumps(plans))
    with pytest.raises(SarcoError, match="another model/settings"):
        predict(ws, tiny_model.held / "images", out, fast=True, device="cpu", progress=False)


@pytest.mark.slow  # needs the tiny trained model
def test_inference_bench_agreement_arm_compares_each_lever_with_fp32_and_the_truth(tiny_model, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "agreement.json"
    result = subprocess.run(
        [sys.executable, str(root / "bench" / "inference_bench.py"), "--presets", "smoke", "--threads", "1",
         "--from-workspace", str(tiny_model.workspace), "--agreement", str(tiny_model.held),
         "--levers", "fp32", "bf16", "whole", "--results", str(tmp_path / "results"), "--json", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(out.read_text())
    levers = row["levers"]
    n_held = len(list((tiny_model.held / "images").glob("*.nii.gz")))
    assert list(levers) == ["fp32", "bf16", "whole"] and row["n"] == len(row["cases"]) == n_held >= 1
    assert levers["fp32"]["mean_dice_ref"] == 1.0 and levers["fp32"]["mean_sma_diff_pct"] == 0.0
    assert levers["fp32"]["settings"] == "fp32, step 0.5" and levers["whole"]["settings"].startswith("fp32, whole")
    assert levers["bf16"]["mean_dice_ref"] > 0.97
    for lever in levers.values():
        assert 0.0 <= lever["mean_dice_truth"] <= 1.0 and lever["mean_cpu_s"] > 0
        assert isinstance(lever["may_be_default"], bool)
    assert "| lever | settings | Dice vs ref" in result.stdout
    assert len(list((tmp_path / "results").glob("smoke__agreement__*.json"))) == 1


def test_jit_freeze_is_validated_kept_out_of_the_results_settings_and_only_runs_in_fp32_on_cpu():
    assert "jit_freeze" in invalid_inference_block({"jit_freeze": "yes"})
    settings = InferenceSettings.from_dict({"jit_freeze": True})
    assert settings.jit_freeze and "jit_freeze" not in settings.as_dict()  # same answers: same results key
    assert settings.as_dict() == InferenceSettings().as_dict() and settings.label() == InferenceSettings().label()
    assert settings.effective("cpu").jit_freeze
    assert not settings.effective("cuda").jit_freeze
    assert not InferenceSettings(bf16=True, jit_freeze=True).effective("cpu", cpu_bf16=True).jit_freeze
    assert InferenceSettings(bf16=True, jit_freeze=True).effective("cpu", cpu_bf16=False).jit_freeze


def _jit_pair(patch=(32, 32)):
    """A plain toy predictor and one whose network runs as `FrozenFolds`, sharing one network."""
    import torch

    from sarco_nn.predictor import FrozenFolds

    plain, _ = _toy_predictor(InferenceSettings(), patch=patch)
    frozen, _ = _toy_predictor(InferenceSettings(jit_freeze=True), patch=patch)
    frozen.network = FrozenFolds(frozen.network, patch)
    torch.manual_seed(1)
    folds = [{k: v.clone() for k, v in plain.network.state_dict().items()}]
    folds.append({k: v + 0.05 * torch.randn_like(v) for k, v in folds[0].items()})  # a second, other fold
    plain.list_of_parameters = frozen.list_of_parameters = folds
    return plain, frozen


def test_jit_freeze_gives_nnunets_logits_with_one_trace_per_fold_through_its_fold_loop():
    import torch

    plain, frozen = _jit_pair()
    image = torch.rand(1, 1, 70, 50)
    for _ in range(2):  # a second case reuses the traces
        for params in plain.list_of_parameters:  # as predict_folds runs the ensemble, fold by fold
            for predictor in (plain, frozen):
                predictor.list_of_parameters_all, predictor.list_of_parameters = predictor.list_of_parameters, [params]
            a = plain.predict_logits_from_preprocessed_data(image).float()
            b = frozen.predict_logits_from_preprocessed_data(image).float()
            for predictor in (plain, frozen):
                predictor.list_of_parameters = predictor.list_of_parameters_all
            assert a.shape == b.shape == (2, 1, 70, 50)
            assert (a - b).abs().max() < 1e-3 and torch.equal(a.argmax(0), b.argmax(0))
        assert frozen.network.traces == 2  # one per fold, not per case or tile
    ensemble_a = plain.predict_logits_from_preprocessed_data(image)  # nnU-Net's own 2-fold loop
    ensemble_b = frozen.predict_logits_from_preprocessed_data(image)
    assert (ensemble_a.float() - ensemble_b.float()).abs().max() < 1e-3 and frozen.network.traces == 2


def test_jit_freeze_leaves_other_tile_shapes_to_the_eager_network():
    import torch

    _, frozen = _jit_pair()
    frozen.network.load_state_dict(frozen.list_of_parameters[0])
    with torch.inference_mode():
        other = frozen.network(torch.rand(1, 1, 48, 64))  # a whole-slice tile: not the plan's patch
    assert other.shape == (1, 2, 48, 64) and frozen.network.traces == 0
    assert set(frozen.network.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}  # the network's names


def _frozen_logits_match_eager(frozen, params, x) -> bool:
    """Load `params` into `frozen` as nnU-Net's fold loop does; its patch logits equal the eager network's."""
    import torch

    with torch.inference_mode():
        frozen.load_state_dict(params)
        got = frozen(x)
        return bool((got - frozen.network(x)).abs().max() < 1e-5)


def test_jit_freeze_never_runs_one_folds_trace_for_other_weights_even_when_ids_collide(monkeypatch):
    """CPython gives a freed dict's id() to the next one (and a copied module would carry old ids over):
    here every object shares one id, and each fold still runs its own weights."""
    import torch

    import sarco_nn.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "id", lambda obj: 0, raising=False)  # shadows the builtin there
    _, frozen = _jit_pair()
    x = torch.rand(1, 1, 32, 32)
    fold_a, fold_b = frozen.list_of_parameters
    for params in (fold_a, fold_b, fold_a):
        assert _frozen_logits_match_eager(frozen.network, params, x)
    assert frozen.network.traces == 2
    freed = {k: v * 0.5 for k, v in fold_a.items()}  # a dict made after a traced one was dropped
    assert _frozen_logits_match_eager(frozen.network, freed, x)


def test_jit_freeze_traces_again_when_a_folds_dict_is_changed_in_place():
    import torch

    _, frozen = _jit_pair()
    x = torch.rand(1, 1, 32, 32)
    params = frozen.list_of_parameters[0]
    assert _frozen_logits_match_eager(frozen.network, params, x)
    params["2.bias"].add_(1.0)  # the same dict and tensor, new values
    assert _frozen_logits_match_eager(frozen.network, params, x)
    params["0.weight"] = params["0.weight"] * -1.0  # the same dict, another tensor
    assert _frozen_logits_match_eager(frozen.network, params, x)
    assert frozen.network.traces == 1  # the stale traces were dropped, not kept beside the new one
    partial = {"2.bias": params["2.bias"] * 0.0}
    with torch.inference_mode():
        frozen.network.load_state_dict(partial, strict=False)  # the network is no longer one dict's weights
        assert torch.equal(frozen.network(x), frozen.network.network(x))


def test_build_predictor_wraps_the_network_only_when_jit_freeze_is_asked(monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from sarco_nn.predictor import FrozenFolds

    def initialise(self, network, *a, **k):
        self.network, self.configuration_manager = network, SimpleNamespace(patch_size=[32, 32])

    monkeypatch.setattr(nnUNetPredictor, "manual_initialization", initialise)
    import torch

    for on in (False, True):
        predictor, _ = _toy_predictor(InferenceSettings(jit_freeze=on))
        net = predictor.network
        predictor.manual_initialization(net, None, None, [net.state_dict()], {}, "toy", None)
        assert isinstance(predictor.network, FrozenFolds) is on
        assert (predictor.network.network if on else predictor.network) is net
        assert isinstance(net, torch.nn.Module)
    # nnU-Net's other public initialisation (a trained model folder) wraps too, and a reload gets a new
    # wrapper around the new network, with none of the old one's traces
    other = torch.nn.Conv2d(1, 2, 3, padding=1)
    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder",
                        lambda self, folder, use_folds, checkpoint_name="checkpoint_final.pth": initialise(self, other))
    old = predictor.network
    predictor.initialize_from_trained_model_folder("model", (0,))
    assert isinstance(predictor.network, FrozenFolds) and predictor.network is not old
    assert predictor.network.network is other and predictor.network.traces == 0


def test_jit_freeze_traces_the_smit_network_to_the_same_logits_and_masks():
    """The real architecture (MONAI Swin blocks, shape branches, instance norm) at a tiny width:
    nnU-Net's sliding window over a generated slice gives the plain path's logits and mask."""
    import torch

    from sarco_nn.models.smit import SMITConfig, SMITSegNet
    from sarco_nn.predictor import FrozenFolds

    torch.manual_seed(0)
    net = SMITSegNet(1, 2, 2, SMITConfig(embed_dim=12, num_heads=(2, 2, 2, 2), drop_path=0.0)).eval()
    plain, _ = _toy_predictor(InferenceSettings(), patch=(64, 64))
    frozen, _ = _toy_predictor(InferenceSettings(jit_freeze=True), patch=(64, 64))
    plain.network, frozen.network = net, FrozenFolds(net, (64, 64))
    params = {k: v.clone() for k, v in net.state_dict().items()}
    plain.list_of_parameters = frozen.list_of_parameters = [params]
    yy, xx = torch.meshgrid(torch.arange(100.0), torch.arange(90.0), indexing="ij")
    ring = (((yy - 50) / 40) ** 2 + ((xx - 45) / 35) ** 2 - 1).abs() < 0.3  # a muscle-like band
    image = (0.2 + 0.6 * ring.float() + 0.05 * torch.rand(100, 90))[None, None]
    a = plain.predict_logits_from_preprocessed_data(image).float()
    b = frozen.predict_logits_from_preprocessed_data(image).float()
    assert frozen.network.traces == 1 and a.shape == (2, 1, 100, 90)
    assert (a - b).abs().max() < 1e-3 and torch.equal(a.argmax(0), b.argmax(0))


# --------------------------------------------------------------------------- body_crop

def test_body_crop_is_validated_recorded_only_when_on_and_changes_the_signature():
    from sarco_nn.batch import settings_digest
    from sarco_nn.inference_settings import BODY_CROP_MARGIN_MM

    assert "body_crop" in invalid_inference_block({"body_crop": 1})
    off, on = InferenceSettings(), InferenceSettings.from_dict({"body_crop": True})
    # off: the form every result had before the lever existed, so their folders keep their signature
    assert off.as_dict() == {"bf16": False, "tile_step_size": 0.5, "whole_slice": False, "whole_slice_max_px": 1024}
    assert on.as_dict() == {**off.as_dict(), "body_crop": True}
    assert settings_digest({"inference": on.as_dict()}) != settings_digest({"inference": off.as_dict()})
    assert on.label() == f"fp32, step 0.5, body crop {BODY_CROP_MARGIN_MM:g} mm" and off.label() == "fp32, step 0.5"
    assert on.effective("cuda").body_crop and on.effective("cpu", cpu_bf16=True).body_crop


def test_body_crop_box_adds_the_margin_grows_to_the_patch_and_stays_inside_the_image():
    from sarco_nn.inference_settings import body_crop_box

    body = np.zeros((120, 100), bool)
    body[40:60, 30:55] = True
    # margin 15 mm: 15 rows at 1 mm, ceil(15 / 2) = 8 columns at 2 mm
    assert body_crop_box(body, (1.0, 2.0), (32, 32), 15.0) == (slice(25, 75), slice(22, 63))
    # a 64² patch: each edge grown about its centre (50 -> 64 rows, 41 -> 64 columns)
    assert body_crop_box(body, (1.0, 2.0), (64, 64), 15.0) == (slice(18, 82), slice(11, 75))
    edge = np.zeros((120, 100), bool)
    edge[0:10, 90:100] = True  # a body touching the top and right edges: shifted back inside
    assert body_crop_box(edge, (1.0, 1.0), (64, 64), 15.0) == (slice(0, 64), slice(36, 100))
    assert body_crop_box(np.zeros((120, 100), bool), (1.0, 1.0), (32, 32)) is None  # no body: the whole image
    assert body_crop_box(np.ones((120, 100), bool), (1.0, 1.0), (32, 32)) is None  # the box is the image
    assert body_crop_box(body, (1.0, 1.0), (128, 128)) is None  # the patch covers the image anyway


def _crop_pair(mirroring: bool = False, folds: int = 1):
    """Toy predictors (1x1 kernels: logits per pixel, whatever the tiling) without and with body_crop,
    sharing one network and `folds` weight sets."""
    import torch

    pair = []
    for on in (False, True):
        predictor, seen = _toy_predictor(InferenceSettings(body_crop=on), kernel=1)
        predictor.use_mirroring = mirroring
        predictor.allowed_mirroring_axes = (0, 1) if mirroring else None
        pair.append((predictor, seen))
    torch.manual_seed(3)
    base = {k: v.clone() for k, v in pair[0][0].network.state_dict().items()}
    weights = [base] + [{k: v + 0.2 * torch.randn_like(v) for k, v in base.items()} for _ in range(folds - 1)]
    for predictor, _ in pair:
        predictor.network.load_state_dict(base)
        predictor.list_of_parameters = weights
    return pair, weights


def _per_pixel_logits(network, weights, image):
    """The fold-mean logits computed directly on the whole image (no tiles, no crop): the truth a
    per-pixel network's sliding window must give wherever it ran."""
    import torch

    out = []
    with torch.inference_mode():
        for params in weights:
            network.load_state_dict(params)
            planes = image.permute(1, 0, 2, 3)  # (z, c, y, x): each plane a batch entry
            out.append(network(planes).permute(1, 0, 2, 3))
    return torch.stack(out).mean(0)


@pytest.mark.parametrize("mirroring, folds", [(False, 1), (True, 2)])
def test_body_crop_runs_the_box_through_nnunets_fold_loop_and_pastes_background_outside(mirroring, folds):
    import torch

    (plain, plain_seen), (cropped, crop_seen) = _crop_pair(mirroring, folds)[0]
    image = torch.zeros(1, 1, 120, 100)  # the window's floor (air), a body of 20 x 25 px
    image[0, 0, 40:60, 30:55] = 0.2 + torch.rand(20, 25)
    a = plain.predict_logits_from_preprocessed_data(image).float()
    b = cropped.predict_logits_from_preprocessed_data(image).float()
    passes = (4 if mirroring else 1) * folds
    assert len(plain_seen) == 42 * passes and len(crop_seen) == 9 * passes  # 7 x 6 tiles -> 3 x 3
    truth = _per_pixel_logits(plain.network, plain.list_of_parameters, image)
    box = cropped.body_box(image)
    assert box == (slice(None), slice(None), slice(25, 75), slice(15, 70))  # 15 px margin at 1 mm
    assert a.shape == b.shape == (2, 1, 120, 100)
    assert (b[box] - truth[box]).abs().max() < 2e-2 and (a - truth).abs().max() < 2e-2  # float16 accumulation
    outside = torch.ones(120, 100, dtype=torch.bool)
    outside[25:75, 15:70] = False
    assert torch.equal(b[0, 0][outside], torch.zeros(int(outside.sum())))
    assert torch.equal(b[1, 0][outside], torch.full((int(outside.sum()),), -100.0))
    assert torch.softmax(b[:, 0], 0)[0][outside].min() == 1.0  # background probability 1 in float32
    assert torch.equal(a.argmax(0)[:, 40:60, 30:55], b.argmax(0)[:, 40:60, 30:55])


def test_body_crop_takes_one_box_for_a_volume_and_leaves_an_air_slice_and_an_edge_body_alone():
    import torch

    (plain, plain_seen), (cropped, crop_seen) = _crop_pair()[0]
    volume = torch.zeros(1, 3, 120, 100)
    volume[0, 0, 10:20, 10:20] = 0.5  # bodies in other places on each plane: the box holds them all
    volume[0, 2, 80:90, 60:70] = 0.5
    box = cropped.body_box(volume)
    assert box == (slice(None), slice(None), slice(0, 105), slice(0, 85))
    got = cropped.predict_sliding_window_return_logits(volume).float()
    truth = _per_pixel_logits(plain.network, plain.list_of_parameters, volume)
    assert got.shape == (2, 3, 120, 100) and (got[box] - truth[box]).abs().max() < 2e-2
    assert torch.equal(got[1, :, 110:, :], torch.full((3, 10, 100), -100.0))

    air = torch.zeros(1, 1, 120, 100)  # no body: the whole image runs, exactly as without the lever
    assert cropped.body_box(air) is None
    plain_seen.clear(), crop_seen.clear()
    assert torch.equal(plain.predict_sliding_window_return_logits(air), cropped.predict_sliding_window_return_logits(air))
    assert len(plain_seen) == len(crop_seen) == 42

    edge = torch.zeros(1, 1, 120, 100)
    edge[0, 0, 0:30, 70:100] = 0.6  # a body cut by the top and right edges of the field of view
    box = cropped.body_box(edge)
    assert box == (slice(None), slice(None), slice(0, 45), slice(55, 100))
    got = cropped.predict_sliding_window_return_logits(edge).float()
    truth = _per_pixel_logits(plain.network, plain.list_of_parameters, edge)
    assert (got[box] - truth[box]).abs().max() < 2e-2 and torch.equal(got[1, 0, 50:, :], torch.full((70, 100), -100.0))


def test_body_crop_sees_the_body_above_the_window_floor_only():
    """The box is taken on nnU-Net's windowed input: the clipped floor (air and anything at or below
    -175 HU) and the small tails of its cubic resampling are not body."""
    import torch

    from sarco_nn.windowing import apply_window

    predictor, _ = _toy_predictor(InferenceSettings(body_crop=True))
    hu = np.full((120, 100), -1000.0, np.float32)
    hu[50:60, 40:50] = 40.0  # soft tissue
    hu[0:5, 0:5] = -180.0  # below the window: the network sees air
    image = torch.from_numpy(apply_window(hu))[None, None]
    image[0, 0, 100:, 80:] += 0.02  # a resampling tail: 8.5 HU above the floor
    assert predictor.body_box(image) == (slice(None), slice(None), slice(35, 75), slice(25, 65))


@pytest.mark.slow  # needs the tiny trained model
def test_body_crop_keeps_the_tiny_models_masks_and_marks_its_results(tiny_model, tmp_path):
    import csv

    import SimpleITK as sitk
    import torch
    from scipy import ndimage

    from sarco_nn.inference import RUN_FILE, predict
    from sarco_nn.inference_settings import BODY_CROP_MARGIN_MM
    from sarco_nn.model_store import build_predictor, find_model
    from sarco_nn.review.fold_ensemble import predict_folds, preprocess
    from sarco_nn.workspace import Workspace

    model = find_model(Workspace(tiny_model.workspace))
    off = build_predictor(model, torch.device("cpu"), settings=InferenceSettings())
    on = build_predictor(model, torch.device("cpu"), settings=InferenceSettings(body_crop=True))
    assert on.sarco_settings.body_crop and len(on.list_of_parameters) == len(off.list_of_parameters)
    path = sorted((tiny_model.held / "images").iterdir())[0]
    image = sitk.ReadImage(str(path))
    ct = sitk.GetArrayFromImage(image).astype("float32").reshape(image.GetSize()[:2][::-1])
    h, w = ct.shape
    wide = np.full((2 * h, 2 * w), -1000.0, np.float32)  # the phantom in a field of view twice its size
    wide[h // 2: h // 2 + h, w // 4: w // 4 + w] = ct
    cut = ct[h // 3:, : 2 * w // 3]  # the body cut by the top and right edges
    spacing = [10.0, *list(image.GetSpacing())[:2][::-1]]
    for plane in (wide, cut):
        x = plane[None, None]
        data = preprocess(on, x, {"spacing": spacing})["data"]
        box = on.body_box(data)
        assert box is not None  # the crop ran
        a = predict_folds(off, x, {"spacing": spacing})
        b = predict_folds(on, x, {"spacing": spacing})
        assert a.probabilities.shape == b.probabilities.shape and a.segmentation.shape == (1, *plane.shape)
        body = plane > -500
        # where the network ran in both, the same mask up to the model's indecision: each tile's output
        # depends on all of the tile (window attention, instance norms see its air), and the crop's
        # tiles sit elsewhere; a 2-epoch model's probabilities sit near 0.5 (measured: 97-98 % of all
        # body pixels agree, confident ones more). The trained `cpu` model's figures: README.
        confident = body & (np.abs(a.probabilities[1, 0] - 0.5) > 0.2)
        assert (a.segmentation[0] == b.segmentation[0])[body].mean() > 0.95
        assert (a.segmentation[0] == b.segmentation[0])[confident].mean() > 0.98
        # outside the box (mapped to the file's grid, 2 network voxels of resampling kept clear): only
        # background, with probability 1, whatever this untrained model says there without the crop
        inside = []
        for n, n_net, mm, edges in zip(plane.shape, data.shape[-2:], spacing[1:], box[-2:]):
            net_mm = mm * n / n_net  # the network grid's voxel, as nnU-Net resampled to it
            at = np.arange(n) * mm
            inside.append((at >= (edges.start - 2) * net_mm) & (at < (edges.stop + 2) * net_mm))
        far = ~(inside[0][:, None] & inside[1][None, :])
        assert far.any() and not b.segmentation[0][far].any() and b.probabilities[0, 0][far].min() > 0.999
        assert ndimage.distance_transform_edt(~body, sampling=spacing[1:])[far].min() > BODY_CROP_MARGIN_MM

    # sarco predict with the lever in the model's preset: recorded; an all-air slice is a failed row
    ws_root = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, ws_root)
    plans_path = next(ws_root.glob("nnUNet_results/*/*__*__2d/plans.json"))
    plans = json.loads(plans_path.read_text())
    plans["sarco"]["preset"]["inference"] = {"body_crop": True}
    plans_path.write_text(json.dumps(plans))
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(path, inputs / path.name)
    air = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(image).shape, -1000, np.int16))
    air.CopyInformation(image)
    sitk.WriteImage(air, str(inputs / "air.nii.gz"))
    results, _ = predict(Workspace(ws_root), inputs, tmp_path / "out", fast=True, device="cpu", progress=False)
    with open(results, newline="", encoding="utf-8") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert rows["air"]["status"] == "failed" and "no_body" in rows["air"]["reasons"]
    case = rows[path.name[: -len(".nii.gz")]]
    assert case["inference"] == InferenceSettings(body_crop=True).label()
    assert json.loads((tmp_path / "out" / RUN_FILE).read_text())["inference"]["body_crop"] is True


# --------------------------------------------------------------------------- batch_mirroring

def test_batch_mirroring_is_validated_round_trips_and_runs_on_cuda_unless_the_preset_says():
    from dataclasses import asdict

    from sarco_nn.batch import settings_digest

    assert "batch_mirroring" in invalid_inference_block({"batch_mirroring": "yes"})
    assert "batch_mirroring" in invalid_inference_block({"batch_mirroring": 1})
    for block in ({"batch_mirroring": True}, {"batch_mirroring": False}, {"batch_mirroring": None}, {}):
        settings = InferenceSettings.from_dict(block)
        assert settings.batch_mirroring is block.get("batch_mirroring")
        assert InferenceSettings.from_dict(asdict(settings)) == settings  # a block of every field reads back
        plans = {"sarco": {"preset": {"inference": block}}}
        assert InferenceSettings.of_plans(plans) == settings
    auto = InferenceSettings()
    assert auto.effective("cuda").batch_mirroring is True and auto.effective("cpu").batch_mirroring is False
    assert InferenceSettings(batch_mirroring=True).effective("cpu").batch_mirroring is True  # the preset says
    assert InferenceSettings(batch_mirroring=False).effective("cuda").batch_mirroring is False
    # the same answers: no part of the results' settings, so no folder's signature moves, on either device
    reference = settings_digest({"inference": InferenceSettings().as_dict()})
    for device in ("cpu", "cuda"):
        for value in (None, True, False):
            settings = InferenceSettings(batch_mirroring=value).effective(device, cpu_bf16=False)
            assert "batch_mirroring" not in settings.as_dict() and settings.label() == "fp32, step 0.5"
            assert settings_digest({"inference": settings.as_dict()}) == reference


def _mirror_predictor(batch: bool, mirror_axes, spatial_dims: int = 2):
    """A toy predictor (conv, instance norm as nnU-Net's networks have, conv) mirroring on `mirror_axes`,
    with every forward's input shape noted."""
    import torch

    from sarco_nn.predictor import SarcoPredictor

    torch.manual_seed(5)
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    norm = torch.nn.InstanceNorm2d if spatial_dims == 2 else torch.nn.InstanceNorm3d
    net = torch.nn.Sequential(conv(1, 6, 3, padding=1), norm(6, affine=True), torch.nn.LeakyReLU(),
                              conv(6, 3, 3, padding=1)).eval()
    predictor = SarcoPredictor(InferenceSettings(batch_mirroring=batch), use_mirroring=True,
                               perform_everything_on_device=False, device=torch.device("cpu"),
                               verbose=False, allow_tqdm=False)
    predictor.network, predictor.allowed_mirroring_axes = net, tuple(mirror_axes)
    seen: list[tuple] = []
    net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    return predictor, seen


@pytest.mark.parametrize("mirror_axes, spatial_dims", [((1,), 2), ((0, 1), 2), ((0, 1, 2), 3)])
def test_batch_mirroring_gives_nnunets_mirrored_logits_in_one_forward(mirror_axes, spatial_dims):
    import torch

    views = 2 ** len(mirror_axes)  # the original and every combination of the axes
    shape = (1, 1, 24, 20) if spatial_dims == 2 else (1, 1, 10, 12, 8)
    x = torch.randn(*shape)
    loop, loop_seen = _mirror_predictor(False, mirror_axes, spatial_dims)
    batched, batched_seen = _mirror_predictor(True, mirror_axes, spatial_dims)
    with torch.inference_mode():
        expected = loop._internal_maybe_mirror_and_predict(x.clone())  # nnU-Net's own loop
        got = batched._internal_maybe_mirror_and_predict(x.clone())
        plain = loop.network(x)
    assert loop_seen == [shape] * (views + 1)  # nnU-Net: one forward per view (+ the plain one above)
    assert batched_seen == [(views, *shape[1:])]  # one forward of the stacked views
    assert got.shape == expected.shape == plain.shape
    assert (got - expected).abs().max() < 1e-5
    assert (expected - plain).abs().max() > 1e-3  # the views differ: a wrong unflip could not pass


def test_batch_mirroring_runs_through_nnunets_sliding_window_and_fold_loop():
    import torch

    image = torch.randn(1, 1, 40, 40)
    out = []
    for batch in (False, True):
        predictor, seen = _toy_predictor(InferenceSettings(batch_mirroring=batch))
        predictor.use_mirroring, predictor.allowed_mirroring_axes = True, (0, 1)
        torch.manual_seed(2)
        base = {k: v.clone() for k, v in predictor.network.state_dict().items()}
        predictor.list_of_parameters = [base, {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}]
        out.append(predictor.predict_logits_from_preprocessed_data(image).float())
        tiles = 2 * 2 * 2  # 2 x 2 tiles of 32² at step 0.5 per fold, 2 folds
        assert [s[0] for s in seen] == ([(1, 1, 32, 32)] * 4 * tiles if not batch else [(4, 1, 32, 32)] * tiles)
    assert (out[0] - out[1]).abs().max() < 2e-3 and torch.equal(out[0].argmax(0), out[1].argmax(0))


def test_batch_mirroring_with_jit_freeze_traces_once_per_fold_and_batch_size():
    import torch

    from sarco_nn.predictor import FrozenFolds

    predictor, _ = _mirror_predictor(True, (0, 1))
    eager = predictor.network
    predictor.network = FrozenFolds(eager, (24, 20))
    folds = [{k: v.clone() for k, v in eager.state_dict().items()}]
    folds.append({k: v + 0.05 * torch.randn_like(v) for k, v in folds[0].items()})
    x = torch.randn(1, 1, 24, 20)
    with torch.inference_mode():
        for params in folds + folds:
            predictor.network.load_state_dict(params)
            got = predictor._internal_maybe_mirror_and_predict(x.clone())
            predictor.sarco_settings = InferenceSettings(batch_mirroring=False)
            expected = predictor._internal_maybe_mirror_and_predict(x.clone())  # nnU-Net's loop: the batch-1 trace
            predictor.sarco_settings = InferenceSettings(batch_mirroring=True)
            eager.load_state_dict(params)
            loop, _ = _mirror_predictor(False, (0, 1))
            loop.network.load_state_dict(params)
            truth = loop._internal_maybe_mirror_and_predict(x.clone())
            assert (got - truth).abs().max() < 1e-5 and (expected - truth).abs().max() < 1e-5
    assert predictor.network.traces == 2 and all(set(f.trace) == {1, 4} for f in predictor.network._folds)


def test_batch_mirroring_falls_back_to_one_view_at_a_time_when_the_views_do_not_fit(monkeypatch):
    import torch

    x = torch.randn(1, 1, 24, 20)
    loop, _ = _mirror_predictor(False, (0, 1))
    batched, seen = _mirror_predictor(True, (0, 1))

    def refuse_big_batches(module, args):
        if args[0].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    batched.network.register_forward_pre_hook(refuse_big_batches)
    with torch.inference_mode():
        expected = loop._internal_maybe_mirror_and_predict(x.clone())
        for _ in range(2):
            assert (batched._internal_maybe_mirror_and_predict(x.clone()) - expected).abs().max() < 1e-6
    assert seen == [(4, 1, 24, 20)] + [(1, 1, 24, 20)] * 8  # tried once, then nnU-Net's loop for the rest
    other, _ = _mirror_predictor(True, (0, 1))
    other.network.register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(ValueError("a real bug")))
    with pytest.raises(ValueError, match="a real bug"), torch.inference_mode():
        other._internal_maybe_mirror_and_predict(x)  # anything but memory is no reason to fall back
