"""How a file or folder is named as a case, how images pair with masks, what label muscle has.

One rule each, used by every command (convert, predict, evaluate, classification, train-l3), so a
case is named and paired the same way at training and at evaluation:

- Case id (:func:`case_id_for_entry`; :func:`case_id_from_path` where a bad name refuses): a folder
  (a DICOM series) is its name; a file loses its image ending (the longest of :data:`IMAGE_SUFFIXES`,
  any case) and then nnU-Net's channel suffix ``_0000``; a file with another ending loses a non-numeric extension (``scan.ima`` →
  ``scan``; ``1.2.840.5`` stays whole, a DICOM UID). Names that are not UTF-8 are escaped
  (``image_io.printable_path``). The id is :func:`normal_case_id`'s: Unicode NFC (macOS writes file
  names NFD) without white space at either end, as every CSV keyed by case id (clinical.csv,
  --l3-csv) is read, so ``José.nii.gz`` in NFD and `` p02 .nii.gz`` join their rows; two names that
  give one id are refused as any duplicate (:func:`same_id_hint` says why they collide). An empty id (``_0000.nii.gz``, ``.nii.gz``) is refused, and so is
  one starting with a spreadsheet formula character or its full-width look-alike
  (:data:`FORMULA_PREFIXES`): results.csv opened in a spreadsheet would run ``=HYPERLINK(...)`` as a
  formula (CSV injection), and quoting it there would change the id that joins results with clinical.csv and masks. A batch that writes a `failed`
  row instead of refusing (predict) names the input by :attr:`EntryId.case_id`, quoted (:func:`csv_safe`).
- Pairing (:func:`pair_by_case`): image and mask share a case id; two files with the same id on
  one side are refused, naming both, never "the last one wins".
- Labels (:func:`read_labels_json`): a drop's ``labels.json`` maps names to mask values and
  must name ``muscle``; without the file, muscle is ``constants.MUSCLE_LABEL``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sarco_nn.constants import MUSCLE_LABEL, SCAN_SUFFIXES, TISSUE_LABELS
from sarco_nn.errors import InputError
from sarco_nn.image_io import printable_path

__all__ = [
    "IMAGE_SUFFIXES", "CHANNEL_SUFFIX", "FORMULA_PREFIXES", "LABELS_FILE", "EntryId", "case_id_for_entry", "case_id_from_path",
    "normal_case_id", "same_id_hint", "starts_like_formula", "csv_safe", "range_cell", "current_range_cell", "case_entries", "group_by_case",
    "index_by_case", "index_folder",
    "Pairing", "pair_by_case", "read_labels_json", "muscle_label_for",
]

#: Endings of image and mask files: what `image_io` reads, plus single DICOM files. Checked longest
#: first (".nii.gz" before ".nii"), in any case.
IMAGE_SUFFIXES: tuple[str, ...] = tuple(sorted(SCAN_SUFFIXES, key=len, reverse=True))
#: nnU-Net's channel suffix of an image file (<case>_0000.nii.gz): not part of the case id.
CHANNEL_SUFFIX = "_0000"
#: Pixel-data files beside a .mhd header: part of that image, not cases of their own.
COMPANION_SUFFIXES: tuple[str, ...] = (".raw", ".zraw", ".raw.gz")
#: First characters a spreadsheet reads as a formula in a CSV cell (OWASP "CSV injection"): no case
#: id may start with one, nor with a look-alike that Unicode NFKC folds into one (full-width ``＝``
#: U+FF1D, ``＋``, ``－``, ``＠``, the small forms ``﹦`` ``﹢`` ``﹣`` ``﹫``): an input method may turn a
#: typed full-width ``＝`` into a formula, and the name cannot be told from ``=`` at a glance
#: (:func:`starts_like_formula`).
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
#: The file of a drop (beside images/ and masks/) that declares the mask label values.
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class EntryId:
    """What the one case-id rule makes of one discovered entry (:func:`case_id_for_entry`).

    `case_id`: the rule's id; where the name gives none (`error` set), a stand-in: the entry's whole
    name, CSV-safe (a `failed` row of a batch can name the input without a formula in the cell).
    `name`: the entry's whole printable name, CSV-safe (what a row that is no case at all shows).
    """

    case_id: str
    name: str
    error: InputError | None = None

    def required(self) -> str:
        """The case id, or the rule's refusal (one line naming the file and the fix)."""
        if self.error is not None:
            raise self.error
        return self.case_id


