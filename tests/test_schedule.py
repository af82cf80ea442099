"""The progress-driven learning-rate schedule that lets a time budget anneal like an epoch budget."""

import pytest
import torch

from sarco_nn.training.schedule import ProgressLRScheduler


def _optimizer(lr=1.0):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr, "lr_scale": 0.5},
                            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr}], lr=lr)


def test_cosine_with_warmup_follows_progress():
    progress = {"p": 0.0}
    opt = _optimizer()
    sched = ProgressLRScheduler(opt, lambda epoch: progress["p"], kind="cosine", warmup_fraction=0.1)
    values = []
    for p in (0.05, 0.1, 0.55, 1.0):
        progress["p"] = p
        sched.step(0)
        values.append(opt.param_groups[1]["lr"])
    assert values[0] == pytest.approx(0.5)
    assert values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(0.5)
    assert values[3] == pytest.approx(0.0, abs=1e-9)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * values[3], abs=1e-9)  # layer-wise scale kept


def test_poly_matches_nnunet_formula():
    opt = _optimizer(0.01)
    sched = ProgressLRScheduler(opt, lambda epoch: epoch / 100, kind="poly")
    sched.step(50)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * 0.5 ** 0.9)
