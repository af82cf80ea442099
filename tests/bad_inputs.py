"""Generator of the bad-input corpus: every kind of messy input a hospital batch throws at sarco.

Nothing here is checked in as a binary: each item is written into a folder the caller owns
(a pytest tmp dir), from small synthetic volumes or from the real CT files in ../shared/data
modified with pydicom. Each item says which file or folder is at fault (`path`) and what the
error must be about (`problem`, a regex), so one test can assert the same contract for every
command that reads it:

- kind "image":    a CT input (a file or a DICOM series folder) that must be refused;
- kind "mask":     a muscle mask that must be refused, beside a good image (`image`);
- kind "clinical": a clinical.csv that must be refused (strict) or partly ignored (lenient);
- kind "implausible": readable, but not a plausible CT geometry (9 mm pixels, qform/sform
  disagreeing): `sarco predict` gives a `review` row without a flag, `sarco convert` refuses it;
- kind "entry": a batch-folder entry that cannot be a scan (broken or looping link, an Analyze
  pair, an empty case id): `sarco predict` gives it a `failed` row naming it;
- kind "good": an odd but valid input (a 240-character name, `$` in the name, an extension-less
  DICOM file, NIfTI scl_slope 0) that `sarco predict` must measure (`expect` = "ok").

DICOM items come from `dicom_factory` (generated, always present); the real files in ../shared/data
add further DICOM items when that folder is there (`needs_data`).

`dropin(item, root)` wraps an item into a complete drop-in folder (images/, masks/,
clinical.csv) holding only that case, for `sarco convert`.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from dicom_factory import strip_rescale, write_series
from helpers import DATA, make_image, muscle_of, phantom_array, write

CLINICAL_HEADER = "case_id,sex,height_m,weight_kg\n"

#: A file name that is not valid UTF-8 (latin-1 "é"): Linux allows any bytes in names.
NON_UTF8_NAME = b"caf\xe9_scan".decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class BadInput:
    name: str                 # short id, used as the case id where the format allows it
    kind: str                 # "image" | "mask" | "clinical"
    path: Path                # the offending file or folder: every error must name it
    problem: str              # regex (case-insensitive) the error must match: the problem itself
    case_id: str = ""         # case id the item belongs to (image and mask items)
    image: Path | None = None  # the good image a bad mask belongs to
    needs_data: bool = False  # built from ../shared/data
    expect: str = "failed"    # status `sarco predict` must give it (image/entry: failed; implausible: review)
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:  # readable pytest ids
        return self.name


# ------------------------------------------------------------------------------- good pieces


def good_slice(seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """A plausible 2-D CT slice in HU (0.8 mm pixels) and its muscle mask."""
    hu = phantom_array(nz=1, ny=48, nx=56, seed=seed)[0]
    image = make_image(hu, spacing=(0.8, 0.8), origin=(-20.0, -20.0))
    mask = make_image(muscle_of(hu), spacing=(0.8, 0.8), origin=(-20.0, -20.0))
    return image, mask


def write_clinical(path: Path, case_ids, text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        text = CLINICAL_HEADER + "".join(f"{c},{'MF'[k % 2]},1.{70 + k},{60 + k}\n" for k, c in enumerate(case_ids))
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- image items


def _image_file(folder: Path, name: str, image: sitk.Image, problem: str, ext: str = ".nii.gz",
                **extra) -> BadInput:
    path = write(image, folder / f"{name}{ext}")
    return BadInput(name, "image", path, problem, case_id=name, extra=extra)


def _raw_file(folder: Path, name: str, data: bytes, problem: str, ext: str = ".nii.gz") -> BadInput:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{ext}"
    path.write_bytes(data)
    return BadInput(name, "image", path, problem, case_id=name)


def _png_bytes() -> bytes:
    array = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "x.png"
        sitk.WriteImage(image, str(target))
        return target.read_bytes()


def synthetic_image_items(root: Path) -> list[BadInput]:
    """Image items made from synthetic volumes (no real data needed)."""
    folder = root / "images"
    hu = phantom_array(nz=3, ny=40, nx=48, seed=3)
    items = []

    four_d = sitk.JoinSeries([make_image(hu.astype(np.int16)), make_image(hu.astype(np.int16))])
    items.append(_image_file(folder, "four_d", four_d, r"4-D image"))

    nan = hu[:1].astype(np.float32)
    nan[0, 5, 5] = np.nan
    items.append(_image_file(folder, "nan_voxels", make_image(nan), r"NaN or infinite"))
    inf = hu[:1].astype(np.float32)
    inf[0, 7, 9] = np.inf
    items.append(_image_file(folder, "inf_voxels", make_image(inf), r"NaN or infinite"))
    items.append(_image_file(folder, "nan_voxels_mha", make_image(nan), r"NaN or infinite", ext=".mha"))

    # a sagittal stack: the slice normal is the patient's left-right axis
    sagittal = make_image(hu, direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    items.append(_image_file(folder, "sagittal_volume", sagittal, r"sagittal or coronal"))
    oblique = make_image(hu, direction=tuple(sitk.VersorTransform((1, 0, 0), np.radians(30)).GetMatrix()))
    items.append(_image_file(folder, "oblique_volume", oblique, r"not an axial|oblique"))

    # a [0, 1]-normalised slice and an 8-bit screenshot: not HU
    norm = ((hu[:1].astype(np.float32) + 1000) / 2000).clip(0, 1)
    items.append(_image_file(folder, "normalised_not_hu", make_image(norm), r"not a CT in Hounsfield|plausible CT range"))
    mr_like = (hu[:1].astype(np.float32) + 1000).clip(0, None)
    items.append(_image_file(folder, "mr_like_intensities", make_image(mr_like), r"Hounsfield|plausible CT range"))

    rgb = sitk.Compose([make_image(hu[0].astype(np.uint8), spacing=(0.8, 0.8), origin=(0, 0))] * 3)
    items.append(_image_file(folder, "rgb_slice", rgb, r"components per voxel", ext=".nrrd"))

    mha = write(make_image(hu[:1], spacing=(0.7, 0.8, 2.5)), folder / "zero_spacing.mha").read_bytes()
    head, body = mha.split(b"ElementDataFile", 1)
    head = b"\n".join(b"ElementSpacing = 0 0.8 2.5" if line.startswith(b"ElementSpacing") else line
                      for line in head.split(b"\n"))
    items.append(_raw_file(folder, "zero_spacing", head + b"ElementDataFile" + body, r"spacing", ext=".mha"))
    nrrd = write(make_image(hu[:1]), folder / "no_spacing.nrrd").read_bytes()
    head, body = nrrd.split(b"\n\n", 1)
    head = b"\n".join(line for line in head.split(b"\n") if not line.startswith((b"space directions", b"spacings")))
    items.append(_raw_file(folder, "no_spacing", head + b"\n\n" + body, r"spacing", ext=".nrrd"))

    items.append(_raw_file(folder, "png_as_nifti", _png_bytes(), r"not a NIfTI file"))
    items.append(_raw_file(folder, "png_as_mha", _png_bytes(), r"not a MetaImage file", ext=".mha"))
    items.append(_raw_file(folder, "text_as_nifti", b"case_id,sex\nA,M\n" * 20, r"not a NIfTI file"))
    items.append(_raw_file(folder, "text_as_nifti_gz", gzip.compress(b"not an image\n" * 50),
                           r"cannot read this image file"))
    good = write(make_image(hu), folder / "tmp_good.nii.gz").read_bytes()
    (folder / "tmp_good.nii.gz").unlink()
    items.append(_raw_file(folder, "truncated_nifti", good[: len(good) // 2], r"truncated"))
    items.append(_raw_file(folder, "empty_file", b"", r"not a NIfTI file"))
    items.append(_raw_file(folder, "unknown_suffix", b"hello", r"unknown file type", ext=".jpg"))
    return items


def _dicom_series(target: Path, source: Path | list[Path], edit: Callable | None = None,
                  keep: Callable | None = None) -> Path:
    """Copy a real DICOM series (a folder of DICOM files, or a list of files) into `target`/,
    optionally editing each dataset with `edit(dataset, index)`."""
    import pydicom

    target.mkdir(parents=True, exist_ok=True)
    files = sorted(source.iterdir()) if isinstance(source, Path) else list(source)
    for k, src in enumerate(files):
        if keep is not None and not keep(k, len(files)):
            continue
        if edit is None:
            shutil.copyfile(src, target / src.name)
            continue
        ds = pydicom.dcmread(str(src))
        edit(ds, k)
        ds.save_as(str(target / src.name))
    return target


def dicom_image_items(root: Path) -> list[BadInput]:
    """Image items made from the real DICOM files in ../shared/data (empty list when it is absent)."""
    if not DATA.is_dir():
        return []
    import pydicom

    folder = root / "images"
    three = [DATA / "dcmqi_ct3slice" / f"0{k}.dcm" for k in (1, 2, 3)]  # beside them: a SEG, NRRDs, a licence
    tseg = DATA / "totalsegmentator" / "example_ct_dicom"
    one = three[0]
    items: list[BadInput] = []

    def series(name: str, source: Path, problem: str, edit=None, keep=None) -> None:
        path = _dicom_series(folder / name, source, edit, keep)
        items.append(BadInput(name, "image", path, problem, case_id=name, needs_data=True))

    # truncated: a single file, and one file of a series
    (folder / "dicom_truncated").mkdir(parents=True, exist_ok=True)
    (folder / "dicom_truncated" / "IM0001").write_bytes(one.read_bytes()[:300_000])
    items.append(BadInput("dicom_truncated", "image", folder / "dicom_truncated", r"corrupt or truncated",
                          case_id="dicom_truncated", needs_data=True))
    series("dicom_truncated_in_series", three, r"corrupt or truncated",
           keep=lambda k, n: k != 1)
    (folder / "dicom_truncated_in_series" / "02.dcm").write_bytes(three[1].read_bytes()[:2_000])

    def short_pixels(ds, k):
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]

    series("dicom_corrupt_pixels", three, r"corrupt", edit=short_pixels)

    def garbled_header(ds, k):
        del ds.ImagePositionPatient

    series("dicom_corrupt_header", three, r"corrupt or truncated|lacks", edit=garbled_header)

    series("dicom_missing_slice", tseg, r"missing slice", keep=lambda k, n: k != n // 2)

    def uneven(ds, k):
        if k == 7:
            pos = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.7]

    series("dicom_inconsistent_spacing", tseg, r"inconsistent slice spacing|missing slice", edit=uneven)

    def no_spacing(ds, k):
        del ds.PixelSpacing

    series("dicom_missing_pixel_spacing", three, r"PixelSpacing|pixel spacing", edit=no_spacing)

    def same_position(ds, k):
        ds.ImagePositionPatient = [-235.2, -226.8, -126.69]

    series("dicom_not_a_volume", three, r"not a volume", edit=same_position)

    mixed = folder / "dicom_mixed_series"
    _dicom_series(mixed, three, keep=lambda k, n: k < 2)
    shutil.copyfile(DATA / "pydicom_data" / "693_UNCI.dcm", mixed / "other.dcm")
    items.append(BadInput("dicom_mixed_series", "image", mixed, r"mixed series", case_id="dicom_mixed_series",
                          needs_data=True))

    def mr(ds, k):
        ds.Modality = "MR"

    series("dicom_mr", three, r"Modality is MR", edit=mr)

    def sagittal(ds, k):
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [float(k), -226.8, 100.0]

    series("dicom_sagittal", three, r"not an axial acquisition", edit=sagittal)

    def tilted(ds, k):
        ds.GantryDetectorTilt = 15.0

    series("dicom_gantry_tilt", three, r"gantry tilt", edit=tilted)

    # rescale slope/intercept whose HU overflow int16 (and float32): must never wrap around silently
    def overflow_slope(ds, k):
        ds.RescaleSlope = 1000
        ds.RescaleIntercept = -1024

    series("dicom_rescale_overflow", three, r"plausible CT range|Hounsfield|rescale", edit=overflow_slope)

    def overflow_intercept(ds, k):
        ds.RescaleIntercept = 40000

    series("dicom_intercept_overflow", three, r"plausible CT range|Hounsfield|rescale", edit=overflow_intercept)

    def huge_slope(ds, k):
        ds.RescaleSlope = "1e+39"

    series("dicom_slope_inf", three, r"plausible CT range|Hounsfield|rescale|NaN or infinite", edit=huge_slope)
    del pydicom
    return items


def _phantom_hu(matrix: int = 128, seed: int = 0) -> tuple[np.ndarray, tuple[float, float]]:
    """A realistic L3 phantom slice (HU, (row, column) spacing) from dataset_conversion."""
    from dataset_conversion.phantom import generate_phantom_slice

    ph = generate_phantom_slice(np.random.default_rng(seed), matrix=matrix)
    return ph.ct_hu, ph.spacing_mm


def plausibility_items(root: Path) -> list[BadInput]:
    """Issue #14: readable images that are not a CT slice of a body in HU, or not at a plausible scale."""
    folder = root / "images"
    items = []
    rng = np.random.default_rng(1)
    air = (-1000 + rng.normal(0, 15, (128, 128))).astype(np.int16)
    items.append(_image_file(folder, "all_air_slice", make_image(air, spacing=(0.8, 0.8)), r"no body"))
    hu, (sy, sx) = _phantom_hu()
    items.append(BadInput("pixels_9mm", "implausible", write(make_image(hu, spacing=(9.0, 9.0)),
                                                               folder / "pixels_9mm.nii.gz"),
                          r"body measures .* cm", case_id="pixels_9mm", expect="review"))
    plain = write(make_image(hu[None], spacing=(sx, sy, 2.5)), folder / "tmp_plain.nii")
    data = bytearray(plain.read_bytes())
    plain.unlink()
    import struct

    srow = list(struct.unpack("<12f", data[280:328]))
    srow[0], srow[5] = srow[0] * 2, srow[5] * 2  # the sform says twice the pixel size
    data[280:328] = struct.pack("<12f", *srow)
    item = _raw_file(folder, "qform_sform_disagree", bytes(data), r"qform and sform disagree", ext=".nii")
    items.append(BadInput(item.name, "implausible", item.path, item.problem, case_id=item.case_id, expect="review"))
    big, _ = _phantom_hu(matrix=512)  # the case: a 512² slice whose PixelSpacing says 5.0 mm
    series = write_series(folder / "dicom_pixel_spacing_5", big[None].astype(np.int16), spacing_yx=(5.0, 5.0))
    items.append(BadInput("dicom_pixel_spacing_5", "implausible", series, r"body measures .* cm",
                          case_id="dicom_pixel_spacing_5", expect="review"))
    return items


