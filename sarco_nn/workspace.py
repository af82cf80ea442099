"""Where sarco keeps nnU-Net's raw / preprocessed / results folders, and nnU-Net's environment.

A user never exports nnUNet_* variables: `Workspace.activate()` sets them for this process and
for every worker nnU-Net spawns (nnunetv2 2.8 reads the paths lazily, so order does not matter).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sarco_nn.errors import SarcoError

#: Environment variable that overrides the default workspace location.
WORKSPACE_ENV = "SARCO_HOME"
DEFAULT_WORKSPACE = "sarco_workspace"

#: Folder holding only our nnU-Net trainer modules (nnU-Net imports every module there).
TRAINER_DIR = Path(__file__).resolve().parent / "training" / "nnunet_trainers"

_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, workspace: str | Path | None = None) -> "Workspace":
        """--workspace beats $SARCO_HOME beats ./sarco_workspace."""
        chosen = workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        return cls(Path(chosen).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    def activate(self) -> "Workspace":
        """Create the folders and point nnU-Net (and its spawned workers) at them."""
        for folder in (self.raw, self.preprocessed, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        os.environ["nnUNet_raw"] = str(self.raw)
        os.environ["nnUNet_preprocessed"] = str(self.preprocessed)
        os.environ["nnUNet_results"] = str(self.results)
        os.environ["nnUNet_extTrainer"] = str(TRAINER_DIR)
        os.environ.setdefault("nnUNet_compile", "f")
        return self

    def datasets(self) -> dict[int, str]:
        """Dataset id -> folder name of every nnU-Net raw dataset in the workspace."""
        found: dict[int, str] = {}
        if self.raw.is_dir():
            for child in sorted(self.raw.iterdir()):
                match = _DATASET_RE.match(child.name)
                if match and child.is_dir():
                    found[int(match.group(1))] = child.name
        return found

    def next_dataset_id(self, first: int) -> int:
        used = set(self.datasets())
        if self.preprocessed.is_dir():
            used |= {int(m.group(1)) for c in self.preprocessed.iterdir() if (m := _DATASET_RE.match(c.name))}
        candidate = first
        while candidate in used:
            candidate += 1
        return candidate

    def id_for_conversion(self, name: str, first: int, overwrite: bool) -> int:
        """The dataset id `sarco convert --name NAME` without --id writes: with `overwrite`, the id of
        the one dataset of that name (replaced), else the next free id (a name already used is then
        refused by the converter, so that one name never means two datasets)."""
        same = [i for i, folder in self.datasets().items() if _DATASET_RE.match(folder).group(2) == name]
        return same[0] if overwrite and len(same) == 1 else self.next_dataset_id(first)

    def forget_preprocessed(self, dataset_name: str) -> str | None:
        """After `sarco convert --overwrite` replaced the raw dataset `dataset_name`: its
        nnUNet_preprocessed folder (plans, splits and arrays of the replaced data) is removed, so that
        `sarco plan` plans the new data instead of finding it "already planned". Returns the note to
        print, or None when nothing was derived from the replaced data."""
        notes = []
        stale = self.preprocessed / dataset_name
        if stale.is_dir():
            shutil.rmtree(stale)
            notes.append(f"removed {stale} (the plans and arrays of the replaced data): run `sarco plan` again")
        if (self.results / dataset_name).is_dir():
            notes.append(f"the models in {self.results / dataset_name} were trained on the replaced data")
        return "; ".join(notes) or None

    def dataset_name(self, dataset: str | int | None = None) -> str:
        """Resolve a dataset given by id, name, or nothing (the only one there is)."""
        available = self.datasets()
        if not available:
            raise SarcoError(
                f"no dataset in workspace {self.root}",
                fix="run `sarco convert DROP_DIR --name NAME` first, or pass --workspace.",
            )
        if dataset is None:
            if len(available) > 1:
                listing = ", ".join(available.values())
                raise SarcoError(f"several datasets in the workspace ({listing})", fix="choose one with --dataset.")
            return next(iter(available.values()))
        text = str(dataset)
        if text.isdigit() and int(text) in available:
            return available[int(text)]
        named = [name for name in available.values() if text in (name, _DATASET_RE.match(name).group(2))]
        if len(named) > 1:  # the first would be taken silently: maybe an older drop of that name
            raise SarcoError(f"several datasets are named {text!r} in workspace {self.root} ({', '.join(named)})",
                             fix=f"choose one by its id (e.g. --dataset {self.dataset_id(named[-1])}), or delete "
                                 "the one you do not want from nnUNet_raw.")
        if named:
            return named[0]
        raise SarcoError(
            f"dataset {text!r} not found in workspace {self.root}",
            fix=f"use one of: {', '.join(available.values())}.",
        )

    @staticmethod
    def dataset_id(dataset_name: str) -> int:
        return int(_DATASET_RE.match(dataset_name).group(1))
