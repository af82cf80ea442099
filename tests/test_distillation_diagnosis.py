"""bench/distillation_diagnosis.py: its statistics against cases whose answer is known by hand.

Why: the README explains the collapsed SMIT distillation heads with these numbers (cross-crop
cosine of the logits, teacher entropy against ln K); they must mean what they say.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "distillation_diagnosis.py"


@pytest.fixture(scope="module")
def diag():
    spec = importlib.util.spec_from_file_location("distillation_diagnosis", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["distillation_diagnosis"] = module
    spec.loader.exec_module(module)
    return module


def test_identical_crops_give_cosine_one_and_a_uniform_centred_teacher(diag):
    k = 64
    cls = torch.randn(1, k).repeat(5, 1)  # every crop the same logits
    patch = torch.randn(5, 3, 8)
    stats = diag.teacher_statistics(cls, patch, cls.mean(0, keepdim=True), 0.04)
    assert stats["cross_crop_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert stats["teacher_entropy"] == pytest.approx(math.log(k), abs=1e-3)  # centring leaves zeros: uniform
    assert stats["top_probability"] == pytest.approx(1.0 / k, rel=1e-4)


def test_orthogonal_crops_give_cosine_zero_and_a_sharp_teacher(diag):
    k = 16
    cls = torch.eye(k)[:4] * 10.0  # four crops, each on its own axis
    tokens = torch.eye(6).unsqueeze(0).repeat(2, 1, 1)  # the tokens of one image orthogonal to each other
    stats = diag.teacher_statistics(cls, tokens, torch.zeros(1, k), 0.04)
    assert stats["cross_crop_cosine"] == pytest.approx(0.0, abs=1e-6)
    assert stats["within_image_token_cosine"] == pytest.approx(0.0, abs=1e-6)
    # an independent entropy: softmax of one logit of 10/0.04 against zeros is one-hot to float precision
    assert stats["teacher_entropy"] == pytest.approx(0.0, abs=1e-3) and stats["top_probability"] == pytest.approx(1.0)
    # and a hand-computed one: (3, 4) . (4, 3) / (5 * 5) = 24 / 25
    a = torch.tensor([[3.0, 4.0], [4.0, 3.0]])
    assert diag._mean_offdiag_cosine(a) == pytest.approx(24.0 / 25.0)
