"""SMITSegNet: shapes in 2D/3D for plan patch sizes, deep supervision, odd sizes, size rounding."""

from __future__ import annotations

import pytest
import torch

from sarco_nn.models.smit import (
    TRANS_SMALL,
    SMITConfig,
    SMITSegNet,
    build_smit_for_plans,
    count_parameters,
)

TINY = SMITConfig(embed_dim=12, drop_path=0.0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _forward_backward(net: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(*shape, requires_grad=False)
    out = net(x)
    first = out[0] if isinstance(out, list) else out
    first.float().mean().backward()
    return out


@pytest.mark.parametrize("size", [(64, 64), (96, 128), (70, 90)])
def test_2d_shapes_and_gradients(size):
    net = SMITSegNet(in_channels=1, num_classes=3, spatial_dims=2, config=TINY)
    out = _forward_backward(net, (2, 1, *size))
    assert out.shape == (2, 3, *size)
    # gradients reach the first encoder layer and the last decoder layer
    assert net.encoder.patch_embed.proj.weight.grad is not None
    assert net.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert net.decoder.head.conv.conv.weight.grad.abs().sum() > 0


def test_2d_256_trans_small_shape():
    net = SMITSegNet(in_channels=1, num_classes=2, spatial_dims=2)  # the real Trans-Small
    out = _forward_backward(net, (1, 1, 256, 256))
    assert out.shape == (1, 2, 256, 256)


@pytest.mark.parametrize("size", [(32, 32, 32), (64, 64, 32)])
def test_3d_shapes_and_gradients(size):
    net = SMITSegNet(in_channels=2, num_classes=2, spatial_dims=3, config=TINY)
    out = _forward_backward(net, (1, 2, *size))
    assert out.shape == (1, 2, *size)
    assert net.encoder.layers4[0].blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_deep_supervision_outputs_highest_resolution_first():
    net = SMITSegNet(1, 2, 2, TINY, deep_supervision=True)
    out = _forward_backward(net, (2, 1, 64, 96))
    assert isinstance(out, list) and len(out) == 5
    assert [tuple(o.shape[2:]) for o in out] == [(64, 96), (32, 48), (16, 24), (8, 12), (4, 6)]
    assert net.deep_supervision_scales == [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25], [0.125, 0.125], [0.0625, 0.0625]]
    # scales agree with the shapes actually produced
    for o, scale in zip(out, net.deep_supervision_scales):
        assert tuple(o.shape[2:]) == (round(64 * scale[0]), round(96 * scale[1]))
    net.set_deep_supervision(False)
    assert isinstance(net(torch.zeros(1, 1, 64, 64)), torch.Tensor)
    net.decoder.deep_supervision = True  # the attribute nnU-Net's set_deep_supervision_enabled sets
    assert isinstance(net(torch.zeros(1, 1, 64, 64)), list)


def test_deep_supervision_odd_input_3d_crops_every_output():
    net = SMITSegNet(1, 2, 3, TINY, deep_supervision=True).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 33, 40, 20))
    assert [tuple(o.shape[2:]) for o in out] == [(33, 40, 20), (17, 20, 10), (9, 10, 5), (5, 5, 3), (3, 3, 2)]


def test_padding_does_not_leak_into_valid_region_scale():
    """An odd input is padded and cropped: logits are finite and of the input size."""
    net = SMITSegNet(1, 2, 2, TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 70, 90))
    assert out.shape == (1, 2, 70, 90) and torch.isfinite(out).all()


def test_size_divisor_follows_patch_and_stages():
    """What the planner rounds plan patches to (`planning.py`): patch size x 2 per stage."""
    assert TINY.size_divisor == 32 and SMITConfig().size_divisor == 32
    assert SMITConfig(patch_size=4).size_divisor == 64


def test_build_for_plans_picks_dimensionality():
    net2 = build_smit_for_plans(1, 2, (64, 64), deep_supervision=True, config=TINY)
    net3 = build_smit_for_plans(1, 2, (32, 32, 32), deep_supervision=False, config=TINY)
    assert net2.spatial_dims == 2 and net2.decoder.deep_supervision
    assert net3.spatial_dims == 3 and not net3.decoder.deep_supervision


def test_trans_small_is_the_official_encoder():
    cfg = TRANS_SMALL
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size, cfg.patch_size, cfg.qkv_bias) == (
        48, (2, 2, 4, 2), (4, 4, 4, 4), 4, 2, False)
    net = SMITSegNet(1, 2, 3)
    enc = net.encoder.state_dict()
    # official shapes: 2x2x2 patch conv, 7^3 bias tables, 8C -> 2C merging, stage norms, no qkv bias
    assert enc["patch_embed.proj.weight"].shape == (48, 1, 2, 2, 2)
    assert enc["layers1.0.blocks.0.attn.relative_position_bias_table"].shape == (343, 4)
    assert enc["layers4.0.downsample.reduction.weight"].shape == (768, 8 * 384)
    assert enc["norm3.weight"].shape == (384,)
    assert not any(k.endswith("qkv.bias") for k in enc)
    n_enc = count_parameters(net.encoder)
    assert 8_000_000 < n_enc < 9_500_000, n_enc
    assert 20_000_000 < count_parameters(net) < 35_000_000


def test_rejects_bad_configs():
    with pytest.raises(ValueError):
        SMITConfig(depths=(2, 2, 2))
    with pytest.raises(ValueError):
        SMITConfig(embed_dim=10, num_heads=(4, 4, 4, 4))
    with pytest.raises(ValueError):
        SMITSegNet(1, 2, 4, TINY)


