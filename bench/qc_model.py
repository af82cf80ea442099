"""The model bench/qc_bench.py scores: one workspace's model, or an ensemble assembled from several.

Why assemble: fold disagreement is one of qc_score's strongest signs, but a model trained on all
cases (fold ``all``) has one member. Models trained with different seeds on the same data are such
members: ``assemble_ensemble`` builds a workspace whose model folder has folds 0..k-1 = those
models' checkpoints (symbolic links, copies where links are refused), so fold disagreement is seed
disagreement and sarco's own find_model / build_predictor / predict_folds run on it unchanged.

``model_signature`` names what the results came from (every checkpoint by path, size and SHA-256):
rows measured with another model are never mixed into a table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from sarco_nn.errors import SarcoError
from sarco_nn.model_store import TrainedModel, find_model
from sarco_nn.workspace import Workspace

#: Written into an assembled workspace: its members, and the mark that the folder is ours to rebuild.
SOURCES_FILE = "ensemble_sources.json"


def checkpoint_identity(path: Path) -> dict:
    """Where a checkpoint lives and what it holds (size + SHA-256): changes when it is retrained."""
    real = Path(path).resolve()
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(real), "bytes": real.stat().st_size, "sha256": digest.hexdigest()}


def _plans(model: TrainedModel) -> dict:
    return json.loads((model.folder / "plans.json").read_text())


def training_recipe(plans: dict) -> dict:
    """The preset's training block (seed, epochs, ...): what may differ between members."""
    return plans.get("sarco", {}).get("preset", {}).get("training", {})


def _comparable_plans(model: TrainedModel) -> dict:
    """plans.json less what members may differ in: the dataset's name and the training recipe (the seed
    is the point); preprocessing, grid and network must be the same, one preprocessing serves them all."""
    plans = _plans(model)
    plans.pop("dataset_name", None)
    plans.get("sarco", {}).get("preset", {}).pop("training", None)
    return plans


def ensemble_members(sources: list[Path]) -> tuple[list[dict], TrainedModel]:
    """Every trained fold of every source workspace, in order, and the first source's model.

    Refused (one line, with the fix): sources whose model folders (trainer, plans) or plans.json differ
    beyond the training recipe (one preprocessing and one network serve every member), and the same
    checkpoint twice (its disagreement is zero).
    """
    if len(sources) < 2:
        raise SarcoError("an ensemble needs at least two source workspaces",
                         fix="give --ensemble-from WS1 WS2 [...], or --workspace WS for a single model")
    models = [find_model(Workspace(Path(ws).resolve())) for ws in sources]
    first = models[0]
    members: list[dict] = []
    for ws, model in zip(sources, models):
        if model.folder.name != first.folder.name or _comparable_plans(model) != _comparable_plans(first):
            raise SarcoError(f"model {model.folder.name} differs from {first.folder.name} (trainer, preset or "
                             "plans.json)", path=model.folder,
                             fix="ensemble only models trained with the same trainer and plan on the same data")
        for fold in model.folds:
            members.append({"workspace": str(Path(ws).resolve()), "fold": fold, "model": model.folder.name,
                            "training": training_recipe(_plans(model)), **checkpoint_identity(model.checkpoint(fold))})
    seen: dict[str, str] = {}
    for m in members:
        if m["sha256"] in seen:
            raise SarcoError(f"the same checkpoint twice ({seen[m['sha256']]} and {m['path']})", path=m["path"],
                             fix="give models trained with different seeds; identical members cannot disagree")
        seen[m["sha256"]] = m["path"]
    return members, first


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:  # a file system without symbolic links
        shutil.copy2(src, dst)


def assemble_ensemble(sources: list[Path], dest: Path) -> Path:
    """A workspace at `dest` whose one model has fold i = member i of `sources` (see ensemble_members).

    Reused when it already holds exactly these members; rebuilt when they changed (only a folder this
    function wrote, marked by SOURCES_FILE, is ever removed). Returns the workspace root.
    """
    members, first = ensemble_members(sources)
    dest = Path(dest)
    marker = dest / SOURCES_FILE
    if marker.is_file() and json.loads(marker.read_text()) == members:
        return dest
    if dest.exists() and any(dest.iterdir()):
        if not marker.is_file():
            raise SarcoError("folder exists and is not an assembled ensemble; it is never overwritten", path=dest,
                             fix="give another --out, or empty that folder")
        shutil.rmtree(dest)
    dataset = first.folder.parent.name
    (dest / "nnUNet_raw" / dataset).mkdir(parents=True)  # find_model resolves the dataset from raw/
    folder = dest / "nnUNet_results" / dataset / first.folder.name
    folder.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy2(first.folder / name, folder / name)
    for i, m in enumerate(members):
        fold_dir = folder / f"fold_{i}"
        fold_dir.mkdir()
        source_fold = Path(m["path"]).parent
        _link_or_copy(Path(m["path"]), fold_dir / "checkpoint_final.pth")
        if (source_fold / "sarco_provenance.json").is_file():
            shutil.copy2(source_fold / "sarco_provenance.json", fold_dir / "sarco_provenance.json")
    marker.write_text(json.dumps(members, indent=2))
    return dest


def model_signature(model: TrainedModel, workspace: Path, held: dict) -> dict:
    """What a table of results came from: the model folder, each fold's checkpoint identity, the cases."""
    marker = Path(workspace) / SOURCES_FILE
    sig = {"model": model.folder.name, "folds": model.folds, "held": held,
           "checkpoints": {f: checkpoint_identity(model.checkpoint(f)) for f in model.folds}}
    if marker.is_file():
        sig["ensemble_of"] = [{"workspace": m["workspace"], "fold": m["fold"], "sha256": m["sha256"],
                               "seed": m.get("training", {}).get("seed")} for m in json.loads(marker.read_text())]
    return sig


def signature_key(signature: dict) -> str:
    """A short digest of a signature, for summary.json and file names."""
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:12]
