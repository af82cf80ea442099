"""What every L3 locator returns, and the one error it raises when L3 is not in the field of view."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sarco_nn.errors import SarcoError

__all__ = ["L3Location", "L3NotFound", "LevelInPieces", "LevelMislabelled", "LevelNotFound", "NoL3Locator",
           "VertebraMapEmpty"]


class L3NotFound(SarcoError):
    """The scan does not show the whole L3 vertebra (chest-only, pelvis-only, neck...): no SMA is reported."""

    reason_code = "l3_not_in_view"

    def __init__(self, reason: str, path: str | Path | None = None, fix: str | None = None):
        super().__init__(f"L3 not in field of view: {reason}", path,
                         fix or "give a CT that covers the whole third lumbar vertebra, or pass --l3-slice N")


class LevelNotFound(L3NotFound):
    """Another vertebral level is not (wholly) in view; a kind of L3NotFound, so every caller that
    turns "not in view" into a row or an exit status treats both alike."""

    def __init__(self, level: str, reason: str, path: str | Path | None = None, fix: str | None = None):
        SarcoError.__init__(self, f"{level} not in field of view: {reason}", path,
                            fix or f"give a CT (or vertebra labels) that covers the whole of {level}, "
                                   f"or drop --level {level}")


class NoL3Locator(SarcoError):
    """A volume came without an L3 slice, and nothing here can locate one (no vertebra mask, no
    trained localizer, no TotalSegmentator): a setup fact, not a property of the scan."""

    reason_code = "l3_no_locator"


class LevelInPieces(L3NotFound):
    """A vertebra's label lies in separate pieces along z (part of it is another vertebra): no slice is
    chosen. A kind of L3NotFound, so every caller turns it into the same row or exit status."""

    def __init__(self, level: str, reason: str, path: str | Path | None = None):
        SarcoError.__init__(self, f"{level} cannot be placed: {reason}", path,
                            "correct the vertebra labels (one piece per vertebra), or give the slice yourself "
                            "(--slice N / --l3-slice N)")


class LevelMislabelled(L3NotFound):
    """The vertebra labels around a level do not read as one TotalSegmentator v2 column (another numbering,
    swapped labels, one label over two vertebrae): no slice is chosen. A kind of L3NotFound, as LevelInPieces."""

    def __init__(self, level: str, reason: str, path: str | Path | None = None, fix: str | None = None):
        SarcoError.__init__(self, f"{level} cannot be placed: {reason}", path,
                            fix or "correct the vertebra labels (TotalSegmentator v2 numbering, L3 = 29), or give "
                                   "the slice yourself (--slice N / --l3-slice N)")


class VertebraMapEmpty(L3NotFound):
    """A vertebra label map that labels nothing (every voxel 0): no slice can come from it. TotalSegmentator
    writes such a map when no vertebra is in view (an empty vertebrae_L3.nii.gz: L3 is not), and a blank or
    wrong export looks the same; before, it was refused as "binary mask, not vertebra labels" (`unreadable`).
    A kind of L3NotFound (`l3_not_in_view`), so every caller makes the same failed row of it."""

    def __init__(self, level: str, path: str | Path | None = None):
        SarcoError.__init__(self, f"{level} not in field of view: the vertebra map is empty (every voxel 0), it "
                            "labels no vertebra", path,
                            "check that it is this scan's vertebra map (TotalSegmentator numbering, L3 = 29; "
                            "TotalSegmentator leaves it empty when no vertebra is in view), or give the slice "
                            "yourself (--l3-slice N / --slice N)")


@dataclass(frozen=True)
class L3Location:
    """The chosen L3 level of a volume.

    slice_index: canonical (LPS) axial index, 0 = most inferior slice, the convention of
        `sarco_nn.image_io.load_axial_slice`.
    z_mm: world z (LPS/RAS share z: + towards Superior) of that slice's centre.
    method: which locator answered ("vertebrae", "model", "totalsegmentator", "user", "csv", "single-slice").
    rule: "centroid" or "max-area" for label-based methods, "" otherwise.
    confidence: 1.0 for labels and user input; the localizer's probability mass at the level for "model".
    stored_index: the same slice counted along the file's own slice axis (what a viewer shows, and what
        --l3-slice / --l3-csv take; see image_io.canonical_slice_index); None when no file geometry is known.
    """

    slice_index: int
    z_mm: float
    method: str
    rule: str = ""
    confidence: float = 1.0
    stored_index: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)
