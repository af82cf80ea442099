"""Where one fold pass of the network goes on one L3 slice, and what the answer-preserving levers give.

`inference_bench.py --profile` runs this. One fold pass is nnU-Net's
`predict_logits_from_preprocessed_data` with one entry in `list_of_parameters` (what
`sarco_nn.review.fold_ensemble.predict_folds` runs per fold): `load_state_dict`, padding, the tile
loop (tile copies in a producer thread, Gaussian weighting, float16 accumulation) and one network
forward per tile. Measured here, each as process CPU seconds (`time.process_time`: what the machine
was asked for, the figure that compares on a shared machine) and wall seconds:

- tiles per slice, GFLOP per tile (torch's FlopCounterMode; encoder, decoder and its parts);
- one tile's forward: encoder and decoder apart; the whole fold pass; nnU-Net's bookkeeping alone
  (the fold pass with a zero-cost stand-in network); `load_state_dict` of one fold;
- levers that keep the answer: all tiles in one batched forward, `torch.jit.trace` + `freeze`
  (oneDNN weight prepacking; its one-off cost per fold is measured too), channels_last, each with
  its largest absolute logit difference from the plain forward;
- torch.profiler's self-CPU share of the top operators.

The levers run interleaved (plain, lever, plain, ...) so a load change on a shared machine hits
both alike; on a busy machine the wall figures are still not quiet-machine figures.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable


def _clock(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    """Mean process-CPU and wall seconds of `fn` over `reps` calls (after one untimed call)."""
    fn()
    cpu, wall = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"cpu_s": statistics.mean(cpu), "wall_s": statistics.mean(wall)}


def _interleaved(plain: Callable[[], Any], lever: Callable[[], Any], reps: int) -> tuple[dict, dict]:
    """Plain and lever timed alternately (one untimed call each first)."""
    plain(), lever()
    got: dict[str, dict[str, list[float]]] = {"plain": {"cpu": [], "wall": []}, "lever": {"cpu": [], "wall": []}}
    for _ in range(reps):
        for name, fn in (("plain", plain), ("lever", lever)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            got[name]["wall"].append(time.perf_counter() - w0)
            got[name]["cpu"].append(time.process_time() - c0)
    return tuple({"cpu_s": statistics.mean(got[n]["cpu"]), "wall_s": statistics.mean(got[n]["wall"])}
                 for n in ("plain", "lever"))  # type: ignore[return-value]


def flop_split(network, tile) -> dict[str, float]:
    """GFLOP of one forward of `tile`: total and per module down to the decoder's blocks."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        network(tile)
    out = {}
    for name, by_op in counter.get_flop_counts().items():
        short = name.split(".", 1)[1] if "." in name else "total"
        if name == "Global" or (short.count(".") > 1 and not short.startswith("decoder.ups.")):
            continue
        out[short] = sum(by_op.values()) / 1e9
    return out


class _StubNetwork:
    """A zero-cost stand-in for the network: what is left of a fold pass is nnU-Net's bookkeeping."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, x):
        import torch

        return torch.zeros((x.shape[0], self.num_classes, *x.shape[2:]))

    def load_state_dict(self, *_args, **_kwargs) -> None:
        return None

    def to(self, *_args, **_kwargs) -> "_StubNetwork":
        return self

    def eval(self) -> "_StubNetwork":
        return self


def profile_fold_pass(predictor, data, reps: int = 3, top_ops: int = 10) -> dict[str, Any]:
    """The figures of the module docstring for one initialised predictor (first fold) and one
    preprocessed slice `data` (nnU-Net's (C, 1, y, x) tensor)."""
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    patch = list(predictor.configuration_manager.patch_size)
    padded, _ = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
    slicers = predictor._internal_get_sliding_window_slicers(padded.shape[1:])
    tiles = torch.stack([padded[s] for s in slicers])  # (n, C, *patch): the tiles nnU-Net runs one by one
    network = predictor.network.eval()
    folds = list(predictor.list_of_parameters)
    predictor.list_of_parameters = folds[:1]
    network.load_state_dict(folds[0])
    row: dict[str, Any] = {"image_shape": list(data.shape[1:]), "patch": patch, "tiles": len(slicers),
                           "threads": torch.get_num_threads()}
    try:
        with torch.inference_mode():
            one = tiles[:1]
            flops = flop_split(network, one)
            row["gflop_per_tile"] = flops
            row["tile_forward"] = _clock(lambda: network(one), reps)
            if hasattr(network, "encoder") and hasattr(network, "decoder"):  # SMIT: the two halves apart
                skips, bottleneck = network.encoder(one)
                row["encoder_forward"] = _clock(lambda: network.encoder(one), reps)
                row["decoder_forward"] = _clock(lambda: network.decoder(one, skips, bottleneck), reps)
            row["fold_pass"] = _clock(lambda: predictor.predict_logits_from_preprocessed_data(data), reps)
            row["load_state_dict"] = _clock(lambda: network.load_state_dict(folds[0]), reps)
            predictor.network = _StubNetwork(predictor.label_manager.num_segmentation_heads)
            try:
                row["bookkeeping"] = _clock(lambda: predictor.predict_logits_from_preprocessed_data(data), reps)
            finally:
                predictor.network = network
            reference = torch.cat([network(t[None]) for t in tiles])
            row["levers"] = _levers(network, tiles, reference, reps)
            row["top_ops_self_cpu_pct"] = _top_ops(predictor, data, top_ops)
    finally:
        predictor.list_of_parameters = folds
        network.load_state_dict(folds[0])
    n = len(slicers)
    per_core = row["tile_forward"]["cpu_s"]
    total = flops["total"]
    row["derived"] = {
        "gflop_per_fold_pass": total * n,
        "gflop_per_slice_5_folds": total * n * 5,
        "achieved_gflops_per_core": total / per_core,
        "network_share_of_fold_pass": n * per_core / row["fold_pass"]["cpu_s"],
        "cpu_s_5_folds_per_slice": 5 * row["fold_pass"]["cpu_s"],
        # 1 s of wall on 2 cores is at most 2 CPU seconds: the rate the 5-fold ensemble would need
        "gflops_per_core_needed_for_1s_on_2_cores": total * n * 5 / 2.0,
    }
    return row


def _levers(network, tiles, reference, reps: int) -> dict[str, dict]:
    """Each answer-preserving lever against the plain tile-by-tile forward (interleaved)."""
    import torch

    plain = lambda: [network(t[None]) for t in tiles]  # noqa: E731
    out: dict[str, dict] = {}

    def record(name: str, fn: Callable[[], Any], logits, setup_cpu_s: float = 0.0) -> None:
        base, lever = _interleaved(plain, fn, reps)
        out[name] = {"plain": base, "lever": lever, "cpu_ratio": lever["cpu_s"] / base["cpu_s"],
                     "max_abs_logit_diff": float((logits - reference).abs().max()),
                     "argmax_identical": bool(torch.equal(logits.argmax(1), reference.argmax(1))),
                     "setup_cpu_s": setup_cpu_s}

    record("batched_tiles", lambda: network(tiles), network(tiles))
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(network), tiles[:1], check_trace=False))
    frozen(tiles[:1]), frozen(tiles[:1])  # the profiling runs that specialise the graph
    setup = time.process_time() - start
    record("jit_trace_freeze", lambda: [frozen(t[None]) for t in tiles], torch.cat([frozen(t[None]) for t in tiles]),
           setup)
    last = copy.deepcopy(network).to(memory_format=torch.channels_last)
    cl_tiles = [t[None].contiguous(memory_format=torch.channels_last) for t in tiles]
    record("channels_last", lambda: [last(t) for t in cl_tiles], torch.cat([last(t) for t in cl_tiles]))
    return out


