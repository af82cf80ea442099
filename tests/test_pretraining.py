"""SMIT self-supervised pretraining (`sarco pretrain`): losses, teacher EMA, masking, exact resume,
skipping unreadable files, and an encoder.pt the SMIT fine-tuning network loads completely."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dataset_conversion.phantom import to_sitk
from dataset_conversion.phantom_volume import generate_phantom_volume
from sarco_nn.pretraining.config import PretrainConfig
from sarco_nn.pretraining.data import UnlabeledCTDataset, discover_volumes
from sarco_nn.pretraining.ema import teacher_momentum
from sarco_nn.pretraining.masking import applied_ratio, blocks_masked, mask_at_stride, random_block_mask
from sarco_nn.pretraining.trainer import Pretrainer, run_pretraining

torch.set_num_threads(1)

TINY_ENCODER = {"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}


def tiny(**kw) -> PretrainConfig:
    base = dict(dims=2, crop_size=32, spacing_mm=6.0, epochs=2, steps_per_epoch=3, batch_size=2, out_dim=64,
                patch_out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16, warmup_epochs=0,
                min_body_area_cm2=100.0, encoder=TINY_ENCODER)
    base.update(kw)
    return PretrainConfig(**base)


def _write_phantom(path: Path, seed: int, flipped: bool) -> None:
    ph = generate_phantom_volume(np.random.default_rng(seed), n_slices=12, matrix=64)
    sitk.WriteImage(to_sitk(ph.ct_hu.astype(np.int16), ph.spacing_mm, flipped, -300.0), str(path), True)


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("unlabeled")
    _write_phantom(d / "a.nii.gz", 0, False)
    (d / "sub").mkdir()
    _write_phantom(d / "sub" / "b.nii.gz", 1, True)
    return d


@pytest.fixture(scope="module")
def ct_dir_with_bad(tmp_path_factory, ct_dir) -> Path:
    d = tmp_path_factory.mktemp("unlabeled_bad")
    for p in ct_dir.rglob("*.nii.gz"):
        (d / p.name).write_bytes(p.read_bytes())
    (d / "broken.nii.gz").write_bytes(b"this is not a CT")
    return d


def test_defaults_are_the_official_smit_values():
    c = PretrainConfig()
    assert (c.mask_ratio, c.mask_block, c.crop_size) == (0.7, 16, 96)
    assert (c.rec_weight, c.cls_weight, c.patch_weight) == (1.0, 0.1, 0.1)
    assert (c.warmup_teacher_temp, c.teacher_temp, c.student_temp, c.teacher_temp_warmup_epochs) == (0.04, 0.07, 0.1, 30)
    assert (c.out_dim, c.patch_out_dim, c.momentum_teacher, c.epochs, c.warmup_epochs) == (8192, 8192, 0.996, 500, 20)
    assert PretrainConfig(dims=3).spacing == 2.0
    assert teacher_momentum(0, 100) == pytest.approx(0.996) and teacher_momentum(100, 100) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- masking
@pytest.mark.parametrize("dims,crop,expected", [(2, 96, 26 / 36), (3, 96, 152 / 216), (2, 32, 3 / 4)])
def test_masking_hides_the_declared_fraction(dims, crop, expected):
    assert applied_ratio(crop, 16, dims, 0.7) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = random_block_mask(rng, crop, 16, dims, 0.7)
        assert m.shape == (crop // 16,) * dims
        assert m.mean() == pytest.approx(expected)
        t = torch.from_numpy(m)[None]
        for stride in (1, 2, 16):  # voxels, embedding tokens, distilled patch tokens
            assert float(mask_at_stride(t, 16, stride).mean()) == pytest.approx(expected)
    assert blocks_masked(36, 0.7) == 26


def test_masked_voxels_are_hidden_from_the_student():
    from sarco_nn.pretraining.model import PretrainNetwork

    cfg = tiny()
    torch.manual_seed(0)
    net = PretrainNetwork(2, cfg.smit_config(), 16, 16, 16, 8).eval()
    block = torch.from_numpy(random_block_mask(np.random.default_rng(1), 32, 16, 2, 0.7))[None]
    embed_mask = mask_at_stride(block, 16, 2)
    voxel = mask_at_stride(block, 16, 1)[:, None].bool()
    x = torch.rand(1, 1, 32, 32)
    changed_hidden = torch.where(voxel, torch.rand_like(x), x)
    changed_visible = torch.where(~voxel, torch.rand_like(x), x)
    with torch.no_grad():
        ref = net(x, embed_mask)
        hidden = net(changed_hidden, embed_mask)
        visible = net(changed_visible, embed_mask)
        unmasked = net(changed_hidden, None)
    for a, b in zip(ref, hidden):
        assert torch.equal(a, b)  # content under the mask never reaches the student
    assert not torch.allclose(ref[0], visible[0])
    assert not torch.allclose(ref[0], unmasked[0])


# ----------------------------------------------------------------------------- data
def test_data_streams_deterministic_two_view_crops(ct_dir):
    files = discover_volumes(ct_dir)
    assert [p.name for p in files] == ["a.nii.gz", "b.nii.gz"]
    cfg = tiny()
    a, b = UnlabeledCTDataset(files, cfg)[5], UnlabeledCTDataset(files, cfg)[5]
    assert a["views"].shape == (2, 1, 32, 32) and a["masks"].shape == (2, 2, 2)
    assert torch.equal(a["views"], b["views"]) and torch.equal(a["masks"], b["masks"])
    assert 0.0 <= float(a["views"].min()) and float(a["views"].max()) <= 1.0
    assert float((a["views"] > 0).float().mean()) > 0.2  # body, not air
    assert not torch.equal(a["views"][0], a["views"][1])
    c3 = UnlabeledCTDataset(files, tiny(dims=3, crop_size=32))[0]
    assert c3["views"].shape == (2, 1, 32, 32, 32)


def test_unreadable_volume_is_skipped_with_a_warning(ct_dir_with_bad, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sarco_nn.pretraining"):
        result = run_pretraining(ct_dir_with_bad, tmp_path / "run", tiny(epochs=1, steps_per_epoch=4),
                                 device="cpu", progress=False, echo=lambda s: None)
    lines = [r.getMessage() for r in caplog.records if "broken.nii.gz" in r.getMessage()]
    assert lines and "\n" not in lines[0] and "skipped" in lines[0]
    card = json.loads(result.card.read_text())
    assert card["data"]["volumes_skipped"] == [str(ct_dir_with_bad / "broken.nii.gz")]
    assert card["data"]["volumes_listed"] == 3 and card["data"]["volumes_seen"] == 2
    assert result.steps_done == 4


# ----------------------------------------------------------------------------- objective
def test_the_three_losses_decrease_on_a_tiny_volume(ct_dir):
    # The centre is frozen here (momentum 1): centring deliberately raises the teacher's entropy, which is
    # part of the distillation cross-entropy, so with it on the raw loss may rise while the student learns.
    cfg = tiny(lr_per_sample=5e-4, freeze_last_layer_epochs=0, intensity_jitter=0.0, epochs=1, steps_per_epoch=30,
               center_momentum=1.0)
    trainer = Pretrainer(ct_dir, ct_dir.parent / "unused_decrease", cfg, device="cpu", progress=False,
                         echo=lambda s: None)
    batch = torch.utils.data.default_collate([trainer._loader(1).dataset[i] for i in range(2)])
    terms = [trainer.train_step(batch) for _ in range(25)]
    for key in ("rec", "cls", "patch"):
        first = np.mean([t[key] for t in terms[:3]])
        last = np.mean([t[key] for t in terms[-3:]])
        assert last < 0.9 * first, (key, first, last)
    assert float(trainer.loss_fn.center.abs().sum()) == 0.0


def test_centres_follow_the_teacher_outputs(ct_dir, tmp_path):
    trainer = Pretrainer(ct_dir, tmp_path / "c", tiny(), device="cpu", progress=False, echo=lambda s: None)
    batch = torch.utils.data.default_collate([trainer._loader(1).dataset[i] for i in range(2)])
    x = torch.cat([batch["views"][:, 0], batch["views"][:, 1]])
    with torch.no_grad():
        t_cls, t_patch, _ = trainer.teacher(x, None, reconstruct=False)
    trainer.train_step(batch)
    assert torch.allclose(trainer.loss_fn.center, 0.1 * t_cls.mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(trainer.loss_fn.center_patch, 0.1 * t_patch.mean((0, 1)).view(1, 1, -1), atol=1e-6)


def test_teacher_is_the_ema_of_the_student_and_gets_no_gradients(ct_dir, tmp_path):
    trainer = Pretrainer(ct_dir, tmp_path / "ema", tiny(), device="cpu", progress=False, echo=lambda s: None)
    batch = torch.utils.data.default_collate([trainer._loader(1).dataset[i] for i in range(2)])
    trainer.train_step(batch)  # step 0
    before = {k: v.clone() for k, v in trainer.teacher.named_parameters()}
    trainer.train_step(batch)  # step 1
    m = teacher_momentum(1, trainer.total_steps, 0.996)
    student = dict(trainer.student.named_parameters())
    for name, t in trainer.teacher.named_parameters():
        assert not t.requires_grad and t.grad is None
        assert torch.allclose(t, m * before[name] + (1 - m) * student[name].detach(), atol=1e-6), name
    assert not trainer.teacher.training
    assert [n for n, t in trainer.teacher.named_parameters() if not torch.equal(t, before[n])]  # it follows


# ----------------------------------------------------------------------------- resume
def test_continued_run_equals_uninterrupted_run(ct_dir, tmp_path):
    cfg = tiny(epochs=2, steps_per_epoch=3)
    full = Pretrainer(ct_dir, tmp_path / "full", cfg, device="cpu", progress=False, echo=lambda s: None)
    full.run()
    first = Pretrainer(ct_dir, tmp_path / "split", cfg, device="cpu", progress=False, echo=lambda s: None)
    stopped = first.run(max_steps=4)  # killed in the middle of epoch 2
    assert stopped.stopped_early and stopped.steps_done == 4
    del first
    second = Pretrainer(ct_dir, tmp_path / "split", tiny(epochs=2), device="cpu", resume=True, progress=False,
                        echo=lambda s: None)
    assert second.step == 4
    result = second.run()
    assert result.steps_done == 6 and not result.stopped_early
    for a, b in ((full.student, second.student), (full.teacher, second.teacher), (full.loss_fn, second.loss_fn)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert full.history == second.history
    assert full.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]
    card = json.loads((tmp_path / "split" / "card.json").read_text())
    assert card["epochs_done"] == 2 and card["steps_done"] == 6
    assert set(card["final_loss"]) >= {"rec", "cls", "patch", "total"}
    assert (tmp_path / "split" / "loss_curve.png").stat().st_size > 1000
    with pytest.raises(Exception, match="--continue"):
        Pretrainer(ct_dir, tmp_path / "split", cfg, device="cpu", progress=False)


def test_checkpoint_loads_with_weights_only(ct_dir, tmp_path):
    run_pretraining(ct_dir, tmp_path / "w", tiny(epochs=1, steps_per_epoch=1), device="cpu", progress=False,
                    echo=lambda s: None)
    ck = torch.load(tmp_path / "w" / "checkpoint.pt", weights_only=True)
    assert isinstance(ck["rng"][0]["cpu"], torch.Tensor) and ck["step"] == 1
    assert {"student", "teacher", "optimizer", "scheduler", "loss"} <= set(ck)


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("dims", [2, 3])
def test_encoder_loads_into_the_smit_trainer_network_with_every_key(ct_dir, tmp_path, dims):
    from sarco_nn.models.pretrained import load_pretrained_encoder
    from sarco_nn.models.smit import build_smit_for_plans

    encoder = None if dims == 2 else TINY_ENCODER  # 2D: the real Trans-Small the trainer builds
    cfg = tiny(dims=dims, encoder=encoder, epochs=1, steps_per_epoch=1, batch_size=1)
    trainer = Pretrainer(ct_dir, tmp_path / "exp", cfg, device="cpu", progress=False, echo=lambda s: None)
    trainer.run()
    net = build_smit_for_plans(1, 2, [32] * dims, deep_supervision=False, config=cfg.smit_config())
    report = load_pretrained_encoder(net, tmp_path / "exp" / "encoder.pt", min_fraction=1.0)
    assert report.missing == [] and report.shape_mismatched == []
    assert len(report.matched) == report.total == len(net.encoder.state_dict())
    trained = trainer.student.encoder.state_dict()
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, trained[k]), k


def test_cli_command_runs_and_refuses_continue_without_checkpoint(ct_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from sarco_nn.commands.pretrain_cmd import pretrain

    app = typer.Typer()
    app.command()(pretrain)
    runner = CliRunner()
    res = runner.invoke(app, [str(ct_dir), "-o", str(tmp_path / "cli"), "--continue", "--device", "cpu"])
    assert res.exit_code != 0 and "nothing to continue" in str(res.exception)
    res = runner.invoke(app, [str(ct_dir), "-o", str(tmp_path / "cli"), "--epochs", "1", "--steps-per-epoch", "1",
                              "--batch-size", "1", "--crop-size", "32", "--spacing", "6", "--out-dim", "32",
                              "--patch-out-dim", "32", "--device", "cpu", "--no-progress", "--min-body-area", "100"])
    assert res.exit_code == 0, res.output
    assert "applied 0.750" in res.output
    assert (tmp_path / "cli" / "encoder.pt").is_file() and (tmp_path / "cli" / "card.json").is_file()


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_real_dicom_series_folder_and_label_maps_in_an_archive():
    from sarco_nn.errors import InputError
    from sarco_nn.pretraining.data import prepare_volume

    found = discover_volumes(SHARED / "totalsegmentator")
    names = {p.name for p in found}
    assert "example_ct_dicom" in names and "example_ct.nii.gz" in names
    vol = prepare_volume(SHARED / "totalsegmentator" / "example_ct_dicom", 2, 1.5, 250.0)
    assert vol.array.shape[0] == 20 and 0.0 <= vol.array.min() and vol.array.max() <= 1.0
    with pytest.raises(InputError):  # a segmentation lying beside the CTs is not learned from
        prepare_volume(SHARED / "totalsegmentator" / "example_seg.nii.gz", 2, 1.5, 250.0)


def test_pretraining_encoder_can_follow_a_preset_and_bad_settings_fail_at_once():
    from sarco_nn.presets import load_preset, training_settings

    network = training_settings(load_preset("cpu"), "smit")["network"]
    assert PretrainConfig(encoder=network).smit_config().embed_dim == network["embed_dim"]
    assert PretrainConfig().smit_config().embed_dim == 48  # no preset: the official Trans-Small
    with pytest.raises(ValueError, match="unknown SMIT network setting"):
        PretrainConfig(encoder={"embed": 24})


def test_a_presets_pretraining_section_fills_only_what_the_user_left_out(tmp_path, monkeypatch):
    """A preset's `pretraining` section (the recipe measured to work at its scale) replaces the
    official defaults; an option typed on the command line still wins; an option left out is not
    sent as its official value (which would silently undo the preset)."""
    import typer
    from typer.testing import CliRunner

    import sarco_nn.pretraining.trainer as trainer_module
    from sarco_nn import api
    from sarco_nn.commands.pretrain_cmd import pretrain
    from sarco_nn.errors import SarcoError
    from sarco_nn.presets import load_preset, pretraining_defaults

    preset = dict(load_preset("smoke"), name="mine", pretraining={"cls_weight": 0.0, "patch_weight": 0.0, "epochs": 3})
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    seen = []
    monkeypatch.setattr(trainer_module, "run_pretraining", lambda data, out, cfg, **kw: seen.append(cfg) or "done")
    assert api.pretrain(tmp_path, preset=str(path), settings={"epochs": 5}) == "done"
    assert (seen[-1].cls_weight, seen[-1].patch_weight, seen[-1].epochs) == (0.0, 0.0, 5)
    assert seen[-1].encoder == load_preset("smoke")["trainer_overrides"]["smit"].get("network")
    api.pretrain(tmp_path)  # no preset: the official recipe
    assert (seen[-1].cls_weight, seen[-1].epochs) == (PretrainConfig().cls_weight, PretrainConfig().epochs)

    calls = []
    monkeypatch.setattr(api, "pretrain", lambda *a, **kw: calls.append(kw) or SimpleResult())
    app = typer.Typer()
    app.command()(pretrain)
    res = CliRunner().invoke(app, [str(tmp_path), "-p", str(path), "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert calls[-1]["settings"] is None  # nothing typed: the preset's section, then the official values
    CliRunner().invoke(app, [str(tmp_path), "-p", str(path), "--cls-weight", "0.1", "--spacing", "1.5"])
    assert calls[-1]["settings"] == {"cls_weight": 0.1, "spacing_mm": 1.5}

    for bad in ({"clsweight": 0}, {"encoder": {}}, [1]):
        with pytest.raises(SarcoError, match="pretraining"):
            pretraining_defaults({"name": "x", "pretraining": bad})


class SimpleResult:
    stopped_early, steps_done, epochs_done, encoder = False, 0, 0, Path("e.pt")


def test_the_cpu_preset_pretrains_with_masked_image_modelling_only(tmp_path, monkeypatch):
    """`sarco pretrain -p cpu` uses the recipe the CPU ablation kept (both distillation weights 0);
    the default preset keeps the official SMIT losses; a typed weight still wins."""
    import sarco_nn.pretraining.trainer as trainer_module
    from sarco_nn import api

    seen = []
    monkeypatch.setattr(trainer_module, "run_pretraining", lambda data, out, cfg, **kw: seen.append(cfg))
    api.pretrain(tmp_path, preset="cpu")
    assert (seen[-1].cls_weight, seen[-1].patch_weight, seen[-1].rec_weight) == (0.0, 0.0, 1.0)
    assert not seen[-1].distills
    api.pretrain(tmp_path, preset="default")
    assert (seen[-1].cls_weight, seen[-1].patch_weight) == (PretrainConfig().cls_weight, PretrainConfig().patch_weight)
    api.pretrain(tmp_path, preset="cpu", settings={"cls_weight": 0.1})
    assert (seen[-1].cls_weight, seen[-1].patch_weight) == (0.1, 0.0)


def test_pretraining_for_a_four_tissue_model_gets_the_network_the_planner_gives_it(tmp_path, monkeypatch):
    """`sarco pretrain -p cpu --tissues 4`: the encoder of the wider network a four-tissue cpu plan trains
    (presets.preset_for_dataset), so `train --pretrained` matches every key; without it, the muscle-only one."""
    import sarco_nn.pretraining.trainer as trainer_module
    from sarco_nn import api
    from sarco_nn.errors import SarcoError
    from sarco_nn.presets import load_preset, preset_for_dataset, smit_network_config

    seen = []
    monkeypatch.setattr(trainer_module, "run_pretraining", lambda data, out, cfg, **kw: seen.append(cfg))
    api.pretrain(tmp_path, preset="cpu", tissues=4)
    assert seen[-1].encoder["embed_dim"] == smit_network_config(preset_for_dataset(load_preset("cpu"), 4)).embed_dim
    assert seen[-1].encoder["embed_dim"] != smit_network_config(load_preset("cpu")).embed_dim
    api.pretrain(tmp_path, preset="cpu")
    assert seen[-1].encoder == load_preset("cpu")["trainer_overrides"]["smit"]["network"]
    with pytest.raises(SarcoError, match="tissues must be at least 1, got 0"):
        api.pretrain(tmp_path, preset="cpu", tissues=0)
