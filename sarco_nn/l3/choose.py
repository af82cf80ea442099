"""What `sarco predict` calls per scan: pick the L3 slice (user > CSV > locator) and extract it (or a slab).

Precedence: ``--l3-slice N`` for the run, then the scan's row in ``--l3-csv`` (case_id → slice index),
then the locator (`locate.locate_l3`). A single-slice image is used as it is.

Index conventions: a user's --l3-slice / --l3-csv index counts along the file's own slice axis (what a
viewer shows), exactly as `image_io.load_axial_slice` reads --l3-slice; `L3Location.slice_index` is
canonical (0 = most inferior) and `L3Location.stored_index` is the file's own count.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.cases import case_entries, case_id_for_entry, normal_case_id, same_id_hint
from sarco_nn.errors import InputError
from sarco_nn.l3.result import L3Location

__all__ = [
    "L3_CSV_INDEX_COLUMNS", "L3_RESULT_COLUMNS", "choose_slice", "l3_result_fields", "load_l3_slice",
    "read_l3_csv", "slab_slice", "vertebra_mask_for"
]

#: Accepted column names of the slice index in an --l3-csv file.
L3_CSV_INDEX_COLUMNS: tuple[str, ...] = ("l3_slice", "slice_index", "l3_slice_index")

#: Columns `sarco predict` adds to results.csv (filled by `l3_result_fields`).
L3_RESULT_COLUMNS: tuple[str, ...] = ("l3_method", "l3_rule", "l3_confidence", "l3_slice_canonical", "l3_slab",
                                      "l3_thumbnail")


def read_l3_csv(path: Path | str) -> dict[str, int]:
    """case_id → L3 slice index (file's own slice order) from a CSV with columns case_id and l3_slice (or slice_index)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("L3 CSV not found", path, "give a CSV with columns case_id,l3_slice")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a spreadsheet's BOM is fine
    except UnicodeDecodeError:
        raise InputError("the L3 CSV is not UTF-8 (saved as Latin-1 / Windows-1252?)", path,
                         "save it as UTF-8 (CSV UTF-8 in a spreadsheet)") from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in reader.fieldnames or []]
        column = next((c for c in L3_CSV_INDEX_COLUMNS if c in fields), None)
        if "case_id" not in fields or column is None:
            raise InputError(f"columns {fields} lack case_id and l3_slice", path,
                             "write a header line: case_id,l3_slice (0 = most inferior slice)")
        result: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if row.get(None):  # DictReader's rest key: more cells than the header names
                raise InputError(f"line {line} has {len(fields) + len(row[None])} cells but the header has "
                                 f"{len(fields)} (a decimal comma or an extra separator?)", path,
                                 "give one case_id,l3_slice pair per line")
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            case, value = normal_case_id(row["case_id"]), row[column]  # as the file-name rule makes ids
            try:
                index = int(value)
            except ValueError:
                raise InputError(f"line {line}: slice index {value!r} of case {case!r} is not an integer", path,
                                 "give whole slice numbers (0 = most inferior slice)") from None
            if index < 0:
                raise InputError(f"line {line}: negative slice index {index} for case {case!r}", path,
                                 "count slices from 0 (most inferior) upward")
            if case in result:
                raise InputError(f"line {line}: case {case!r} listed twice", path, "keep one row per case")
            result[case] = index
    return result


def _given(stored: int, method: str, original: sitk.Image, canonical: sitk.Image, where: Path | str) -> L3Location:
    from sarco_nn.image_io import canonical_slice_index

    n = canonical.GetSize()[2]
    if not 0 <= stored < n:
        flag = "--l3-slice" if method == "user" else "--l3-csv"
        raise InputError(f"{flag} slice {stored} outside the volume's 0..{n - 1}", where,
                         "count slices along the file's own slice axis, from 0")
    index = canonical_slice_index(original, int(stored))
    z = canonical.GetOrigin()[2] + index * canonical.GetSpacing()[2]
    return L3Location(slice_index=index, z_mm=float(z), method=method, stored_index=int(stored))


def choose_slice(scan_path: Path | str, image: sitk.Image, l3_slice: int | None = None, l3_csv_row: int | None = None,
                 vertebra_mask: Path | str | sitk.Image | None = None, locator: str = "auto",
                 rule: str = "centroid", model_dir: Path | str | None = None) -> L3Location:
    """The L3 slice of one scan. `image` is the CT as read from scan_path (any orientation, checked)."""
    from sarco_nn.image_io import to_canonical
    from sarco_nn.l3.locate import locate_l3

    canonical = to_canonical(image)
    n = canonical.GetSize()[2]
    if n == 1:
        if l3_slice not in (None, 0):
            raise InputError(f"single-slice image, but slice {l3_slice} was asked for", scan_path,
                             "leave out --l3-slice (or pass 0) for a single slice")
        return L3Location(0, float(canonical.GetOrigin()[2]), "single-slice", stored_index=0)
    if l3_slice is not None:
        return _given(l3_slice, "user", image, canonical, scan_path)
    if l3_csv_row is not None:
        return _given(l3_csv_row, "csv", image, canonical, scan_path)
    return locate_l3(image, method=locator, vertebra_mask=vertebra_mask, rule=rule, model_dir=model_dir,
                     where=scan_path)


