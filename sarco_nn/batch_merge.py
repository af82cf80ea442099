"""`sarco predict-merge`: one results.csv from the -o folders of the parts of one batch.

Why merge checks so much: a table that silently lacks the patients of an interrupted part reads
like a finished study. Each part's run file records what it was given (`batch.inputs_record`), so
merge can name the part that lacks cases and how many. By default an incomplete batch is refused
(a clinician expects one row per scan); ``allow_incomplete`` merges what is finished and gives
every missing scan a ``failed`` row (reason ``not_predicted``), so no patient drops out unseen.

Merge only reads the part folders (a part may still be running) and never writes into one; a part
whose folder holds a live `run_lock` is named as still running, not as interrupted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarco_nn.batch import (FINGERPRINT_COLUMN, INPUTS_RECORD, RESULTS_FILE, TABLES_RECORD, changed_settings,
                            part_rows, lies_inside, run_settings_in, settings_digest, write_results)
from sarco_nn.errors import SarcoError
from sarco_nn.predict_settings import current_form
from sarco_nn.run_lock import LockHolder, live_holder
from sarco_nn.status import Reason, Status, Verdict

__all__ = ["MergeResult", "check_merge_output", "merge_parts", "NOT_PREDICTED"]

#: Reason code of a scan that a part of the batch never finished (with ``allow_incomplete``).
NOT_PREDICTED = "not_predicted"
#: Case names shown in one line before "…".
_SHOWN = 5


@dataclass(frozen=True)
class MergeResult:
    """The merged table of a batch predicted in parts (`merge_parts`; `sarco_nn.api` re-exports it).

    Attributes:
        results_csv: the merged results.csv.
        n_rows: its rows (with ``allow_incomplete``, the missing scans' ``not_predicted`` rows too).
        n_parts: parts merged.
        missing: part index → case ids that part has not finished (empty for a complete batch).
        warnings: one line each for what the merge could not vouch for (an incomplete batch, a part
            whose run file records no inputs) or left out (rows of an earlier batch in a part folder).
    """

    results_csv: Path
    n_rows: int
    n_parts: int
    missing: dict[int, list[str]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def n_missing(self) -> int:
        return sum(len(v) for v in self.missing.values())


@dataclass(frozen=True)
class _Part:
    folder: Path
    index: int
    parts: int
    settings: dict[str, Any]
    record: dict[str, Any] | None
    rows: dict[str, dict[str, str]]
    tables: dict[str, Any] | None = None  # content of each per-case table its run read (`batch.TABLES_RECORD`)
    running: LockHolder | None = None  # the live lock of a `sarco predict` still writing this folder

    def unfinished(self) -> str:
        """Why this part lacks cases: still running (its folder's live lock says who), or interrupted."""
        if self.running is None:
            return "interrupted: no sarco run holds its folder"
        return f"still running: {self.running.describe()}"


def _names(case_ids: list[str]) -> str:
    shown = ", ".join(case_ids[:_SHOWN])
    return shown + (f", … ({len(case_ids) - _SHOWN} more)" if len(case_ids) > _SHOWN else "")


def _read_part(part_dir: Path, run_file: str, columns: list[str], key_column: str) -> _Part:
    run_path = part_dir / run_file
    try:
        run = json.loads(run_path.read_text(encoding="utf-8"))
        if not isinstance(run, dict):
            raise ValueError
    except (OSError, ValueError):
        raise SarcoError(f"not a `sarco predict` output folder ({run_file} missing or damaged)", run_path,
                         "give the -o folders of the `sarco predict --part` runs") from None
    part, parts = run.get("part"), run.get("parts")
    if part is None or parts is None:
        raise SarcoError("this output folder was not written with --part/--parts", part_dir,
                         "merge only the folders of one `sarco predict --part I --parts N` batch")
    record, tables = run.get(INPUTS_RECORD), run.get(TABLES_RECORD)
    running = live_holder(part_dir)  # before its rows: a part that finishes meanwhile is then complete
    return _Part(part_dir, int(part), int(parts), run_settings_in(run), record if isinstance(record, dict) else None,
                 part_rows(part_dir, columns, key_column), tables if isinstance(tables, dict) else None,
                 running=running)


def check_merge_output(out_dir: Path, part_dirs: list[Path], run_file: str) -> None:
    """Refuse a merge -o that is, or lies inside, a part folder or another predict output folder."""
    for part_dir in part_dirs:
        if lies_inside(part_dir, out_dir) and lies_inside(out_dir, part_dir) and not (part_dir / run_file).exists():
            raise SarcoError("the -o folder is also given as a part folder (a shell pattern such as out/* "
                             "includes an earlier merge's folder)", out_dir,
                             "list the part folders only, e.g. out/part{0..7}, and give -o a folder of its own")
        if lies_inside(out_dir, part_dir):
            raise SarcoError(f"the merged output would lie inside the part folder {part_dir}", out_dir,
                             "give predict-merge a new -o folder beside the part folders (e.g. out/all)")
    if (out_dir / run_file).exists():
        raise SarcoError(f"this is a `sarco predict` output folder ({run_file}): merging would replace its "
                         f"{RESULTS_FILE}", out_dir, "give predict-merge a new -o folder (e.g. out/all)")


def _check_same_batch(parts: list[_Part]) -> None:
    """Same model and settings in every part, each read in this version's form (`current_form`): parts
    run where the workspace is mounted at two paths, or one part by an earlier sarco, are one batch."""
    first = parts[0]
    for other in parts[1:]:
        changed = changed_settings({k: v for k, v in current_form(first.settings).items() if k != "part"},
                                   {k: v for k, v in current_form(other.settings).items() if k != "part"})
        if changed:
            raise SarcoError(f"the parts were predicted with different models or settings (part {other.index} "
                             f"differs from part {first.index} in: {', '.join(changed)})",
                             fix="merge the parts of one batch (the same model and options for every part)")
    _check_same_tables(parts)
    seen: dict[int, Path] = {}
    for part in parts:
        if part.index in seen:
            raise SarcoError(f"part {part.index} given twice ({seen[part.index]} and {part.folder})", part.folder,
                             "give each part folder once")
        seen[part.index] = part.folder
    expected = set(range(first.parts))
    if set(seen) != expected:
        missing = sorted(expected - set(seen))
        raise SarcoError(f"part(s) {missing} of {len(expected)} missing", fix="give the -o folder of every part")


#: What each per-case table is called in a message (`batch.TABLES_RECORD` keys).
_TABLE_OPTION = {"clinical": "--clinical", "l3_csv": "--l3-csv"}


def _check_same_tables(parts: list[_Part]) -> None:
    """Refuse parts given different per-case tables (another --clinical or --l3-csv file, or one edited
    between their runs, or given to one part only): their rows' SMI and flags (or L3 slices) would come
    from two tables in one results.csv. These are no settings (a rerun recomputes only the cases whose
    record changed), so `_check_same_batch` does not see them; the run files record their contents.
    A part whose run file records none (an earlier sarco) is not compared."""
    for name in sorted({n for p in parts if p.tables for n in p.tables}):
        groups: dict[str, list[int]] = {}
        for part in sorted(parts, key=lambda p: p.index):
            if part.tables is not None and name in part.tables:
                groups.setdefault(str(part.tables[name] or "not given"), []).append(part.index)
        if len(groups) > 1:
            option = _TABLE_OPTION.get(name, name)
            seen = "; ".join(f"part(s) {', '.join(map(str, idx))}: "
                             f"{'not given' if what == 'not given' else 'file ' + what.split(':')[-1][:8]}"
                             for what, idx in groups.items())
            raise SarcoError(f"the parts were given different {option} files ({seen}; content digests): their rows "
                             f"would mix two {option} tables in one results.csv",
                             fix=f"run the named parts' `sarco predict` again with the one {option} file of the "
                                 "batch (only the cases whose rows change are recomputed), then merge again")


def _leave_out_stale_rows(part: _Part) -> int:
    """Drop (from the merge, never from the part folder) the rows of inputs the part's last run was
    not given: an earlier batch's rows left in the same -o folder (predict keeps them, a later run
    over them may resume them), which merged would read as this batch's patients. Returns how many;
    a part whose run file records no inputs keeps every row (merge cannot tell)."""
    if part.record is None:
        return 0
    cases = part.record.get("cases") or {}
    stale = [key for key in part.rows if key not in cases]
    for key in stale:
        del part.rows[key]
    return len(stale)


def _check_rows_of_this_run(part: _Part) -> None:
    """Every row of a part carries its run file's digest: as that file was written, or in this version's
    form (`current_form`: a resume by this sarco re-stamps the rows before it rewrites the run file)."""
    expected = {settings_digest({k: v for k, v in form.items() if k not in ("part", "parts")})
                for form in (part.settings, current_form(part.settings))}
    other = sorted(k for k, r in part.rows.items() if r.get(FINGERPRINT_COLUMN)
                   and r[FINGERPRINT_COLUMN].split(".")[0] not in expected)
    if other:  # an earlier run's rows of inputs this part's run did not see again
        raise SarcoError(f"{len(other)} row(s) of this part were computed with other settings than its run "
                         f"(e.g. {other[0]})", part.folder,
                         "run that part again over the same inputs (they are then recomputed), or merge "
                         "folders of one batch only")


def _listing_problem(parts: list[_Part]) -> str | None:
    """One line when the parts listed different inputs (the folder changed between their runs, or
    another -i): a part may then lack scans of its share that its run never saw. Compared by the
    names relative to -i, as `--part` splits them, so one folder mounted at two paths is one batch."""
    listings: dict[tuple, list[_Part]] = {}
    for part in sorted(parts, key=lambda p: p.index):
        if part.record is not None:
            listings.setdefault((part.record.get("n_listed"), part.record.get("listing")), []).append(part)
    if len(listings) <= 1:
        return None
    seen = "; ".join(f"part(s) {', '.join(str(p.index) for p in group)}: {n} input(s) in "
                     f"{', '.join(sorted({str(p.record.get('folder')) for p in group}))}"
                     for (n, _), group in sorted(listings.items(), key=lambda kv: kv[1][0].index))
    return (f"the parts listed different inputs ({seen}): scans were added, removed or renamed between their runs, "
            "or a part was given another -i, so a part may lack scans of its share")


def merge_parts(part_dirs: list[Path], out_dir: Path, columns: list[str], key_column: str, run_file: str,
                path_columns: tuple[str, ...], allow_incomplete: bool = False) -> MergeResult:
    """Join the results.csv of `sarco predict --part I --parts N` runs into out_dir/results.csv.

    Every part must come from the same model and settings (its run file, apart from the part index),
    every row of a part from its run's settings (`computed_from`), and every part of the N must be
    there. A part's journal (a killed or running part) is read, never folded into its folder. Every
    input a part's run file records must have a row: otherwise the batch is incomplete, refused
    naming each part, how many and which cases it lacks, unless `allow_incomplete` (then each missing
    scan gets a `failed` row, reason `NOT_PREDICTED`, and `MergeResult.missing` lists them). Paths to
    masks and overlays are rewritten relative to `out_dir` (the files stay in the part folders)."""
    if not part_dirs:
        raise SarcoError("no part folders given", fix="pass the -o folders of every `sarco predict --part` run.")
    out_dir = Path(out_dir)
    part_dirs = [Path(p) for p in part_dirs]
    check_merge_output(out_dir, part_dirs, run_file)
    parts = [_read_part(p, run_file, columns, key_column) for p in part_dirs]
    _check_same_batch(parts)
    warnings = []
    stale = {part.index: n for part in sorted(parts, key=lambda p: p.index) if (n := _leave_out_stale_rows(part))}
    if stale:
        warnings.append(f"left out {sum(stale.values())} row(s) of inputs the parts' last runs were not given "
                        f"({', '.join(f'part {i}: {n}' for i, n in stale.items())}): an earlier batch's rows in the "
                        "same -o folder, not this batch's. Fix: give each batch its own -o folders")
    for part in parts:
        _check_rows_of_this_run(part)
    unrecorded = [p.index for p in sorted(parts, key=lambda p: p.index) if p.record is None]
    if unrecorded:
        warnings.append(f"part(s) {', '.join(map(str, unrecorded))}: the run file records no inputs (written by an "
                        "earlier sarco), so merge cannot tell whether they finished. Fix: run those parts' `sarco "
                        "predict` again (finished cases are kept), then merge again")
    missing: dict[int, list[tuple[str, str]]] = {}  # part -> (case id, key) of each input without a row
    totals: dict[int, int] = {}
    by_index = {part.index: part for part in parts}
    for part in sorted(parts, key=lambda p: p.index):
        cases = (part.record or {}).get("cases") or {}
        lacking = sorted((cid, key) for key, cid in cases.items() if key not in part.rows)
        if lacking:
            missing[part.index], totals[part.index] = lacking, len(cases)
    problems = []
    listing = _listing_problem(parts)
    if listing:
        problems.append(listing)
    if missing:
        problems.append("; ".join(
            f"part {index} of {parts[0].parts} lacks {len(lacking)} of {totals[index]} case(s) "
            f"({_names([c for c, _ in lacking])}) ({by_index[index].unfinished()})"
            for index, lacking in missing.items()))
    if problems and not allow_incomplete:
        waiting = "wait for the parts still running to finish, then merge again; otherwise " if any(
            by_index[index].running for index in missing) else ""
        raise SarcoError("incomplete batch: " + "; ".join(problems),
                         fix=f"{waiting}run each named part's `sarco predict ... --part I --parts N` again over the same -i (it "
                             "resumes: finished cases are kept), then merge again; or pass --allow-incomplete to "
                             f"merge now (each missing scan gets a failed row, reason {NOT_PREDICTED})")
    warnings.extend(f"incomplete batch: {p}" for p in problems)
    rows: dict[str, dict[str, Any]] = {}
    # resolved first: relpath is lexical, so an -o reached through a symlinked folder got "../.." paths
    # that the file system walks from the link's target, to no mask (HOSTILE #203)
    target_dir = out_dir.resolve()
    for part in parts:
        for key, row in part.rows.items():
            merged = dict(row)
            for column in path_columns:
                if merged.get(column):
                    merged[column] = os.path.relpath((part.folder / merged[column]).resolve(), target_dir)
            rows[key] = merged
    for index, lacking in missing.items():
        reason = Reason(NOT_PREDICTED, f"part {index} of {parts[0].parts} did not finish this scan "
                                       f"({by_index[index].unfinished()}). Fix: run that part again (or let it "
                                       "finish), then merge again", Status.FAILED)
        for case_id, key in lacking:
            rows[key] = {"case_id": case_id, key_column: key, **Verdict([reason]).columns()}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / RESULTS_FILE
    write_results(target, columns, sorted(rows.values(), key=lambda r: (r.get("case_id", ""), r.get(key_column, ""))))
    return MergeResult(target, len(rows), len(parts), {i: [c for c, _ in v] for i, v in missing.items()},
                       tuple(warnings))
