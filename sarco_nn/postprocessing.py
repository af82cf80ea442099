"""nnU-Net's postprocessing decision (cross-validation based), read back without unpickling.

nnU-Net decides on the pooled cross-validation predictions whether keeping only the largest
connected component helps (find_best_configuration → postprocessing.json). We apply what it chose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from sarco_nn.errors import SarcoError
from sarco_nn.model_store import TrainedModel
from sarco_nn.planning import CONFIGURATION
from sarco_nn.workspace import Workspace

__all__ = [
    "apply_postprocessing", "crossval_folder", "determine_postprocessing", "ensure_postprocessing",
    "load_postprocessing", "postprocessing_functions"
]


def crossval_folder(model: TrainedModel) -> Path:
    return model.folder / f"crossval_results_folds_{'_'.join(model.folds)}"


def determine_postprocessing(workspace: Workspace, model: TrainedModel, num_processes: int = 2) -> dict:
    """Run nnU-Net's find_best_configuration on the model's cross-validation folds."""
    if model.folds == ["all"] or len(model.folds) < 2:
        raise SarcoError("postprocessing is decided on cross-validation predictions; this model has only fold 'all'",
                         fix="train folds 0-4 (`sarco train 0` … `sarco train 4`).")
    missing = [f for f in model.folds if not (model.folder / f"fold_{f}" / "validation" / "summary.json").exists()]
    if missing:
        raise SarcoError(f"folds {missing} have no validation predictions", fix="re-run `sarco train FOLD --continue`.")
    workspace.activate()
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration

    dataset_name = model.folder.parent.name
    find_best_configuration(dataset_name, [{"plans": model.plans_name, "configuration": CONFIGURATION,
                                            "trainer": model.trainer_name}],
                            allow_ensembling=False, num_processes=num_processes, folds=tuple(int(f) for f in model.folds))
    return load_postprocessing(model) or {}


def load_postprocessing(model: TrainedModel) -> dict | None:
    path = crossval_folder(model) / "postprocessing.json"
    return json.loads(path.read_text()) if path.exists() else None


def ensure_postprocessing(workspace: Workspace, model: TrainedModel) -> dict | None:
    """The decision if made; made now when every trained fold has its validation predictions; else None."""
    decision = load_postprocessing(model)
    if decision is None and len(model.folds) >= 2 and model.folds != ["all"] and all(
            (model.folder / f"fold_{f}" / "validation" / "summary.json").exists() for f in model.folds):
        decision = determine_postprocessing(workspace, model)
    return decision


def postprocessing_functions(decision: dict | None) -> list[tuple[Callable, dict]]:
    """Only nnU-Net's own connected-component functions may be named in the decision."""
    if not decision:
        return []
    from nnunetv2.postprocessing import remove_connected_components as rcc

    functions = []
    for name, kwargs in zip(decision["postprocessing_fns"], decision["postprocessing_kwargs"]):
        if not name.startswith("remove_all_but_largest_component") or not hasattr(rcc, name):
            raise SarcoError(f"unknown postprocessing function {name!r} in postprocessing.json",
                             fix="re-run `sarco postprocess`.")
        functions.append((getattr(rcc, name), kwargs))
    return functions


def apply_postprocessing(segmentation: np.ndarray, functions: list[tuple[Callable, dict]]) -> np.ndarray:
    for fn, kwargs in functions:
        segmentation = fn(segmentation, **kwargs)
    return segmentation
