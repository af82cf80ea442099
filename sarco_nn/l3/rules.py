"""The L3 slice from a vertebra label map (TotalSegmentator numbering), by one of two documented rules.

Label ids: TotalSegmentator v2 `total` task (see shared/data/totalsegmentator/class_map_total_and_tissue_types.json):
26 vertebrae_S1, 27 L5, 28 L4, **29 L3**, 30 L2, 31 L1, 32 T12 ... 43 T1, 44 C7 ... 50 C1. This module is the one
place sarco_nn names them; the phantom generator's VERTEBRA_LABELS uses the same numbers (a test checks it).

Rules for "the L3 slice" (both are used in the literature; on real CT they differ by about one slice):
- ``centroid``: the axial slice nearest the centroid (along z) of all L3 voxels. TotalSegmentator's L3 label holds
  the body and the posterior elements; the posterior arch lags the body caudally by a few mm, so this lies
  slightly below the pure vertebral-body centre (by well under one 3 mm slice on example_ct).
- ``max-area``: the axial slice with the largest L3 cross-section (voxel count; in-plane spacing is constant).
  Ties go to the slice nearest the centroid.

"L3 not in field of view" (L3NotFound): label 29 is absent, or it touches the first or last slice, so the
vertebra is cut and neither rule can be trusted.

"L3 cannot be placed" (LevelInPieces, LevelMislabelled): the label is in separate pieces along z, or the labels
around it do not read as a v2 column (`column_problem`): TotalSegmentator v1 numbering (L5 = 18, so its 29 is T6),
the level not between its neighbours (swapped labels), or a label over two vertebrae or over part of one (far larger
or smaller than a neighbour).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.errors import InputError
from sarco_nn.l3.result import L3Location, L3NotFound

__all__ = [
    "L3_LABEL", "RULES", "TOTALSEG_L3_FILE", "VERTEBRA_LABELS", "check_rule", "describe_vertebrae",
    "MAX_NEIGHBOUR_VOLUME_RATIO", "V1_VERTEBRA_OFFSET", "column_problem", "l3_index_from_labels", "level_index_from_labels", "locate_from_vertebrae", "read_vertebra_mask",
    "refuse_empty_map"
]

#: TotalSegmentator v2 vertebra label ids, caudal to cranial (S1 = 26 ... C1 = 50).
VERTEBRA_LABELS: dict[str, int] = {
    name: 26 + i for i, name in enumerate(
        ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{k}" for k in range(12, 0, -1)] + [f"C{k}" for k in range(7, 0, -1)])
}
L3_LABEL: int = VERTEBRA_LABELS["L3"]
_NAMES = {v: k for k, v in VERTEBRA_LABELS.items()}

#: TotalSegmentator v1 numbered the vertebrae L5 = 18 ... C1 = 41 (v2's value minus 9; 18-25 are organs in v2).
V1_VERTEBRA_OFFSET = 9
#: Two uncut neighbouring vertebrae differ in labelled volume by far less (example_ct L1-L5: at most 1.05x; lumbar
#: vertebrae grow a few per cent a level); a label this much larger than a neighbour's covers two vertebrae.
MAX_NEIGHBOUR_VOLUME_RATIO = 1.6

#: Rules for choosing the L3 slice from labels (documented in the module docstring).
RULES: tuple[str, ...] = ("centroid", "max-area")

#: File TotalSegmentator writes for L3 when run without --ml (one binary mask per structure).
TOTALSEG_L3_FILE = "vertebrae_L3.nii.gz"


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise InputError(f"unknown L3 rule {rule!r}", None, f"use one of: {', '.join(RULES)}")
    return rule


def describe_vertebrae(labels: np.ndarray) -> str:
    """'vertebrae C3-C7' style summary of the vertebra labels present (for error messages)."""
    present = sorted(int(v) for v in np.unique(labels) if int(v) in _NAMES)
    if not present:
        return "no vertebra labels (TotalSegmentator ids 26-50)"
    low, high = _NAMES[present[0]], _NAMES[present[-1]]
    return f"vertebrae {high}" if low == high else f"vertebrae {high}-{low}"


def l3_index_from_labels(labels_zyx: np.ndarray, rule: str = "centroid", where: str | Path | None = None) -> int:
    """Canonical axial index of the L3 slice in a (z, y, x) label array with z[0] the most inferior slice."""
    return level_index_from_labels(labels_zyx, "L3", rule, where)


def level_index_from_labels(labels_zyx: np.ndarray, level: str, rule: str = "centroid",
                            where: str | Path | None = None) -> int:
    """Canonical axial index of the slice of vertebra `level` (T12, L1, ...; same rules as L3).

    Raises L3NotFound for L3 and LevelNotFound for another level when the vertebra is absent or cut.
    """
    from sarco_nn.l3.result import LevelInPieces, LevelMislabelled, LevelNotFound

    check_rule(rule)
    if level not in VERTEBRA_LABELS:
        raise InputError(f"unknown vertebra {level!r}", where, f"use one of {', '.join(VERTEBRA_LABELS)}")
    value = VERTEBRA_LABELS[level]

    def missing(reason: str) -> Exception:
        return L3NotFound(reason, where) if level == "L3" else LevelNotFound(level, reason, where)

    counts = _slice_counts(labels_zyx)
    numbering = _v1_numbering(counts)
    if numbering is not None:  # before "absent" or "cut": in v1 numbering label 29 is another vertebra, if any
        raise LevelMislabelled(level, numbering, where, _V1_FIX)
    per_slice = counts[:, value]
    occupied = np.flatnonzero(per_slice)
    if occupied.size == 0:
        raise missing(f"the vertebra mask has no {level} (label {value}); it shows {describe_vertebrae(labels_zyx)}")
    gaps = np.flatnonzero(np.diff(occupied) > 1)
    if gaps.size:  # a mislabelled piece elsewhere: the centroid would fall between the pieces, in another vertebra
        starts, ends = [occupied[0], *occupied[gaps + 1]], [*occupied[gaps], occupied[-1]]
        pieces = ", ".join(f"{a}-{b}" for a, b in zip(starts, ends))
        raise LevelInPieces(level, f"its label {value} lies in {len(starts)} separate pieces along the slices "
                            f"(canonical slices {pieces}); a vertebra is one piece, so part of it is another "
                            "vertebra", where)
    n = len(per_slice)
    if occupied[0] == 0 or occupied[-1] == n - 1:
        edge = "lower (caudal)" if occupied[0] == 0 else "upper (cranial)"
        raise missing(f"{level} (label {value}) touches the {edge} edge of the scan, so the vertebra is cut")
    problem = _v2_column_problem(counts, level)  # after "cut": a cut level is small; v1 numbering judged above
    if problem is not None:
        raise LevelMislabelled(level, problem, where)
    centroid = float(np.sum(np.arange(n) * per_slice) / per_slice.sum())
    if rule == "centroid":
        return int(np.floor(centroid + 0.5))
    best = np.flatnonzero(per_slice == per_slice.max())
    return int(best[np.argmin(np.abs(best - centroid))])


_V1_FIX = ("run TotalSegmentator 2.x, or renumber the map to v2 (add 9 to v1's vertebra values 18-41: L3 20 -> 29), "
           "or give the slice yourself (--slice N / --l3-slice N)")


def _slice_counts(labels_zyx: np.ndarray) -> np.ndarray:
    """(z, value) voxel counts of the values 0..50 (larger values, organs of TotalSegmentator, count as 0)."""
    array = np.asarray(labels_zyx)
    top = max(VERTEBRA_LABELS.values()) + 1
    out = np.zeros((array.shape[0], top), np.int64)
    for z, plane in enumerate(array.reshape(array.shape[0], -1)):
        values = plane.astype(np.int64, copy=False)
        out[z] = np.bincount(np.where((values > 0) & (values < top), values, 0), minlength=top)[:top]
    out[:, 0] = 0
    return out


def _extent(counts: np.ndarray, value: int) -> tuple[int, int, float, int] | None:
    """(first slice, last slice, centroid slice, voxels) of `value`, None when absent."""
    column = counts[:, value]
    occupied = np.flatnonzero(column)
    if occupied.size == 0:
        return None
    total = int(column.sum())
    return int(occupied[0]), int(occupied[-1]), float(np.sum(np.arange(len(column)) * column) / total), total


def _v1_numbering(counts: np.ndarray) -> str | None:
    """Why the map reads as TotalSegmentator v1 numbering, or None: three or more of the values 18-25 stacked
    along z like vertebrae (each above the last, none reaching the centre of a value beyond its neighbours) below
    the v2 vertebrae. In v2 these are organs (colon spans the abdomen, the bladder lies below the bowel)."""
    chain = [(v, e) for v in range(18, 26) if (e := _extent(counts, v)) is not None]
    if len(chain) < 3:
        return None
    centres = [e[2] for _, e in chain]
    first_v2 = next((e for v in range(26, counts.shape[1]) if (e := _extent(counts, v)) is not None), None)
    if first_v2 is not None:
        centres.append(first_v2[2])
    stacked = all(a < b for a, b in zip(centres, centres[1:])) and not any(  # neighbours overlap (arches), no more
        lo < c < hi for i, (_, (lo, hi, _, _)) in enumerate(chain) for j, c in enumerate(centres) if abs(i - j) > 1)
    if not stacked:
        return None
    values = ", ".join(str(v) for v, _ in chain)
    return (f"labels {values} are stacked along the spine like vertebrae: TotalSegmentator v1 numbering "
            f"(L5 = 18, L3 = 20, T12 = 23; in v1 label 29 is T6), where v2 has organs there (small bowel 18 ... "
            "sacrum 25)")


def column_problem(labels_zyx: np.ndarray, level: str, counts: np.ndarray | None = None) -> str | None:
    """Why the labels around `level` do not read as one TotalSegmentator v2 column, or None.

    TotalSegmentator v1 numbering; `level` not above the nearest vertebra below it and below the nearest above it
    (swapped labels, or a numbering running the other way); `level` over MAX_NEIGHBOUR_VOLUME_RATIO times an uncut
    adjacent lumbar/thoracic vertebra (one label over two vertebrae), or under 1/MAX_NEIGHBOUR_VOLUME_RATIO of it
    (part of it labelled as the neighbour: its centre is off). S1 (a part of the sacrum in TotalSegmentator)
    and cut neighbours are not compared by volume. Only the level's own neighbours are judged, so a mislabel in the
    neck does not block L3.
    """
    counts = _slice_counts(labels_zyx) if counts is None else counts
    return _v1_numbering(counts) or _v2_column_problem(counts, level)


def _v2_column_problem(counts: np.ndarray, level: str) -> str | None:
    """`column_problem` once the map is known not to be v1 numbering (`level_index_from_labels` judged that
    first, so the v1 test runs once per map)."""
    value = VERTEBRA_LABELS[level]
    own = _extent(counts, value)
    if own is None:
        return None
    top = max(VERTEBRA_LABELS.values())
    below = next(((v, e) for v in range(value - 1, 25, -1) if (e := _extent(counts, v)) is not None), None)
    above = next(((v, e) for v in range(value + 1, top + 1) if (e := _extent(counts, v)) is not None), None)
    if below is not None and below[1][2] >= own[2]:
        return (f"{level} (label {value}) does not lie above {_NAMES[below[0]]} (label {below[0]}): the labels are "
                "swapped, or not in TotalSegmentator v2 numbering")
    if above is not None and above[1][2] <= own[2]:
        return (f"{level} (label {value}) does not lie below {_NAMES[above[0]]} (label {above[0]}): the labels are "
                "swapped, or not in TotalSegmentator v2 numbering")
    n = counts.shape[0]
    if own[0] == 0 or own[1] == n - 1:  # cut by the scan: its volume says nothing
        return None
    for v in (value - 1, value + 1):
        name = _NAMES.get(v, "")
        e = _extent(counts, v)
        if e is None or name in ("S1", "") or name.startswith("C") or e[0] == 0 or e[1] == n - 1:
            continue
        if own[3] > MAX_NEIGHBOUR_VOLUME_RATIO * e[3]:
            return (f"{level} (label {value}) holds {own[3] / e[3]:.1f}x the voxels of its neighbour {name} "
                    f"(label {v}): one label over two vertebrae")
        if own[3] * MAX_NEIGHBOUR_VOLUME_RATIO < e[3]:
            return (f"{level} (label {value}) holds only {own[3] / e[3]:.2f}x the voxels of its neighbour {name} "
                    f"(label {v}): part of {level} carries another label, so its centre is off")
    return None


def refuse_empty_map(labels: np.ndarray, where: str | Path | None, level: str = "L3") -> None:
    """Raise `VertebraMapEmpty` when a vertebra map labels nothing (every voxel 0): the one check of
    --l3-from / --vertebrae maps, TotalSegmentator's output included, before any rule reads them."""
    from sarco_nn.l3.result import VertebraMapEmpty

    if not np.any(labels):
        raise VertebraMapEmpty(level, where)


