"""bfloat16 autocast for training on CPU.

nnU-Net turns autocast on only for CUDA. On a CPU with native bfloat16 (AVX512-BF16 / AMX) a
training iteration of the SMIT network runs about 1.8x faster under bf16 autocast (measured on
2 cores: 0.80 s vs 1.45 s at 256², batch 2), which on a fixed CPU budget means 1.8x more
iterations. The autocast is attached to the network's forward with hooks, so nnU-Net's
train_step, loss and optimizer stay untouched: the forward runs in bf16, its outputs come back
as float32, and the loss, backward bookkeeping and weights stay float32.
"""

from __future__ import annotations

import torch
from torch import nn

from sarco_nn.devices import cpu_bf16_supported  # noqa: F401  (re-exported: the trainers and benches ask here)

_CONTEXT_ATTR = "_sarco_cpu_autocast"




def _to_float32(output):
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(o) for o in output)
    return output


def _enter(module: nn.Module, args) -> None:
    context = torch.autocast("cpu", dtype=torch.bfloat16)
    context.__enter__()
    setattr(module, _CONTEXT_ATTR, context)


def _exit(module: nn.Module, args, output):
    context = getattr(module, _CONTEXT_ATTR, None)
    if context is not None:
        context.__exit__(None, None, None)
        setattr(module, _CONTEXT_ATTR, None)
    return _to_float32(output)


def attach_cpu_bf16_autocast(network: nn.Module) -> list:
    """Run `network`'s forward under CPU bf16 autocast; returns the hook handles (remove() undoes it)."""
    return [network.register_forward_pre_hook(_enter),
            network.register_forward_hook(_exit, always_call=True)]
