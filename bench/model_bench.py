"""Size and speed of the SMIT network: parameters, FLOPs, seconds per training iteration.

One training iteration = forward + backward + AdamW step at batch 2 (deep supervision on, the
nnU-Net training setting), for the 2D L3 configuration (256^2) and a 3D crop (96^3 by default).
Run:  python bench/model_bench.py [--device cuda] [--threads 2] [--iters 3] [--size3d 96]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sarco_nn.models.smit import TRANS_SMALL, SMITSegNet, count_parameters


def _loss(out) -> torch.Tensor:
    outs = out if isinstance(out, list) else [out]
    return sum(o.float().square().mean() / 2**i for i, o in enumerate(outs))


def bench(dims: int, size: int, device: str, iters: int, batch: int = 2) -> dict:
    net = SMITSegNet(1, 2, dims, TRANS_SMALL, deep_supervision=True).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    x = torch.randn(batch, 1, *([size] * dims), device=device)
    with FlopCounterMode(display=False) as fc:
        net(x[:1])
    fwd_flops = fc.get_total_flops()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _loss(net(x)).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()

    step()  # warm-up (allocations, cudnn autotune)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.startswith("cuda"):
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
    rows = [bench(2, args.size2d, args.device, args.iters)]
    if not args.skip3d:
        rows.append(bench(3, args.size3d, args.device, args.iters))
    print(f"SMIT Trans-Small on {args.device} ({args.threads} threads), batch 2, fwd+bwd+AdamW step, deep supervision")
    print(f"{'config':<12}{'params':>12}{'encoder':>12}{'GFLOPs/fwd':>12}{'s/iter':>10}")
    for r in rows:
        name = f"{r['dims']}D {r['size']}" + ("²" if r["dims"] == 2 else "³")
        print(f"{name:<12}{r['params'] / 1e6:>11.2f}M{r['encoder_params'] / 1e6:>11.2f}M"
              f"{r['gflops_fwd_per_sample']:>12.1f}{r['s_per_iter']:>10.2f}")


if __name__ == "__main__":
    main()
