"""`sarco predict`: fold ensemble + nnU-Net postprocessing → mask, overlay and one results.csv row per scan.

Batch-safe: a bad scan is recorded (status + reason) and the batch goes on; outputs are written
atomically and a restarted run with the same model skips the cases already finished.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sarco_nn.atomic import write_text_atomic
from sarco_nn.constants import SCAN_SUFFIXES as IMAGE_SUFFIXES
from sarco_nn.errors import SarcoError
from sarco_nn.image_io import printable_path
from sarco_nn.workspace import Workspace

RUN_FILE = "sarco_predict.json"
RESULT_COLUMNS = [
    "case_id", "status", "reason", "sma_cm2", "smi_cm2_m2", "muscle_hu_mean", "hu_gate", "sex", "height_m",
    "threshold_set", "threshold", "sarcopenic", "slice_index", "z_mm", "spacing_y_mm", "spacing_x_mm",
    "input", "mask", "overlay", "trainer", "plans", "folds", "pretrained", "tta",
    "l3_method", "l3_rule", "l3_confidence", "l3_slice_canonical", "l3_slab", "l3_thumbnail",
]


@dataclass(frozen=True)
class Scan:
    case_id: str
    path: Path


def case_id_from_path(path: Path) -> str:
    name = printable_path(path.name)  # a name that is not UTF-8 must not break results.csv
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[:-5] if name.endswith("_0000") else name


def discover_scans(source: Path) -> list[Scan]:
    """A file, a DICOM series folder, or a folder of image files and/or DICOM series folders."""
    source = Path(source)
    if not source.exists():
        raise SarcoError("input not found", path=source, fix="give a CT file or a folder of scans with -i.")
    if source.is_file():
        return [Scan(case_id_from_path(source), source)]
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
    series = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not images and not series and files:
        return [Scan(printable_path(source.name), source)]  # the folder itself is one DICOM series
    scans = [Scan(case_id_from_path(p), p) for p in images] + [Scan(printable_path(p.name), p) for p in series]
    seen: dict[str, Path] = {}
    for scan in scans:
        if scan.case_id in seen:
            raise SarcoError(f"two inputs give case id {scan.case_id!r} ({seen[scan.case_id].name}, {scan.path.name})",
                             path=source, fix="rename one of them.")
        seen[scan.case_id] = scan.path
    if not scans:
        raise SarcoError("no CT images found", path=source, fix="expected .nii/.nii.gz/.mha/.nrrd files or DICOM folders.")
    return scans


def _read_results(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["case_id"]: row for row in csv.DictReader(f)}


def _write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _check_output_folder(out_dir: Path, signature: dict, overwrite: bool) -> None:
    run_file = out_dir / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous != signature and not overwrite:
            raise SarcoError(f"output folder holds results of another model/settings ({previous.get('model')})",
                             path=out_dir, fix="choose another -o folder, or pass --overwrite.")
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise SarcoError("output folder is not empty and was not written by `sarco predict`", path=out_dir,
                         fix="choose an empty or new -o folder, or pass --overwrite.")


def predict(workspace: Workspace, inputs: Path, out_dir: Path, dataset: str | int | None = None,
            trainer: str | None = None, preset: str | None = None, clinical_csv: Path | None = None,
            thresholds: str = "paper", fast: bool = False, device: str = "auto", l3_slice: int | None = None,
            hu_gate: bool = False, overwrite: bool = False, progress: bool = True, l3_csv: Path | None = None,
            l3_from: Path | None = None, locator: str = "auto", l3_rule: str = "centroid", slab: int = 1,
            l3_model_dir: Path | None = None,
            dicom_seg: bool = False) -> tuple[Path, int]:  # review (#19): --dicom-seg pass-through
    """Segment and measure every scan; return (results.csv path, number of failed cases).

    Whole volumes get their L3 slice from --l3-slice, an --l3-csv row, a vertebra mask (--l3-from),
    or the L3 localizer (`sarco train-l3`, or TotalSegmentator when installed), in that order.
    """
    import SimpleITK as sitk

    from sarco_nn.clinical import read_clinical_csv
    from sarco_nn.constants import MUSCLE_HU_GATE
    from sarco_nn.image_io import mask_to_source_geometry, to_canonical
    from sarco_nn.l3.choose import l3_result_fields, load_l3_slice, read_l3_csv, vertebra_mask_for
    from sarco_nn.l3.localizer import default_model_dir
    from sarco_nn.l3.thumbnail import save_l3_thumbnail
    from sarco_nn.measure import measure_slice, smi
    from sarco_nn.model_store import build_predictor, find_model
    from sarco_nn.overlay import save_overlay
    from sarco_nn.postprocessing import apply_postprocessing, ensure_postprocessing, postprocessing_functions
    from sarco_nn.thresholds import get_threshold_set
    from sarco_nn.devices import resolve_device

    scans = discover_scans(inputs)
    threshold_set = get_threshold_set(thresholds)
    clinical = read_clinical_csv(clinical_csv) if clinical_csv else {}
    model = find_model(workspace, dataset, trainer, preset)
    decision = ensure_postprocessing(workspace, model)
    signature = {"model": str(model.folder), "folds": model.folds, "tta": not fast,
                 "postprocessing": (decision or {}).get("postprocessing_fns", []), "thresholds": thresholds,
                 "hu_gate": hu_gate, "l3_slice": l3_slice, "l3_csv": str(l3_csv) if l3_csv else None,
                 "l3_from": str(l3_from) if l3_from else None, "locator": locator, "l3_rule": l3_rule, "slab": slab}
    out_dir = Path(out_dir)
    _check_output_folder(out_dir, signature, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / RUN_FILE, json.dumps(signature, indent=2))

    results_path = out_dir / "results.csv"
    previous = _read_results(results_path)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for scan in scans:
        done = previous.get(scan.case_id)
        if done and done.get("status") == "ok" and (out_dir / done.get("mask", "")).is_file():
            rows[scan.case_id] = done
        else:
            todo.append(scan)

    l3_rows = read_l3_csv(l3_csv) if l3_csv else {}
    l3_dir = Path(l3_model_dir) if l3_model_dir else default_model_dir(workspace.root)
    torch_device = resolve_device(device, all_cpu_threads=True)
    predictor = build_predictor(model, torch_device, use_mirroring=not fast) if todo else None
    pp_functions = postprocessing_functions(decision)
    provenance = model.provenance()
    gate = MUSCLE_HU_GATE if hu_gate else None
    failures = 0
    errors_log = out_dir / "errors.log"

    from tqdm import tqdm

    for scan in tqdm(todo, desc="predict", unit="scan", disable=not progress):
        row: dict[str, Any] = {"case_id": scan.case_id, "input": printable_path(scan.path), **provenance,
                               "tta": _fmt(not fast and predictor.use_mirroring), "threshold_set": threshold_set.name}
        try:
            slice_image, source, location = load_l3_slice(
                scan.path, l3_slice, l3_rows.get(scan.case_id), vertebra_mask_for(l3_from, scan.case_id),
                locator, l3_rule, l3_dir, slab)
            thumbnail_rel = None
            if source.n_slices > 1:
                thumbnail_rel = Path("thumbnails") / f"{scan.case_id}.png"
                save_l3_thumbnail(to_canonical(source.original), location, out_dir / thumbnail_rel, title=scan.case_id)
            ct = sitk.GetArrayFromImage(slice_image).astype("float32")  # (1, y, x)
            spacing_zyx = list(slice_image.GetSpacing())[::-1]
            seg = predictor.predict_single_npy_array(ct[None], {"spacing": spacing_zyx}, None, None, False)
            seg = apply_postprocessing(seg, pp_functions).astype("uint8")
            mask_slice = sitk.GetImageFromArray(seg)
            mask_slice.CopyInformation(slice_image)
            spacing_yx = (spacing_zyx[1], spacing_zyx[2])
            measurement = measure_slice(seg[0], spacing_yx, ct[0], hu_gate=gate, slice_index=source.stored_index)
            record = clinical.get(scan.case_id)
            sex = record.sex if record else None
            height = record.height_m if record else None
            bmi = record.bmi if record else None
            smi_value = smi(measurement.sma_cm2, height)
            flag = threshold_set.is_sarcopenic(sex, measurement.sma_cm2, smi_value, bmi)
            mask_rel = Path("masks") / f"{scan.case_id}.nii.gz"
            overlay_rel = Path("overlays") / f"{scan.case_id}.png"
            from sarco_nn.atomic import atomic_path

            with atomic_path(out_dir / mask_rel) as tmp:
                sitk.WriteImage(mask_to_source_geometry(mask_slice, source), str(tmp), True)
            save_overlay(ct[0], seg[0], spacing_yx, out_dir / overlay_rel,
                         title=f"{scan.case_id}  SMA {measurement.sma_cm2:.1f} cm²  "
                               f"{'sarcopenic' if flag else 'not sarcopenic' if flag is False else 'flag n/a'}")
            row.update({
                "status": "ok", "reason": "", "sma_cm2": _fmt(measurement.sma_cm2), "smi_cm2_m2": _fmt(smi_value),
                "muscle_hu_mean": _fmt(measurement.muscle_hu_mean, 1),
                "hu_gate": f"{gate[0]:g}..{gate[1]:g}" if gate else "off",
                "sex": sex or "", "height_m": _fmt(height), "threshold": threshold_set.describe(sex, bmi),
                "sarcopenic": _fmt(flag) if flag is not None else "unknown",
                "slice_index": _fmt(source.stored_index), "z_mm": _fmt(source.z_mm),
                "spacing_y_mm": _fmt(spacing_yx[0], 4), "spacing_x_mm": _fmt(spacing_yx[1], 4),
                "mask": str(mask_rel), "overlay": str(overlay_rel),
                **l3_result_fields(location, slab, thumbnail_rel),
            })
        except Exception as exc:  # one bad scan must never stop a night's batch
            failures += 1
            reason = str(exc) if isinstance(exc, SarcoError) else f"unexpected {type(exc).__name__}: {exc}"
            row.update({"status": "failed", "reason": reason.splitlines()[0] if reason else type(exc).__name__})
            with open(errors_log, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {scan.case_id}: {row['reason']}\n")
        rows[scan.case_id] = row
        _write_results(results_path, [rows[s.case_id] for s in scans if s.case_id in rows])
    _write_results(results_path, [rows[s.case_id] for s in scans if s.case_id in rows])
    # --- review outputs (sarco_nn.review, issue #19): opt-in DICOM SEG, then review.html over results.csv
    if dicom_seg:
        from sarco_nn.review.dicom_seg import write_batch_segs

        write_batch_segs(out_dir, [(s.path, rows[s.case_id]) for s in scans if s.case_id in rows],
                         model_name=f"{model.trainer_name}__{model.plans_name}")
        _write_results(results_path, [rows[s.case_id] for s in scans if s.case_id in rows])
    from sarco_nn.review.gallery import write_review_html

    write_review_html(out_dir, results_path)
    # --- end review outputs
    return results_path, failures