def normal_case_id(text: str) -> str:
    """`text` as case ids compare: Unicode NFC, no white space at either end.

    The one normalisation of both sides of every join by case id: the file-name rule
    (:func:`case_id_for_entry`) and the case_id cells of clinical.csv and --l3-csv. Why: macOS
    writes file names in NFD (``e`` + combining accent) and spreadsheets NFC, which print alike
    but never compared equal; CSV cells were read stripped, file names not (HOSTILE #123, #124)."""
    return unicodedata.normalize("NFC", text).strip()


def same_id_hint(names: Iterable[str]) -> str:
    """Why entries whose names look different (or alike) give one case id, as "; ..." to append to a
    duplicate-id message, or "": the two ways :func:`normal_case_id` merges names a user may not see."""
    names = list(names)
    hints = []
    if any(unicodedata.normalize("NFC", n) != n for n in names):
        hints.append("a name in Unicode NFD (as macOS writes it) gives the id of its NFC spelling, the same "
                     f"name to the eye ({', '.join(ascii(n) for n in names)})")
    if any(re.search(r"^\s|\s(_0000)?(\.[^.]*)*$", n) for n in names):
        hints.append("white space at either end of a case id does not count")
    return "; " + "; ".join(hints) if hints else ""


def starts_like_formula(text: str) -> bool:
    """Does `text` start with a :data:`FORMULA_PREFIXES` character, or one that Unicode NFKC folds
    into one (``＝x``)? NFKC is for this check only: the id itself keeps its own characters."""
    return unicodedata.normalize("NFKC", text[:1]).startswith(FORMULA_PREFIXES)


def _strip_formula_start(text: str) -> str:
    """`text` without the formula characters (and look-alikes) it starts with."""
    while text and starts_like_formula(text):
        text = text[1:]
    return text