def generated_dicom_items(root: Path) -> list[BadInput]:
    """DICOM series that must be refused, generated with pydicom (no ../shared/data needed)."""
    folder = root / "images"
    hu = phantom_array(nz=4, ny=48, nx=48, seed=2)
    items: list[BadInput] = []

    def series(name: str, problem: str, volume=hu, **options) -> Path:
        path = write_series(folder / name, volume, **options)
        items.append(BadInput(name, "image", path, problem, case_id=name))
        return path

    yy, xx = np.mgrid[:48, :48]
    outside = (yy - 24) ** 2 + (xx - 24) ** 2 > 23 ** 2
    hu_fov = hu.copy()
    hu_fov[:, outside] = -1000
    series("gen_dicom_rescale_stripped", r"without RescaleSlope/RescaleIntercept", volume=hu_fov,
           padding=0, padding_mask=outside, edit=strip_rescale)
    series("gen_dicom_mr", r"Modality is MR", modality="MR")
    series("gen_dicom_sagittal", r"not an axial acquisition", orientation=(0, 1, 0, 0, 0, -1))

    def tilt(ds, k):
        ds.GantryDetectorTilt = 15.0

    series("gen_dicom_gantry_tilt", r"gantry tilt", edit=tilt)
    gap = series("gen_dicom_missing_slice", r"missing slice", volume=np.concatenate([hu, hu]))
    (gap / "IM0003").unlink()

    def same_position(ds, k):
        ds.ImagePositionPatient = [-20.0, -20.0, 100.0]

    series("gen_dicom_not_a_volume", r"not a volume", edit=same_position)
    mixed = series("gen_dicom_mixed_series", r"mixed series", volume=hu[:2])
    write_series(mixed, hu[:2], names=lambda k: f"OTHER{k}", origin=(-20.0, -20.0, 300.0))
    truncated = series("gen_dicom_truncated", r"corrupt or truncated", volume=hu[:1])
    data = (truncated / "IM0000").read_bytes()
    (truncated / "IM0000").write_bytes(data[: len(data) // 2])
    return items


def entry_items(root: Path) -> list[BadInput]:
    """Entries of a batch folder that cannot be scans; each must still get a `failed` row."""
    import os

    folder = root / "entries"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    dangling = folder / "dangling_link.nii.gz"
    os.symlink(folder / "gone.nii.gz", dangling)
    items.append(BadInput("dangling_link", "entry", dangling, r"broken symbolic link", case_id="dangling_link"))
    loop = folder / "loop_link.nii.gz"
    os.symlink(loop, loop)
    items.append(BadInput("loop_link", "entry", loop, r"symbolic link loop", case_id="loop_link"))
    hu = phantom_array(nz=1, ny=48, nx=56)[0]
    header = write(make_image(hu.astype(np.int16), spacing=(0.8, 0.8)), folder / "tmp.hdr")
    header.rename(folder / "analyze_pair.hdr")
    if (folder / "tmp.img").exists():
        (folder / "tmp.img").rename(folder / "analyze_pair.img")
    items.append(BadInput("analyze_pair", "entry", folder / "analyze_pair.hdr", r"\.hdr/\.img", case_id="analyze_pair"))
    empty = write(make_image(hu, spacing=(0.8, 0.8)), folder / "_0000.nii.gz")
    items.append(BadInput("empty_case_id", "entry", empty, r"empty case id", case_id="_0000.nii.gz"))
    return items


def good_odd_items(root: Path) -> list[BadInput]:
    """Odd but valid inputs `sarco predict` must measure (expect ok)."""
    folder = root / "good"
    hu, (sy, sx) = _phantom_hu(seed=3)
    items = []
    long_name = "p" * 240
    items.append(BadInput("long_name", "good", write(make_image(hu, spacing=(sx, sy)), folder / f"{long_name}.nii.gz"),
                          "", case_id=long_name, expect="ok"))
    items.append(BadInput("dollar_name", "good", write(make_image(hu, spacing=(sx, sy)), folder / "a$b$c.nii.gz"),
                          "", case_id="a$b$c", expect="ok"))
    one = write_series(folder / "tmp_series", hu[None].astype(np.int16), spacing_yx=(sy, sx))
    (one / "IM0000").rename(folder / "scan_without_extension")
    one.rmdir()
    items.append(BadInput("extensionless_dicom", "good", folder / "scan_without_extension", "",
                          case_id="scan_without_extension", expect="ok"))
    return items


def image_items(root: Path) -> list[BadInput]:
    return synthetic_image_items(root) + generated_dicom_items(root) + dicom_image_items(root)


# ------------------------------------------------------------------------------ mask items


def mask_items(root: Path) -> list[BadInput]:
    """Bad masks, each beside its good image (images/<name>.nii.gz, masks/<name>.nii.gz)."""
    items = []

    def add(name: str, mask: sitk.Image | bytes, problem: str, image: sitk.Image | None = None, seed: int = 0):
        good_image, _ = good_slice(seed)
        image_path = write(image or good_image, root / "images" / f"{name}.nii.gz")
        mask_path = root / "masks" / f"{name}.nii.gz"
        if isinstance(mask, bytes):
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            mask_path.write_bytes(mask)
        else:
            write(mask, mask_path)
        items.append(BadInput(name, "mask", mask_path, problem, case_id=name, image=image_path))

    _, mask = good_slice()
    array = sitk.GetArrayFromImage(mask)
    undeclared = array.copy()
    undeclared[:3, :3] = 7
    add("mask_undeclared_label", _like(undeclared, mask), r"label value\(s\) \[7\] not declared|\b7\b")
    scaled = (array * 255).astype(np.uint8)
    add("mask_255_for_muscle", _like(scaled, mask), r"255")
    add("mask_empty", _like(np.zeros_like(array), mask), r"empty")
    smaller = make_image(array[:40, :50], spacing=(0.8, 0.8), origin=(-20.0, -20.0))
    add("mask_other_size", smaller, r"\bsize\b.*(does not match|not on the same grid)|not on the same grid.*\bsize")
    other_spacing = make_image(array, spacing=(0.6, 0.6), origin=(-20.0, -20.0))
    add("mask_other_spacing", other_spacing, r"spacing .* does not match|not on the same grid .*spacing")
    shifted = make_image(array, spacing=(0.8, 0.8), origin=(-5.0, -20.0))
    add("mask_other_origin", shifted, r"origin .* does not match|not on the same grid .*origin")
    negative = array.astype(np.int16)
    negative[0, 0] = -1
    add("mask_negative", _like(negative, mask), r"negative")
    fractional = array.astype(np.float32) * 0.5
    add("mask_fractional", _like(fractional, mask), r"non-integer")
    add("mask_text_file", b"this is not a mask\n", r"not a NIfTI file")
    return items


def _like(array: np.ndarray, geometry: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(geometry)
    return image


# -------------------------------------------------------------------------- clinical items

#: name -> (clinical.csv text for case ids A and B, regex of the problem). Case A is fine in every file.
CLINICAL_TEXTS: dict[str, tuple[str, str]] = {
    "clinical_missing_column": ("case_id,sex,weight_kg\nA,M,70\nB,F,60\n", r"missing column\(s\) height_m"),
    "clinical_unknown_sex": (CLINICAL_HEADER + "A,M,1.80,80\nB,X,1.60,60\n", r"sex 'X' not understood"),
    "clinical_numeric_sex": (CLINICAL_HEADER + "A,M,1.80,80\nB,2,1.60,60\n", r"sex '2' not understood"),
    "clinical_height_cm": (CLINICAL_HEADER + "A,M,1.80,80\nB,F,165,60\n", r"centimetres"),
    "clinical_duplicate_id": (CLINICAL_HEADER + "A,M,1.80,80\nB,F,1.60,60\nB,F,1.61,61\n", r"duplicate case_id"),
    "clinical_not_a_number": (CLINICAL_HEADER + "A,M,1.80,80\nB,F,tall,60\n", r"not a number"),
    "clinical_negative_height": (CLINICAL_HEADER + "A,M,1.80,80\nB,F,-1.6,60\n", r"must be positive"),
    "clinical_empty": ("", r"empty"),
}


def clinical_items(root: Path) -> list[BadInput]:
    items = []
    for name, (text, problem) in CLINICAL_TEXTS.items():
        path = write_clinical(root / name / "clinical.csv", [], text)
        items.append(BadInput(name, "clinical", path, problem))
    latin = root / "clinical_latin1" / "clinical.csv"
    latin.parent.mkdir(parents=True, exist_ok=True)
    latin.write_bytes((CLINICAL_HEADER + "A,M,1.80,80\nB,F,1.60,60\nM\xfcller,F,1.60,60\n").encode("latin-1"))
    items.append(BadInput("clinical_latin1", "clinical", latin, r"not UTF-8"))
    return items


def corpus(root: Path) -> list[BadInput]:
    """Every item, written below `root` (image items under root/images, masks under root/masks...)."""
    root = Path(root)
    return (image_items(root / "img") + plausibility_items(root / "plaus") + mask_items(root / "mask")
            + clinical_items(root / "clinical") + entry_items(root / "entry") + good_odd_items(root / "odd"))


# ------------------------------------------------------------------------ drop-in wrapping


def dropin(item: BadInput, root: Path) -> Path:
    """A drop-in folder (images/, masks/, clinical.csv) whose only problem is `item`."""
    drop = Path(root) / f"drop_{item.name}"
    if drop.exists():
        shutil.rmtree(drop)
    (drop / "images").mkdir(parents=True)
    (drop / "masks").mkdir()
    if item.kind == "clinical":
        image, mask = good_slice()
        for case_id in ("A", "B"):
            write(image, drop / "images" / f"{case_id}.nii.gz")
            write(mask, drop / "masks" / f"{case_id}.nii.gz")
        shutil.copyfile(item.path, drop / "clinical.csv")
        return drop
    if item.kind in ("image", "implausible"):
        target = drop / "images" / item.path.name
        if item.path.is_dir():
            shutil.copytree(item.path, target)
        else:
            shutil.copyfile(item.path, target)
        _, mask = good_slice()
        write(mask, drop / "masks" / f"{item.case_id}.nii.gz")
    else:
        shutil.copyfile(item.image, drop / "images" / item.image.name)
        shutil.copyfile(item.path, drop / "masks" / item.path.name)
    write_clinical(drop / "clinical.csv", [item.case_id])
    return drop
