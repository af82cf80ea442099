"""The single implementations every module calls: atomic writes, device names, schedule, window, hashes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sarco_nn.atomic import atomic_path, write_json_atomic
from sarco_nn.devices import resolve_device
from sarco_nn.errors import SarcoError
from sarco_nn.hashing import sha256_file, sha256_text
from sarco_nn.schedules import WARMUP_FLOOR, warmup_cosine
from sarco_nn.windowing import apply_window


def test_atomic_json_replaces_whole_file_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_json_atomic(target, {"a": 1}, newline=True)
    assert json.loads(target.read_text()) == {"a": 1} and target.read_text().endswith("\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_names_fail_with_the_fix(name):
    with pytest.raises(SarcoError, match="unknown device") as info:
        resolve_device(name)
    assert "cuda:N" in str(info.value)


def test_auto_and_cpu_resolve_and_cuda_without_gpu_says_so():
    import torch

    assert resolve_device(" CPU ").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SarcoError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    if not torch.backends.mps.is_available():
        with pytest.raises(SarcoError, match="no Apple GPU"):
            resolve_device("mps")


def test_warmup_cosine_floor_ramp_and_end():
    assert warmup_cosine(0.0, 0.1) == WARMUP_FLOOR == 0.01
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(0.55, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 0.1, min_factor=0.2) == pytest.approx(0.2)
    assert warmup_cosine(7.0, 0.0) == pytest.approx(0.0)  # progress past the end is clamped


def test_pretraining_and_segmentation_schedules_are_the_same_curve():
    import torch

    from sarco_nn.pretraining.trainer import lr_factor
    from sarco_nn.training.schedule import ProgressLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    seg = ProgressLRScheduler(opt, lambda e: 0.0, kind="cosine", warmup_fraction=0.2, min_factor=0.1)
    for step in (0, 3, 20, 57, 99, 100):
        assert lr_factor(step, 20, 100, 0.1) == pytest.approx(seg.factor(step / 100))


def test_window_maps_the_study_window_to_unit_range():
    out = apply_window(np.array([[-1000.0, -175.0], [37.5, 3000.0]]))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert out.tolist() == [[0.0, 0.0], [0.5, 1.0]]
    assert apply_window(np.array([0.0, 1000.0]), (-400.0, 1000.0)).tolist() == [pytest.approx(400 / 1400), 1.0]


def test_hashes_are_sha256(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(path) == sha256_text("abc") == expected
