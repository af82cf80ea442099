"""Training data, training loop and evaluation of the learned L3 localizer (`sarco train-l3`).

Labels come for free: in a drop-in volume dataset the muscle mask lies on one axial slice, and that
slice is L3; phantom volumes know their `l3_slice_index`. Every volume also yields "not in view"
examples: crops that stop above or start below L3 (chest-only, pelvis-only). Training runs on CPU in
seconds to minutes (projections are computed once; a step sees a batch of random crops).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.errors import InputError, SarcoError
from sarco_nn.l3.localizer import (
    ABSENT_MARGIN_MM,
    MAX_OFFSET_MM,
    PRESENT_MARGIN_MM,
    L3Localizer,
    MipInput,
    projection_input,
)
from sarco_nn.l3.result import L3NotFound

__all__ = [
    "CaseError", "IMPLAUSIBLE_SQUEEZE", "LocalizationReport", "MIN_CROP_MM", "PLAUSIBLE_SCALE",
    "P_IMPLAUSIBLE", "TARGET_SIGMA_ROWS", "TrainingCase", "TrainingLog", "case_from_volume",
    "cases_from_dropin", "cases_from_manifest", "cases_from_phantoms", "evaluate_localizer",
    "split_cases", "train_from_sources", "train_localizer"
]

#: Shortest crop shown in training (mm): shorter scans rarely hold enough anatomy to count vertebrae.
MIN_CROP_MM: float = 96.0
#: Sigma (rows) of the soft target around the true L3 row.
TARGET_SIGMA_ROWS: float = 0.75
#: Vertebra-height scaling shown as normal variation of a lumbar spine (z stretch factors)...
PLAUSIBLE_SCALE: tuple[float, float] = (0.85, 1.2)
#: ...and the squeeze (anatomy shortened by this factor) that makes a spine "not lumbar".
IMPLAUSIBLE_SQUEEZE: tuple[float, float] = (1.8, 2.8)
#: Share of training examples that are such implausible anatomy (label: not in view).
P_IMPLAUSIBLE: float = 0.3


@dataclass(frozen=True)
class TrainingCase:
    """One volume reduced to its projections, with the annotated L3 slice (canonical index)."""

    name: str
    mip: MipInput
    l3_slice_index: int

    @property
    def l3_row(self) -> float:
        return self.mip.row_of_slice(self.l3_slice_index)


# ------------------------------------------------------------------------------------ cases


def case_from_volume(name: str, image: sitk.Image, l3_slice_index: int) -> TrainingCase:
    """A training case from a canonical volume and its L3 slice (canonical index)."""
    return TrainingCase(name, projection_input(image), int(l3_slice_index))


def cases_from_phantoms(n: int, seed: int = 0, matrix: int = 128, level: str = "L3") -> list[TrainingCase]:
    """`n` phantom volumes (T12-S1, 3-5 mm slices); seeds (seed, i) so cohorts with different seeds are disjoint.

    level: the vertebra to learn; L3 is the phantom's own L3 slice, another level the centroid
    slice of its exact vertebra labels (`rules.level_index_from_labels`).
    """
    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume
    from sarco_nn.l3.rules import level_index_from_labels

    cases = []
    for i in range(n):
        vol = generate_phantom_volume(np.random.default_rng([seed, i, 31]), matrix=matrix)
        image = to_sitk(vol.ct_hu, vol.spacing_mm, False, 0.0)  # LPS layout, identity direction: canonical
        index = vol.l3_slice_index if level == "L3" else level_index_from_labels(vol.vertebra_labels, level)
        cases.append(case_from_volume(f"phantom_{seed}_{i:03d}", image, index))
    return cases


def _read_canonical_volume(path: Path) -> sitk.Image:
    from sarco_nn.l3.locate import read_volume

    return read_volume(path)[1]


def _annotated_slice(mask_path: Path, image: sitk.Image) -> int | None:
    """Canonical index of the middle annotated slice of a muscle mask; None if the mask is empty."""
    from sarco_nn.image_io import check_same_grid, read_label_image, to_canonical

    mask = read_label_image(mask_path)
    check_same_grid(image, mask, mask_path)
    array = sitk.GetArrayFromImage(to_canonical(mask))  # a view of a temporary image would dangle
    annotated = np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))
    return None if annotated.size == 0 else int(annotated[len(annotated) // 2])


def cases_from_dropin(drop_dir: Path | str) -> tuple[list[TrainingCase], list[str]]:
    """Volume cases of a drop-in folder (images/ + masks/): the annotated slice is L3.

    Single-slice cases carry no position and are skipped; returns (cases, notes on what was skipped).
    """
    from sarco_nn.cases import index_folder  # the one case-id and pairing rule (duplicates refused)

    drop_dir = Path(drop_dir)
    images_dir, masks_dir = drop_dir / "images", drop_dir / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise InputError("not a drop-in folder (needs images/ and masks/)", drop_dir,
                         "give the folder you dropped for `sarco convert`, or a converted dataset with manifest.csv")
    masks = index_folder(masks_dir)
    cases, notes = [], []
    for case_id, entry in index_folder(images_dir).items():
        if case_id not in masks:
            notes.append(f"{case_id}: no mask, skipped")
            continue
        image = _read_canonical_volume(entry)
        if image.GetSize()[2] < 2:
            notes.append(f"{case_id}: single slice, no L3 position to learn, skipped")
            continue
        index = _annotated_slice(masks[case_id], image)
        if index is None:
            notes.append(f"{case_id}: empty mask, skipped")
            continue
        cases.append(case_from_volume(case_id, image, index))
    return cases, notes


def cases_from_manifest(dataset_dir: Path | str, drop_dir: Path | str | None = None
                        ) -> tuple[list[TrainingCase], list[str]]:
    """Volume cases listed in a converted dataset's manifest.csv (paths relative to the original drop folder).

    `drop_dir` None: taken from dataset.json's sarco.source_dir when the converter recorded it.
    """
    dataset_dir = Path(dataset_dir)
    if drop_dir is None:
        try:
            info = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
            drop_dir = info.get("sarco", {}).get("source_dir")
        except (OSError, ValueError):
            drop_dir = None
    if drop_dir is None:
        raise InputError("a converted dataset needs the original drop-in folder", dataset_dir,
                         "pass --drop-dir (manifest image paths are relative to it), or give the drop folder")
    drop_dir = Path(drop_dir)
    manifest = dataset_dir / "manifest.csv"
    if not manifest.is_file():
        raise InputError("no manifest.csv", dataset_dir, "give a dataset written by `sarco convert`")
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source_case_id"], []).append(row)
    cases, notes = [], []
    for source, items in sorted(by_source.items()):
        if int(items[0]["n_slices"]) < 2:
            notes.append(f"{source}: single slice, skipped")
            continue
        path = Path(items[0]["image_path"])
        path = path if path.is_absolute() else drop_dir / path
        if not path.exists():
            raise InputError(f"image of case {source!r} not found", path,
                             "pass --drop-dir: the folder that was converted (manifest paths are relative to it)")
        indices = sorted(int(r["slice_index"]) for r in items)
        cases.append(case_from_volume(source, _read_canonical_volume(path), indices[len(indices) // 2]))
    return cases, notes


# ------------------------------------------------------------------------------------ sampling


def _crop(mip: MipInput, l3: float, rng: np.random.Generator, present: bool) -> tuple[MipInput, float, bool] | None:
    """A random crop labelled in view (L3 row inside, with margin) or not in view (L3 outside or cut).

    Returns (crop, L3 row relative to the crop start (may lie outside it), in view).
    """
    n, row_mm = mip.n_rows, mip.row_mm
    min_len = min(n, max(4, int(math.ceil(MIN_CROP_MM / row_mm))))
    keep = PRESENT_MARGIN_MM / row_mm
    cut = ABSENT_MARGIN_MM / row_mm
    for _ in range(20):
        length = int(rng.integers(min_len, n + 1))
        start = int(rng.integers(0, n - length + 1))
        stop = start + length
        inside = min(l3 - start, stop - 1 - l3)
        if present and inside >= keep:
            return mip.crop_rows(start, stop), l3 - start, True
        if not present and inside < cut:
            return mip.crop_rows(start, stop), l3 - start, False
    return None


def _rescale_rows(mip: MipInput, factor: float) -> MipInput:
    """The anatomy squeezed (factor > 1) or stretched (< 1) along z on the same row grid."""
    from sarco_nn.l3.localizer import resample_axis

    n_out = max(2, int((mip.n_rows - 1) / factor) + 1)
    array = resample_axis(mip.array, 1, n_out, factor).astype(np.float32)
    return MipInput(array, mip.row_mm, mip.origin_z_mm, mip.row_mm, n_out)


def _implausible(case: TrainingCase, rng: np.random.Generator) -> MipInput:
    """A 'not an L3' example that no crop gives: anatomy upside down, or squeezed to half height or less
    so that vertebrae are 10-17 mm tall (cervical or upper-thoracic size, never lumbar)."""
    if rng.random() < 0.3:
        return MipInput(np.ascontiguousarray(case.mip.array[:, ::-1]), case.mip.row_mm, case.mip.origin_z_mm,
                        case.mip.row_mm, case.mip.n_rows)
    return _rescale_rows(case.mip, float(rng.uniform(*IMPLAUSIBLE_SQUEEZE)))


def _augment(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = array.copy()
    if rng.random() < 0.5:
        out[1] = out[1, :, ::-1]  # left-right mirror of the coronal view
    shift = int(rng.integers(-8, 9))
    out = np.roll(out, shift, axis=2)
    if shift > 0:
        out[:, :, :shift] = 0
    elif shift < 0:
        out[:, :, shift:] = 0
    out = out * float(rng.uniform(0.85, 1.15)) + rng.normal(0.0, 0.02, out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _batch(cases: list[TrainingCase], rng: np.random.Generator, size: int, p_present: float):
    import torch

    from sarco_nn.l3.network import OFFSET_SCALE_ROWS

    items = []
    while len(items) < size:
        case = cases[int(rng.integers(len(cases)))]
        if rng.random() < P_IMPLAUSIBLE:
            odd = _implausible(case, rng)
            items.append((_augment(odd.array, rng), None, False, odd.row_mm))
            continue
        factor = float(rng.uniform(*PLAUSIBLE_SCALE))  # stretch: L3 row moves from r to r * factor
        got = _crop(_rescale_rows(case.mip, 1.0 / factor), case.l3_row * factor, rng,
                    present=bool(rng.random() < p_present))
        if got is not None:
            items.append((_augment(got[0].array, rng), got[1], got[2], got[0].row_mm))
    z = max(item[0].shape[1] for item in items)
    x = torch.zeros(size, items[0][0].shape[0], z, items[0][0].shape[2])
    valid = torch.zeros(size, z, dtype=torch.bool)
    target = torch.zeros(size, z + 1)
    offsets = torch.zeros(size, z)
    has_offsets = torch.zeros(size, z, dtype=torch.bool)
    rows = torch.arange(z, dtype=torch.float32)
    for b, (a, row, present, row_mm) in enumerate(items):
        length = a.shape[1]
        x[b, :, :length] = torch.from_numpy(a)
        valid[b, :length] = True
        if row is not None:  # implausible anatomy has no L3 to point at
            limit = MAX_OFFSET_MM / row_mm
            offsets[b] = torch.clamp(row - rows, -limit, limit) / OFFSET_SCALE_ROWS
            has_offsets[b, :length] = True
        if not present:
            target[b, z] = 1.0
        else:
            weights = torch.exp(-0.5 * ((rows - row) / TARGET_SIGMA_ROWS) ** 2) * valid[b]
            target[b, :z] = weights / weights.sum()
    return x, valid, target, offsets, has_offsets


# ------------------------------------------------------------------------------------ training


@dataclass
class TrainingLog:
    steps: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)


def train_localizer(cases: list[TrainingCase], steps: int = 600, max_seconds: float | None = None, seed: int = 0,
                    batch_size: int = 8, learning_rate: float = 3e-3, p_present: float = 0.5,
                    log: TrainingLog | None = None, network_config: dict | None = None,
                    level: str = "L3") -> L3Localizer:
    """Train a MipLocalizerNet from scratch on random crops of `cases` (stops at `steps` or `max_seconds`).

    level: the vertebra the cases' annotated slices show (recorded in the checkpoint; nothing in
    the network or the decision rule is specific to L3, only the annotation is).
    """
    import torch

    from sarco_nn.l3.network import MipLocalizerNet

    if not cases:
        raise SarcoError("no volume with an annotated L3 slice to learn from",
                         fix="give a drop-in folder of whole volumes (mask on the L3 slice) or add --phantoms N")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network_config = dict(network_config or {})
    network = MipLocalizerNet(**network_config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=max(steps, 2),
                                                   pct_start=0.1)
    log = log if log is not None else TrainingLog()
    start = time.monotonic()
    network.train()
    for step in range(steps):
        x, valid, target, offsets, has_offsets = _batch(cases, rng, batch_size, p_present)
        rows, absent, predicted_offsets = network(x, valid)
        logits = torch.cat([rows, absent[:, None]], dim=1)
        logp = torch.log_softmax(logits, dim=1)
        loss = -(target * torch.nan_to_num(logp, neginf=0.0)).sum(dim=1).mean()
        if has_offsets.any():
            loss = loss + torch.nn.functional.smooth_l1_loss(predicted_offsets[has_offsets], offsets[has_offsets],
                                                             beta=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        log.losses.append(float(loss.detach()))
        log.steps = step + 1
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            break
    log.seconds = time.monotonic() - start
    log.final_loss = float(np.mean(log.losses[-20:]))
    config = {"network": network_config, "level": level, "n_training_cases": len(cases), "steps": log.steps,
              "seed": seed,
              "training_cases": [c.name for c in cases][:200]}
    return L3Localizer(network, config)


# ------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class CaseError:
    name: str
    true_index: int
    predicted_index: int | None  # None: reported as not in view
    error_slices: int | None
    error_mm: float | None
    confidence: float


@dataclass(frozen=True)
class LocalizationReport:
    """Localization error on held-out cases, in slices and in mm (signed: + = predicted too cranial)."""

    cases: list[CaseError]

    @property
    def found(self) -> list[CaseError]:
        return [c for c in self.cases if c.predicted_index is not None]

    def summary(self) -> dict:
        """Absolute errors over the cases located (None when none was); not-found cases are counted apart."""
        found = self.found
        mm = np.abs([c.error_mm for c in found])
        sl = np.abs([c.error_slices for c in found])

        def stat(fn, values):
            return float(fn(values)) if len(values) else None

        return {"n_cases": len(self.cases), "n_not_found": len(self.cases) - len(found),
                "mean_abs_error_mm": stat(np.mean, mm), "median_abs_error_mm": stat(np.median, mm),
                "max_abs_error_mm": stat(np.max, mm), "mean_abs_error_slices": stat(np.mean, sl),
                "max_abs_error_slices": stat(np.max, sl), "within_1_slice": stat(np.mean, sl <= 1)}


def evaluate_localizer(localizer: L3Localizer, cases: list[TrainingCase]) -> LocalizationReport:
    """Locate L3 in every (uncropped) case and compare with its annotated slice."""
    errors = []
    for case in cases:
        try:
            loc = localizer.locate_mip(case.mip, case.name)
        except L3NotFound:
            errors.append(CaseError(case.name, case.l3_slice_index, None, None, None, 0.0))
            continue
        d = loc.slice_index - case.l3_slice_index
        errors.append(CaseError(case.name, case.l3_slice_index, loc.slice_index, d,
                                float(d * case.mip.slice_spacing_mm), loc.confidence))
    return LocalizationReport(errors)


def split_cases(cases: list[TrainingCase], validation_fraction: float, seed: int = 0):
    """(train, held-out): a seeded shuffle; at least one held-out case when fraction > 0 and there are 2+ cases."""
    if not 0.0 <= validation_fraction < 1.0:
        raise SarcoError(f"validation fraction {validation_fraction} must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = int(round(validation_fraction * len(cases)))
    if validation_fraction > 0 and len(cases) > 1:
        n_val = max(1, n_val)
    return [cases[i] for i in order[n_val:]], [cases[i] for i in order[:n_val]]


def train_from_sources(model_dir: Path | str, source: Path | str | None = None, drop_dir: Path | str | None = None,
                       phantoms: int = 0, validation_fraction: float = 0.2, steps: int = 600,
                       max_seconds: float | None = None, seed: int = 0, level: str = "L3") -> tuple[Path, dict]:
    """What `sarco train-l3` does: gather cases, hold some out, train, evaluate, save. Returns (checkpoint, report).

    level: the vertebra to localize (T12…L5). A drop-in's annotated slice IS that level (masks drawn
    at L1 for `--level L1`); phantom volumes give it from their vertebra labels.
    """
    from sarco_nn.body_composition import check_level

    level = check_level(level)
    cases: list[TrainingCase] = []
    notes: list[str] = []
    if source is not None:
        source = Path(source)
        if (source / "manifest.csv").is_file():
            found, why = cases_from_manifest(source, drop_dir)
        else:
            found, why = cases_from_dropin(source)
        cases += found
        notes += why
    if phantoms:
        cases += cases_from_phantoms(phantoms, seed=seed, level=level)
    if not cases:
        raise SarcoError("no whole volume with an annotated L3 slice found", source,
                         "drop whole CT volumes whose muscle mask lies on the L3 slice, or add --phantoms N")
    train, held = split_cases(cases, validation_fraction, seed)
    log = TrainingLog()
    localizer = train_localizer(train, steps=steps, max_seconds=max_seconds, seed=seed, log=log, level=level)
    report = {"level": level, "training": {"cases": len(train), "steps": log.steps, "seconds": round(log.seconds, 1),
                           "final_loss": round(log.final_loss, 4)}, "notes": notes}
    if held:
        evaluation = evaluate_localizer(localizer, held)
        report["held_out"] = evaluation.summary()
        report["held_out_cases"] = [c.__dict__ for c in evaluation.cases]
    path = localizer.save(model_dir, report)
    return path, report
