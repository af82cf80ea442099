"""The GPU-scale `default` preset end to end on CPU: nnU-Net's own plan (no spacing or patch cap),
Trans-Small, test-time mirroring and a 5-fold ensemble, plus `sarco pretrain --preset default` ->
`sarco train --pretrained`. Kept small by the data, not by the preset: 128² phantoms at coarse
spacing make nnU-Net plan a 128² patch."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_conversion.phantom import write_dropin_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MODEL = Path("ws/nnUNet_results/Dataset501_Dflt/SarcoSMITTrainer__sarcoPlans_default__2d")


def sarco(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1", "nnUNet_def_n_proc": "1"}
    result = subprocess.run([sys.executable, "-m", "sarco_nn.cli", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"sarco {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def test_default_preset_plans_trains_ensembles_with_mirroring_and_evaluates(tmp_path):
    write_dropin_dataset(tmp_path / "drop", n_cases=6, seed=1, matrix=128)
    write_dropin_dataset(tmp_path / "held", n_cases=2, seed=2, matrix=128, case_prefix="held")
    sarco("convert", "drop", "--name", "Dflt", "-w", "ws", cwd=tmp_path)
    plan_out = sarco("plan", "--preset", "default", "-w", "ws", cwd=tmp_path)
    assert "'configurations'" not in plan_out.stdout  # the summary, not nnU-Net's plans dict
    plans = json.loads((tmp_path / "ws/nnUNet_preprocessed/Dataset501_Dflt/sarcoPlans_default.json").read_text())
    config = plans["configurations"]["2d"]
    assert plans["sarco"]["preset"]["name"] == "default" and plans["sarco"]["preset"]["max_patch_size"] is None
    assert config["patch_size"] == [128, 128]  # nnU-Net's own patch for these images

    sarco("train", "0", "--epochs", "1", "--iterations", "2", "-w", "ws", cwd=tmp_path)
    model = tmp_path / MODEL
    assert (model / "fold_0" / "validation" / "summary.json").is_file()
    from sarco_nn.models.checkpoints import load_trainer_checkpoint

    checkpoint = load_trainer_checkpoint(model / "fold_0" / "checkpoint_final.pth")
    assert checkpoint["inference_allowed_mirroring_axes"] == (1,) or list(checkpoint["inference_allowed_mirroring_axes"]) == [1]
    n_params = sum(v.numel() for k, v in checkpoint["network_weights"].items() if k.startswith("encoder."))
    assert n_params > 5e6  # 2-D Trans-Small encoder (7.2 M), not the cpu preset SMIT (1.8 M)
    for fold in ("1", "2", "3", "4"):  # the ensemble machinery at this size: copies of fold 0 are enough
        # (without fold 0's validation predictions: nnU-Net's postprocessing search refuses duplicates)
        shutil.copytree(model / "fold_0", model / f"fold_{fold}", ignore=shutil.ignore_patterns("validation"))

    sarco("predict", "-i", "held/images", "-o", "pred", "--clinical", "held/clinical.csv", "-w", "ws", cwd=tmp_path)
    with open(tmp_path / "pred" / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["case_id"] for r in rows) == ["held_000", "held_001"]
    assert {r["folds"] for r in rows} == {"0+1+2+3+4"} and {r["tta"] for r in rows} == {"yes"}
    assert all((tmp_path / "pred" / r["mask"]).is_file() for r in rows if r["status"] != "failed")
    sarco("evaluate", "pred", "--reference", "held/masks", "--clinical", "held/clinical.csv", "-o", "report",
          cwd=tmp_path)
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["n_cases"] == 2

    # pretraining the encoder the default preset fine-tunes, then fine-tuning from it: every key loads
    sarco("pretrain", "drop/images", "-o", "pre", "--preset", "default", "--dims", "2", "--crop-size", "64",
          "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--no-progress", "--device", "cpu",
          cwd=tmp_path)
    out = sarco("train", "all", "--epochs", "1", "--iterations", "1", "--pretrained", "pre/encoder.pt", "-w", "ws",
                cwd=tmp_path)
    report = json.loads((model / "fold_all" / "pretrained_load_report.json").read_text())
    assert report["fraction_matched"] == 1.0 and not report["missing"] and not report["shape_mismatched"]
    assert len(report["matched"]) == report["total"] and f"{report['total']}/{report['total']}" in out.stdout
    provenance = json.loads((model / "fold_all" / "sarco_provenance.json").read_text())
    assert provenance["pretrained"]["sha256"] == report["sha256"]

    # issue #20 item 3: a checkpoint in the official SMIT layout (3-D Trans-Small, `module.` keys in the
    # official names, an SSL-only extra tensor) fine-tunes the same 2-D network with every encoder key matched
    import torch

    from sarco_nn.models.pretrained import ours_to_official
    from sarco_nn.models.smit import SMITEncoder
    from sarco_nn.models.smit_config import TRANS_SMALL

    official = {f"module.{ours_to_official(k)}": v for k, v in SMITEncoder(1, 3, TRANS_SMALL).state_dict().items()}
    official["module.mask_token"] = torch.zeros(1, 1, TRANS_SMALL.embed_dim)
    torch.save(official, tmp_path / "pre_train_weight.pt")
    shutil.rmtree(model / "fold_all")  # a fresh fine-tune, not a resume of the one above
    out = sarco("train", "all", "--epochs", "1", "--iterations", "1", "--pretrained", "pre_train_weight.pt",
                "-w", "ws", cwd=tmp_path)
    report = json.loads((model / "fold_all" / "pretrained_load_report.json").read_text())
    assert report["fraction_matched"] == 1.0 and not report["missing"] and not report["shape_mismatched"]
    assert report["unexpected"] == ["module.mask_token"] and report["adapted"]  # 3-D -> 2-D adaptation ran
