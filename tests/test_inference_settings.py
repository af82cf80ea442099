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


def _toy_predictor(settings: InferenceSettings, patch=(32, 32), divisors=(16, 16)):
    """A SarcoPredictor around a 2-layer conv net, wired by hand (what manual_initialization sets)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from sarco_nn.predictor import SarcoPredictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1))
    predictor = SarcoPredictor(settings, list(divisors), use_gaussian=True, use_mirroring=False,
                               perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                               allow_tqdm=False)
    predictor.network = net
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=2)
    predictor.allowed_mirroring_axes = None
    predictor.configuration_manager = ConfigurationManager(
        {"patch_size": list(patch), "architecture": {"network_class_name": "toy", "arch_kwargs": {},
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
