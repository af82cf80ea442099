"""Pretrained SMIT weights: official key layout, 3D->2D adaptation, orientation, refusals, report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sarco_nn.errors import InputError, SarcoError
from sarco_nn.models.pretrained import (
    ENCODER_FORMAT,
    REPORT_NAME,
    axis_mapping,
    export_encoder,
    load_pretrained_encoder,
    map_to_encoder_keys,
    network_axes,
    ours_to_official,
    read_checkpoint_state_dict,
    reorient,
    write_load_report,
)
from sarco_nn.models.smit import SMITConfig, SMITEncoder, SMITSegNet

TINY = SMITConfig(embed_dim=12, drop_path=0.0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random (norm affines included) so a wrong mapping changes the output."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return module.eval()


def _official_state(encoder: SMITEncoder, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """What the official `pre_train_weight.pt` holds: transformer keys, `module.` prefixed, plus SSL extras."""
    state = {f"{prefix}{ours_to_official(k)}": v.clone() for k, v in encoder.state_dict().items()}
    state[f"{prefix}mask_token"] = torch.zeros(1, 1, encoder.config.embed_dim)  # student-only SSL tensor
    return state


def test_official_names_map_to_monai_names():
    assert ours_to_official("layers3.0.blocks.1.mlp.linear1.weight") == "layers.2.blocks.1.mlp.fc1.weight"
    assert ours_to_official("layers1.0.downsample.reduction.weight") == "layers.0.downsample.reduction.weight"
    assert ours_to_official("norm2.bias") == "norm2.bias"
    enc = SMITEncoder(1, 3, TINY)
    mapped = map_to_encoder_keys(_official_state(enc))
    assert set(mapped) == set(enc.state_dict())  # 1:1, mask_token dropped
    # wrapped the way the official SSL script saves it, and DINO-style student/teacher
    mapped2 = map_to_encoder_keys({f"transformer.{ours_to_official(k)}": v for k, v in enc.state_dict().items()})
    assert set(mapped2) == set(enc.state_dict())
    both = {**{f"module.student.{ours_to_official(k)}": v for k, v in enc.state_dict().items()},
            **{f"module.teacher.{ours_to_official(k)}": v + 1 for k, v in enc.state_dict().items()}}
    taken = map_to_encoder_keys(both)
    assert torch.equal(taken["norm0.weight"], enc.state_dict()["norm0.weight"])  # the student, not the teacher


def test_official_3d_checkpoint_loads_fully_and_computes_the_same_function(tmp_path):
    src = _randomise(SMITEncoder(1, 3, TINY))
    path = tmp_path / "pre_train_weight.pt"
    torch.save(_official_state(src), path)

    net = SMITSegNet(1, 2, 3, TINY).eval()
    report = load_pretrained_encoder(net, path)
    assert report.fraction_matched == 1.0
    assert not report.missing and not report.shape_mismatched
    assert report.unexpected == ["module.mask_token"]
    assert (report.source_axes, report.target_axes) == ("RAS", "SPL")
    assert "layers1.0.blocks.0.attn.relative_position_bias_table" in report.adapted  # reoriented
    assert "layers1.0.blocks.0.attn.qkv.weight" not in report.adapted  # axis-free tensors load as is
    assert len(report.sha256) == 64 and "100.0 %" in report.summary_line()

    # official weights see (x=R, y=A, z=S) arrays; ours see (z=S, y=P, x=L): same function after reorientation
    amap = axis_mapping("RAS", "SPL")
    image = torch.randn(1, 1, 64, 128, 32)  # unequal sizes catch a wrong permutation; flipped axes (R, A)
    # are multiples of 64 so no stage pads them at one end (end-padding is not flip-symmetric)
    with torch.no_grad():
        skips_src, bottom_src = src(image)
        skips_net, bottom_net = net.encoder(reorient(image, amap))
    for a, b in zip(skips_src + [bottom_src], skips_net + [bottom_net]):
        torch.testing.assert_close(reorient(a, amap), b, atol=1e-4, rtol=1e-4)


def test_official_3d_weights_into_2d_network_are_adapted(tmp_path):
    src = _randomise(SMITEncoder(1, 3, TINY))
    path = tmp_path / "official.pth"
    torch.save({"epoch": 1, "state_dict": {k[len("module."):]: v for k, v in _official_state(src).items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)
    net = SMITSegNet(1, 2, 2, TINY)
    report = load_pretrained_encoder(net, path)
    assert report.fraction_matched == 1.0 and not report.missing and not report.shape_mismatched
    assert (report.source_dims, report.target_dims, report.target_axes) == (3, 2, "PL")
    for key in ("patch_embed.proj.weight", "layers2.0.blocks.1.attn.relative_position_bias_table",
                "layers2.0.blocks.1.attn.relative_position_index", "layers1.0.downsample.reduction.weight",
                "layers1.0.downsample.norm.weight"):
        assert key in report.adapted
    # patch kernel: summed over the slice axis S (official axis 2), then (R, A) -> (P, L) = reversed + flipped
    k3 = src.patch_embed.proj.weight.detach()  # (C, 1, R, A, S)
    expected = k3.sum(dim=4).permute(0, 1, 3, 2).flip(2, 3)
    torch.testing.assert_close(net.encoder.patch_embed.proj.weight.detach(), expected)
    # bias table: the dz = 0 plane of the 7x7x7 table
    t3 = src.layers1[0].blocks[0].attn.relative_position_bias_table.detach().reshape(7, 7, 7, -1)
    t2 = net.encoder.layers1[0].blocks[0].attn.relative_position_bias_table.detach().reshape(7, 7, -1)
    torch.testing.assert_close(t2, t3[:, :, 3].permute(1, 0, 2).flip(0, 1))
    # the regenerated 2D index buffer is MONAI's own 2D index (shape 16x16)
    assert net.encoder.layers1[0].blocks[0].attn.relative_position_index.shape == (16, 16)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_2d_patch_embedding_equals_3d_embedding_of_repeated_slice(tmp_path):
    """Why the depth SUM: a slice repeated along depth gets exactly the pretrained 3D embedding."""
    net3 = SMITSegNet(1, 2, 3, TINY)
    _randomise(net3.encoder)
    path = tmp_path / "encoder3d.pt"
    export_encoder(net3, path, dims=3)
    net2 = SMITSegNet(1, 2, 2, TINY)
    report = load_pretrained_encoder(net2, path)
    assert (report.source_axes, report.target_axes) == ("SPL", "PL")
    torch.testing.assert_close(net2.encoder.patch_embed.proj.weight, net3.encoder.patch_embed.proj.weight.sum(2))
    slice_ = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        e2 = net2.encoder.patch_embed(slice_)
        e3 = net3.encoder.patch_embed(slice_.unsqueeze(2).repeat(1, 1, 2, 1, 1))
    torch.testing.assert_close(e2, e3[:, :, 0], atol=1e-5, rtol=1e-5)


def test_export_then_load_round_trip_is_exact(tmp_path):
    a = SMITSegNet(1, 2, 2, TINY)
    _randomise(a.encoder)
    path = tmp_path / "encoder.pt"
    export_encoder(a, path, dims=2)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == ENCODER_FORMAT and raw["dims"] == 2 and raw["axes"] == network_axes(2) == "PL"
    assert "layers.0.blocks.0.mlp.fc1.weight" in raw["encoder"]  # official names on disk
    b = SMITSegNet(1, 2, 2, TINY)
    report = load_pretrained_encoder(b, path)
    assert report.fraction_matched == 1.0 and not report.adapted and not report.unexpected
    for k, v in a.encoder.state_dict().items():
        assert torch.equal(v, b.encoder.state_dict()[k]), k
    # the report file
    out = write_load_report(report, tmp_path / "fold_0")
    assert out.name == REPORT_NAME
    data = json.loads(out.read_text())
    assert data["fraction_matched"] == 1.0 and data["source"].endswith("encoder.pt") and len(data["matched"]) == data["total"]
    assert not list((tmp_path / "fold_0").glob("*.tmp"))
    # the same weights exported twice, under other names, are the same bytes: the file's SHA-256
    # (cards, load reports, the ablation's restore check) identifies the weights
    again = tmp_path / "elsewhere" / "copy.pt"
    again.parent.mkdir()
    export_encoder(a, again, dims=2)
    assert again.read_bytes() == path.read_bytes()


def test_nnunet_checkpoint_of_a_trained_smit_network_loads(tmp_path):
    a = SMITSegNet(1, 2, 2, TINY)
    _randomise(a)
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": a.state_dict(), "trainer_name": "x", "current_epoch": 3}, path)
    b = SMITSegNet(1, 2, 2, TINY)
    report = load_pretrained_encoder(b, path)
    assert report.fraction_matched == 1.0 and not report.adapted
    assert all(k.startswith("decoder.") for k in report.unexpected) and report.unexpected
    torch.testing.assert_close(b.encoder.norm3.weight, a.encoder.norm3.weight)


# ----------------------------------------------------------------------------- refusals
def _valid_file(tmp_path: Path) -> Path:
    path = tmp_path / "valid.pt"
    torch.save(_official_state(SMITEncoder(1, 3, TINY)), path)
    return path


def _assert_one_line(exc: BaseException, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg and str(path.name) in msg


def test_corrupted_bytes_refused(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(InputError) as err:
        load_pretrained_encoder(SMITSegNet(1, 2, 3, TINY), path)
    _assert_one_line(err.value, path)
    assert "corrupt" in str(err.value)


def test_truncated_file_refused(tmp_path):
    path = _valid_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_checkpoint_state_dict(path)
    _assert_one_line(err.value, path)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CustomThing:
    def __init__(self):
        self.x = 1


def test_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"patch_embed.proj.weight": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(InputError) as err:
        load_pretrained_encoder(SMITSegNet(1, 2, 3, TINY), path)
    assert not marker.exists()
    _assert_one_line(err.value, path)
    assert "pickled Python objects" in str(err.value) and "system" in str(err.value)


def test_pickled_custom_class_is_refused(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": CustomThing()}, path)
    with pytest.raises(InputError, match="pickled Python objects"):
        read_checkpoint_state_dict(path)


def test_non_checkpoint_and_missing_files_refused(tmp_path):
    path = tmp_path / "numbers.pt"
    torch.save({"a": [1, 2, 3]}, path)
    with pytest.raises(InputError, match="no tensors"):
        read_checkpoint_state_dict(path)
    with pytest.raises(InputError, match="not found"):
        read_checkpoint_state_dict(tmp_path / "absent.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_checkpoint_state_dict(tmp_path / "empty.pt")


def test_mismatched_architecture_refused(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(_official_state(SMITEncoder(1, 3, SMITConfig(embed_dim=24))), path)
    net = SMITSegNet(1, 2, 3, TINY)
    before = net.encoder.patch_embed.proj.weight.detach().clone()
    with pytest.raises(SarcoError) as err:
        load_pretrained_encoder(net, path)
    assert "shape-mismatched" in str(err.value) and "\n" not in str(err.value)
    assert torch.equal(before, net.encoder.patch_embed.proj.weight)  # nothing half-loaded


def test_partial_checkpoint_below_threshold_refused(tmp_path):
    state = _official_state(SMITEncoder(1, 3, TINY))
    keys = [k for k in state if "layers.2." in k or "layers.3." in k]  # drop the deep stages
    for k in keys:
        del state[k]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    net = SMITSegNet(1, 2, 3, TINY)
    with pytest.raises(SarcoError, match="below the required 90 %"):
        load_pretrained_encoder(net, path)
    report = load_pretrained_encoder(net, path, min_fraction=0.3)  # explicit opt-in loads and says so
    assert report.missing and 0.3 < report.fraction_matched < 0.9


def test_unrelated_state_dict_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).state_dict(), path)
    with pytest.raises(SarcoError, match=r"0/\d+ encoder tensors matched|below the required"):
        load_pretrained_encoder(SMITSegNet(1, 2, 2, TINY), path)


def test_2d_weights_cannot_initialise_3d(tmp_path):
    path = tmp_path / "enc2d.pt"
    export_encoder(SMITSegNet(1, 2, 2, TINY), path, dims=2)
    with pytest.raises(SarcoError, match="2D encoder weights cannot initialise a 3D network"):
        load_pretrained_encoder(SMITSegNet(1, 2, 3, TINY), path)


def test_safetensors_file_loads(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    enc = SMITEncoder(1, 2, TINY)
    path = tmp_path / "enc.safetensors"
    safetensors.save_file({ours_to_official(k): v.contiguous() for k, v in enc.state_dict().items()}, str(path))
    report = load_pretrained_encoder(SMITSegNet(1, 2, 2, TINY), path)
    assert report.fraction_matched == 1.0


# ----------------------------------------------------------------------------- command
def test_check_weights_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from sarco_nn.commands.check_weights_cmd import check_weights

    app = typer.Typer()
    app.command()(check_weights)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    path = tmp_path / "trans_small.pt"
    export_encoder(SMITEncoder(1, 2), path, dims=2)  # the real Trans-Small
    runner = CliRunner()
    ok = runner.invoke(app, ["check-weights", str(path), "--dims", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["loadable"] and data["fraction_matched"] == 1.0
    text = runner.invoke(app, ["check-weights", str(path), "--dims", "2"])
    assert text.exit_code == 0 and "100.0 %" in text.stdout
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(app, ["check-weights", str(bad), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["loadable"] is False
    tiny = tmp_path / "tiny.pt"
    export_encoder(SMITEncoder(1, 3, TINY), tiny, dims=3)
    res = runner.invoke(app, ["check-weights", str(tiny), "--dims", "3", "--preset", "default"])
    assert res.exit_code == 1  # a smaller network's encoder does not load into the default preset's Trans-Small


def test_transposed_2d_weights_give_the_transposed_function_on_small_maps(tmp_path):
    """A (4, 2) deepest stage: windows are padded, not shrunk, so biases stay right under transposition."""
    a = _randomise(SMITEncoder(1, 2, TINY))
    path = tmp_path / "enc.pt"
    export_encoder(a, path, dims=2)
    b = SMITEncoder(1, 2, TINY).eval()
    report = load_pretrained_encoder(b, path, source_axes="LP")  # claim the file was (x, y)
    assert "patch_embed.proj.weight" in report.adapted
    x = torch.randn(1, 1, 64, 32)
    with torch.no_grad():
        sa, ba = a(x)
        sb, bb = b(x.transpose(2, 3))
    for u, v in zip(sa + [ba], sb + [bb]):
        torch.testing.assert_close(u.transpose(2, 3), v, atol=1e-4, rtol=1e-4)


def test_a_zip_bomb_checkpoint_is_refused_before_it_is_unpacked(tmp_path):
    """A 1.5 MB archive that unpacks to GBs once made check-weights use 4 GB before refusing (#14)."""
    import zipfile

    from sarco_nn.errors import InputError
    from sarco_nn.models.pretrained import read_checkpoint_state_dict

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (300 << 20))  # 300 MiB of zeros: ~300 KiB packed
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(InputError, match="zip bomb"):
        read_checkpoint_state_dict(bomb)


def test_a_trained_sarco_checkpoint_is_read_as_weights_not_refused_as_pickled_code(tmp_path):
    """nnU-Net checkpoints carry numpy scalars in their logs: read with the allow-list, still weights_only."""
    import numpy as np

    from sarco_nn.models.pretrained import read_checkpoint_state_dict

    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"encoder.patch_embed.proj.weight": torch.ones(2, 1, 2, 2)},
                "logging": {"mean_fg_dice": [np.float64(0.5)]}, "init_args": {"configuration": "2d"}}, path)
    state = read_checkpoint_state_dict(path)
    assert list(state) == ["encoder.patch_embed.proj.weight"]
