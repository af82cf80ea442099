"""clinical.csv: the per-patient facts SMI and the sarcopenia flag need (sex, height).

Why strict: a height in centimetres or an unknown sex code would silently give an SMI off by a
factor of 10 000 or the wrong cutoff. Every problem in the file is reported at once (row and
value), so a user fixes the spreadsheet in one go.

Format: UTF-8 (an Excel BOM is fine), comma-, semicolon- or tab-separated, a header row with at
least `case_id, sex, height_m`; optional `weight_kg, age, sarcopenic`; other columns are ignored.
Cells reading NA, N/A, NaN, null, unknown, ?, - or . are missing values (as an empty cell).
A case_id is read as the file-name rule makes ids (`cases.normal_case_id`: Unicode NFC, no space at
either end), so a macOS (NFD) file name joins its row; two rows giving one id are duplicates.
A row with more filled cells than the header has columns is refused: in a comma-separated file a
decimal comma ("1,76") splits one value into two, and the row would silently read height 1 m.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from fractions import Fraction

from sarco_nn.cases import normal_case_id
from sarco_nn.errors import ClinicalDataError
from sarco_nn.thresholds import bmi as exact_bmi
from sarco_nn.thresholds import normalise_sex

REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "sex", "height_m")
OPTIONAL_COLUMNS: tuple[str, ...] = ("weight_kg", "age", "sarcopenic")

#: Cells that spell "not known" (R writes NA, pandas NaN, spreadsheets N/A or -): read as empty, so the
#: case gets no SMI or flag from that value (as for an empty cell) instead of refusing the whole file.
_MISSING_TOKENS = frozenset({"na", "n/a", "nan", "null", "none", "unknown", "?", "-", "."})

_BOOL_CODES = {"1": True, "true": True, "yes": True, "y": True, "0": False, "false": False, "no": False, "n": False}

#: Anybody taller than this (in metres) has been entered in centimetres.
_MAX_HEIGHT_M = 3.0
#: Nobody shorter than this (in metres) has an adult L3 scan: the shortest adult on record measured
#: 0.546 m, so a smaller value is a unit slip (0.176 for 1.76, decimetres) that would multiply SMI by ~100.
#: It was 0.5 and inclusive, below that record: `--height 0.5` gave an SMI (HOSTILE_FINDINGS #155).
_MIN_HEIGHT_M = 0.54
#: Nobody heavier than this (in kg) has a CT: the heaviest person on record weighed 635 kg, so a larger
#: value is a unit slip (grams, or a lost decimal point) that would put BMI, and with it the BMI-dependent
#: cut-off of the martin set, in the obese band.
_MAX_WEIGHT_KG = 650.0
#: Nobody lighter than this (in kg) is an adult with a CT: the lightest adult on record weighed 2.1 kg, so a
#: smaller value is a unit slip (tonnes: 0.072 for 72 kg) that would put BMI near 0 and with it the martin
#: sets' lower-BMI cut-offs (SMI 43 not 53, muscle HU 41 not 33) on the patient, silently.
_MIN_WEIGHT_KG = 2.0


def height_problem(height: float, name: str = "height_m", shown: str | None = None) -> str | None:
    """Why `height` (metres) cannot be a person's height (a unit slip), as "problem; fix", or None.
    The one rule for clinical.csv and `sarco measure --height`; `shown` is the value as the user wrote it."""
    said = f"{name} {height if shown is None else shown}"
    if not math.isfinite(height):  # inf is no centimetres, nan no negative: say what it is (HOSTILE #200)
        return f"{said} is not a finite number; give the height in metres (e.g. 1.75)"
    if height <= 0:
        return f"{said} must be positive (metres); give the height in metres (e.g. 1.75)"
    if height > _MAX_HEIGHT_M:
        return f"{said} looks like centimetres; give metres (e.g. 1.75)"
    if height < _MIN_HEIGHT_M:
        return (f"{said} is below {_MIN_HEIGHT_M:g} m (the shortest adult on record measured 0.546 m), a unit slip; "
                "give metres (e.g. 1.75)")
    return None


def weight_problem(weight: float, name: str = "weight_kg", shown: str | None = None) -> str | None:
    """Why `weight` (kg) cannot be a person's weight (a unit slip), as "problem; fix", or None.
    The one rule for clinical.csv and `sarco measure --weight`; `shown` is the value as the user wrote it."""
    said = f"{name} {weight if shown is None else shown}"
    if not math.isfinite(weight):
        return f"{said} is not a finite number; give the weight in kg (e.g. 72.5)"
    if weight <= 0:
        return f"{said} must be positive; give the weight in kg (e.g. 72.5)"
    if weight > _MAX_WEIGHT_KG:
        return (f"{said} is above {_MAX_WEIGHT_KG:g} kg (the heaviest person on record weighed 635 kg), grams or a "
                "lost decimal point; give the weight in kg (e.g. 72.5)")
    if weight < _MIN_WEIGHT_KG:
        return (f"{said} is below {_MIN_WEIGHT_KG:g} kg (the lightest adult on record weighed 2.1 kg), tonnes or a "
                "unit slip; give the weight in kg (e.g. 72.5)")
    return None


@dataclass(frozen=True)
class ClinicalRecord:
    case_id: str
    sex: str | None = None  # "M" or "F"
    height_m: float | None = None
    weight_kg: float | None = None
    age: float | None = None
    sarcopenic: bool | None = None  # reference label, when the site provides one

    @property
    def bmi(self) -> Fraction | None:
        """Exact body-mass index (kg/m²) of the entered values, or None when height or weight is unknown.

        Exact so that a BMI at a band boundary (64 kg at 1.60 m = 25) falls in the right band;
        use float(record.bmi) to display it.
        """
        return exact_bmi(self.height_m, self.weight_kg)


class ClinicalTable(dict):
    """{case_id: ClinicalRecord}, plus `problems`: one line per value that was not usable.

    Strict reading returns it with no problems (or raises); lenient reading keeps every row,
    with each unusable value set to None and listed here (row number, case id, what and why).
    """

    def __init__(self, records: dict[str, ClinicalRecord] | None = None, problems: list[str] | None = None):
        super().__init__(records or {})
        self.problems: list[str] = list(problems or [])


def read_clinical_csv(path: Path | str, strict: bool = True) -> ClinicalTable:
    """Read clinical.csv into {case_id: ClinicalRecord}.

    strict=True (default): raise ClinicalDataError listing every problem, so a spreadsheet is fixed
    in one go before anything is measured. strict=False (evaluation of many cases): a bad value
    becomes None (that case gets no SMI or flag, never a wrong one), a duplicated case id is
    dropped altogether (which row is right is unknown), and the problems are returned in
    `.problems`. File-level problems (unreadable, not UTF-8, no header, missing required column)
    raise in both modes: nothing in such a file can be trusted.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ClinicalDataError("file not found", path, "create clinical.csv with columns case_id,sex,height_m") from None
    except UnicodeDecodeError:
        raise ClinicalDataError("not UTF-8 text", path, "save it as 'CSV UTF-8' (comma-separated)") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ClinicalDataError("empty file or empty header row", path, "the first row must name the columns")
    delimiter = max((",", ";", "\t"), key=lines[0].count)  # ties (none of them): comma
    reader = csv.reader(lines, delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ClinicalDataError(f"missing column(s) {', '.join(missing)} (found: {', '.join(header)})", path,
                                f"the header must name at least {', '.join(REQUIRED_COLUMNS)}")
    column = {name: header.index(name) for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in header}

    records: dict[str, ClinicalRecord] = {}
    problems: list[str] = []
    seen: dict[str, int] = {}
    spelled: dict[str, str] = {}  # case id → its cell as first written (an NFD twin of an NFC id prints alike)
    for row_number, row in enumerate(reader, start=2):  # spreadsheet row numbers: header is row 1
        if not any(cell.strip() for cell in row):
            continue
        cell = {name: (row[i].strip() if i < len(row) else "") for name, i in column.items()}
        cell = {name: "" if name != "case_id" and value.lower() in _MISSING_TOKENS else value
                for name, value in cell.items()}
        case_id = normal_case_id(cell["case_id"])
        if not case_id:
            problems.append(f"row {row_number}: empty case_id")
            continue
        extra = [c for c in row[len(header):] if c.strip()]
        if extra:  # the values have shifted: which cell is the height is unknown
            name = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
            problems.append(f"row {row_number} ({case_id}): {len(header) + len(extra)} values for {len(header)} "
                            f"columns (a decimal comma in a {name}-separated file? {', '.join(extra[:3])} "
                            "left over); quote such values or use a '.' decimal point")
            continue
        if case_id in seen:
            twin = (f" (rows {seen[case_id]} and {row_number} spell it in two Unicode forms, NFC and NFD, that "
                    "print alike)") if spelled[case_id] != cell["case_id"] else ""
            if strict:
                problems.append(f"row {row_number}: duplicate case_id {case_id!r}{twin}")
            else:
                problems.append(f"row {row_number}: duplicate case_id {case_id!r} (also row {seen[case_id]}){twin}: "
                                "both rows ignored")
                records.pop(case_id, None)
            continue
        seen[case_id] = row_number
        spelled[case_id] = cell["case_id"]
        errors: list[str] = []
        record = ClinicalRecord(
            case_id=case_id,
            sex=_parse_sex(cell["sex"], errors),
            height_m=_parse_height(cell["height_m"], errors, decimal_comma=delimiter == ";"),
            weight_kg=_parse_weight(cell.get("weight_kg", ""), errors, delimiter == ";"),
            age=_parse_positive(cell.get("age", ""), "age", errors, delimiter == ";", allow_zero=True),
            sarcopenic=_parse_bool(cell.get("sarcopenic", ""), errors),
        )
        problems.extend(f"row {row_number} ({case_id}): {e}" for e in errors)
        if not errors or not strict:
            records[case_id] = record  # lenient: the unusable values are None already
    if problems and strict:
        raise ClinicalDataError(_summary(problems), path, "correct these rows and run again")
    return ClinicalTable(records, problems)


def missing_rows(table: dict[str, ClinicalRecord], case_ids: Iterable[str]) -> list[tuple[str, str | None]]:
    """(case id, the CSV's id differing from it only in letter case, or None) for each case `table` lacks.

    The one rule of which row "almost" matches (#8): `predict` and `evaluate` name it alike."""
    lowered = {case.lower(): case for case in table}
    return [(case, lowered.get(case.lower())) for case in case_ids if case and case not in table]


def missing_row_name(case: str, near: str | None) -> str:
    """A case without a row, as the warnings name it: with the CSV's near id (`missing_rows`) when there is one."""
    return f"{case} (the CSV has {near!r})" if near else case


def missing_rows_warning(path: Path | str, table: dict[str, ClinicalRecord], case_ids: Iterable[str]) -> str | None:
    """The one-line warning naming the cases `table` (read from `path`) has no row for, or None.

    Why: case ids are matched exactly, so 'CASE_000' in the CSV silently matched scan case_000 and
    its SMI and flag stayed unknown; a row differing only in letter case is named first.
    """
    missing = missing_rows(table, case_ids)
    if not missing:
        return None
    named = [missing_row_name(case, near) for case, near in missing]
    near_first = [n for n, (_, near) in zip(named, missing) if near] or named
    shown = ", ".join(near_first[:5]) + (" ..." if len(near_first) > 5 else "")
    return (f"warning: {path}: no row for {len(missing)} case(s): {shown}; their SMI and sarcopenia flag "
            "will be unknown. Fix: add rows whose case_id is the scan's file name without its extension "
            "(matched exactly, case-sensitive; spaces at either end and Unicode NFC/NFD spelling do not count)")


def write_clinical_csv(path: Path | str, records: Iterable[ClinicalRecord]) -> None:
    """Write records in the format read_clinical_csv reads (UTF-8, comma-separated)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
        for r in records:
            writer.writerow([
                r.case_id, r.sex or "", _fmt(r.height_m), _fmt(r.weight_kg), _fmt(r.age),
                "" if r.sarcopenic is None else int(r.sarcopenic),
            ])


def _summary(problems: list[str]) -> str:
    shown = problems[:20]
    more = f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return f"{len(problems)} problem(s): " + "; ".join(shown) + more


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _parse_sex(value: str, errors: list[str]) -> str | None:
    if not value:
        return None
    code = normalise_sex(value)
    if code is None:
        errors.append(f"sex {value!r} not understood (use M/F, male/female or man/woman)")
    return code


def _parse_number(value: str, name: str, errors: list[str], decimal_comma: bool) -> float | None:
    if not value:
        return None
    text = value.replace(",", ".") if decimal_comma and value.count(",") == 1 and "." not in value else value
    try:
        number = float(text)
    except ValueError:
        errors.append(f"{name} {value!r} is not a number")
        return None
    if not math.isfinite(number):
        errors.append(f"{name} {value!r} is not a finite number")
        return None
    return number


def _parse_height(value: str, errors: list[str], decimal_comma: bool) -> float | None:
    height = _parse_number(value, "height_m", errors, decimal_comma)
    if height is None:
        return None
    problem = height_problem(height, shown=repr(value))
    if problem:
        errors.append(problem)
        return None
    return height


def _parse_weight(value: str, errors: list[str], decimal_comma: bool) -> float | None:
    weight = _parse_number(value, "weight_kg", errors, decimal_comma)
    if weight is None:
        return None
    problem = weight_problem(weight, shown=repr(value))
    if problem:
        errors.append(problem)
        return None
    return weight


def _parse_positive(value: str, name: str, errors: list[str], decimal_comma: bool,
                    allow_zero: bool = False) -> float | None:
    number = _parse_number(value, name, errors, decimal_comma)
    if number is None:
        return None
    if number < 0 or (number == 0 and not allow_zero):
        errors.append(f"{name} {value!r} must be positive")
        return None
    return number


def _parse_bool(value: str, errors: list[str]) -> bool | None:
    if not value:
        return None
    flag = _BOOL_CODES.get(value.lower())
    if flag is None:
        errors.append(f"sarcopenic {value!r} not understood (use 1/0, yes/no or true/false)")
    return flag
