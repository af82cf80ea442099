"""The options of `sarco predict`: ONE frozen dataclass, from the command line to the locked run.

Why one place: `inference.predict`, the run it makes once it holds the output folder's lock, and
`sarco_nn.api` (which re-exports `PredictOptions`) each listed the same two dozen parameters; a new
option had to be added to every list (and tests checked that they agreed). Now the option is one
field here, documented here, and every layer passes the one object. Torch-free, so importing the
API stays light.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from pathlib import Path

from sarco_nn.constants import DEFAULT_TRUNK_ONLY
from sarco_nn.errors import SarcoError
from sarco_nn.io_pipeline import DEFAULT_IO_WORKERS
from sarco_nn.thresholds import DEFAULT_THRESHOLD_SET

__all__ = ["PathLike", "PredictOptions"]

PathLike = str | Path


@dataclass(frozen=True)
class PredictOptions:
    """How to segment and measure (the options of `sarco predict`).

    Args:
        dataset: dataset id or name whose model to use (None: the only one).
        trainer: which trained model (``smit``, ``nnunet``, ``resenc``; None: the only one).
        preset: which planned preset (None: the only one).
        clinical_csv: clinical.csv (case_id, sex, height_m, ...) for SMI (cm²/m²) and the flag.
        thresholds: threshold set for the sarcopenia flag: ``paper``, ``prado``, ``martin`` or a file.
        fast: skip test-time mirroring (about 4x faster in 2D, slightly less accurate).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        l3_slice: L3 slice of a volume, counted along the file's own slice axis (0-based); one slice for
            every volume, so not with ``l3_csv`` or ``l3_from`` (refused: it would silently replace them).
        l3_csv: CSV ``case_id,l3_slice`` giving each volume's L3 slice.
        l3_from: vertebra label map (TotalSegmentator numbering, L3 = 29): a file or a folder.
        locator: L3 localizer for volumes: ``auto``, ``vertebrae``, ``model``, ``totalsegmentator``.
        l3_rule: L3 slice from vertebra labels: ``centroid`` or ``max-area``.
        slab: measure the mean of this many slices around the L3 level (1 = the slice itself).
        hu_gate: count only muscle pixels within the muscle HU gate (-29..150 HU).
        overwrite: allow an output folder holding another model's results.
        progress: print one line per case.
        l3_model_dir: trained L3 localizer folder (None: <workspace>/l3_localizer).
        part: predict only share ``part`` (0..parts-1) of the inputs (a SLURM array index); None: all.
        parts: number of shares the batch is split into (merge the parts with ``sarco predict-merge``).
        dicom_seg: also write a DICOM SEG per DICOM scan (the one output carrying patient identity).
        io_workers: threads reading the next scans and writing finished ones while the network runs
            (1: one scan at a time); the results do not depend on it.
        trunk_only: count predicted tissue only inside the trunk, the largest body region of the slice
            (arms in the field of view are not SMA; `sarco_nn.trunk`). On by default; False
            (``--keep-outside-trunk``) counts it all.
    """

    dataset: str | int | None = None
    trainer: str | None = None
    preset: str | None = None
    clinical_csv: PathLike | None = None
    thresholds: str = DEFAULT_THRESHOLD_SET
    fast: bool = False
    device: str = "auto"
    l3_slice: int | None = None
    l3_csv: PathLike | None = None
    l3_from: PathLike | None = None
    locator: str = "auto"
    l3_rule: str = "centroid"
    slab: int = 1
    hu_gate: bool = False
    overwrite: bool = False
    progress: bool = True
    l3_model_dir: PathLike | None = None
    part: int | None = None
    parts: int | None = None
    dicom_seg: bool = False
    io_workers: int = DEFAULT_IO_WORKERS
    trunk_only: bool = DEFAULT_TRUNK_ONLY

    def __post_init__(self) -> None:
        """Refuse an option no run can use here, before any scan is read or model loaded: `--slab 0` loaded the
        model and then failed every volume alike; `l3_slice` beside a per-case L3 source would win for every
        volume (the order of `l3.choose.choose_slice`), so the --l3-csv rows or --l3-from vertebra masks given
        were silently never read, and so were they beside a locator that finds L3 itself (`--locator model`).
        (The other options are checked in `inference.predict`.)"""
        if isinstance(self.slab, bool) or not isinstance(self.slab, numbers.Integral) or self.slab < 1:
            raise SarcoError(f"--slab {self.slab!r} must be a whole number of slices, at least 1",
                             fix="give --slab 1 (the L3 slice itself) or e.g. --slab 3 (the mean of 3 slices "
                                 "around it).")
        if self.l3_slice is not None and (self.l3_csv is not None or self.l3_from is not None):
            given = " and ".join(n for n, v in (("--l3-csv", self.l3_csv), ("--l3-from", self.l3_from)) if v is not None)
            raise SarcoError(f"--l3-slice {self.l3_slice} with {given}: --l3-slice gives every volume that one slice, "
                             f"so {given} would never be read",
                             fix=f"give either --l3-slice (one slice for every volume) or {given} (each volume's own)")
        if self.l3_slice is not None and self.locator in ("model", "totalsegmentator"):
            raise SarcoError(f"--l3-slice {self.l3_slice} with --locator {self.locator}: the slice given wins for every "
                             "volume, so the locator would never run",
                             fix="give either --l3-slice or --locator (leave --locator out with --l3-slice).")
        if self.l3_from is not None and self.locator in ("model", "totalsegmentator"):
            raise SarcoError(f"--l3-from with --locator {self.locator}: that locator finds L3 itself, so the vertebra "
                             "masks given would never be read",
                             fix="leave --locator out (auto: the vertebra masks where a case has one) or give "
                                 "--locator vertebrae, or drop --l3-from.")

    def with_paths(self) -> PredictOptions:
        """These options with every file/folder field (typed `PathLike`) as a `Path` (None stays None)."""
        return dataclasses.replace(self, **{f.name: Path(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if "Path" in str(f.type) and getattr(self, f.name) is not None})
