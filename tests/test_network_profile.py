"""bench/network_profile.py: one fold pass split into network and nnU-Net bookkeeping, and the
answer-keeping levers with their logit differences (on a toy predictor: no trained model needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _profile_module():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("network_profile", ROOT / "bench" / "network_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_counts_nnunets_tiles_and_splits_the_fold_pass(capsys):
    import torch

    from sarco_nn.inference_settings import InferenceSettings
    from test_inference_settings import _toy_predictor

    profile = _profile_module()
    predictor, seen = _toy_predictor(InferenceSettings())
    predictor.list_of_parameters = [{k: v.clone() for k, v in predictor.network.state_dict().items()}]
    row = profile.profile_fold_pass(predictor, torch.rand(1, 1, 70, 50), reps=1)
    assert row["tiles"] == 12 and row["patch"] == [32, 32]  # nnU-Net's step 0.5 on 70 x 50: 4 x 3
    # the toy's two convs: 2 * (1*8*9 + 8*2*9) multiply-adds per pixel of a 32 x 32 tile
    assert abs(row["gflop_per_tile"]["total"] - 2 * (72 + 144) * 32 * 32 / 1e9) < 1e-9
    assert row["bookkeeping"]["cpu_s"] >= 0 and row["fold_pass"]["cpu_s"] > 0
    assert set(row["levers"]) == {"batched_tiles", "jit_trace_freeze", "channels_last"}
    for lever in row["levers"].values():
        assert lever["max_abs_logit_diff"] < 1e-4 and lever["argmax_identical"]
    assert row["levers"]["jit_trace_freeze"]["setup_cpu_s"] > 0
    assert row["top_ops_self_cpu_pct"] and sum(row["top_ops_self_cpu_pct"].values()) <= 100.0 + 1e-6
    assert predictor.list_of_parameters and len(predictor.list_of_parameters) == 1  # the predictor is as it was
    profile.print_profile(row)
    assert "jit_trace_freeze" in capsys.readouterr().out