def _top_ops(predictor, data, n: int) -> dict[str, float]:
    """torch.profiler's self-CPU share (%) of the top `n` operators in one fold pass."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predictor.predict_logits_from_preprocessed_data(data)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return {e.key: 100.0 * e.self_cpu_time_total / total for e in ranked}


def print_profile(row: dict) -> None:
    """The profile as a few Markdown lines (README 'Inference speed')."""
    d, f = row["derived"], row["gflop_per_tile"]
    print(f"\none fold pass, {row['tiles']} tiles of {row['patch']} on a {row['image_shape']} slice, "
          f"{row['threads']} thread(s); CPU s = process CPU seconds\n")
    print("| part | CPU s | wall s |\n|---|---|---|")
    for key in ("fold_pass", "tile_forward", "encoder_forward", "decoder_forward", "bookkeeping", "load_state_dict"):
        if key in row:
            print(f"| {key} | {row[key]['cpu_s']:.4f} | {row[key]['wall_s']:.4f} |")
    parts = ", ".join(f"{k} {v:.2f}" for k, v in f.items() if k != "total")
    print(f"\nGFLOP per tile {f['total']:.2f} ({parts}); {d['gflop_per_slice_5_folds']:.0f} GFLOP per slice "
          f"for 5 folds; achieved {d['achieved_gflops_per_core']:.1f} GFLOP/s per core; 1 s on 2 cores needs "
          f"{d['gflops_per_core_needed_for_1s_on_2_cores']:.0f}\n")
    print("| lever | CPU s plain | CPU s lever | ratio | max abs logit diff | argmax same | setup CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in row["levers"].items():
        print(f"| {name} | {r['plain']['cpu_s']:.3f} | {r['lever']['cpu_s']:.3f} | {r['cpu_ratio']:.2f} "
              f"| {r['max_abs_logit_diff']:.2e} | {r['argmax_identical']} | {r['setup_cpu_s']:.2f} |")
    print("\ntop operators (self CPU %): " + ", ".join(f"{k} {v:.1f}" for k, v in row["top_ops_self_cpu_pct"].items()))


def profile_main(args, preset: str, model_folder: Path, image: Path) -> dict:
    """The profile row of `model_folder`'s first fold on `image` (read as `sarco predict` reads it)."""
    import torch

    from sarco_nn.inference import Scan, _prepare_case, _ReadContext
    from sarco_nn.inference_settings import InferenceSettings
    from sarco_nn.model_store import TrainedModel, build_predictor, trained_folds

    model = TrainedModel(model_folder, trained_folds(model_folder)[:1])
    predictor = build_predictor(model, torch.device(args.device), use_mirroring=False, settings=InferenceSettings())
    base = dict(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid", l3_dir=Path("."), slab=1)
    case = _prepare_case(Scan(image.name[: -len(".nii.gz")], image), _ReadContext(predictor=predictor, **base))
    if case.error is not None:
        raise RuntimeError(f"{image}: {case.error}")
    row = profile_fold_pass(predictor, case.preprocessed["data"], reps=args.profile_reps)
    return {"preset": preset, "config": "profile", "model": str(model_folder), "image": str(image),
            "inference": predictor.sarco_settings.label(), "total": row["fold_pass"]["cpu_s"], **row}
