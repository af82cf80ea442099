"""`sarco predict`: fold ensemble + nnU-Net postprocessing → mask, overlay and one results.csv row per scan.

Batch-safe (see `sarco_nn.batch`): every input the batch sees gets a row (an unreadable one as
`failed` with its reason), a scan is measured only if `sarco_nn.ct_checks` finds it plausibly a CT
of a body in HU, each finished case is one fsynced journal line (O(1) per case, safe against
SIGKILL), and results.csv is folded from the journal atomically. Results belong to the input's
path plus a content fingerprint: a rerun recomputes changed or new inputs and keeps every earlier
row. `part`/`parts` split one batch over cluster jobs (merged with `sarco predict-merge`).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sarco_nn.batch import (FINGERPRINT_COLUMN, INPUTS_RECORD, JOURNAL_FILE, MISSING, RESULTS_FILE,
                            Journal, changed_settings, check_output_location, file_identity, fingerprint_changes,
                            fold_journal, inputs_record, normalised_settings, part_of, recorded_input_folder,
                            rekey_moved_rows, restamp_rows, row_fingerprint, run_settings_in, settings_digest,
                            write_rows)
from sarco_nn.batch_merge import MergeResult
from sarco_nn.cases import IMAGE_SUFFIXES, EntryId, case_id_for_entry, same_id_hint
from sarco_nn.errors import InputError, Interrupted, SarcoError
from sarco_nn.image_io import printable_path
from sarco_nn.body_composition import RESULT_COLUMNS as BODY_COMPOSITION_COLUMNS
from sarco_nn.l3.choose import L3_RESULT_COLUMNS
from sarco_nn.predict_options import PredictOptions
from sarco_nn.run_lock import LOCK_FILE, output_lock
from sarco_nn.status import FLAG_UNKNOWN, STATUS_COLUMNS, Reason, Status, Verdict, is_finished
from sarco_nn.workspace import Workspace

RUN_FILE = "sarco_predict.json"
#: Key of a row: the input's absolute path as text (its content fingerprint sits beside it). A resume
#: with the inputs at another path finds a row by its path relative to -i plus that fingerprint
#: (`batch.rekey_moved_rows`).
KEY_COLUMN = "input"
RESULT_COLUMNS = [
    "case_id", *STATUS_COLUMNS, "sma_cm2", "smi_cm2_m2", "muscle_hu_mean", "hu_gate", "sex", "height_m",
    "threshold_set", "threshold", "sarcopenic", "slice_index", "z_mm", "spacing_y_mm", "spacing_x_mm",
    "outside_trunk_cm2", "input", "input_fingerprint", FINGERPRINT_COLUMN, "mask", "overlay", "trainer", "plans",
    "folds", "pretrained", "tta", "inference",
    *L3_RESULT_COLUMNS, "dicom_seg", "dicom_seg_note", *BODY_COMPOSITION_COLUMNS,
]
#: Columns holding paths relative to the output folder (rewritten by predict-merge).
PATH_COLUMNS = ("mask", "overlay", "l3_thumbnail", "dicom_seg")

#: Companion files that belong to another input (pixels of a .mhd; the .img of an Analyze .hdr).
_COMPANIONS = (".raw", ".zraw", ".raw.gz", ".img", ".img.gz")
#: Longest output file stem in bytes: temporary names add ~30 bytes and must stay under 255.
_MAX_STEM_BYTES = 180


@dataclass(frozen=True)
class Scan:
    case_id: str
    path: Path
    error: InputError | None = None  # known unusable at discovery (broken link, unsupported format...)
    relative: str = ""  # path relative to the -i folder: what --part hashes

    def refusal(self) -> InputError | None:
        """The error of a scan known unusable at discovery (its failed row's reason), else None."""
        return self.error


def _relative(path: Path, root: Path) -> str:
    try:
        return printable_path(path.relative_to(root).as_posix())
    except ValueError:
        return printable_path(path.name)


def _link_problem(path: Path) -> str | None:
    """Why a directory entry cannot be read at all (broken or looping symbolic link), else None."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back at itself)"
        if path.is_symlink():
            return f"broken symbolic link (its target {printable_path(os.readlink(path))} is missing)"
        return f"cannot be read ({exc.strerror})"
    return None


_FIX_LINK = "repair or remove the link, or copy the scan into the input folder"
_FIX_PAIR = "convert the image to one .nii.gz file (e.g. nibabel: nib.save(nib.load('x.hdr'), 'x.nii.gz'))"
_FIX_UNKNOWN = "keep only CT scans in the input folder (NIfTI/MHA/NRRD files, DICOM files or series folders)"


def _refused(entry: Path, named: EntryId) -> InputError | None:
    """A Scan's error from the case-id rule's refusal, naming the entry by its printable path."""
    error = named.error
    return None if error is None else InputError(error.message, printable_path(entry), error.fix)


def _unusable(entry: Path, text: str, fix: str) -> InputError:
    """The error of an entry that cannot be a scan (its failed row's reason)."""
    return InputError(text, printable_path(entry), fix)


def _scan_for_entry(entry: Path, root: Path) -> Scan | None:
    """The Scan of one entry of the input folder (None for a companion file of another input).

    Its id is the one case-id rule's (`cases.case_id_for_entry`); a name the rule refuses (empty id,
    a spreadsheet formula: HOSTILE #120) is a `failed` row with the rule's own message, named by the
    entry's CSV-safe whole name, so results.csv never holds a formula and the batch goes on."""
    relative = _relative(entry, root)
    named = case_id_for_entry(entry)
    problem = _link_problem(entry) if entry.is_symlink() or not entry.exists() else None
    if problem:
        return Scan(named.case_id, entry, _unusable(entry, f"{problem}.", _FIX_LINK), relative)
    if named.error is not None:
        return Scan(named.case_id, entry, _refused(entry, named), relative)
    if entry.is_dir():
        return Scan(named.case_id, entry, None, relative)
    lower = entry.name.lower()
    if lower.endswith(_COMPANIONS):
        stem = entry.name[: entry.name.rfind(".raw" if ".raw" in lower else ".img")]
        partners = (".mhd", ".hdr", ".MHD", ".HDR")
        if any((entry.parent / f"{stem}{p}").exists() for p in partners):
            return None
    if lower.endswith(".hdr") or lower.endswith(_COMPANIONS):
        return Scan(named.case_id, entry, _unusable(entry, "image pair .hdr/.img (Analyze 7.5 or NIfTI pair) is not "
                                                          "supported.", _FIX_PAIR), relative)
    if lower.endswith(IMAGE_SUFFIXES):
        return Scan(named.case_id, entry, None, relative)
    from sarco_nn.io.dicom import looks_like_dicom

    if looks_like_dicom(entry):
        return Scan(named.case_id, entry, None, relative)  # an extension-less or odd-named DICOM file
    # no case: named whole, so notes.txt beside notes.nii.gz is no duplicate id
    return Scan(named.name, entry, _unusable(entry, "not a CT image (unknown file type).", _FIX_UNKNOWN), relative)


def discover_scans(source: Path) -> list[Scan]:
    """A file, a DICOM series folder, or a folder of image files and/or DICOM series folders.

    Every non-hidden entry of the folder becomes a Scan, so every input appears in results.csv;
    one that cannot be a scan carries its `error` and becomes a `failed` row."""
    source = Path(source)
    if not os.path.lexists(source):
        raise SarcoError("input not found", path=source, fix="give a CT file or a folder of scans with -i.")
    if not source.is_dir():
        entry = _scan_for_entry(source, source.parent)
        return [entry or Scan(case_id_for_entry(source).name, source,
                              _unusable(source, "not a CT image.", _FIX_UNKNOWN))]
    entries = sorted(p for p in source.iterdir() if not p.name.startswith("."))
    kinds = [(p, p.is_dir() or p.name.lower().endswith((*IMAGE_SUFFIXES, ".hdr")) or p.is_symlink()) for p in entries]
    if entries and not any(known for _, known in kinds):
        named = case_id_for_entry(source)  # the folder itself is one DICOM series
        return [Scan(named.case_id, source, _refused(source, named), "")]
    scans = [scan for scan in (_scan_for_entry(p, source) for p in entries) if scan is not None]
    seen: dict[str, Path] = {}
    for scan in (s for s in scans if s.error is None):  # a failed row joins nothing (HOSTILE #122)
        if scan.case_id in seen:
            names = [printable_path(seen[scan.case_id].name), printable_path(scan.path.name)]
            raise SarcoError(f"two inputs give case id {scan.case_id!r} ({', '.join(names)}){same_id_hint(names)}",
                             path=source, fix="rename one of them.")
        seen[scan.case_id] = scan.path
    if not scans:
        raise SarcoError("no CT images found", path=source, fix="expected .nii/.nii.gz/.mha/.nrrd files or DICOM folders.")
    return scans


def _part_key(scan: Scan) -> str:
    """What `--part` hashes: the input's path relative to the -i folder."""
    return scan.relative or printable_path(scan.path.name)


def input_keys(scans: list[Scan]) -> set[str]:
    """The results.csv keys (`input` column) of these scans."""
    return {printable_path(os.path.abspath(s.path)) for s in scans}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _check_output_folder(out_dir: Path, signature: dict, overwrite: bool) -> bool:
    """Refuse a folder of other results unless `overwrite`, naming the settings that changed; True
    when its earlier rows are of other settings (each row's `computed_from` then differs too)."""
    run_file = out_dir / RUN_FILE
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if not isinstance(previous, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError, OSError):
            raise SarcoError(f"{RUN_FILE} is damaged or truncated (a killed run or an edited file)", path=run_file,
                             fix="choose another -o folder, or pass --overwrite to start this folder afresh.") from None
        from sarco_nn.predict_settings import current_form, recorded_places

        # an earlier version's run file in this version's form where only the form changed (the model
        # folder's name, a file's name, not their mount paths): its rows resume; any other version is other settings
        changed = changed_settings(current_form(run_settings_in(previous)), signature)
        if changed and not overwrite:
            what = ("written by an earlier sarco version" if "fingerprint_version" in changed
                    else "changed: " + ", ".join(changed))
            where = recorded_places(previous, changed)  # the model folder, the earlier file of a changed setting
            where = f"; {where}" if where else ""
            raise SarcoError(f"output folder holds results of another model/settings ({what}{where}"
                             f"{', part %s/%s' % (previous.get('part'), previous.get('parts')) if previous.get('parts') else ''})",
                             path=out_dir, fix="choose another -o folder, or pass --overwrite to measure every case again.")
        return bool(changed)
    elif out_dir.exists() and any(p.name != LOCK_FILE for p in out_dir.iterdir()) and not overwrite:
        raise SarcoError("output folder is not empty and was not written by `sarco predict`", path=out_dir,
                         fix="choose an empty or new -o folder, or pass --overwrite.")
    return False


def _earlier_rows_digest(run_file: Path) -> str | None:
    """The settings digest an earlier version's run file gave its rows, when this run reads the file
    in another form (`predict_settings.earlier_rows_digest`); None otherwise or when unreadable."""
    from sarco_nn.predict_settings import earlier_rows_digest

    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return earlier_rows_digest(run_settings_in(previous)) if isinstance(previous, dict) else None


def _output_stem(case_id: str, key: str, taken: dict[str, str]) -> str:
    """File stem for a case's mask/overlay: the case id, shortened (temporary names must stay under
    255 bytes) and made unique when another input of this folder already holds the name."""
    stem = case_id
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    if len(stem.encode("utf-8", "surrogateescape")) > _MAX_STEM_BYTES:
        stem = stem.encode("utf-8", "surrogateescape")[:_MAX_STEM_BYTES - 11].decode("utf-8", "ignore") + "-" + digest
    if taken.get(stem, key) != key:
        stem = f"{stem}-{digest}"
    return stem


def _plain_text(text: str) -> str:
    """Text for a matplotlib title: `$` would start a formula (a name like a$b$c fails to render)."""
    return text.replace("$", r"\$")


def _disk_full(out_dir: Path, exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    if isinstance(exc, (OSError, RuntimeError)):  # ITK reports a failed write as RuntimeError
        try:
            return shutil.disk_usage(out_dir).free < (1 << 20)
        except OSError:
            return False
    return False


def predict(workspace: Workspace, inputs: Path, out_dir: Path, options: PredictOptions | None = None,
            **changes: Any) -> tuple[Path, int]:
    """Segment and measure every scan; return (results.csv path, number of failed cases).

    `options` (`sarco_nn.predict_options.PredictOptions`, the one list of predict's options; None: the
    defaults) with `changes` applied: ``predict(ws, scans, out, fast=True, device="cpu")`` is
    ``predict(ws, scans, out, PredictOptions(fast=True, device="cpu"))``; an unknown name is a TypeError.
    Whole volumes get their L3 slice from --l3-slice, an --l3-csv row, a vertebra mask (--l3-from),
    or the L3 localizer (`sarco train-l3`, or TotalSegmentator when installed), in that order.
    With `part`/`parts` only the share of the inputs in part `part` (0..parts-1) is predicted.
    `dicom_seg` also writes a DICOM SEG per DICOM scan (the one output carrying patient identity).
    Every plausible case gets a `qc_score` (`sarco_nn.review.qc`: fold disagreement, border
    uncertainty, plausibility); the folder ends with `review.html`.
    `io_workers` threads read the next cases and write finished ones while the network runs
    (`sarco_nn.io_pipeline`; 1 = one case at a time); the results do not depend on it.
    `trunk_only` (the default) keeps predicted tissue only inside the trunk (`sarco_nn.trunk`: arms are
    not SMA); False counts every predicted pixel.
    The run holds `out_dir`'s lock (`sarco_nn.run_lock`): a second run into it is refused in one line.
    """
    if options is not None and not isinstance(options, PredictOptions):
        raise TypeError(f"predict's fourth argument is a PredictOptions, not {options!r}: give the other options "
                        "by keyword (dataset=..., trainer=...)")
    o = dataclasses.replace(options or PredictOptions(), **changes).with_paths()
    part, parts, io_workers = o.part, o.parts, o.io_workers
    if (part is None) != (parts is None) or (parts is not None and not (parts >= 1 and 0 <= part < parts)):
        given = " ".join(f"--{n} {v}" for n, v in (("part", part), ("parts", parts)) if v is not None)
        raise SarcoError(f"{given} is not a share of the batch" if part is not None and parts is not None
                         else f"{given} given alone: a share of the batch needs both --part and --parts",
                         fix="give both, with 0 <= --part < --parts (e.g. --part $SLURM_ARRAY_TASK_ID --parts 8).")
    if not isinstance(io_workers, int) or io_workers < 1:
        raise SarcoError(f"--io-workers {io_workers} must be a whole number of at least 1",
                         fix="give e.g. --io-workers 2 (1 reads, predicts and writes one case at a time).")
    out_dir = Path(out_dir)
    check_output_location(out_dir, inputs=[Path(inputs)], workspace_root=workspace.root)  # before -o is created
    with output_lock(out_dir, "sarco predict"):  # one run per -o: two would interleave its journal and results.csv
        return _predict_locked(workspace, Path(inputs), out_dir, o)


def _predict_locked(workspace: Workspace, inputs: Path, out_dir: Path, o: PredictOptions) -> tuple[Path, int]:
    """`predict` once it holds the output folder's lock (`sarco_nn.run_lock`), options checked."""
    from sarco_nn.clinical import missing_rows_warning, read_clinical_csv
    from sarco_nn.constants import MUSCLE_HU_GATE
    from sarco_nn.l3.choose import read_l3_csv
    from sarco_nn.l3.localizer import default_model_dir
    from sarco_nn.model_store import build_predictor, find_model, inference_settings
    from sarco_nn.postprocessing import ensure_postprocessing, postprocessing_functions
    from sarco_nn.predict_settings import (CASE_INPUTS, case_inputs, describe_changes, locator_identities, run_records,
                                           run_settings)
    from sarco_nn.thresholds import sarcopenia_set
    from sarco_nn.devices import resolve_device

    test_hook = _test_signal_hook()  # None outside the crash-safety tests
    scans = discover_scans(inputs)
    tables = {os.path.abspath(t) for t in (o.clinical_csv, o.l3_csv) if t}  # --clinical beside the scans is no scan
    scans = [s for s in scans if os.path.abspath(s.path) not in tables]
    if o.dicom_seg:  # before any model is loaded: a SEG needs a DICOM source
        from sarco_nn.review.dicom_seg import check_dicom_seg_inputs

        check_dicom_seg_inputs([s.path for s in scans if s.error is None], inputs)
    listed = [_part_key(s) for s in scans]
    if o.parts is not None:
        scans = [s for s in scans if part_of(_part_key(s), o.parts) == o.part]
    # what this run (part) was given, so predict-merge can name a part that lacks cases
    record = inputs_record(printable_path(os.path.abspath(inputs)), listed,
                           {printable_path(os.path.abspath(s.path)): s.case_id for s in scans})
    threshold_set = sarcopenia_set(o.thresholds)  # a muscle_hu set refused before any scan
    clinical = read_clinical_csv(o.clinical_csv) if o.clinical_csv else {}
    if o.clinical_csv:  # before the network runs: a case id off by letter case would silently lose its SMI
        note = missing_rows_warning(o.clinical_csv, clinical, [s.case_id for s in scans])
        if note:
            print(note, file=sys.stderr, flush=True)
    l3_rows = read_l3_csv(o.l3_csv) if o.l3_csv else {}
    model = find_model(workspace, o.dataset, o.trainer, o.preset)
    decision = ensure_postprocessing(workspace, model)
    torch_device = resolve_device(o.device, all_cpu_threads=True)
    network_settings = inference_settings(model, torch_device.type)  # bf16 / tiles: results are keyed by them
    # every row-changing setting, in one dict (sarco_nn.predict_settings); each row records it
    settings = run_settings(model, decision, threshold_set, thresholds=o.thresholds, fast=o.fast, hu_gate=o.hu_gate,
                            l3_slice=o.l3_slice, l3_csv=o.l3_csv, l3_from=o.l3_from, locator=o.locator,
                            l3_rule=o.l3_rule, slab=o.slab, trunk_only=o.trunk_only,
                            inference={"inference": network_settings.as_dict()})
    signature = normalised_settings({**settings, **({"part": o.part, "parts": o.parts} if o.parts is not None else {})})
    other_settings = _check_output_folder(out_dir, signature, o.overwrite)  # --overwrite: such rows are recomputed
    # rows of an earlier version's file whose settings are this run's in another form keep being finished
    earlier_rows = None if other_settings else _earlier_rows_digest(out_dir / RUN_FILE)
    l3_dir = Path(o.l3_model_dir) if o.l3_model_dir else default_model_dir(workspace.root)
    settings_id, locators = settings_digest(settings), locator_identities(l3_dir)

    def computed_from(case_id: str, l3_method: str | None) -> str:
        """What a row of this case is (or would be) computed from in this run."""
        return row_fingerprint(settings_id, case_inputs(case_id, l3_method, clinical, l3_rows, o.l3_from, locators))

    previous_folder = recorded_input_folder(out_dir / RUN_FILE)  # where the earlier run read the inputs
    identities: dict[str, tuple[str, str]] = {}  # key -> (path relative to -i, fingerprint): one stat per scan
    for scan in scans:
        fp = file_identity(scan.path, by="stamp") if scan.error is None else ""
        identities[printable_path(os.path.abspath(scan.path))] = (_part_key(scan), "" if fp == MISSING else fp)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        from sarco_nn.atomic import write_text_atomic

        rows = fold_journal(out_dir, RESULT_COLUMNS, KEY_COLUMN)  # a killed run's journal joins first
        moved = rekey_moved_rows(rows, identities, previous_folder, KEY_COLUMN)
        restamped = restamp_rows(rows, earlier_rows, settings_id)
        if moved or restamped:  # written before the run file: a resume killed in between finds them again
            write_rows(out_dir, RESULT_COLUMNS, KEY_COLUMN, rows)
        if moved:  # the inputs are mounted elsewhere now: their rows are kept, recorded under this path
            print(f"note: {moved} earlier row(s) of this folder were read from {previous_folder}; the same "
                  f"inputs (path relative to -i and fingerprint) are now at {record['folder']}, so their rows "
                  "are kept and recorded under the new path", file=sys.stderr, flush=True)
        # only now the new -i folder: a run stopped before its moved rows are on disk leaves the old one,
        # so the next resume still finds them (rekey_moved_rows reads it)
        # the model's folder and the files' paths are recorded for people, not compared (mounted elsewhere)
        records = run_records(model, thresholds=o.thresholds, l3_csv=o.l3_csv, l3_from=o.l3_from,
                              clinical_csv=o.clinical_csv)
        write_text_atomic(out_dir / RUN_FILE, json.dumps({**signature, **records, INPUTS_RECORD: record}, indent=2))
    except OSError as exc:
        raise SarcoError(f"cannot write to the output folder ({exc.strerror or exc})", out_dir,
                         "free disk space or choose a writable -o folder, then run again") from None
    results_path = out_dir / RESULTS_FILE
    journal = Journal(out_dir / JOURNAL_FILE)
    taken = {Path(r["mask"]).name[: -len(".nii.gz")]: k for k, r in rows.items() if r.get("mask")}
    keys_by_case: dict[str, set[str]] = {}
    for k, r in rows.items():
        keys_by_case.setdefault(r.get("case_id", ""), set()).add(k)

    todo: list[tuple[Scan, str, str]] = []
    redone: dict[str, int] = {}  # why finished cases are measured again (one note)
    for scan in scans:
        key = printable_path(os.path.abspath(scan.path))
        fp = identities[key][1]  # "" when it cannot be stat'ed: never resumed, read (and reported) again
        done = rows.get(key)
        if done and is_finished(done.get("status")) and fp:
            why = fingerprint_changes(done.get(FINGERPRINT_COLUMN), computed_from(scan.case_id, done.get("l3_method")),
                                      CASE_INPUTS)
            if done.get("input_fingerprint") != fp:
                why = ["input", *why]
            elif not done.get("mask") or not (out_dir / done["mask"]).is_file():
                why = ["mask", *why]
            if not why:
                continue
            redone[why[0]] = redone.get(why[0], 0) + 1  # the first reason per case: the counts add up
        todo.append((scan, key, fp))
    if redone:
        print(describe_changes(sum(redone.values()), redone), file=sys.stderr, flush=True)

    needs_network = any(scan.error is None for scan, _, _ in todo)
    predictor = (build_predictor(model, torch_device, use_mirroring=not o.fast, settings=network_settings)
                 if needs_network else None)
    pp_functions = postprocessing_functions(decision)
    provenance = model.provenance()
    gate = MUSCLE_HU_GATE if o.hu_gate else None
    errors_log = out_dir / "errors.log"

    from tqdm import tqdm

    from sarco_nn.atomic import remove_stale_partials
    from sarco_nn.io_pipeline import ReadAhead, WriteBehind, io_executor

    for sub in ("masks", "overlays", "thumbnails"):  # a SIGKILLed run's half-written files
        remove_stale_partials(out_dir / sub)
    reading = _ReadContext(o.l3_slice, l3_rows, o.l3_from, o.locator, o.l3_rule, l3_dir, o.slab, predictor)
    finished = 0

    def finish(written, case: _Case) -> None:
        """A case whose files are on disk (or failed): its row joins the journal, in input order."""
        nonlocal finished
        row, verdict = case.row, case.verdict
        error = written.exception()
        if error is None:
            row.update(case.cells)
        else:
            verdict.add(_failure_reason(error, out_dir))
        row.update(verdict.columns())
        row[FINGERPRINT_COLUMN] = computed_from(case.scan.case_id, row.get("l3_method"))
        if verdict.status is Status.FAILED:
            for column in ("sma_cm2", "smi_cm2_m2", "muscle_hu_mean", "mask", "overlay"):
                row[column] = ""
            row["sarcopenic"] = ""
            with open(errors_log, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {case.scan.case_id}: {row['reasons']}\n")
        else:
            taken[case.stem] = case.key
        journal.append(case.key, row)
        rows[case.key] = row
        finished += 1
        if test_hook is not None:
            test_hook(finished)

    executor = io_executor(o.io_workers)
    depth = 0 if o.io_workers == 1 else o.io_workers
    reads = ReadAhead(executor, lambda item: _prepare_case(item[0], reading), todo, depth)
    writes: WriteBehind[_Case] = WriteBehind(executor, finish, limit=depth)
    try:
        for (scan, key, fp), prepared in tqdm(reads, desc="predict", unit="scan", disable=not o.progress):
            stem = _output_stem(scan.case_id, key, taken)
            row: dict[str, Any] = {"case_id": scan.case_id, "input": key, "input_fingerprint": fp,
                                   **provenance, "tta": _fmt(not o.fast and bool(predictor and predictor.use_mirroring)),
                                   "inference": network_settings.label(),
                                   "threshold_set": threshold_set.name}
            verdict = Verdict()
            # a failed-at-discovery input (junk file, broken link) joins no clinical row: no duplicate (HOSTILE #122)
            others = keys_by_case.setdefault(scan.case_id, set()) - {key} if scan.error is None else set()
            if others:  # two scans, one name: clinical.csv is joined by case id, so its row may be the other's
                verdict.add(Reason("duplicate_case_id", f"another input of this output folder has case id "
                                   f"{scan.case_id!r} ({sorted(others)[0]}); clinical.csv rows are joined by case id. "
                                   "Fix: rename one scan, or predict it into another -o folder", blocks_flag=False))
            if scan.error is None:
                keys_by_case[scan.case_id].add(key)
            cells: dict[str, Any] = {}
            job = None
            try:
                case_input = prepared.result()
                verdict.extend(case_input.reasons)
                if case_input.error is not None:
                    raise case_input.error
                if verdict.status is not Status.FAILED:
                    cells, job = _segment_and_measure(scan, stem, case_input, verdict, predictor, pp_functions,
                                                      out_dir, clinical, threshold_set, gate, o.slab,
                                                      o.trunk_only)
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:  # one bad scan must never stop a night's batch
                verdict.add(_failure_reason(exc, out_dir))
                cells, job = {}, None
            writes.submit(job, _Case(scan, key, stem, row, verdict, cells))
        writes.close()
    except KeyboardInterrupt:
        executor.shutdown(wait=True, cancel_futures=True)
        _fold_quietly(out_dir)
        raise Interrupted(f"interrupted after {finished} of {len(todo)} case(s)", out_dir,
                         "run the same command again to resume (finished cases are kept)") from None
    except SarcoError:
        executor.shutdown(wait=True, cancel_futures=True)
        _fold_quietly(out_dir)
        raise
    except OSError as exc:
        executor.shutdown(wait=True, cancel_futures=True)
        _fold_quietly(out_dir)
        raise SarcoError(f"cannot write the results ({exc.strerror or exc})", out_dir,
                         "free disk space and run the same command again: finished cases are kept") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    try:
        rows = fold_journal(out_dir, RESULT_COLUMNS, KEY_COLUMN)
    except OSError as exc:
        raise SarcoError(f"cannot write {RESULTS_FILE} ({exc.strerror or exc})", out_dir,
                         "free disk space and run the same command again: the journal keeps every case") from None
    wanted = input_keys(scans)
    _write_review_outputs(out_dir, results_path, scans, rows, model, o.dicom_seg)
    failures = sum(1 for k, r in rows.items() if k in wanted and r.get("status") == Status.FAILED.value)
    return results_path, failures


def _model_tissue_labels(model) -> dict[str, int]:
    """{tissue: value} the model segments, from its dataset.json (muscle only when it has none)."""
    from sarco_nn.body_composition import model_tissue_labels

    path = Path(model.folder) / "dataset.json"
    return model_tissue_labels(json.loads(path.read_text(encoding="utf-8")).get("labels") if path.is_file() else None)


def _write_review_outputs(out_dir: Path, results_path: Path, scans: list[Scan], rows: dict, model,
                          dicom_seg: bool) -> None:
    """Opt-in DICOM SEGs (noted in results.csv), then review.html over the finished results (#19)."""
    from sarco_nn.review.gallery import write_review_html

    if dicom_seg:
        from sarco_nn.review.dicom_seg import seg_summary, write_batch_segs

        keyed = [(s.path, rows[printable_path(os.path.abspath(s.path))]) for s in scans
                 if printable_path(os.path.abspath(s.path)) in rows]
        write_batch_segs(out_dir, keyed, model_name=f"{model.trainer_name}__{model.plans_name}",
                         labels=_model_tissue_labels(model))
        print(seg_summary(out_dir, [row for _, row in keyed]), file=sys.stderr, flush=True)  # said, not only in the CSV
        write_rows(out_dir, RESULT_COLUMNS, KEY_COLUMN, rows)  # results_path: out_dir / RESULTS_FILE
    write_review_html(out_dir, results_path)


#: TEST-ONLY (tests/test_resume.py; never set it in production): "KILL:N" or "INT:N" makes predict
#: stop itself right after its N-th journalled case, so a crash-safety test interrupts at a known
#: state instead of racing a timer. Unset, `_test_signal_hook` is None and predict never looks again.
TEST_SIGNAL_ENV = "SARCO_TEST_SIGNAL_AFTER_CASES"


def _test_signal_hook() -> Callable[[int], None] | None:
    """The test-only interrupt of predict's per-case loop (`TEST_SIGNAL_ENV`), read once per run;
    None unless the variable is set. A malformed value is an error, so a test never silently runs
    uninterrupted."""
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in ("KILL", "INT") or not count.isdigit() or int(count) < 1:
        raise SarcoError(f"{TEST_SIGNAL_ENV}={spec!r} is not KILL:N or INT:N (a test-only setting)",
                         fix=f"unset {TEST_SIGNAL_ENV} (only the crash-safety tests set it).")
    after = int(count)

    def hook(finished: int) -> None:
        if finished != after:
            return
        if name == "KILL":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(1)  # the kill arrives
        # what Python turns Ctrl-C into, raised here rather than by a signal: a SIGINT's delivery point
        # is up to the interpreter and the race made the test flaky; predict's handling is the same
        raise KeyboardInterrupt

    return hook


def _fold_quietly(out_dir: Path) -> None:
    try:
        fold_journal(out_dir, RESULT_COLUMNS, KEY_COLUMN)
    except (OSError, SarcoError):
        pass  # the journal stays; the next run folds it


@dataclass(frozen=True)
class _ReadContext:
    """What reading one case needs (shared, read-only, by the reader threads)."""
    l3_slice: int | None
    l3_rows: dict
    l3_from: Path | None
    locator: str
    l3_rule: str
    l3_dir: Path
    slab: int
    predictor: Any


@dataclass
class _CaseInput:
    """One case as read ahead: file/CT reasons (in the order checked), or the error that stopped the
    read; for a plausible slice, its HU array and nnU-Net's preprocessing of it."""
    reasons: list[Reason]
    error: Exception | None = None
    slice_image: Any = None
    source: Any = None
    location: Any = None
    ct: Any = None  # (1, y, x) float32 HU
    spacing_zyx: list[float] | None = None
    too_big: Reason | None = None
    preprocessed: dict | None = None


@dataclass
class _Case:
    """A case between the network and the journal: its row so far, verdict and measured cells."""
    scan: Scan
    key: str
    stem: str
    row: dict[str, Any]
    verdict: Verdict
    cells: dict[str, Any]


def _prepare_case(scan: Scan, ctx: _ReadContext) -> _CaseInput:
    """Read, check and L3-choose one scan and preprocess its slice (a reader thread's job).

    Never raises: an error is returned with the reasons found before it, so the case gets the
    same failed row, with the same reasons in the same order, as when read on the main thread."""
    import SimpleITK as sitk

    from sarco_nn.ct_checks import ct_reasons, file_reasons
    from sarco_nn.l3.choose import load_l3_slice, vertebra_mask_for
    from sarco_nn.review.fold_ensemble import preprocess

    case = _CaseInput(reasons=[])
    try:
        refused = scan.refusal()
        if refused is not None:
            raise refused
        case.reasons.extend(file_reasons(scan.path))
        case.slice_image, case.source, case.location = load_l3_slice(
            scan.path, ctx.l3_slice, ctx.l3_rows.get(scan.case_id), vertebra_mask_for(ctx.l3_from, scan.case_id),
            ctx.locator, ctx.l3_rule, ctx.l3_dir, ctx.slab)
        case.reasons.extend(ct_reasons(case.slice_image, printable_path(scan.path)))  # before the network runs
        if Verdict(list(case.reasons)).status is Status.FAILED:
            return case
        case.ct = sitk.GetArrayFromImage(case.slice_image).astype("float32")  # (1, y, x)
        case.spacing_zyx = list(case.slice_image.GetSpacing())[::-1]
        # never minutes of network time for a number that cannot be right
        case.too_big = _huge_network_grid(case.ct.shape[1:], case.spacing_zyx[1:], ctx.predictor, scan)
        if case.too_big is None:
            case.preprocessed = preprocess(ctx.predictor, case.ct[None], {"spacing": case.spacing_zyx})
    except Exception as exc:  # judged on the main thread (`_failure_reason`), in input order
        case.error = exc
    return case


def _failure_reason(exc: BaseException, out_dir: Path) -> Reason:
    """The failed reason of a case stopped by `exc`; a full disk stops the batch instead."""
    if isinstance(exc, SarcoError):
        return Reason(exc.reason_code, str(exc).splitlines()[0], Status.FAILED)  # not_ct, l3_not_in_view, ...
    if isinstance(exc, MemoryError):
        raise exc
    if _disk_full(out_dir, exc):
        raise SarcoError("disk full while writing the results", out_dir,
                         "free disk space and run the same command again: finished cases are kept") from None
    message = " ".join(f"unexpected {type(exc).__name__}: {exc}".split())[:300]
    return Reason("unexpected_error", message, Status.FAILED)


#: matplotlib's pyplot is not thread-safe: overlays and thumbnails are drawn one at a time.
_PLOT_LOCK = threading.Lock()


def _write_case_files(out_dir: Path, case: _CaseInput, seg, title: str, mask_rel: Path, overlay_rel: Path,
                      thumbnail_rel: Path | None, thumbnail_title: str,
                      tissues: dict[str, int] | None = None) -> None:
    """Thumbnail, mask and overlay of one case, each written atomically (a writer thread's job)."""
    import SimpleITK as sitk

    from sarco_nn.atomic import atomic_path
    from sarco_nn.image_io import mask_to_source_geometry, to_canonical
    from sarco_nn.l3.thumbnail import save_l3_thumbnail
    from sarco_nn.overlay import save_overlay

    if thumbnail_rel is not None:
        canonical = to_canonical(case.source.original)
        with _PLOT_LOCK:
            save_l3_thumbnail(canonical, case.location, out_dir / thumbnail_rel, title=thumbnail_title)
    mask_slice = sitk.GetImageFromArray(seg)
    mask_slice.CopyInformation(case.slice_image)
    with atomic_path(out_dir / mask_rel) as tmp:
        sitk.WriteImage(mask_to_source_geometry(mask_slice, case.source), str(tmp), True)
    spacing_yx = (case.spacing_zyx[1], case.spacing_zyx[2])
    with _PLOT_LOCK:
        save_overlay(case.ct[0], seg[0], spacing_yx, out_dir / overlay_rel, title=title, tissues=tissues)


def _segment_and_measure(scan: Scan, stem: str, case: _CaseInput, verdict: Verdict, predictor, pp_functions,
                         out_dir: Path, clinical: dict, threshold_set, gate, slab: int, trunk_only: bool):
    """The network and the measurement of one plausible scan (main thread).

    Returns (row cells, the job that writes its files): the cells join the row only once the job has
    written every file, so a journalled row never points at a missing mask."""
    from functools import partial

    from sarco_nn.l3.choose import l3_result_fields
    from sarco_nn.body_composition import hu_range_text, model_tissue_labels, predicted_composition, result_columns
    from sarco_nn.constants import MUSCLE_LABEL
    from sarco_nn.mask_checks import labels_in, mask_reasons
    from sarco_nn.measure import measure_slice, smi
    from sarco_nn.postprocessing import apply_postprocessing
    from sarco_nn.review.fold_ensemble import predict_folds
    from sarco_nn.review.qc import CaseEvidence, qc_score
    from sarco_nn.thresholds import DEFAULT_MYOSTEATOSIS_SET, get_threshold_set

    source, location, ct, spacing_zyx = case.source, case.location, case.ct, case.spacing_zyx
    thumbnail_rel = Path("thumbnails") / f"{stem}.png" if source.n_slices > 1 else None
    if case.too_big is not None:
        verdict.add(case.too_big)
        return {}, None
    # fold by fold (the same network passes as nnU-Net's averaged ensemble): each fold's probabilities
    # feed the quality score; the segmentation is nnU-Net's mean-logit ensemble
    folds = predict_folds(predictor, ct[None], {"spacing": spacing_zyx}, preprocessed=case.preprocessed)
    seg = apply_postprocessing(folds.segmentation, pp_functions).astype("uint8")
    spacing_yx = (spacing_zyx[1], spacing_zyx[2])
    outside_trunk_cm2 = None
    if trunk_only:  # arms and anything lying apart from the trunk are not trunk tissue (sarco_nn.trunk)
        from sarco_nn.trunk import restrict_to_trunk

        restriction = restrict_to_trunk(seg[0], ct[0], spacing_yx)
        seg = restriction.segmentation[None]
        outside_trunk_cm2 = restriction.muscle_removed_cm2
        verdict.extend(restriction.reasons())
    measurement = measure_slice(seg[0], spacing_yx, ct[0], hu_gate=gate, slice_index=source.stored_index)
    # an empty, near-empty or implausible predicted mask never becomes a diagnosis (sarco_nn.mask_checks)
    verdict.extend(mask_reasons(measurement, spacing_yx, label=MUSCLE_LABEL, labels_present=labels_in(seg),
                                what="prediction"))
    record = clinical.get(scan.case_id)
    sex = record.sex if record else None
    height = record.height_m if record else None
    dataset_labels = (getattr(predictor, "dataset_json", None) or {}).get("labels")  # a 4-tissue model's map
    tissue_labels = model_tissue_labels(dataset_labels)
    composition = predicted_composition(seg[0], spacing_yx, ct[0], dataset_labels, bool(gate), height)
    verdict.extend(composition.reasons)  # tissues on the wrong side of the muscle wall (tissue_layout), before the flag
    bmi = record.bmi if record else None
    smi_value = smi(measurement.sma_cm2, height)
    quality = qc_score(CaseEvidence(
        mask=seg[0] == MUSCLE_LABEL, spacing_yx_mm=spacing_yx, ct_hu=ct[0],  # muscle only, whatever the model
        fold_probabilities=folds.muscle_probabilities()[:, 0],
        sma_cm2=measurement.sma_cm2, smi_cm2_m2=smi_value, muscle_hu_mean=measurement.muscle_hu_mean, sex=sex,
        l3_confidence=location.confidence if location.method == "model" else None))
    quality.apply(verdict)
    flag = (threshold_set.is_sarcopenic(sex, measurement.sma_cm2, smi_value, bmi, height_m=height)
            if verdict.flag_allowed else None)
    mask_rel = Path("masks") / f"{stem}.nii.gz"
    overlay_rel = Path("overlays") / f"{stem}.png"
    flag_text = "sarcopenic" if flag else "not sarcopenic" if flag is False else "flag n/a"
    title = _plain_text(f"{scan.case_id}  SMA {measurement.sma_cm2:.1f} cm²  {flag_text} "
                        f"({threshold_set.name})  status: {verdict.status}")
    job = partial(_write_case_files, out_dir, case, seg, title, mask_rel, overlay_rel, thumbnail_rel,
                  _plain_text(scan.case_id), tissue_labels if len(tissue_labels) > 1 else None)
    cells = {
        "sma_cm2": _fmt(measurement.sma_cm2), "smi_cm2_m2": _fmt(smi_value),
        "muscle_hu_mean": _fmt(measurement.muscle_hu_mean, 1),
        "hu_gate": hu_range_text(gate) if gate else "off",
        "sex": sex or "", "height_m": _fmt(height, 3), "threshold": threshold_set.describe(sex, bmi),
        "sarcopenic": _fmt(flag) if flag is not None else FLAG_UNKNOWN,
        "slice_index": _fmt(source.stored_index), "z_mm": _fmt(source.z_mm),
        "spacing_y_mm": _fmt(spacing_yx[0], 4), "spacing_x_mm": _fmt(spacing_yx[1], 4),
        "mask": str(mask_rel), "overlay": str(overlay_rel),
        "outside_trunk_cm2": _fmt(outside_trunk_cm2) if outside_trunk_cm2 is not None else "",
        **l3_result_fields(location, slab, thumbnail_rel),
        **{k: _fmt(v, 4) if isinstance(v, float) else _fmt(v) for k, v in result_columns(
            composition, get_threshold_set(DEFAULT_MYOSTEATOSIS_SET), sex, bmi,
            withheld=not verdict.flag_allowed, unknown=FLAG_UNKNOWN).items()},
    }
    return cells, job


#: Largest edge (pixels) of the grid the network may be asked to run on after resampling to the
#: model's spacing. A genuine L3 slice at 0.5 mm is about 1000 px wide; beyond this the header's
#: spacing is wrong (9 mm "pixels" would mean a 1536²… grid: minutes per scan, and a wrong SMA).
MAX_NETWORK_EDGE_PX = 2048


def _huge_network_grid(shape_yx, spacing_yx, predictor, scan: Scan) -> Reason | None:
    """A `failed` reason when resampling to the model's spacing would give an absurd grid."""
    target = [float(v) for v in predictor.configuration_manager.spacing][-2:]
    edges = [n * s / t for n, s, t in zip(shape_yx, spacing_yx, target)]
    if max(edges) <= MAX_NETWORK_EDGE_PX:
        return None
    return Reason("implausible_spacing",
                  f"{printable_path(scan.path)}: at the model's spacing ({target[0]:g} x {target[1]:g} mm) this slice "
                  f"would be {edges[0]:.0f} x {edges[1]:.0f} pixels, so its pixel spacing ({spacing_yx[0]:g} x "
                  f"{spacing_yx[1]:g} mm) cannot be right. Fix: check the pixel spacing in the file header "
                  f"(PixelSpacing / pixdim)", Status.FAILED)


def merge_predictions(part_dirs: list[Path], out_dir: Path, allow_incomplete: bool = False) -> MergeResult:
    """`sarco predict-merge`: one results.csv from the -o folders of every `--part I --parts N` run
    (`sarco_nn.batch_merge`). Returns its `MergeResult`."""
    from sarco_nn.batch_merge import check_merge_output, merge_parts
    from sarco_nn.review.gallery import write_review_html

    check_merge_output(Path(out_dir), list(part_dirs), RUN_FILE)  # before the lock creates -o
    with output_lock(out_dir, "sarco predict-merge"):  # a second merge or a predict into -o is refused meanwhile
        merged = merge_parts(list(part_dirs), Path(out_dir), RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS,
                             allow_incomplete=allow_incomplete)
        write_review_html(Path(out_dir), merged.results_csv)  # one review page for the whole batch
    return merged