def csv_safe(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs as a formula: a leading ``'`` before a
    :data:`FORMULA_PREFIXES` character or look-alike (OWASP; :func:`starts_like_formula`), also after
    white space (a spreadsheet may trim it, and the case-id rule does), else unchanged."""
    return "'" + text if starts_like_formula(text) or starts_like_formula(text.lstrip()) else text


def range_cell(low: float, high: float) -> str:
    """A range (both bounds inclusive) as a table cell, ``[-29, 150]``: bracketed because a cell
    starting with ``-`` (``-29..150``) is one a spreadsheet may run as a formula (HOSTILE #130);
    ``[`` is no :data:`FORMULA_PREFIXES` character."""
    return f"[{float(low):g}, {float(high):g}]"


#: A range cell as sarco wrote it before HOSTILE #130 (``-29..150``), in a results.csv of an earlier run.
_OLD_RANGE = re.compile(r"\s*([-+]?\d+(?:\.\d*)?)\s*\.\.\s*([-+]?\d+(?:\.\d*)?)\s*")


def current_range_cell(column: str, value):
    """`value` of results.csv column `column` in this version's form: an HU-range cell (``hu_gate``,
    ``*_hu_range``) of an earlier run's ``-29..150`` becomes ``[-29, 150]`` (:func:`range_cell`), so
    a resumed or merged table has one form and no cell a spreadsheet runs (HOSTILE #202); else unchanged."""
    if not isinstance(value, str) or not (column == "hu_gate" or column.endswith("_hu_range")):
        return value
    old = _OLD_RANGE.fullmatch(value)
    return range_cell(float(old.group(1)), float(old.group(2))) if old else value


def case_id_for_entry(path: Path | str) -> EntryId:
    """The case id of an image/mask file or a DICOM series folder under the one rule (module
    docstring), never raising: every discovery (predict, measure, evaluate, convert, classify,
    train-l3) reads names here, so the rule and its refusals live once."""
    path = Path(path)
    whole = printable_path(path.name)
    name = normal_case_id(whole)
    if not path.is_dir():
        lower = name.lower()
        suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)
        if suffix is not None:
            name = name[: -len(suffix)]
        elif "." in name.lstrip(".") and not name.rsplit(".", 1)[1].isdigit():
            name = name.rsplit(".", 1)[0]
        name = name.rstrip()
        if name.endswith(CHANNEL_SUFFIX):
            name = name[: -len(CHANNEL_SUFFIX)].rstrip()
    error = None
    if not name:
        error = InputError("file name gives an empty case id", path=path,
                           fix="name the file <case>.nii.gz (or <case>_0000.nii.gz), e.g. patient01.nii.gz.")
    elif starts_like_formula(name):
        error = InputError(f"case id {name!r} starts with {name[0]!r}, which a spreadsheet opening results.csv "
                           "runs as a formula", path=path,
                           fix="rename it (and its clinical.csv id) to start with a letter or digit, e.g. p"
                               f"{_strip_formula_start(name)[:20] or '01'}.")
    safe = csv_safe(whole)
    return EntryId(safe if error else name, safe, error)


def case_id_from_path(path: Path | str) -> str:
    """The case id of an image/mask file or a DICOM series folder; a name that gives none is
    refused (InputError naming the file and the fix). :func:`case_id_for_entry` without raising."""
    return case_id_for_entry(path).required()


def case_entries(folder: Path | str) -> list[Path]:
    """The entries of a drop folder that are cases: files and series folders, not hidden, not a
    .mhd header's pixel file."""
    entries = sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
    mhd_stems = {p.name[:-4] for p in entries if p.name.lower().endswith(".mhd")}
    return [p for p in entries if not (p.is_file() and p.name.lower().endswith(COMPANION_SUFFIXES)
                                       and p.name.split(".")[0] in mhd_stems)]


def index_folder(folder: Path | str) -> dict[str, Path]:
    """case id → entry of a drop folder (images/ or masks/); duplicates refused naming both."""
    return index_by_case(case_entries(folder), folder)


def group_by_case(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """case id → every path with that id (sorted by name), for callers that list all duplicates at once."""
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(p) for p in paths):
        found.setdefault(case_id_from_path(path), []).append(path)
    return found


def index_by_case(paths: Iterable[Path], where: Path | str | None = None) -> dict[str, Path]:
    """case id → path; two paths with one id are refused with both names (InputError)."""
    index: dict[str, Path] = {}
    for case_id, group in group_by_case(paths).items():
        if len(group) > 1:
            raise InputError(f"two files give case id {case_id!r}: {group[0].name} and {group[1].name}"
                             + same_id_hint(p.name for p in group[:2]),
                             path=where if where is not None else group[0].parent, fix="keep one of them (or rename one).")
        index[case_id] = group[0]
    return index


@dataclass
class Pairing:
    """Cases found on both sides, and those found on one side only (sorted ids)."""

    pairs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    images_only: list[str] = field(default_factory=list)
    masks_only: list[str] = field(default_factory=list)


def pair_by_case(images: dict[str, Path], masks: dict[str, Path]) -> Pairing:
    """Pair two {case id: path} indexes (from :func:`index_by_case`) by case id."""
    common = sorted(set(images) & set(masks))
    return Pairing({c: (images[c], masks[c]) for c in common}, sorted(set(images) - set(masks)),
                   sorted(set(masks) - set(images)))


def read_labels_json(path: Path | str) -> dict[str, int]:
    """{name: value} of a labels.json; it must name a positive `muscle`, values distinct, none negative."""
    path = Path(path)
    example = 'write it like {"muscle": 1, "imat": 2}'
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("labels file not found", path, example) from None
    except (ValueError, UnicodeDecodeError):
        raise InputError("not valid JSON", path, example) from None
    if not isinstance(labels, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise InputError("must map label names to integers", path, example)
    miscased = [k for k in labels if k != k.lower() and k.lower() in TISSUE_LABELS]
    if miscased:  # "VAT" is no tissue name: VAT and SAT were reported absent, status ok
        raise InputError(f"label name(s) {', '.join(map(repr, miscased))} must be lower case", path,
                         f"write the tissue names as {', '.join(TISSUE_LABELS)}")
    if "muscle" not in labels:
        raise InputError("declares no 'muscle' label", path, 'add "muscle": <value used for muscle in the masks>')
    values = list(labels.values())
    if len(set(values)) != len(values):
        raise InputError("two labels share one value", path, "give every label its own value")
    if labels["muscle"] <= 0 or any(v < 0 for v in values):
        raise InputError("muscle must be a positive value and no label negative", path, "0 is background")
    return dict(labels)


def muscle_label_for(mask_folder: Path | str, label: int | None = None) -> tuple[int, str]:
    """(muscle value, where it came from) for the masks in `mask_folder`.

    An explicit `label` (--label) wins; else a labels.json in the folder or beside it (a drop's
    masks/ sits next to its labels.json); else sarco's own MUSCLE_LABEL.
    """
    if label is not None:
        return int(label), "--label"
    candidate = labels_json_for(mask_folder)
    if candidate is not None:
        return read_labels_json(candidate)["muscle"], str(candidate)
    return MUSCLE_LABEL, "sarco default"


def labels_json_for(mask_folder: Path | str) -> Path | None:
    """The labels.json that declares the values of the masks in `mask_folder`: in it, or beside it.

    A drop's masks/ sits next to its labels.json, so a mask in drop/masks/ is read with drop/labels.json;
    every reader of a mask (measure, evaluate, convert) finds it here, so none reads 1 as muscle alone.
    """
    folder = Path(mask_folder)
    for candidate in (folder / LABELS_FILE, folder.parent / LABELS_FILE):
        if candidate.is_file():
            return candidate
    return None
