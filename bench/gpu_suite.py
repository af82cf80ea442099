"""One table of GPU speed for the `default` path (run by bench/gpu_suite.sh; see its header).

Rows (each a median over timed iterations after warm-up, synthetic data, random weights):
  * SMIT Trans-Small training iteration at the default plan's 2-D patch (fp16 + GradScaler, bf16):
    forward + Dice/CE loss + backward + AdamW, what SarcoSMITTrainer runs per iteration;
  * nnU-Net's default 2-D U-Net (PlainConvUNet as nnU-Net plans it for the patch, deep supervision,
    SGD, fp16) - nnU-Net's own trainer iteration;
  * SMIT pretraining step, 2-D and 3-D: student + EMA teacher + heads + the three losses, with the
    components `sarco pretrain` uses (official crop 96^3 in 3-D, batch 6 -> 12 views);
  * prediction s/case: the network work of `sarco predict` with the 5-fold ensemble and mirroring
    (5 folds x (1 + mirror axes) forward passes of one slice-sized tile), not reading or writing;
  * peak GPU memory of each row.
Needs torch; SMIT rows need MONAI, the U-Net row dynamic_network_architectures: a missing package
turns its rows into "needs X" instead of failing the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> tuple[float, float | None]:
    """Median seconds per call and peak memory (GiB, CUDA only) of `step`."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def _dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's default loss in its simplest form: soft Dice (foreground) + cross-entropy."""
    ce = nn.functional.cross_entropy(logits.float(), target)
    prob = logits.float().softmax(1)[:, 1]
    fg = (target == 1).float()
    dice = (2 * (prob * fg).sum() + 1e-5) / (prob.sum() + fg.sum() + 1e-5)
    return ce + 1 - dice