def test_config_from_preset_values():
    from sarco_nn.models.smit import SMITConfig

    assert SMITConfig.from_dict(None) == SMITConfig() == SMITConfig.from_dict({})
    tiny = SMITConfig.from_dict({"embed_dim": 24, "num_heads": [2, 2, 2, 2]})
    assert tiny.embed_dim == 24 and tiny.num_heads == (2, 2, 2, 2) and tiny.size_divisor == 32
    with pytest.raises(ValueError, match="embed_dims"):
        SMITConfig.from_dict({"embed_dims": 24})  # a typo must not train the default network


def test_smit_trainer_builds_the_network_the_preset_names():
    from sarco_nn.models.smit import count_parameters
    from sarco_nn.training.trainers import SarcoSMITTrainer

    tiny = {"sarco": {"preset": {"trainer_overrides": {"smit": {"network": {"embed_dim": 24, "num_heads": [2, 2, 2, 2]}}}}}}
    assert SarcoSMITTrainer.network_config(tiny).embed_dim == 24
    assert SarcoSMITTrainer.network_config({}).embed_dim == 48  # no preset: Trans-Small
    small = SMITSegNet(1, 2, 2, SarcoSMITTrainer.network_config(tiny))
    assert count_parameters(small) < count_parameters(SMITSegNet(1, 2, 2)) / 3


def test_cpu_bf16_autocast_hooks_run_forward_in_bf16_and_return_float32():
    from sarco_nn.training.cpu_autocast import attach_cpu_bf16_autocast

    inner_dtypes = []
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net[0].register_forward_hook(lambda m, a, out: inner_dtypes.append(out.dtype))
    handles = attach_cpu_bf16_autocast(net)
    out = net(torch.randn(4, 8))
    assert inner_dtypes == [torch.bfloat16] and out.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks into the loss or the optimizer step
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    with pytest.raises(RuntimeError):
        net(torch.randn(4, 3))  # a failing forward must still leave autocast off
    assert not torch.is_autocast_enabled("cpu")
    for h in handles:
        h.remove()
    assert net(torch.randn(4, 8)).dtype == torch.float32 and inner_dtypes[-1] == torch.float32


def test_stage_forward_is_monais_basiclayer_and_its_merging_sees_channels_last_tokens(monkeypatch):
    """The contract `_run_stage` relies on, checked against the installed MONAI: each stage runs
    MONAI's own public `BasicLayer.forward`, which hands the merging module the blocks' output as
    (B, *S, C) tokens; the skip is exactly the stage norm of those tokens."""
    import inspect

    from monai.networks.nets.swin_unetr import BasicLayer

    from sarco_nn.models.smit import SMITEncoder

    calls: list[tuple[int, ...]] = []
    original = BasicLayer.forward

    def counting(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(BasicLayer, "forward", counting)
    encoder = SMITEncoder(1, 2, TINY).eval()
    seen = []
    encoder.layers1[0].downsample.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    with torch.no_grad():
        skips, bottleneck = encoder(torch.randn(1, 1, 64, 96))
    assert len(calls) == 4  # one MONAI forward per stage, none re-implemented
    assert seen[0].shape == (1, 32, 48, TINY.embed_dim)  # channels-last tokens at S / patch
    assert torch.allclose(skips[0], encoder.norm0(seen[0]).movedim(-1, 1))
    assert bottleneck.shape == (1, TINY.embed_dim * 16, 2, 3)
    assert "normalize" not in inspect.signature(SMITEncoder.forward).parameters


def test_installed_monai_is_in_the_tested_range():
    """`_run_stage` uses only MONAI's public BasicLayer/SwinTransformer; pyproject pins monai to the
    range tested here (a new major may move the merging call and break the skip capture)."""
    import monai
    from packaging.version import Version

    assert Version("1.4") <= Version(monai.__version__.split("+")[0]) < Version("1.7")


def test_freeze_encoder_epochs_keeps_the_encoder_fixed_then_trains_it(monkeypatch):
    """Preset field `freeze_encoder_epochs` (#20 recipe lever): AdamW leaves the encoder as it is for
    the first K epochs, while the decoder learns; from epoch K on the encoder learns too."""
    import torch

    from sarco_nn.training import trainers

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 3)
            self.decoder = torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.decoder(self.encoder(x))

    for base in trainers.SarcoSMITTrainer.__mro__[1:]:
        if "on_train_epoch_start" in vars(base):
            monkeypatch.setattr(base, "on_train_epoch_start", lambda self: None)
    trainer = trainers.SarcoSMITTrainer.__new__(trainers.SarcoSMITTrainer)
    net = Net()
    trainer.network, trainer.is_ddp, trainer.freeze_encoder_epochs, trainer.layer_decay = net, False, 2, 1.0
    optimizer = torch.optim.AdamW([g["params"] for g in trainer._param_groups()][0], lr=0.1)

    def step(epoch):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        before = {k: v.detach().clone() for k, v in net.state_dict().items()}
        optimizer.zero_grad(set_to_none=True)
        net(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        return {k: not torch.equal(before[k], v) for k, v in net.state_dict().items()}

    for epoch in (0, 1):
        changed = step(epoch)
        assert not changed["encoder.weight"] and changed["decoder.weight"]
    changed = step(2)
    assert changed["encoder.weight"] and changed["decoder.weight"]
