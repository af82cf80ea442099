"""Which stored slice of a volume is which vertebral level, for measuring at several levels at once.

`sarco measure MASK --level L1 --level L3 --vertebrae VERTEBRAE` measures one slice per level: the
slice of each vertebra by the same rules as L3 (`sarco_nn.l3.rules`, "centroid" or "max-area",
TotalSegmentator numbering), on the mask's grid. The result has one row per (scan, level) with a
`level` column; a sarcopenia flag is given only at a level the threshold set was published for
(`ThresholdSet.levels`; every built-in set: L3 only), elsewhere areas only and the `threshold`
cell says why — never L3's cut-offs applied at another level.

A level the vertebra labels cannot place (cut by the scan edge, absent, in pieces, mislabelled) is a
`failed` row with its reason code (`l3_not_in_view`) and fix while the other levels are measured;
when no level can be placed the command is refused with the first level's line.

Without vertebra labels one level may be declared (`--level L1`: "this mask's slice is L1");
several levels then cannot be told apart, which is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.errors import InputError, SarcoError

__all__ = ["LEVEL_COLUMNS", "LevelSlice", "level_slices", "read_level_labels"]

#: Columns a multi-level measurement adds to each row (units: README "Outputs and units").
LEVEL_COLUMNS: tuple[str, ...] = ("level", "level_source")


@dataclass(frozen=True)
class LevelSlice:
    """One level to measure: its name, the stored slice index (None: the mask's own choice) and how it was found."""

    level: str
    slice_index: int | None
    source: str  # "declared" (the user's --level for the given slice) or "vertebrae (<rule>)"
    #: Why this level has no slice (cut by the scan edge, absent, in pieces, mislabelled): its row is `failed`
    #: with the error's reason code and fix, and the other levels are still measured (HOSTILE #121).
    error: SarcoError | None = None


def read_level_labels(vertebrae: Path | str | sitk.Image, levels: list[str]) -> tuple[sitk.Image, str]:
    """A vertebra label map (TotalSegmentator numbering): one multi-label file, or TotalSegmentator's
    output folder of per-structure files (vertebrae_<level>.nii.gz, one per level asked for)."""
    from sarco_nn.image_io import read_label_image
    from sarco_nn.l3.rules import VERTEBRA_LABELS, read_vertebra_mask

    if isinstance(vertebrae, sitk.Image) or not Path(vertebrae).is_dir():
        return read_vertebra_mask(vertebrae)
    folder = Path(vertebrae)
    combined = None
    reference = None
    for level in levels:
        path = folder / f"vertebrae_{level}.nii.gz"
        if not path.is_file():
            raise InputError(f"folder has no vertebrae_{level}.nii.gz", folder,
                             "give TotalSegmentator's output folder holding every level asked for, or a "
                             "multi-label vertebra file")
        image = read_label_image(path)
        array = sitk.GetArrayFromImage(image)
        if combined is None:
            combined, reference = np.zeros(array.shape, np.uint16), image
        elif array.shape != combined.shape:
            raise InputError(f"vertebrae_{level}.nii.gz is on another grid than the other levels", path,
                             "give the files of one TotalSegmentator run")
        combined[array > 0] = VERTEBRA_LABELS[level]
    out = sitk.GetImageFromArray(combined)
    out.CopyInformation(reference)
    return out, str(folder)


def level_slices(levels: list[str] | None, mask_img: sitk.Image, vertebrae: Path | str | sitk.Image | None = None,
                 rule: str = "centroid", slice_index: int | None = None,
                 mask_name: str | None = None) -> list[LevelSlice]:
    """The (level, slice) pairs to measure, in the order asked, each level once; a level without a
    slice carries its `error` (all of them without one: that error is raised).

    levels: T12…L5 (None or []: the default, L3). vertebrae: label map on the mask's grid; without
    it a single level is taken as declared for the slice(s) `slice_index` or the mask chooses.
    """
    from sarco_nn.body_composition import check_level
    from sarco_nn.image_io import canonical_slice_index, check_same_grid, to_canonical
    from sarco_nn.l3.result import L3NotFound
    from sarco_nn.l3.rules import check_rule, level_index_from_labels, refuse_empty_map

    wanted: list[str] = []
    for level in levels or [None]:
        name = check_level(level)
        if name not in wanted:
            wanted.append(name)
    if vertebrae is None:
        if len(wanted) > 1:
            raise SarcoError(f"several levels ({', '.join(wanted)}) need vertebra labels to find each level's slice",
                             fix="pass --vertebrae VERTEBRA_MASK (TotalSegmentator numbering), or measure one "
                                 "level per call with --slice N --level LEVEL.")
        return [LevelSlice(wanted[0], slice_index, "declared")]
    if slice_index is not None:
        raise SarcoError("--slice and --vertebrae both choose the slice", fix="drop one of them.")
    check_rule(rule)
    labels, name = read_level_labels(vertebrae, wanted)
    check_same_grid(mask_img, labels, name, mask_name)
    canonical = sitk.GetArrayFromImage(to_canonical(labels))
    refuse_empty_map(canonical, name, wanted[0])  # every level would fail: say why once
    out = []
    for level in wanted:
        try:
            index = level_index_from_labels(canonical, level, rule, name)
        except L3NotFound as error:  # not in view, in pieces, mislabelled: that level's failed row
            out.append(LevelSlice(level, None, f"vertebrae ({rule})", error))
            continue
        # the mask's own stored count (it may run the other way than the vertebra file)
        out.append(LevelSlice(level, canonical_slice_index(mask_img, index), f"vertebrae ({rule})"))
    if all(at.error is not None for at in out):  # nothing to measure: the first level's one-line refusal
        raise out[0].error
    return out