def slab_slice(canonical: sitk.Image, index: int, n_slices: int = 1) -> sitk.Image:
    """The axial slice `index` (n_slices 1) or the mean of n_slices slices centred on it, as one slice.

    An even count takes one more slice above than below. Geometry is that of slice `index` (the mask
    maps back onto it); the slab must fit inside the volume.
    """
    from sarco_nn.image_io import extract_axial_slice

    if n_slices < 1:
        raise InputError(f"--slab {n_slices} must be at least 1", None, "give the number of slices to average")
    single = extract_axial_slice(canonical, index)
    if n_slices == 1:
        return single
    n = canonical.GetSize()[2]
    lo, hi = index - (n_slices - 1) // 2, index + n_slices // 2
    if lo < 0 or hi >= n:
        raise InputError(f"a {n_slices}-slice slab around slice {index} leaves the volume (0..{n - 1})", None,
                         "use a smaller --slab")
    mean = sitk.GetArrayViewFromImage(canonical)[lo:hi + 1].astype(np.float32).mean(axis=0)
    out = sitk.GetImageFromArray(mean[None])
    out.CopyInformation(single)
    return out


def load_l3_slice(scan_path: Path | str, l3_slice: int | None = None, l3_csv_row: int | None = None,
                  vertebra_mask: Path | str | sitk.Image | None = None, locator: str = "auto",
                  rule: str = "centroid", model_dir: Path | str | None = None, slab: int = 1):
    """Drop-in for `image_io.load_axial_slice` in predict: (slice image, SliceSource, L3Location)."""
    from sarco_nn.image_io import SliceSource
    from sarco_nn.l3.locate import read_volume

    path = Path(scan_path)
    original, canonical = read_volume(path)
    location = choose_slice(path, original, l3_slice, l3_csv_row, vertebra_mask, locator, rule, model_dir)
    slice_image = slab_slice(canonical, location.slice_index, slab)
    source = SliceSource(path=path, slice_index=location.slice_index, n_slices=canonical.GetSize()[2],
                         stored_index=int(location.stored_index), z_mm=location.z_mm, original=original)
    return slice_image, source, location


def l3_result_fields(location: L3Location, slab: int = 1, thumbnail: Path | str | None = None) -> dict[str, str]:
    """The L3 columns of one results.csv row (slice_index / z_mm stay in predict's own columns)."""
    return {"l3_method": location.method, "l3_rule": location.rule, "l3_confidence": f"{location.confidence:.3f}",
            "l3_slice_canonical": str(location.slice_index), "l3_slab": str(slab),
            "l3_thumbnail": "" if thumbnail is None else str(thumbnail)}


def _named_by_rule(folder: Path, case_id: str) -> list[Path]:
    """The image files and series folders of `folder` whose case id (the one rule) is `case_id`."""
    from sarco_nn.image_io import IMAGE_SUFFIXES

    entries = [p for p in case_entries(folder) if p.is_dir() or p.name.lower().endswith(IMAGE_SUFFIXES)]
    return [p for p in entries if (named := case_id_for_entry(p)).error is None and named.case_id == case_id]


def vertebra_mask_for(l3_from: Path | str | None, case_id: str) -> Path | None:
    """The vertebra mask of one scan from --l3-from: one file (a single scan), a TotalSegmentator output
    folder, or a folder holding <case_id>.nii.gz (any image ending) or <case_id>/ per scan."""
    from sarco_nn.image_io import IMAGE_SUFFIXES
    from sarco_nn.l3.rules import TOTALSEG_L3_FILE

    if l3_from is None:
        return None
    folder = Path(l3_from)
    if folder.is_file() or (folder / TOTALSEG_L3_FILE).is_file():
        return folder
    if folder.is_dir():
        for candidate in [folder / f"{case_id}{suffix}" for suffix in IMAGE_SUFFIXES] + [folder / case_id]:
            if candidate.exists():
                return candidate
        named = _named_by_rule(folder, case_id)  # an NFD or space-padded name, as the scan's may be
        if len(named) > 1:
            raise InputError(f"two vertebra masks give case id {case_id!r}: {named[0].name} and {named[1].name}"
                             + same_id_hint(p.name for p in named[:2]), folder, "keep one of them (or rename one).")
        if named:
            return named[0]
        raise InputError(f"no vertebra mask for case {case_id!r}", folder,
                         f"add {case_id}.nii.gz (TotalSegmentator numbering, L3 = 29) or leave out --l3-from")
    raise InputError("--l3-from not found", folder, "give a vertebra mask file or a folder of them")
