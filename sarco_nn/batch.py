"""Batch bookkeeping of `sarco predict`: input identity, an append-only journal, parts and merging.

Why each piece exists (issues #14 and #16):

- **Identity**: a result belongs to an input *path* plus a cheap fingerprint (size, mtime and a
  hash of the first bytes; for a DICOM folder: its file names, sizes, newest mtime and the first
  bytes of one file). A resumed 20 000-scan batch stats files but never re-reads a series, and a
  different scan under the same name is recomputed instead of inheriting another patient's SMA.
- **Journal**: each finished case appends one JSON line to ``journal.jsonl`` (flushed and fsynced),
  so a batch costs O(1) writes per case instead of rewriting results.csv after each. A line torn
  by SIGKILL or a full disk is ignored (and cut off before the next append). The journal is folded
  into results.csv (atomic replace) at the end of a run and at the start of a resume.
- **Parts**: ``--part I --parts N`` takes the inputs whose stable hash of the path relative to
  the input folder falls in part I, so N cluster jobs (or GPUs) split one batch without talking to
  each other, each with its own output folder and resume; `merge_parts` joins their results.csv.
- **Output location**: -o inside an input folder, a reference folder or the workspace's nnUNet_*
  folders would change the inputs (a rerun reads `results/` as a scan) or break nnU-Net.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sarco_nn.atomic import write_text_atomic
from sarco_nn.errors import SarcoError

__all__ = [
    "JOURNAL_FILE", "RESULTS_FILE", "fingerprint", "part_of", "Journal", "read_results", "write_results",
    "fold_journal", "check_output_location", "merge_parts",
]

JOURNAL_FILE = "journal.jsonl"
RESULTS_FILE = "results.csv"

#: Bytes of a file hashed for its fingerprint (headers live there; pixel data is not re-read).
_HEAD_BYTES = 65536


def _head_hash(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        digest.update(handle.read(_HEAD_BYTES))


def fingerprint(path: Path) -> str:
    """Cheap content identity: size, mtime and a hash of the first bytes (DICOM folder: of its listing
    and of one file). Raises OSError for what cannot be stat'ed (dangling link, loop)."""
    path = Path(path)
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
    for row in rows:
        writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())


def fold_journal(out_dir: Path, columns: list[str], key_column: str) -> dict[str, dict[str, str]]:
    """results.csv + journal → results.csv (atomically), then the journal is emptied. Idempotent:
    killed between the two steps, the next fold writes the same rows again."""
    out_dir = Path(out_dir)
    journal = Journal(out_dir / JOURNAL_FILE)
    rows = read_results(out_dir / RESULTS_FILE, key_column)
    entries = journal.entries()
    if not entries and (out_dir / RESULTS_FILE).exists():
        return rows
    for key, row in entries.items():
        rows[key] = {c: "" if row.get(c) is None else str(row.get(c)) for c in columns}  # as read back
    write_results(out_dir / RESULTS_FILE, columns, sorted(rows.values(), key=lambda r: (r.get("case_id", ""),
                                                                                        r.get(key_column, ""))))
    journal.clear()
    return rows


def _inside(child: Path, parent: Path) -> bool:
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
            if folder.is_dir() and _inside(out_dir, folder):
                raise SarcoError(f"output folder lies inside the {kind} folder {folder}", out_dir, fix)
    if workspace_root is not None and Path(workspace_root).is_dir():
        for sub in Path(workspace_root).glob("nnUNet_*"):
            if _inside(out_dir, sub):
                raise SarcoError(f"output folder lies inside the workspace's {sub.name}", out_dir, fix)


@dataclass(frozen=True)
class MergeResult:
    path: Path
    n_rows: int
    n_parts: int


def merge_parts(part_dirs: list[Path], out_dir: Path, columns: list[str], key_column: str,
                run_file: str, path_columns: tuple[str, ...]) -> MergeResult:
    """Join the results.csv of `sarco predict --part I --parts N` runs into out_dir/results.csv.

    Every part must come from the same model and settings (its run file, apart from the part index)
    and every part of the N must be there; a killed part's journal is folded in first. Paths to
    masks and overlays are rewritten relative to `out_dir` (the files stay in the part folders)."""
    if not part_dirs:
        raise SarcoError("no part folders given", fix="pass the -o folders of every `sarco predict --part` run.")
    out_dir = Path(out_dir)
    signatures, rows, seen_parts = [], {}, set()
    for part_dir in map(Path, part_dirs):
        run_path = part_dir / run_file
        try:
            signature = json.loads(run_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise SarcoError(f"not a finished `sarco predict` output folder ({run_file} missing or damaged)",
                             run_path, "give the -o folders of the `sarco predict --part` runs") from None
        part, parts = signature.get("part"), signature.get("parts")
        if part is None or parts is None:
            raise SarcoError("this output folder was not written with --part/--parts", part_dir,
                             "merge only the folders of one `sarco predict --part I --parts N` batch")
        if part in seen_parts:
            raise SarcoError(f"part {part} given twice", part_dir, "give each part folder once")
        seen_parts.add(part)
        signatures.append({k: v for k, v in signature.items() if k != "part"})
        for key, row in fold_journal(part_dir, columns, key_column).items():
            merged = dict(row)
            for column in path_columns:
                if merged.get(column):
                    merged[column] = os.path.relpath(part_dir / merged[column], out_dir)
            rows[key] = merged
    if any(s != signatures[0] for s in signatures):
        raise SarcoError("the parts were predicted with different models or settings", fix="merge the parts of one batch")
    expected = set(range(int(signatures[0]["parts"])))
    if seen_parts != expected:
        missing = sorted(expected - seen_parts)
        raise SarcoError(f"part(s) {missing} of {len(expected)} missing", fix="give the -o folder of every part")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / RESULTS_FILE
    write_results(target, columns, sorted(rows.values(), key=lambda r: (r.get("case_id", ""), r.get(key_column, ""))))
    return MergeResult(target, len(rows), len(seen_parts))
