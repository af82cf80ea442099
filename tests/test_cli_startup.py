"""A fast CLI: `sarco --help` and `sarco measure` never import torch, nnU-Net, MONAI or matplotlib.

Those imports cost ~5 s of CPU (13 s wall on a busy 2-core machine); only the commands that run
a network may pay for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nnunetv2", "monai", "matplotlib", "torchvision", "sklearn")


def _loaded_heavy_modules(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_cli_and_help_import_no_heavy_package():
    code = ("import sarco_nn.cli as cli\n"
            "try:\n    cli.app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "for sub in ('train', 'predict', 'pretrain', 'plan', 'check-weights'):\n"
            "    try:\n        cli.app([sub, '--help'], standalone_mode=False)\n    except SystemExit:\n        pass\n")
    assert _loaded_heavy_modules(code) == []


def test_measure_of_one_mask_imports_no_heavy_package(tmp_path):
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, 20:40, 10:50] = 1
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((0.8, 0.8, 5.0))
    sitk.WriteImage(image, str(tmp_path / "mask.nii.gz"))
    code = ("import sarco_nn.cli as cli\n"
            f"cli.app(['measure', {str(tmp_path / 'mask.nii.gz')!r}, '--json'], standalone_mode=False)\n")
    assert _loaded_heavy_modules(code) == []
