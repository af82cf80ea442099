"""Batch bookkeeping of `sarco predict`: input identity, an append-only journal, parts and merging.

Why each piece exists (issues #14 and #16):

- **Identity**: a result belongs to an input *path* plus a cheap fingerprint
  (`file_identity(..., by="stamp")`: size, mtime and a hash of the first bytes; for a DICOM
  folder: its file names, sizes, newest mtime and the first bytes of one file). A resumed
  20 000-scan batch stats files but never re-reads a series, and a different scan under the same
  name is recomputed instead of inheriting another patient's SMA. The model and other settings
  files enter by content (`by="content"`, no mtime: a copied model keeps its rows), the model's
  absolute folder not at all (`MODEL_RECORD`: a workspace mounted elsewhere keeps them too), nor the
  paths of --l3-csv, --l3-from and a --thresholds file (`PATHS_RECORD`: their contents are compared).
- **Journal**: each finished case appends one JSON line to ``journal.jsonl`` (flushed and fsynced),
  so a batch costs O(1) writes per case instead of rewriting results.csv after each. A line torn
  by SIGKILL or a full disk is ignored (and cut off before the next append). The journal is folded
  into results.csv (atomic replace) at the end of a run and at the start of a resume.
- **Moved inputs**: a row is the input's by its path relative to the -i folder plus its fingerprint,
  so a part resumed where the inputs are mounted at another path keeps its rows (`rekey_moved_rows`);
  results.csv records the absolute path of this run.
- **Parts**: ``--part I --parts N`` takes the inputs whose stable hash of the path relative to
  the input folder falls in part I, so N cluster jobs (or GPUs) split one batch without talking to
  each other, each with its own output folder and resume; `batch_merge.merge_parts` joins their
  results.csv; each run file records its inputs (`inputs_record`), so merge names a part that lacks cases.
- **Output location**: -o inside an input folder, a reference folder or the workspace's nnUNet_*
  folders would change the inputs (a rerun reads `results/` as a scan) or break nnU-Net.
- **What a row was computed from**: every row carries `computed_from` (`row_fingerprint`): a digest of
  the run's settings (`settings_digest` of one dict) plus one short digest per case input (its
  clinical record, its --l3-csv row, ...). A rerun takes a row as finished only when its fingerprint
  is this run's, so a row of other settings (a killed `--overwrite` run resumed) or of an edited
  height is never kept as this run's result; `fingerprint_changes` says what differs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

from sarco_nn.atomic import write_text_atomic
from sarco_nn.cases import current_range_cell
from sarco_nn.errors import SarcoError

__all__ = [
    "JOURNAL_FILE", "RESULTS_FILE", "FINGERPRINT_COLUMN", "MISSING", "file_identity", "normalised_settings",
    "settings_digest", "changed_settings", "row_fingerprint", "fingerprint_changes", "part_of", "Journal", "read_results", "write_results",
    "fold_journal", "part_rows", "lies_inside", "check_output_location", "INPUTS_RECORD", "inputs_record", "run_settings_in",
    "recorded_input_folder", "rekey_moved_rows", "write_rows", "MODEL_RECORD", "PATHS_RECORD", "TABLES_RECORD", "restamp_rows",
]

JOURNAL_FILE = "journal.jsonl"
RESULTS_FILE = "results.csv"

#: Bytes of a file hashed for its fingerprint (headers live there; pixel data is not re-read).
_HEAD_BYTES = 65536


def _head_hash(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        digest.update(handle.read(_HEAD_BYTES))


#: Files up to this size are hashed whole by `file_identity(..., by="content")` (tables, plans, small checkpoints).
_WHOLE_FILE_BYTES = 1 << 20
#: Column of every result row naming what it was computed from (`row_fingerprint`).
FINGERPRINT_COLUMN = "computed_from"
#: The identity of a file or folder that cannot be read (or stat'ed).
MISSING = "missing"

#: The two rules of `file_identity`.
IDENTITY_RULES: tuple[str, ...] = ("stamp", "content")


def file_identity(path: Path | str | None, *, by: str) -> str:
    """What a result row records about a file, so a rerun knows whether the file changed.

    One function, two rules, because the two uses ask different questions:

    - ``by="stamp"``: the scans a row is measured from (keyed in ``input_fingerprint``). Size,
      mtime and a hash of the first 64 KiB (a DICOM folder: its file names and sizes, newest
      mtime and the first bytes of one file). A resumed 20 000-scan batch stats files but never
      re-reads a series; touching a scan only recomputes its row, which is safe.
    - ``by="content"``: the few files every row's settings depend on (model checkpoints, plans,
      vertebra masks, the L3 localizer). No mtime, so a model copied to another node (new mtime,
      same bytes) keeps every row; a file up to 1 MiB is hashed whole, a larger one by its size and
      first and last 64 KiB (a torch checkpoint is a zip whose central directory, at the end,
      holds the CRC-32 of every tensor record); a folder by the names and identities of all its files.

    The strings are those earlier sarco versions wrote, so their results resume. "" for None,
    `MISSING` for what cannot be read or stat'ed (dangling link, loop, no permission).
    """
    if by not in IDENTITY_RULES:
        raise ValueError(f"file_identity(by={by!r}): use one of {IDENTITY_RULES}")
    if path is None:
        return ""
    try:
        return _stamp(Path(path)) if by == "stamp" else _content(Path(path))
    except OSError:
        return MISSING


def _stamp(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        files = [p for p in entries if p.is_file()]
        stats = [p.stat() for p in files]
        for p, st in zip(files, stats):
            digest.update(f"{p.name}\0{st.st_size}\0".encode("utf-8", "surrogateescape"))
        if files:
            _head_hash(files[0], digest)
        size = sum(st.st_size for st in stats)
        mtime = max((st.st_mtime_ns for st in stats), default=path.stat().st_mtime_ns)
        return f"{len(files)}f:{size}:{mtime}:{digest.hexdigest()[:16]}"
    st = path.stat()
    _head_hash(path, digest)
    return f"{st.st_size}:{st.st_mtime_ns}:{digest.hexdigest()[:16]}"


def _content(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                child_identity = _content(child)
            except OSError:  # one unreadable file changes the folder's identity, not all of it to MISSING
                child_identity = MISSING
            digest.update(f"{child.relative_to(path).as_posix()}\0{child_identity}\0".encode(
                "utf-8", "surrogateescape"))
        return "d" + digest.hexdigest()[:16]
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= _WHOLE_FILE_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_HEAD_BYTES))
            handle.seek(size - _HEAD_BYTES)
            digest.update(handle.read(_HEAD_BYTES))
    return f"{size}:{digest.hexdigest()[:16]}"


def normalised_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as they read back from the run file (tuples become lists, paths text), so the
    dict of this run compares equal to the one an identical earlier run wrote."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _digest(value: Any, length: int) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:length]


def settings_digest(settings: dict[str, Any]) -> str:
    """12 hex digits naming one dict of run settings (every row-changing setting of a run)."""
    return _digest(normalised_settings(settings), 12)


def changed_settings(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the settings that differ between an earlier run file and this run's settings."""
    current = normalised_settings(current)
    return sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))


