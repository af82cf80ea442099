"""The one device resolver: a `--device` string → a torch.device, checked, for every command.

Training, prediction, pretraining, the classifier and the L3 localizer all accept the same names,
fail with the same one-line error, and treat ``auto`` the same way (CUDA when torch sees a GPU,
otherwise CPU; never MPS by surprise: Apple's backend lacks ops nnU-Net uses, so it is opt-in).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from sarco_nn.errors import SarcoError

if TYPE_CHECKING:  # torch is imported when a device is resolved, not when this module is
    import torch

__all__ = ["DEVICE_NAMES", "cpu_bf16_supported", "resolve_device"]

#: What `--device` accepts (``cuda:N`` picks one GPU).
DEVICE_NAMES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N", "mps")

_VALID = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def resolve_device(device: str = "auto", all_cpu_threads: bool = False) -> "torch.device":
    """The torch.device for `device`, or a SarcoError naming the fix.

    Args:
        device: one of `DEVICE_NAMES`; case and surrounding blanks are ignored.
        all_cpu_threads: on CPU, let torch use every logical core this process may run on. nnU-Net
            training and prediction want this (torch's default is often the physical-core count
            or less); short jobs sharing a machine (pretraining tests, the classifier) do not.

    Example:
        >>> resolve_device("cpu").type
        'cpu'
    """
    import torch

    name = str(device).strip().lower()
    if not _VALID.match(name):
        raise SarcoError(f"unknown device {device!r}", fix=f"use one of {', '.join(DEVICE_NAMES)}.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SarcoError(f"--device {name} asked for, but torch sees no CUDA GPU", fix="use --device cpu (or auto).")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise SarcoError(f"--device {name} asked for, but torch sees {torch.cuda.device_count()} GPU(s)",
                         fix=f"use cuda:0..cuda:{torch.cuda.device_count() - 1}, or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SarcoError("--device mps asked for, but torch sees no Apple GPU", fix="use --device cpu (or auto).")
    if name == "cpu" and all_cpu_threads:
        # the cores this process may run on (a SLURM job's or taskset's share), not the machine's
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return torch.device(name)


def cpu_bf16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (otherwise bf16 would be slower than fp32).

    Here, not in training: inference settings ask it too, and devices imports nothing of the library."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
