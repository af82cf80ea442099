"""`sarco classify predict`: the fold classifiers' mean probability that each scan is sarcopenic.

Scans are read with `sarco_nn.image_io.load_axial_slice`: every input check of the segmentation
path applies, including `sarco_nn.ct_checks` (never a probability from something that is not a CT
slice of a body), but unlike `sarco predict` there is no L3 locator here, so a scan must be one axial
slice or a volume given with its L3 slice index (`--l3-slice`). A bad scan is recorded in
predictions.csv (`sarco_nn.status`: status `failed` + reasons) and the batch goes on.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable

from sarco_nn.atomic import write_text_atomic
from sarco_nn.errors import SarcoError
from sarco_nn.status import FLAG_UNKNOWN, STATUS_COLUMNS, Reason, Status, Verdict

__all__ = ["COLUMNS", "PREDICTIONS_FILE", "find_models", "load_classifier", "predict_scans"]

PREDICTIONS_FILE = "predictions.csv"
COLUMNS = ["case_id", *STATUS_COLUMNS, "probability_sarcopenic", "sarcopenic", "n_models", "slice_index",
           "input", "arch", "dataset", "folds"]


def find_models(workspace, dataset: str | int | None = None, arch: str | None = None,
                folds: list[str] | None = None) -> tuple[str, str, list[Path]]:
    """(dataset name, arch, finished fold folders); default folds: every cross-validation fold, else `all`."""
    from sarco_nn.classification.train import CHECKPOINT_BEST, RESULTS_DIR

    name = workspace.dataset_name(dataset)
    root = workspace.root / RESULTS_DIR / name

    def finished(d: Path) -> bool:
        return (d / CHECKPOINT_BEST).is_file() and (d / "summary.json").is_file()

    trained = {} if not root.is_dir() else {
        a.name: sorted(f for f in a.glob("fold_*") if finished(f)) for a in sorted(root.iterdir()) if a.is_dir()}
    trained = {a: f for a, f in trained.items() if f}
    if not trained:
        raise SarcoError(f"no trained classifier for {name}", path=root, fix="run `sarco classify train FOLD` first.")
    if arch is None:
        if len(trained) > 1:
            raise SarcoError(f"classifiers of several architectures for {name}: {', '.join(trained)}",
                             fix="choose one with --arch.")
        arch = next(iter(trained))
    if arch not in trained:
        raise SarcoError(f"no trained {arch} classifier for {name}", path=root,
                         fix=f"train it, or use one of: {', '.join(trained)}.")
    available = {d.name[len("fold_"):]: d for d in trained[arch]}
    if folds is None:
        chosen = sorted((f for f in available if f.isdigit()), key=int) or [f for f in available if f == "all"]
    else:
        missing = [f for f in folds if f not in available]
        if missing:
            raise SarcoError(f"fold(s) {', '.join(missing)} of {arch} not trained (or not finished)",
                             fix=f"trained folds: {', '.join(sorted(available))}.")
        chosen = list(folds)
    if not chosen:
        raise SarcoError(f"no finished fold of {arch} for {name}", fix="finish training a fold first.")
    return name, arch, [available[f] for f in chosen]


def load_classifier(fold_path: Path, device):
    """(model in eval mode on device, its training config) from a fold's best checkpoint."""
    from sarco_nn.classification.models import build_model
    from sarco_nn.classification.train import CHECKPOINT_BEST, load_checkpoint

    checkpoint = load_checkpoint(Path(fold_path) / CHECKPOINT_BEST)
    config = checkpoint["config"]
    model = build_model(config["arch"], config["input_size"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config


def predict_scans(workspace, inputs: Path | str, out_dir: Path | str, dataset: str | int | None = None,
                  arch: str | None = None, folds: list[str] | None = None, device: str = "auto",
                  l3_slice: int | None = None, log: Callable[[str], None] = print) -> tuple[Path, int]:
    """Classify every scan in `inputs`; write out_dir/predictions.csv; return (its path, number of failures).

    The run holds `out_dir`'s lock (`sarco_nn.run_lock`, as `sarco predict` does), taken before any
    model loads: a second run into the folder (classify or segmentation predict) is refused in one line."""
    from sarco_nn.run_lock import output_lock

    with output_lock(out_dir, "sarco classify predict"):  # two runs would each replace predictions.csv
        return _predict_locked(workspace, inputs, out_dir, dataset, arch, folds, device, l3_slice, log)


def _predict_locked(workspace, inputs: Path | str, out_dir: Path | str, dataset: str | int | None,
                    arch: str | None, folds: list[str] | None, device: str, l3_slice: int | None,
                    log: Callable[[str], None]) -> tuple[Path, int]:
    """`predict_scans` once it holds the output folder's lock."""
    import torch

    from sarco_nn.classification.data import as_rgb, prepare_slice, slice_array
    from sarco_nn.classification.train import DECISION_THRESHOLD
    from sarco_nn.ct_checks import ct_reasons, file_reasons
    from sarco_nn.devices import resolve_device
    from sarco_nn.image_io import printable_path
    from sarco_nn.image_io import load_axial_slice
    from sarco_nn.inference import discover_scans
    from sarco_nn.workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    scans = discover_scans(Path(inputs))
    name, arch, fold_dirs = find_models(ws, dataset, arch, folds)
    dev = resolve_device(device)
    models = [load_classifier(d, dev) for d in fold_dirs]
    fold_names = ",".join(d.name[len("fold_"):] for d in fold_dirs)
    log(f"{arch} classifier of {name}, folds {fold_names}: {len(scans)} scan(s)")
    rows, failures = [], 0
    for scan in scans:
        row = {"case_id": scan.case_id, "input": printable_path(os.path.abspath(scan.path)), "arch": arch,
               "dataset": name, "folds": fold_names}  # absolute: a cell starting "/" is never a formula
        try:
            refused = scan.refusal()  # known unusable at discovery (a refused name, a broken link): failed
            if refused is not None:
                raise refused
            image, source = load_axial_slice(scan.path, l3_slice)
            verdict = Verdict()
            verdict.extend(file_reasons(scan.path))
            verdict.extend(ct_reasons(image, printable_path(scan.path)))
            if verdict.status is Status.FAILED:
                failures += 1
                row.update(verdict.columns())
                log(f"{scan.case_id}: {verdict.columns()['reasons']}")
                rows.append(row)
                continue
            hu, spacing = slice_array(image)
            probabilities = []
            with torch.no_grad():
                for model, config in models:
                    x = torch.from_numpy(prepare_slice(hu, spacing, config["input_size"], config["fov_mm"]))
                    logits = model(as_rgb(x[None, None].to(dev)))
                    probabilities.append(float(torch.softmax(logits.float(), 1)[0, 1]))
            p = sum(probabilities) / len(probabilities)
            row.update(verdict.columns(), probability_sarcopenic=f"{p:.4f}",
                       sarcopenic=int(p >= DECISION_THRESHOLD) if verdict.flag_allowed else FLAG_UNKNOWN,
                       n_models=len(probabilities), slice_index=source.slice_index)
        except SarcoError as exc:
            failures += 1
            row.update(Verdict([Reason(exc.reason_code, str(exc), Status.FAILED)]).columns())
            log(f"{scan.case_id}: {exc}")
        rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    target = Path(out_dir) / PREDICTIONS_FILE
    write_text_atomic(target, out.getvalue())
    return target, failures