def row_fingerprint(settings: str, case_inputs: dict[str, Any]) -> str:
    """What one row is computed from: the run's `settings_digest`, then 8 hex digits per case input
    (in name order), so a changed input can be named (`fingerprint_changes`)."""
    return ".".join([settings, *(_digest(case_inputs[name], 8) for name in sorted(case_inputs))])


def fingerprint_changes(previous: str | None, current: str, case_input_names: Iterable[str]) -> list[str]:
    """What differs between a row's `computed_from` and this run's: "settings" and/or case-input
    names; ["unrecorded"] for a row that carries none (written by an earlier sarco)."""
    if not previous:
        return ["unrecorded"]
    old, new = previous.split("."), current.split(".")
    if len(old) != len(new) or old[0] != new[0]:
        return ["settings"]
    return [name for name, a, b in zip(sorted(case_input_names), old[1:], new[1:]) if a != b]


def part_of(relative_key: str, parts: int) -> int:
    """The part (0..parts-1) an input belongs to: a stable hash of its path relative to the input
    folder, so the split does not depend on listing order, machine or mount point."""
    value = int.from_bytes(hashlib.sha256(relative_key.encode("utf-8", "surrogateescape")).digest()[:8], "big")
    return value % parts


class Journal:
    """Append-only JSON-lines record of finished cases: {"key": input key, "row": result row}."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def entries(self) -> dict[str, dict[str, Any]]:
        """key -> latest row; a torn (partial or unparsable) line is ignored."""
        if not self.path.exists():
            return {}
        out: dict[str, dict[str, Any]] = {}
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # torn last line: the write was cut off
                try:
                    entry = json.loads(raw.decode("utf-8"))
                    out[str(entry["key"])] = dict(entry["row"])
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def _cut_torn_tail(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, key: str, row: dict[str, Any]) -> None:
        """One line, flushed and fsynced: after this returns the case is finished, whatever happens."""
        if not hasattr(self, "_checked"):
            self._cut_torn_tail()
            self._checked = True
        line = json.dumps({"key": key, "row": row}, ensure_ascii=False) + "\n"
        with open(self.path, "ab") as handle:
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def read_results(path: Path, key_column: str) -> dict[str, dict[str, str]]:
    """Rows of a results.csv keyed by `key_column`; tolerates what a spreadsheet does when it re-saves
    the file (a UTF-8 BOM, ';' or tab as separator). One clear error for what cannot be read."""
    path = Path(path)
    if not path.exists():
        return {}
    fix = f"restore the {path.name} sarco wrote, or move it away (finished cases are then measured again)"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SarcoError(f"{path.name} is not UTF-8 (re-saved by a spreadsheet in another encoding?)", path,
                         fix) from None
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if key_column not in (reader.fieldnames or []):
        raise SarcoError(f"{path.name} has no {key_column!r} column", path, fix)
    rows = {}
    for row in reader:
        row = {k: v for k, v in row.items() if k is not None}
        if row.get(key_column):
            rows[row[key_column]] = {k: v or "" for k, v in row.items()}
    return rows


def write_results(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:  # an earlier run's range cells (a resumed or merged part) in this version's form
        writer.writerow({k: current_range_cell(k, v) if isinstance(k, str) else v for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def part_rows(out_dir: Path, columns: list[str], key_column: str) -> dict[str, dict[str, str]]:
    """The rows of a predict output folder, results.csv and journal together, as text (as a fold
    would write them), without writing anything: merge reads a part that may still be running."""
    out_dir = Path(out_dir)
    rows = read_results(out_dir / RESULTS_FILE, key_column)
    for key, row in Journal(out_dir / JOURNAL_FILE).entries().items():
        rows[key] = {c: "" if row.get(c) is None else str(row.get(c)) for c in columns}  # as read back
    return rows


def fold_journal(out_dir: Path, columns: list[str], key_column: str) -> dict[str, dict[str, str]]:
    """results.csv + journal → results.csv (atomically), then the journal is emptied. Idempotent:
    killed between the two steps, the next fold writes the same rows again."""
    out_dir = Path(out_dir)
    journal = Journal(out_dir / JOURNAL_FILE)
    if not journal.entries() and (out_dir / RESULTS_FILE).exists():
        return read_results(out_dir / RESULTS_FILE, key_column)
    rows = part_rows(out_dir, columns, key_column)
    write_rows(out_dir, columns, key_column, rows)
    journal.clear()
    return rows


def write_rows(out_dir: Path, columns: list[str], key_column: str, rows: dict[str, dict[str, Any]]) -> None:
    """results.csv of `rows` (atomically), in the one order: case id, then key."""
    write_results(Path(out_dir) / RESULTS_FILE, columns,
                  sorted(rows.values(), key=lambda r: (r.get("case_id", ""), r.get(key_column, ""))))


def lies_inside(child: Path, parent: Path) -> bool:
    """True when `child` is `parent` or lies below it (after resolving links)."""
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def check_output_location(out_dir: Path, inputs: Iterable[Path] = (), references: Iterable[Path] = (),
                          workspace_root: Path | None = None) -> None:
    """Refuse an output folder inside (or equal to) an input folder, a reference folder or the
    workspace's nnUNet_* folders: writing there changes what the next run reads."""
    out_dir = Path(out_dir)
    fix = "choose an -o folder outside the input, reference and workspace nnUNet_* folders"
    for kind, folders in (("input", inputs), ("reference", references)):
        for folder in folders:
            folder = Path(folder)
            if folder.is_dir() and lies_inside(out_dir, folder):
                raise SarcoError(f"output folder lies inside the {kind} folder {folder}", out_dir, fix)
    if workspace_root is not None and Path(workspace_root).is_dir():
        for sub in Path(workspace_root).glob("nnUNet_*"):
            if lies_inside(out_dir, sub):
                raise SarcoError(f"output folder lies inside the workspace's {sub.name}", out_dir, fix)


