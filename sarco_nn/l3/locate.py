"""`locate_l3`: the one function that finds the L3 level of a CT volume, whichever locator answers.

Methods: ``vertebrae`` (a vertebra label map the user already has, e.g. TotalSegmentator's output),
``model`` (the learned localizer trained by `sarco train-l3`), ``totalsegmentator`` (optional backend),
and ``auto``: a given vertebra mask first (exact labels beat any estimate), then a trained localizer
(trained on the user's own data), then TotalSegmentator if installed; otherwise a SarcoError saying
what to provide. Every method answers an `L3Location` or raises `L3NotFound`.
"""

from __future__ import annotations

from pathlib import Path

import dataclasses

import SimpleITK as sitk

from sarco_nn.errors import InputError, SarcoError
from sarco_nn.l3.result import L3Location, NoL3Locator

__all__ = ["METHODS", "load_localizer", "locate_l3", "read_volume"]

METHODS: tuple[str, ...] = ("auto", "model", "vertebrae", "totalsegmentator")

_LOCALIZERS: dict[tuple[str, float], object] = {}  # loaded once per checkpoint (batch predict)


def read_volume(path_or_image: Path | str | sitk.Image, where: Path | str | None = None
                ) -> tuple[sitk.Image, sitk.Image]:
    """(image as stored, canonical LPS image) of a CT, checked as `load_axial_slice` checks it.

    The one read + check + reorient of the L3 code (locating, `sarco train-l3`, predict's slice
    choice). An in-memory image is checked too; `where` names it in error messages.
    """
    from sarco_nn.image_io import check_ct_intensities, read_image, require_axial, to_canonical

    if isinstance(path_or_image, sitk.Image):
        original, where = path_or_image, where or "image"
    else:
        where = where or Path(path_or_image)
        original = read_image(path_or_image)
    check_ct_intensities(original, where)
    require_axial(original, where)
    return original, to_canonical(original)


def load_localizer(model_dir: Path | str, level: str = "L3"):
    """The trained localizer in `model_dir` (refused unless trained for `level`), cached while its
    checkpoint file is unchanged."""
    from sarco_nn.l3.localizer import CHECKPOINT_FILE, L3Localizer

    path = (Path(model_dir) / CHECKPOINT_FILE).resolve()
    key = (str(path), path.stat().st_mtime if path.exists() else 0.0, level)
    if key not in _LOCALIZERS:
        _LOCALIZERS[key] = L3Localizer.load(model_dir, level)
    return _LOCALIZERS[key]


def locate_l3(volume_path_or_image: Path | str | sitk.Image, method: str = "auto",
              vertebra_mask: Path | str | sitk.Image | None = None, rule: str = "centroid",
              model_dir: Path | str | None = None, where: Path | str | None = None,
              level: str = "L3") -> L3Location:
    """Find the L3 slice of a CT volume (file, DICOM folder or SimpleITK image, any orientation).

    `slice_index` is canonical: 0 = most inferior slice (`stored_index` counts along the file's own axis).
    `model_dir` None means <workspace>/l3_localizer; `where` names an in-memory image in messages.
    `level` other than L3: only a localizer trained for it (`sarco train-l3 --level`) answers, from
    <workspace>/localizer_<level> by default.
    Raises L3NotFound when L3 is not in view (LevelNotFound for another level),
    SarcoError when the chosen method cannot run here.
    """
    from sarco_nn.l3.localizer import default_model_dir, has_model
    from sarco_nn.l3.rules import check_rule, locate_from_vertebrae

    from sarco_nn.body_composition import check_level

    level = check_level(level)  # T12..L5 (constants.LEVELS), before the volume is read
    if method not in METHODS:
        raise InputError(f"unknown L3 locator {method!r}", None, f"use one of: {', '.join(METHODS)}")
    check_rule(rule)
    if level != "L3":
        if method not in ("auto", "model"):
            raise SarcoError(f"--locator {method} finds L3 only; {level} comes from a localizer trained for it",
                             fix=f"train one with `sarco train-l3 --level {level}` and use --locator model (or "
                                 f"measure at {level} from vertebra labels: sarco measure --vertebrae).")
        method = "model"
        model_dir = Path(model_dir) if model_dir is not None else default_model_dir(None, level)
    where = where or ("image" if isinstance(volume_path_or_image, sitk.Image) else Path(volume_path_or_image))
    original, canonical = read_volume(volume_path_or_image, where)
    if canonical.GetSize()[2] < 2:
        raise InputError("a single axial slice: there is no L3 level to locate", where,
                         "give the whole volume, or use the slice as it is (no --locator)")
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()

    if method == "auto":
        if vertebra_mask is not None:
            method = "vertebrae"
        elif has_model(model_dir):
            method = "model"
        else:
            from sarco_nn.l3.totalseg import INSTALL_HINT, totalsegmentator_problem

            problem = totalsegmentator_problem()
            if problem:
                raise NoL3Locator(f"cannot locate L3 automatically: no vertebra mask, no trained L3 localizer in "
                                 f"{model_dir}, and {problem}", where,
                                 f"pass --l3-slice N or --l3-from VERTEBRA_MASK, train one with `sarco train-l3`, "
                                 f"or {INSTALL_HINT.split(', or ')[0]}")
            method = "totalsegmentator"

    from sarco_nn.image_io import canonical_slice_index

    if method == "vertebrae":
        if vertebra_mask is None:
            raise InputError("--locator vertebrae needs a vertebra mask", where, "pass --l3-from VERTEBRA_MASK")
        location = locate_from_vertebrae(vertebra_mask, original, rule)
    elif method == "model":
        location = load_localizer(model_dir, level).locate(canonical, where)
    else:
        from sarco_nn.l3.totalseg import vertebrae_with_totalsegmentator

        location = dataclasses.replace(locate_from_vertebrae(vertebrae_with_totalsegmentator(canonical), canonical,
                                                             rule), method="totalsegmentator")
    return dataclasses.replace(location, stored_index=canonical_slice_index(original, location.slice_index))