def _autocast(device: torch.device, precision: str):
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _segmentation_step(net: nn.Module, optimizer, x, target, device, precision: str, deep_supervision: bool):
    """One nnU-Net-style training iteration; fp16 with a GradScaler, bf16 without (as nnU-Net/torch do)."""
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            out = net(x)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        loss = 0.0
        for i, o in enumerate(outputs if deep_supervision else outputs[:1]):
            t = target if o.shape[2:] == target.shape[1:] else nn.functional.interpolate(
                target[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long()
            loss = loss + _dice_ce(o, t) / 2**i
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()

    return step


def smit_rows(args, device) -> list[dict]:
    from sarco_nn.models.smit import SMITSegNet
    from sarco_nn.presets import load_preset, smit_network_config

    config = smit_network_config(load_preset("default"))
    rows = []
    x = torch.randn(args.batch, 1, args.patch, args.patch, device=device)
    target = (torch.rand(args.batch, args.patch, args.patch, device=device) > 0.7).long()
    for precision in args.precisions:
        torch.manual_seed(0)
        net = SMITSegNet(1, 2, 2, config, deep_supervision=False).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
        s, peak = _timed(_segmentation_step(net, opt, x, target, device, precision, False), device, args.warmup, args.iters)
        rows.append({"what": f"SMIT Trans-Small train iteration ({precision}, {args.patch}², batch {args.batch})",
                     "seconds": s, "unit": "s/iteration", "peak_gib": peak})
        del net, opt
    return rows


def unet_rows(args, device) -> list[dict]:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    n_stages = 1
    while args.patch // 2**n_stages >= 4 and n_stages < 8:
        n_stages += 1
    features = [min(32 * 2**i, 512) for i in range(n_stages)]
    net = PlainConvUNet(1, n_stages, features, nn.Conv2d, 3, [1] + [2] * (n_stages - 1), 2, 2, 2, conv_bias=True,
                        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True).to(device)
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    x = torch.randn(args.batch, 1, args.patch, args.patch, device=device)
    target = (torch.rand(args.batch, args.patch, args.patch, device=device) > 0.7).long()
    precision = "fp16" if device.type == "cuda" else "fp32"  # nnU-Net: fp16 autocast on CUDA only
    s, peak = _timed(_segmentation_step(net, opt, x, target, device, precision, True), device, args.warmup, args.iters)
    return [{"what": f"nnU-Net default U-Net train iteration ({precision}, {n_stages} stages, {args.patch}², "
                     f"batch {args.batch})", "seconds": s, "unit": "s/iteration", "peak_gib": peak}]


def pretrain_rows(args, device) -> list[dict]:
    from sarco_nn.models.smit import TRANS_SMALL
    from sarco_nn.pretraining.config import PretrainConfig
    from sarco_nn.pretraining.ema import ema_update, make_teacher
    from sarco_nn.pretraining.losses import SelfDistillationLoss, masked_l1
    from sarco_nn.pretraining.masking import mask_at_stride, random_block_mask
    from sarco_nn.pretraining.model import PretrainNetwork
    import numpy as np

    cfg = PretrainConfig()  # the official defaults
    out_dim = args.head_dim or cfg.out_dim
    rows = []
    for dims, crop in ((2, args.crop2d), (3, args.crop3d)):
        torch.manual_seed(0)
        build = lambda: PretrainNetwork(dims, TRANS_SMALL, out_dim, out_dim, cfg.head_hidden_dim,  # noqa: E731
                                        cfg.head_bottleneck_dim).to(device)
        student = build()
        teacher = make_teacher(student, build())
        loss_fn = SelfDistillationLoss(out_dim, out_dim).to(device)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-4 * args.pretrain_batch, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(0)
        n = 2 * args.pretrain_batch  # two views per sample
        x = torch.randn(n, 1, *(crop,) * dims, device=device)
        block_mask = torch.from_numpy(np.stack([random_block_mask(rng, crop, cfg.mask_block, dims, cfg.mask_ratio)
                                                for _ in range(n)])).to(device)
        embed_mask = mask_at_stride(block_mask, cfg.mask_block, student.embed_stride)
        token_mask = mask_at_stride(block_mask, cfg.mask_block, student.token_stride).flatten(1)
        voxel_mask = mask_at_stride(block_mask, cfg.mask_block, 1)
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

        def step() -> None:
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                s_cls, s_patch, recon = student(x, embed_mask)
                with torch.no_grad():
                    t_cls, t_patch, _ = teacher(x, None, reconstruct=False)
            l_cls, l_patch = loss_fn(s_cls, s_patch, t_cls, t_patch, token_mask, 0)
            total = cfg.rec_weight * masked_l1(recon, x, voxel_mask) + cfg.cls_weight * l_cls + cfg.patch_weight * l_patch
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            ema_update(teacher, student, 0.996)

        s, peak = _timed(step, device, args.warmup, args.iters)
        rows.append({"what": f"SMIT pretraining step {dims}-D (crop {crop}{'²' if dims == 2 else '³'}, "
                             f"batch {args.pretrain_batch} x 2 views)", "seconds": s, "unit": "s/step", "peak_gib": peak})
        del student, teacher, opt
    return rows


def predict_rows(args, device) -> list[dict]:
    from sarco_nn.models.smit import SMITSegNet
    from sarco_nn.presets import load_preset, smit_network_config

    config = smit_network_config(load_preset("default"))
    mirror_axes = load_preset("default")["training"].get("mirror_axes", [1])
    folds = [SMITSegNet(1, 2, 2, config).to(device).eval() for _ in range(5)]
    x = torch.randn(1, 1, args.patch, args.patch, device=device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    @torch.inference_mode()
    def case() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            total = 0
            for net in folds:
                total = total + net(x).float().softmax(1)
                for axis in mirror_axes:  # nnU-Net mirrors array axis a of (y, x) -> tensor dim a + 2
                    total = total + net(x.flip(axis + 2)).flip(axis + 2).float().softmax(1)
            total.argmax(1)

    @torch.inference_mode()
    def case_batched() -> None:
        """The same work with each fold's mirrorings stacked into one batch: fewer, larger launches."""
        views = torch.cat([x] + [x.flip(axis + 2) for axis in mirror_axes])
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            total = 0
            for net in folds:
                prob = net(views).float().softmax(1)
                total = total + prob[:1] + sum(prob[i + 1:i + 2].flip(axis + 2) for i, axis in enumerate(mirror_axes))
            total.argmax(1)

    what = f"predict network work per case (5 folds x {1 + len(mirror_axes)} mirrorings, {args.patch}² slice)"
    s, peak = _timed(case, device, args.warmup, args.iters)
    s_batched, peak_batched = _timed(case_batched, device, args.warmup, args.iters)
    return [{"what": what, "seconds": s, "unit": "s/case", "peak_gib": peak},
            {"what": what + ", mirrorings batched per fold", "seconds": s_batched, "unit": "s/case",
             "peak_gib": peak_batched}]


SECTIONS = {"smit": (smit_rows, "monai"), "unet": (unet_rows, "dynamic_network_architectures"),
            "pretrain": (pretrain_rows, "monai"), "predict": (predict_rows, "monai")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a dry run with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and one iteration: checks the script, measures nothing")
    parser.add_argument("--patch", type=int, default=512, help="2-D patch edge (nnU-Net's default plan: 512² at ~0.7 mm)")
    parser.add_argument("--batch", type=int, default=2, help="training batch (what nnU-Net's planner gave the default preset for 512² L3 slices)")
    parser.add_argument("--crop2d", type=int, default=256)
    parser.add_argument("--crop3d", type=int, default=96)
    parser.add_argument("--pretrain-batch", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=None, help="pretraining head outputs (default: official 8192)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--precisions", nargs="+", default=["fp16", "bf16"])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.patch, args.batch, args.crop2d, args.crop3d, args.pretrain_batch = 64, 1, 64, 32, 1
        args.head_dim, args.warmup, args.iters = 64, 0, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch; this suite measures a GPU (use --device cpu --tiny for a dry run)",
              file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnU-Net trains
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, not a measurement)"
    rows: list[dict] = []
    for section in args.only:
        function, needs = SECTIONS[section]
        try:
            __import__(needs)
        except ImportError:
            rows.append({"what": section, "seconds": None, "unit": f"needs {needs}", "peak_gib": None})
            continue
        rows.extend(function(args, device))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\n{name}, torch {torch.__version__}{' (tiny sizes)' if args.tiny else ''}\n")
    print("| measurement | time | peak GPU memory |\n|---|---|---|")
    for r in rows:
        time_text = r["unit"] if r["seconds"] is None else f"{r['seconds']:.4f} {r['unit']}"
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f} GiB"
        print(f"| {r['what']} | {time_text} | {peak} |")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "tiny": args.tiny, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