#: Key of the run file that records what a predict run was given. Not a setting: a rerun never
#: compares it (adding scans to the input folder is a resume, not other settings).
INPUTS_RECORD = "inputs"


def inputs_record(folder: str, listed: Iterable[str], cases: dict[str, str]) -> dict[str, Any]:
    """What one predict run (one part) was given, so `predict-merge` can tell a finished part from
    an interrupted one: the -i folder, how many inputs it listed (and a digest of their relative
    names, to see parts that listed different folders), and this run's own inputs, key → case id."""
    listed = sorted(listed)
    return {"folder": folder, "n_listed": len(listed), "listing": _digest(listed, 16),
            "cases": dict(sorted(cases.items()))}


def recorded_input_folder(run_file: Path) -> str | None:
    """The -i folder (absolute, as text) an earlier run of this output folder recorded in its run
    file (`inputs_record`); None when there is none (no run file, an earlier sarco, unreadable)."""
    try:
        folder = json.loads(Path(run_file).read_text(encoding="utf-8"))[INPUTS_RECORD]["folder"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return folder if isinstance(folder, str) and folder else None


def _relative_to(key: str, folder: str) -> str | None:
    """`key` (an input's absolute path as recorded) relative to the run's -i `folder`: its name when
    the input *is* the folder (one file, one DICOM series), None when it lies elsewhere."""
    from pathlib import PurePath

    path, root = PurePath(key), PurePath(folder)
    if path == root:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def rekey_moved_rows(rows: dict[str, dict[str, Any]], current: dict[str, tuple[str, str]],
                     previous_folder: str | None, key_column: str) -> int:
    """Give the rows of an input folder now read at another path (another mount point, a moved or
    copied folder) this run's keys, in place; returns how many were re-keyed.

    Why: rows are keyed by the input's absolute path (what results.csv records), so a part resumed on
    a node that mounts the inputs elsewhere found none of its rows: it measured every case again and
    its results.csv kept both sets. The resume key is the path relative to the -i folder (the part
    rule's) *plus* the input fingerprint: a row recorded under `previous_folder` whose relative path
    and `input_fingerprint` are those of a current input (`current`: key -> (relative path,
    fingerprint)) is that input's row, when nothing is at its recorded path any more (the old mount
    point). The fingerprint keeps another cohort's scan of the same name (another -i into the same
    -o) a row of its own, as before, and so does a copy whose original is still there. Whether a
    re-keyed row is finished is then decided as for any row (settings, case inputs, mask on disk)."""
    if not previous_folder:
        return 0
    by_place = {}
    for key, row in rows.items():
        relative = _relative_to(key, previous_folder)
        if relative is not None and key not in current:
            by_place[(relative, row.get("input_fingerprint") or "")] = key
    moved = 0
    for key, (relative, fingerprint) in current.items():
        old = by_place.get((relative, fingerprint)) if fingerprint and key not in rows else None
        if old is not None and old in rows and not os.path.lexists(old):
            rows[key] = {**rows.pop(old), key_column: key}
            moved += 1
    return moved


#: Key of the run file that records the model's absolute folder, for people reading it. Not a setting:
#: the model enters the settings by its files' content and its names (`predict_settings.run_settings`),
#: so a part resumed or merged where the workspace is mounted at another path is the same model.
MODEL_RECORD = "model_folder"
#: Key of the run file that records, for people, the absolute path of each file a setting was given
#: ({"l3_csv": ..., "l3_from": ..., "thresholds": ...}, those given). Not a setting: their contents enter
#: per case or by definition (`predict_settings`), so a batch resumed where they are mounted elsewhere
#: (or copied next to the new mount) is the same settings.
PATHS_RECORD = "setting_paths"
#: Key of the run file that records the content identity (`file_identity(..., by="content")`) of each
#: per-case table a run was given ({"clinical": ..., "l3_csv": ...}; ``None``: not given). Not a setting
#: (an edited height recomputes that case only, `predict_settings.case_inputs`), but one batch's parts
#: must have read the same tables: `predict-merge` refuses parts whose records differ.
TABLES_RECORD = "table_contents"
#: The keys of a run file that record what a run was given or used, never compared.
_RECORDS = (INPUTS_RECORD, MODEL_RECORD, PATHS_RECORD, TABLES_RECORD)


def run_settings_in(run: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run file (everything but its records, `INPUTS_RECORD`, `MODEL_RECORD`, `PATHS_RECORD`)."""
    return {k: v for k, v in run.items() if k not in _RECORDS}


def restamp_rows(rows: dict[str, dict[str, Any]], earlier: str | None, current: str) -> int:
    """Give the rows computed from the settings digest `earlier` this run's digest `current`, in
    place; returns how many. For a run file of an earlier version whose settings are this run's in
    another form (`predict_settings.current_form`): its rows stay finished, once, on disk."""
    if not earlier or earlier == current:
        return 0
    restamped = 0
    for row in rows.values():
        head, dot, tail = str(row.get(FINGERPRINT_COLUMN) or "").partition(".")
        if head == earlier:
            row[FINGERPRINT_COLUMN] = current + dot + tail
            restamped += 1
    return restamped
