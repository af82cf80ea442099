"""Block counts of nnU-Net's residual-encoder U-Net, read from nnU-Net's own ResEnc planner.

The `--trainer resenc` baseline must be nnU-Net's ResEnc, not a retyped copy of its numbers that
drifts when nnU-Net changes them. `ResEncUNetPlanner.__init__` sets them as instance attributes
after its parent constructor, which reads a dataset from disk; `_BlockProbe` runs only the
ResEnc constructor's own body (cooperative inheritance puts a no-op parent constructor between
it and `ExperimentPlanner`), so the numbers come from nnU-Net's code with no dataset needed.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["resenc_blocks_per_stage"]


@lru_cache(maxsize=None)
def _planner_blocks() -> tuple[tuple[int, ...], tuple[int, ...]]:
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        ResEncUNetPlanner,
    )

    class _NoDataset(ExperimentPlanner):
        def __init__(self, *args, **kwargs) -> None:  # noqa: D401 - skip reading dataset.json / fingerprint
            pass

    class _BlockProbe(ResEncUNetPlanner, _NoDataset):
        pass

    probe = _BlockProbe("unused")
    return tuple(probe.UNet_blocks_per_stage_encoder), tuple(probe.UNet_blocks_per_stage_decoder)


def resenc_blocks_per_stage(n_stages: int) -> tuple[list[int], list[int]]:
    """(residual blocks per encoder stage, convs per decoder stage) of nnU-Net's ResEnc U-Net.

    Args:
        n_stages: number of resolution stages of the plan's U-Net (`n_stages` in its
            `network_arch_init_kwargs`).

    Returns:
        The two lists nnU-Net's ResEnc planner writes into a plan as `n_blocks_per_stage`
        (length n_stages) and `n_conv_per_stage_decoder` (length n_stages - 1).

    Example:
        >>> resenc_blocks_per_stage(5)
        ([1, 3, 4, 6, 6], [1, 1, 1, 1])
    """
    encoder, decoder = _planner_blocks()
    if not 1 <= n_stages <= len(encoder):
        raise ValueError(f"nnU-Net's ResEnc planner defines {len(encoder)} stages at most, not {n_stages}")
    return list(encoder[:n_stages]), list(decoder[: n_stages - 1])
