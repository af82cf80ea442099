"""CPU (or GPU) seconds of one tile's mirrored prediction, nnU-Net's loop vs `batch_mirroring`.

Runs `SarcoPredictor._internal_maybe_mirror_and_predict` (the hook `batch_mirroring` replaces) on the
preset's SMIT network with random weights, one tile of `--patch`², once with each mirrored view as its
own forward (nnU-Net) and once with the views stacked into one batch; prints the median seconds of
each and their largest logit difference. A print, not a test (speed targets live in bench/):
    taskset -c 1 python bench/batch_mirroring_bench.py --preset cpu --patch 256 --axes 0 1 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch


def _timed(call, repeats: int, device: torch.device) -> float:
    call()  # warm-up (allocator, oneDNN / cuDNN choices)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from sarco_nn.inference_settings import InferenceSettings
    from sarco_nn.models.smit import SMITSegNet
    from sarco_nn.predictor import SarcoPredictor
    from sarco_nn.presets import load_preset, smit_network_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--axes", type=int, nargs="+", default=[1], help="mirror axes (0 = y, 1 = x)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = SMITSegNet(1, 2, 2, smit_network_config(load_preset(args.preset))).to(device).eval()
    x = torch.randn(1, 1, args.patch, args.patch, device=device)
    out, seconds = {}, {}
    for batched in (False, True):
        predictor = SarcoPredictor(InferenceSettings(batch_mirroring=batched), use_mirroring=True,
                                   perform_everything_on_device=device.type == "cuda", device=device,
                                   verbose=False, allow_tqdm=False)
        predictor.network, predictor.allowed_mirroring_axes = net, tuple(args.axes)

        @torch.inference_mode()
        def call(p=predictor, key=batched):
            # under autocast on CUDA, as nnU-Net's predict_sliding_window_return_logits runs the hook there
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                out[key] = p._internal_maybe_mirror_and_predict(x)

        seconds[batched] = _timed(call, args.repeats, device)
    views = 2 ** len(args.axes)
    diff = float((out[True].float() - out[False].float()).abs().max())
    print(f"{args.preset} SMIT, {args.patch}² tile, {views} views, {args.threads} thread(s) on {args.device}: "
          f"one view at a time {seconds[False]:.3f} s, batched {seconds[True]:.3f} s "
          f"(x{seconds[False] / seconds[True]:.2f}); max |logit difference| {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
