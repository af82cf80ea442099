"""`sarco classify train`: one fold of the classification baseline, resumable, early-stopped.

Outputs under <workspace>/sarco_classification/<Dataset>/<arch>/fold_<k>/:
  checkpoint_latest.pt   everything needed to resume (model, optimizer, stage, epoch, history)
  checkpoint_best.pt     the weights with the lowest validation loss (what predict/compare use)
  validation_predictions.csv, summary.json, weights_load_report.json (with --weights)
Checkpoints hold only tensors and plain values, so they load with torch.load(weights_only=True).

Class imbalance (sarcopenic cases are the minority): class-weighted cross-entropy (default) or a
balanced sampler. The validation loss that drives early stopping is class-weighted in both cases,
so a network that ignores the minority does not look good. All randomness (shuffling, sampling,
augmentation) is drawn from a generator seeded per epoch, so a resumed run continues the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from sarco_nn.atomic import atomic_path, write_text_atomic
from sarco_nn.classification.data import (CLASSIFIER_FOV_MM, LabelledCase, as_rgb, derive_labels, fold_cases,
                                          load_splits, prepare_slice, read_case_slice)
from sarco_nn.classification.metrics import flag_summary
from sarco_nn.classification.models import (arch_spec, build_model, check_input_size, load_weights,
                                            split_outputs)
from sarco_nn.classification.unfreeze import (DEFAULT_LR_DECAY, UNFREEZE_MODES, apply_stage, build_schedule,
                                              set_train_mode)
from sarco_nn.devices import resolve_device
from sarco_nn.errors import SarcoError

__all__ = [
    "AUX_LOSS_WEIGHT", "BALANCE_MODES", "CHECKPOINT_BEST", "CHECKPOINT_FORMAT", "CHECKPOINT_LATEST",
    "DECISION_THRESHOLD", "DEFAULT_BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_LR", "DEFAULT_PATIENCE",
    "INTENSITY_SCALE", "INTENSITY_SHIFT", "RESULTS_DIR", "ROTATION_DEG", "VALIDATION_COLUMNS",
    "VALIDATION_FILE", "augment", "class_weights", "compute_loss", "fold_dir", "load_checkpoint",
    "predict_probabilities", "read_validation_predictions", "train_fold", "train_step",
    "write_validation_predictions"
]

RESULTS_DIR = "sarco_classification"
CHECKPOINT_FORMAT = "sarco-classifier-v1"
CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
VALIDATION_FILE = "validation_predictions.csv"
VALIDATION_COLUMNS = ["case_id", "fold", "label", "label_source", "probability_sarcopenic", "predicted_sarcopenic"]

#: Epochs per stage (incremental) or in total (all / head) when --epochs is not given.
DEFAULT_EPOCHS = {"incremental": 15, "all": 60, "head": 30}
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 1e-3
DEFAULT_PATIENCE = 8
BALANCE_MODES = ("weights", "sampler")
#: Probability above which a case is called sarcopenic (the loss is class-balanced, so 0.5 is balanced).
DECISION_THRESHOLD = 0.5
#: Inception's auxiliary-loss weight (Szegedy et al. 2016; torchvision's reference recipe).
AUX_LOSS_WEIGHT = 0.4

# Light augmentation for CT slices: patients lie straight on the table, so only small rotations;
# left-right flips keep anatomy plausible; intensity jitter mimics kernel / calibration differences.
ROTATION_DEG = 10.0
INTENSITY_SCALE = 0.1  # multiply by U(1 - s, 1 + s)
INTENSITY_SHIFT = 0.05  # add U(-s, s) (window units: 0.05 ≈ 21 HU)


def fold_dir(workspace, dataset_name: str, arch: str, fold: str | int) -> Path:
    return workspace.root / RESULTS_DIR / dataset_name / arch / f"fold_{fold}"


def class_weights(labels) -> "torch.Tensor":
    """n / (2 n_c): each class contributes half of the loss whatever its prevalence."""
    import torch

    labels = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(labels, minlength=2).float()
    if torch.any(counts == 0):
        raise SarcoError(f"the training cases hold only one class ({int(counts[0])} not sarcopenic, "
                         f"{int(counts[1])} sarcopenic)", fix="add cases of both classes to the dataset.")
    return labels.numel() / (2.0 * counts)


def augment(x, generator):
    """Small rotation, left-right flip and intensity jitter of a (B, 1, H, W) batch in [0, 1]."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(ROTATION_DEG)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * INTENSITY_SCALE
    shift = (torch.rand(b, generator=generator) * 2 - 1) * INTENSITY_SHIFT
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros(b)], 1),
                         torch.stack([sin * flip, cos, torch.zeros(b)], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = x * scale.to(x).view(b, 1, 1, 1) + shift.to(x).view(b, 1, 1, 1)
    return x.clamp(0.0, 1.0)


def compute_loss(output, target, weight=None):
    import torch.nn.functional as F

    logits, aux = split_outputs(output)
    loss = F.cross_entropy(logits, target, weight=weight)
    if aux is not None:
        loss = loss + AUX_LOSS_WEIGHT * F.cross_entropy(aux, target, weight=weight)
    return loss


def train_step(model, x, y, optimizer, weight=None, generator=None, augment_batch: bool = True) -> float:
    """One optimisation step on a (B, 1, H, W) batch; returns the loss."""
    if augment_batch:
        x = augment(x, generator)
    optimizer.zero_grad(set_to_none=True)
    loss = compute_loss(model(as_rgb(x)), y, weight)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def predict_probabilities(model, x, device, batch_size: int = 16, y=None, weight=None) -> tuple[np.ndarray, float]:
    """(P(sarcopenic) per case, mean loss or NaN without labels) with the model in eval mode."""
    import torch
    import torch.nn.functional as F

    model.eval()
    probs, logits_all = [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits, _ = split_outputs(model(as_rgb(x[start:start + batch_size].to(device))))
            logits_all.append(logits.float().cpu())
            probs.append(torch.softmax(logits.float(), 1)[:, 1].cpu())
    if not probs:
        return np.zeros(0), math.nan
    loss = math.nan
    if y is not None:
        loss = float(F.cross_entropy(torch.cat(logits_all), y, weight=None if weight is None else weight.cpu()))
    return torch.cat(probs).numpy(), loss


def _prepare(cases: list[LabelledCase], size: int, fov_mm: float | None):
    import torch

    arrays = [prepare_slice(*read_case_slice(c.image_path), size, fov_mm) for c in cases]
    x = torch.from_numpy(np.stack(arrays)[:, None]) if arrays else torch.zeros(0, 1, size, size)
    y = torch.tensor([int(c.label) for c in cases], dtype=torch.long)
    return x, y


def _batches(indices, batch_size: int) -> list:
    """Split into batches; a trailing batch of one joins the previous (BatchNorm needs two samples)."""
    chunks = list(indices.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        import torch

        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def _save(obj: dict, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    """A sarco classifier checkpoint (weights_only=True: no code runs from the file)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SarcoError(f"cannot read classifier checkpoint ({str(exc).splitlines()[0][:120]})", path=path,
                         fix="delete it and train the fold again.") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise SarcoError("not a sarco classifier checkpoint", path=path, fix="delete it and train the fold again.")
    return data


def write_validation_predictions(path: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=VALIDATION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, out.getvalue())


def read_validation_predictions(path: Path) -> dict[str, float]:
    """{case: P(sarcopenic)} from a fold's validation_predictions.csv."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["case_id"]: float(row["probability_sarcopenic"]) for row in csv.DictReader(handle)}


def train_fold(workspace=None, fold: str | int = 0, dataset: str | int | None = None, arch: str = "densenet121",
               weights: Path | str | None = None, unfreeze: str | None = None, epochs: int | None = None,
               device: str = "auto", *, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
               lr_decay: float = DEFAULT_LR_DECAY, input_size: int | None = None,
               fov_mm: float | None = CLASSIFIER_FOV_MM, patience: int = DEFAULT_PATIENCE,
               balance: str = "weights", thresholds: str = "paper", seed: int = 0, restart: bool = False,
               progress: bool = True, log: Callable[[str], None] = print,
               on_epoch_end: Callable[[dict], None] | None = None) -> Path:
    """Train (or resume) one fold; return its output folder.

    unfreeze: incremental (the study's schedule) / all / head; default incremental with --weights,
      all without (a random backbone has no features worth training a head on first).
    epochs: per stage for incremental, in total otherwise (defaults in DEFAULT_EPOCHS).
    """
    import torch

    from sarco_nn.hashing import sha256_file
    from sarco_nn.workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    spec = arch_spec(arch)
    size = check_input_size(arch, input_size)
    mode = unfreeze or ("incremental" if weights else "all")
    if mode not in UNFREEZE_MODES:
        raise SarcoError(f"unknown unfreeze mode {mode!r}", fix=f"use one of: {', '.join(UNFREEZE_MODES)}.")
    if balance not in BALANCE_MODES:
        raise SarcoError(f"unknown balance mode {balance!r}", fix=f"use one of: {', '.join(BALANCE_MODES)}.")
    if batch_size < 2:
        raise SarcoError("batch size must be at least 2 (BatchNorm)", fix="use --batch-size 2 or more.")
    n_epochs = int(epochs or DEFAULT_EPOCHS[mode])
    schedule = build_schedule(arch, mode, n_epochs, lr, lr_decay)
    dev = resolve_device(device)

    name = ws.dataset_name(dataset)
    labelled, excluded = derive_labels(ws.raw / name, thresholds)
    splits = load_splits(ws, name)
    train_ids, val_ids = fold_cases(splits, fold)
    skipped = sorted(c for c in (*train_ids, *val_ids) if c not in labelled)
    train_cases = [labelled[c] for c in train_ids if c in labelled]
    val_cases = [labelled[c] for c in val_ids if c in labelled]
    if skipped:
        log(f"note: {len(skipped)} case(s) without a label left out: "
            + "; ".join(f"{c} ({excluded.get(c, 'no label')})" for c in skipped[:5]) + (" …" if len(skipped) > 5 else ""))

    out = fold_dir(ws, name, arch, fold)
    weights_path = None if weights is None else Path(weights).expanduser().resolve()
    config = {
        "format": CHECKPOINT_FORMAT, "arch": arch, "dataset": name, "fold": str(fold), "input_size": size,
        "fov_mm": fov_mm, "unfreeze": mode, "epochs": n_epochs, "lr": float(lr), "lr_decay": float(lr_decay),
        "batch_size": int(batch_size), "patience": int(patience), "balance": balance, "thresholds": str(thresholds),
        "weights": None if weights_path is None else str(weights_path),
        "weights_sha256": None if weights_path is None or not weights_path.is_file() else sha256_file(weights_path),
        "seed": int(seed), "decision_threshold": DECISION_THRESHOLD,
    }

    latest_path, best_path = out / CHECKPOINT_LATEST, out / CHECKPOINT_BEST
    resume = None
    if latest_path.exists() and not restart:
        resume = load_checkpoint(latest_path)
        if resume["config"] != config:
            changed = sorted(k for k in config if resume["config"].get(k) != config[k])
            raise SarcoError(f"fold folder holds a run with other settings ({', '.join(changed)})", path=out,
                             fix="repeat the same settings to resume, or pass --restart to discard it.")
        if resume["finished"]:
            log(f"fold {fold} already trained: {out} (pass --restart to train again)")
            return out

    if resume is None:  # a fresh run: nothing of an earlier run may be mistaken for this one's
        for stale_file in (latest_path, best_path, out / VALIDATION_FILE, out / "summary.json"):
            stale_file.unlink(missing_ok=True)
    train_x, train_y = _prepare(train_cases, size, fov_mm)
    val_x, val_y = _prepare(val_cases, size, fov_mm)
    weight = class_weights(train_y).to(dev)
    sample_weight = weight.cpu()[train_y]

    torch.manual_seed(seed)
    model = build_model(arch, size)
    if weights_path is not None and resume is None:
        report = load_weights(model, arch, weights_path)
        write_text_atomic(out / "weights_load_report.json", json.dumps(report.to_json(), indent=2) + "\n")
        log(report.summary_line())
    model.to(dev)

    state = {"stage": 0, "epoch": 0, "global_epoch": 0, "best_val_loss": math.inf, "best_epoch": -1, "stale": 0,
             "history": [], "finished": False}
    optimizer_state = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        state.update({k: resume[k] for k in state})
        optimizer_state = resume.get("optimizer")
        log(f"resuming fold {fold} at stage {state['stage'] + 1}/{len(schedule)}, epoch {state['epoch'] + 1}")
    log(f"{arch} fold {fold}: {len(train_cases)} training cases ({int(train_y.sum())} sarcopenic), "
        f"{len(val_cases)} validation ({int(val_y.sum())} sarcopenic), input {size}px over {fov_mm or 'fit'} mm, "
        f"unfreeze {mode} ({len(schedule)} stage(s)), device {dev}")

    def save_latest(optimizer) -> None:
        _save({"format": CHECKPOINT_FORMAT, "config": config, "model": model.state_dict(),
               "optimizer": None if optimizer is None else optimizer.state_dict(), **state}, latest_path)

    has_val = len(val_cases) > 0
    bar = _progress(progress)
    with bar:
        for stage_index in range(state["stage"], len(schedule)):
            stage = schedule[stage_index]
            if state["epoch"] == 0 and stage_index > 0 and has_val and best_path.exists():
                model.load_state_dict(load_checkpoint(best_path)["model"])  # next stage starts from the best
            if state["epoch"] == 0:
                state["stale"] = 0
            apply_stage(model, arch, stage)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=1e-5)
            if optimizer_state is not None and state["epoch"] > 0:
                optimizer.load_state_dict(optimizer_state)
            optimizer_state = None
            batches_per_epoch = max(1, len(_batches(torch.arange(len(train_cases)), batch_size)))
            task = bar.add_task(f"stage {stage_index + 1}/{len(schedule)} {stage.name}",
                                total=stage.epochs * batches_per_epoch, completed=state["epoch"] * batches_per_epoch,
                                stats="")
            while state["epoch"] < stage.epochs:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + state["global_epoch"])
                if balance == "sampler":
                    order = torch.multinomial(sample_weight, len(train_cases), replacement=True, generator=generator)
                else:
                    order = torch.randperm(len(train_cases), generator=generator)
                set_train_mode(model, arch, stage)
                losses = []
                for batch in _batches(order, batch_size):
                    losses.append(train_step(model, train_x[batch].to(dev), train_y[batch].to(dev), optimizer,
                                             None if balance == "sampler" else weight, generator))
                    bar.advance(task)
                row = {"epoch": state["global_epoch"] + 1, "stage": stage.name, "lr": stage.lr,
                       "train_loss": float(np.mean(losses))}
                if has_val:
                    probs, val_loss = predict_probabilities(model, val_x, dev, batch_size, val_y, weight)
                    s = flag_summary([bool(p >= DECISION_THRESHOLD) for p in probs], [bool(t) for t in val_y], probs)
                    row.update({"val_loss": val_loss, "val_balanced_accuracy": s["balanced_accuracy"],
                                "val_auroc": s["auroc"]})
                    improved = val_loss < state["best_val_loss"]
                else:
                    improved = True  # fold `all`: no validation, the last epoch is kept
                state["global_epoch"] += 1
                state["epoch"] += 1
                state["history"].append(row)
                if improved:
                    state.update(best_val_loss=row.get("val_loss", math.nan) if has_val else math.inf,
                                 best_epoch=row["epoch"], stale=0)
                    _save({"format": CHECKPOINT_FORMAT, "config": config, "model": model.state_dict(),
                           "epoch": row["epoch"], "val_loss": row.get("val_loss", math.nan)}, best_path)
                else:
                    state["stale"] += 1
                early = has_val and state["stale"] >= patience
                if early:
                    state["epoch"] = stage.epochs
                save_latest(optimizer)
                bar.update(task, stats=_stats(row), completed=state["epoch"] * batches_per_epoch)
                if on_epoch_end is not None:
                    on_epoch_end(row)
            state["stage"] = stage_index + 1
            state["epoch"] = 0
            save_latest(None)

    best = load_checkpoint(best_path)
    model.load_state_dict(best["model"])
    summary = {"config": config, "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
               "n_train": len(train_cases), "n_val": len(val_cases), "unlabelled_cases": skipped,
               "history": state["history"]}
    if has_val:
        probs, _ = predict_probabilities(model, val_x, dev, batch_size)
        rows = [{"case_id": c.case_id, "fold": str(fold), "label": int(c.label), "label_source": c.source,
                 "probability_sarcopenic": f"{p:.6f}", "predicted_sarcopenic": int(p >= DECISION_THRESHOLD)}
                for c, p in zip(val_cases, probs)]
        write_validation_predictions(out / VALIDATION_FILE, rows)
        summary["validation"] = flag_summary([bool(p >= DECISION_THRESHOLD) for p in probs],
                                             [c.label for c in val_cases], probs)
    from sarco_nn.evaluation.report import clean_json

    write_text_atomic(out / "summary.json", json.dumps(clean_json(summary), indent=2, ensure_ascii=False) + "\n")
    state["finished"] = True
    save_latest(None)
    log(f"fold {fold} done: best epoch {best['epoch']}"
        + (f", validation loss {best['val_loss']:.4f}" if has_val else " (no validation: last epoch kept)"))
    return out


def _stats(row: dict) -> str:
    text = f"loss {row['train_loss']:.3f}"
    if "val_loss" in row:
        text += f" val {row['val_loss']:.3f} bal.acc {row['val_balanced_accuracy']:.2f}"
    return text


class _NoProgress:
    """Stand-in for rich.Progress when no bar is wanted (tests, logs)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[stats]}"))
