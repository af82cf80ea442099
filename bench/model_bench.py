"""Size and speed of the SMIT network: parameters, FLOPs, seconds per training iteration.

One training iteration = forward + backward + AdamW step at batch 2 (deep supervision on, the
nnU-Net training setting), for the 2D L3 configuration (256^2) and a 3D crop (96^3 by default).
Each network is timed in float32 and in mixed precision: bf16 autocast on CPU (attached the way
the trainers do it, preset field `cpu_bf16`), fp16 autocast on CUDA (what nnU-Net uses there).
Networks: the official Trans-Small, and every preset in sarco_nn/plans/ that names a different one.
Run:  python bench/model_bench.py [--device cuda] [--threads 2] [--iters 3] [--size3d 96]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sarco_nn.models.smit import TRANS_SMALL, SMITConfig, SMITSegNet, count_parameters
from sarco_nn.presets import available_presets, load_preset, training_settings
from sarco_nn.training.cpu_autocast import attach_cpu_bf16_autocast, cpu_bf16_supported


def _loss(out) -> torch.Tensor:
    outs = out if isinstance(out, list) else [out]
    return sum(o.float().square().mean() / 2**i for i, o in enumerate(outs))


def networks() -> dict[str, SMITConfig]:
    """Trans-Small plus each distinct network a preset asks for (named after the first such preset)."""
    found = {"Trans-Small": TRANS_SMALL}
    for name in available_presets():
        config = SMITConfig.from_dict(training_settings(load_preset(name), "smit").get("network"))
        if config not in found.values():
            found[f"{name} preset (embed {config.embed_dim})"] = config
    return found


def bench(config: SMITConfig, dims: int, size: int, device: str, iters: int, mixed: bool, batch: int = 2) -> dict:
    net = SMITSegNet(1, 2, dims, config, deep_supervision=True).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    x = torch.randn(batch, 1, *([size] * dims), device=device)
    with FlopCounterMode(display=False) as fc:
        net(x[:1])
    fwd_flops = fc.get_total_flops()
    cuda = device.startswith("cuda")
    if mixed and not cuda:
        attach_cpu_bf16_autocast(net)
    scaler = torch.amp.GradScaler("cuda") if mixed and cuda else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        context = torch.autocast("cuda", dtype=torch.float16) if scaler else contextlib.nullcontext()
        with context:
            loss = _loss(net(x))
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()

    step()  # warm-up (allocations, cudnn autotune)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if cuda:
        torch.cuda.synchronize()
    return {"dims": dims, "size": size, "params": count_parameters(net), "encoder_params": count_parameters(net.encoder),
            "gflops_fwd_per_sample": fwd_flops / 1e9, "s_per_iter": (time.perf_counter() - t0) / iters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--size2d", type=int, default=256)
    ap.add_argument("--size3d", type=int, default=96)
    ap.add_argument("--skip3d", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    precisions = ["fp32"] + (["fp16 autocast"] if cuda else ["bf16 autocast"] if cpu_bf16_supported() else [])
    print(f"SMIT on {args.device} ({args.threads} threads), batch 2, fwd+bwd+AdamW step, deep supervision")
    print(f"{'network':<30}{'config':<10}{'params':>9}{'encoder':>9}{'GFLOPs/fwd':>11}"
          + "".join(f"{'s/iter ' + p:>22}" for p in precisions))
    for label, config in networks().items():
        shapes = [(2, args.size2d)] + ([] if args.skip3d else [(3, args.size3d)])
        for dims, size in shapes:
            rows = [bench(config, dims, size, args.device, args.iters, mixed=p != "fp32") for p in precisions]
            r = rows[0]
            name = f"{dims}D {size}" + ("²" if dims == 2 else "³")
            print(f"{label:<30}{name:<10}{r['params'] / 1e6:>8.2f}M{r['encoder_params'] / 1e6:>8.2f}M"
                  f"{r['gflops_fwd_per_sample']:>11.1f}" + "".join(f"{x['s_per_iter']:>22.2f}" for x in rows))


if __name__ == "__main__":
    main()