def read_vertebra_mask(mask: sitk.Image | str | Path) -> tuple[sitk.Image, str]:
    """A vertebra label image (as stored) and its name; a TotalSegmentator output folder gives L3 = 29.

    Accepts one multi-label file (TotalSegmentator `--ml`, or any map in its numbering) or the folder of
    per-structure files TotalSegmentator writes without `--ml` (only vertebrae_L3.nii.gz is read).
    """
    from sarco_nn.image_io import read_label_image

    if isinstance(mask, sitk.Image):
        return mask, "vertebra mask"
    path = Path(mask)
    if path.is_dir():
        single = path / TOTALSEG_L3_FILE
        if not single.is_file():
            raise InputError(f"folder has no {TOTALSEG_L3_FILE}", path,
                             "give a vertebra label file (TotalSegmentator numbering, L3 = 29) or its output folder")
        image = read_label_image(single)
        array = (sitk.GetArrayViewFromImage(image) > 0).astype(np.uint16) * L3_LABEL
        relabelled = sitk.GetImageFromArray(array)
        relabelled.CopyInformation(image)
        return relabelled, str(single)
    return read_label_image(path), str(path)


def locate_from_vertebrae(mask: sitk.Image | str | Path, image: sitk.Image | None = None,
                          rule: str = "centroid") -> L3Location:
    """L3 level from a vertebra label map on the CT's grid (checked when `image` is given)."""
    from sarco_nn.image_io import canonical_slice_index, check_same_grid, to_canonical

    check_rule(rule)
    labels, name = read_vertebra_mask(mask)
    if image is not None:
        check_same_grid(image, labels, name)
    canonical = to_canonical(labels)
    array = sitk.GetArrayViewFromImage(canonical)
    refuse_empty_map(array, name)
    values = set(np.unique(array).astype(int).tolist())
    if values <= {0, 1}:
        raise InputError("binary mask, not vertebra labels", name,
                         f"give TotalSegmentator vertebra labels (L3 = {L3_LABEL}) or its output folder")
    index = l3_index_from_labels(array, rule, name)
    z_mm = canonical.GetOrigin()[2] + index * canonical.GetSpacing()[2]
    return L3Location(slice_index=index, z_mm=float(z_mm), method="vertebrae", rule=rule, confidence=1.0,
                      stored_index=canonical_slice_index(labels, index))
