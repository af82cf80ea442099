"""DICOM series assembly: pydicom reads the headers (modality, tilt, orientation, positions: facts
SimpleITK does not give per file) and GDCM (through SimpleITK) decodes the pixels, which covers JPEG,
JPEG-LS, JPEG 2000 and RLE without extra packages."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import CT_PLAUSIBLE_RANGE_HU
from sarco_nn.errors import InputError
from sarco_nn.io.arrays import _hu_array
from sarco_nn.io.paths import _sitk_name

#: Largest gantry tilt (degrees, tag or sheared slice stack) accepted as "no tilt".
GANTRY_TILT_TOLERANCE_DEG: float = 0.5

#: Value written into DICOM padding voxels (outside the scan field of view): air.
PADDING_FILL_HU: int = -1024

#: DICOM objects that may sit beside a series without being part of it (segmentations, reports...).
_NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"})

_MIN_STEP_MM = 0.01  # two positions closer than this are "the same position"


def looks_like_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' at byte 128, whatever their name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass
class _DicomFile:
    path: Path
    header: object  # pydicom Dataset without pixel data


def _read_dicom_folder(folder: Path) -> sitk.Image:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    dicom_files = [p for p in files if looks_like_dicom(p)]
    if not dicom_files:
        subfolders = [p.name for p in folder.iterdir() if p.is_dir()]
        hint = f" (it has sub-folders {subfolders[:3]}: point at the series folder itself)" if subfolders else ""
        raise InputError(f"folder holds no DICOM files{hint}", folder,
                         "give a folder with one DICOM series, or a NIfTI/MHA/NRRD file")
    return _read_dicom_files(folder, dicom_files)


def _read_header(path: Path, where: Path):
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # untrusted bytes: pydicom raises many kinds; every one means "corrupt"
        raise InputError(f"corrupt or truncated DICOM file {path.name} ({type(exc).__name__})", where,
                         "re-export the series from PACS") from None


def _read_dicom_files(where: Path, paths: list[Path]) -> sitk.Image:
    """Assemble DICOM files into one volume from their positions (UIDs may be empty)."""
    try:
        images: list[_DicomFile] = []
        for path in paths:
            header = _read_header(path, where)
            modality = str(header.get("Modality", "") or "").upper()
            if modality in _NON_IMAGE_MODALITIES and len(paths) > 1:
                continue  # a segmentation or report stored beside the series
            images.append(_DicomFile(path, header))
        axial = [i for i in images if not is_localizer(i.header)]
        images = axial or images  # a scout stored in the series is no slice of it (one alone: refused below)
        if not images:
            raise InputError("folder holds no DICOM images (only segmentations or reports)", where,
                             "give the folder of the CT series")
        for item in images:
            _check_dicom_header(item, where)
        _check_single_series(images, where)
        ordered, spacing_z = _sort_and_check_stack(images, where)
    except InputError:
        raise
    except Exception as exc:  # pydicom parses element values lazily: a damaged value fails on first use
        detail = " ".join(str(exc).split())[:80]
        raise InputError(f"corrupt DICOM header values ({type(exc).__name__}: {detail})", where,
                         "re-export the series from PACS") from None
    return _assemble(ordered, spacing_z, where)


def is_localizer(header) -> bool:
    """A scout / topogram (ImageType value 3 LOCALIZER): a projection, not an axial slice of the series."""
    image_type = header.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return len(values) > 2 and str(values[2]).strip().upper() == "LOCALIZER"


def _check_dicom_header(item: _DicomFile, where: Path) -> None:
    header, name = item.header, item.path.name
    modality = str(header.get("Modality", "") or "").upper()
    if modality and modality != "CT":
        raise InputError(f"Modality is {modality}, not CT ({name})", where,
                         "sarco measures muscle on CT only: give the CT series")
    if str(header.get("PhotometricInterpretation", "") or "").strip().upper() == "MONOCHROME1":
        # the decoder inverts MONOCHROME1 for display, so the "HU" would be 65535 - value: no CT is stored so
        raise InputError(f"PhotometricInterpretation MONOCHROME1 (inverted grey scale) in {name}: not a CT "
                         "stored in Hounsfield units", where,
                         "re-export the original CT series (MONOCHROME2) from PACS, not a display copy")
    slope = header.get("RescaleSlope")
    if slope not in (None, "") and not (math.isfinite(float(slope)) and float(slope) != 0):
        # GDCM reads slope 0 as 1 and gives the stored values as HU; DICOM has no "no scaling" meaning for 0
        raise InputError(f"RescaleSlope {float(slope):g} in {name} is invalid (HU = stored value x slope + intercept: a "
                         "slope of 0 makes every voxel the intercept)", where,
                         "re-export the series from PACS with its original RescaleSlope (1 for most CT)")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"multi-frame (enhanced) DICOM with {frames} frames ({name}) is not supported", where,
                         "export the series as classic single-frame CT DICOM or as NIfTI")
    missing = [tag for tag in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")
               if header.get(tag) in (None, "")]
    if missing:
        raise InputError(f"corrupt or truncated DICOM file {name} (header lacks {', '.join(missing)})", where,
                         "re-export the series from PACS")
    spacing = [float(v) for v in header.PixelSpacing]
    if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"missing or zero pixel spacing in {name}", where, "re-export the series with PixelSpacing")
    tilt = header.get("GantryDetectorTilt")
    if tilt not in (None, "") and abs(float(tilt)) > GANTRY_TILT_TOLERANCE_DEG:
        raise InputError(f"acquired with gantry tilt {float(tilt):.1f} degrees", where,
                         "reconstruct the series without tilt (axial, untilted) and try again")
    if len(header.ImageOrientationPatient) != 6:
        raise InputError(f"corrupt DICOM file {name} (ImageOrientationPatient needs 6 values)", where,
                         "re-export the series from PACS")
    normal = _orientation(header)[2]
    if not np.all(np.isfinite(normal)) or np.linalg.norm(normal) < 0.5:
        raise InputError(f"corrupt DICOM file {name} (ImageOrientationPatient is not two directions)", where,
                         "re-export the series from PACS")
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[2])) / float(np.linalg.norm(normal)))))
    if angle > 45.0:  # smaller angles: gantry tilt or oblique, told apart from the stack below
        plane = "sagittal" if abs(normal[0]) > abs(normal[1]) else "coronal"
        raise InputError(f"not an axial acquisition: the images are {plane} ({angle:.0f} degrees from axial)", where,
                         "give the axial CT series (sarco measures muscle on axial slices)")


def _orientation(header) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.array([float(v) for v in header.ImageOrientationPatient], dtype=float)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    return row, col, np.cross(row, col)


def _check_single_series(images: list[_DicomFile], where: Path) -> None:
    uids = {str(i.header.get("SeriesInstanceUID", "") or "") for i in images} - {""}
    if len(uids) > 1:
        raise InputError(f"mixed series: {len(uids)} different DICOM series in one folder", where,
                         "put each series in its own folder and give the CT series folder")

    def geometry_key(item: _DicomFile) -> tuple:
        h = item.header
        return (int(h.Rows), int(h.Columns), tuple(round(float(v), 4) for v in h.PixelSpacing),
                tuple(round(float(v), 3) for v in h.ImageOrientationPatient))

    if not uids:  # no UID tells series apart: their other identifiers and the instance numbering must
        _check_one_series_without_uid(images, where)
    keys = Counter(geometry_key(i) for i in images)
    if len(keys) > 1:
        raise InputError(
            f"mixed series: the {len(images)} images have {len(keys)} different sizes/pixel spacings/orientations",
            where, "put each series in its own folder and give the CT series folder")


def _check_one_series_without_uid(images: list[_DicomFile], where: Path) -> None:
    """Two reconstructions of one scan stored without SeriesInstanceUID (an anonymiser's doing), at
    interleaved positions, would stack into one volume of alternating kernels or phases; refuse them.

    Told apart by SeriesNumber, SeriesDescription or ConvolutionKernel differing, or by one InstanceNumber
    repeated (each series numbers its images from 1)."""
    fix = "put each series in its own folder and give the CT series folder"
    for tag in ("SeriesNumber", "SeriesDescription", "ConvolutionKernel"):
        values = {str(i.header.get(tag, "") or "") for i in images} - {""}
        if len(values) > 1:
            shown = ", ".join(sorted(values)[:3])
            raise InputError(f"mixed series: the images have {len(values)} different {tag} values ({shown})",
                             where, fix)
    numbers = [str(i.header.get("InstanceNumber", "") or "") for i in images]
    if all(numbers):
        repeated = [n for n, count in Counter(numbers).items() if count > 1]
        if repeated and len(set(numbers)) > 1:
            raise InputError(f"mixed series: InstanceNumber {repeated[0]} occurs {numbers.count(repeated[0])} "
                             "times (series without SeriesInstanceUID stored together?)", where, fix)


def _sort_and_check_stack(images: list[_DicomFile], where: Path) -> tuple[list[_DicomFile], float]:
    """Sort by position along the slice normal; refuse duplicates, gaps, uneven steps and shear."""
    row, col, normal = _orientation(images[0].header)
    positions = np.array([[float(v) for v in i.header.ImagePositionPatient] for i in images])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    images = [images[k] for k in order]
    positions, along = positions[order], along[order]
    if len(images) == 1:
        thickness = images[0].header.get("SliceThickness")
        try:
            spacing_z = float(thickness)
        except (TypeError, ValueError):
            spacing_z = 1.0
        return images, spacing_z if math.isfinite(spacing_z) and spacing_z > 0 else 1.0

    problems: list[str] = []
    steps = np.diff(along)
    n_same = int(np.sum(steps < _MIN_STEP_MM))
    if n_same:
        raise InputError(
            f"not a volume: several images share one slice position ({len(images)} images at "
            f"{len(np.unique(np.round(along, 2)))} distinct position(s))",
            where, "give a folder holding one series of parallel slices (one image per position)")
    span = positions[-1] - positions[0]
    tilt = math.degrees(math.acos(min(1.0, abs(float(span @ normal)) / float(np.linalg.norm(span)))))
    if tilt > GANTRY_TILT_TOLERANCE_DEG:
        problems.append(f"gantry tilt: the slice stack is sheared by {tilt:.1f} degrees")
    step = round(float(np.median(steps)), 6)  # positions carry ~6 decimals; drop float noise
    tolerance = max(_MIN_STEP_MM, 0.01 * step)
    uneven = np.abs(steps - step) > tolerance
    if np.any(uneven):
        gaps = [(k, s) for k, s in enumerate(steps) if abs(s - step) > tolerance]
        missing = [round(s / step) - 1 for _, s in gaps if s > step and abs(s / step - round(s / step)) < 0.05]
        if len(missing) == len(gaps):
            where_z = ", ".join(f"after z={positions[k][2]:.1f} mm" for k, _ in gaps[:3])
            problems.append(f"{sum(missing)} missing slice(s) ({where_z}; regular step {step:.2f} mm)")
        else:
            problems.append(f"inconsistent slice spacing: steps from {steps.min():.2f} to {steps.max():.2f} mm")
    if problems:
        raise InputError("; ".join(problems), where,
                         "export the complete, untilted axial series (all slices, one constant spacing)")
    return images, step


def _assemble(images: list[_DicomFile], spacing_z: float, where: Path) -> sitk.Image:
    slices = [_read_dicom_pixels(item, where) for item in images]
    volume = np.stack([array for array, _ in slices])
    stripped = [item.path.name for item in images if rescale_missing(item.header)]
    if stripped and len(stripped) < len(images):
        # GDCM reads a file without rescale tags as HU = stored value: those slices would sit 1024 HU
        # (the others' intercept) above the rest, and an L3 slice among them measured at +1000 HU
        raise InputError(
            f"{len(stripped)} of the {len(images)} DICOM images lack RescaleSlope/RescaleIntercept while the others "
            f"have them ({', '.join(stripped[:3])}{', ...' if len(stripped) > 3 else ''}): their values are not on "
            "the same scale as the rest of the series", where,
            "re-export the series from PACS with the rescale tags in every image (or convert it to HU NIfTI with "
            "dcm2niix)")
    if stripped:
        _require_hu_without_rescale(volume, np.stack([padded for _, padded in slices]), where)
    header = images[0].header
    row, col, normal = _orientation(header)
    pixel_spacing = [float(v) for v in header.PixelSpacing]  # (between rows, between columns)
    image = sitk.GetImageFromArray(_hu_array(volume))
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], spacing_z))
    image.SetOrigin(tuple(float(v) for v in images[0].header.ImagePositionPatient))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return image


def _native_pixel_data_too_short(item: _DicomFile) -> bool:
    """Uncompressed pixel data shorter than Rows x Columns (GDCM would pad it with memory garbage)."""
    import pydicom

    try:
        if item.header.file_meta.TransferSyntaxUID.is_compressed:
            return False
        expected = (int(item.header.Rows) * int(item.header.Columns) * int(item.header.get("SamplesPerPixel", 1) or 1)
                    * int(item.header.get("BitsAllocated", 16) or 16) // 8)
        pixels = pydicom.dcmread(str(item.path), specific_tags=["PixelData"]).get("PixelData")
    except Exception:  # unreadable pixel data element: corrupt
        return True
    return pixels is None or len(pixels) < expected


def rescale_missing(header) -> bool:
    """A CT image without RescaleIntercept (Type 1 in the CT Image module): its stored values are in
    HU only if the writer stored HU directly, which the values must then show (see below)."""
    return header.get("RescaleIntercept") in (None, "")


#: Without rescale tags the stored values are taken as HU only if air (below this) is among the
#: non-padding voxels: raw detector values (HU + 1024, air near 0) never are. Padding is left out
#: of this test, since it is replaced by -1024 and would otherwise pass for air.
_AIR_HU = -900.0


def _require_hu_without_rescale(volume: np.ndarray, padded: np.ndarray, where: Path) -> None:
    values = volume[~padded]
    lowest = float(values.min()) if values.size else float("nan")
    if not values.size or lowest > _AIR_HU:
        raise InputError(
            f"DICOM series without RescaleSlope/RescaleIntercept whose stored values (lowest {lowest:.0f}) are not "
            "Hounsfield units (no air near -1000 HU)", where,
            "re-export the series from PACS with its RescaleSlope and RescaleIntercept tags (or convert it to HU "
            "NIfTI with dcm2niix)")


def _read_dicom_pixels(item: _DicomFile, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode one slice in HU (GDCM applies slope/intercept); padding voxels become air.

    Returns the slice and a boolean mask of its padding voxels."""
    name = _sitk_name(item.path, where)
    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(name)
        array = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError:
        raise InputError(f"corrupt or truncated DICOM file {item.path.name} (pixel data cannot be decoded)", where,
                         "re-export the series from PACS") from None
    header = item.header
    if array.ndim == 3:
        array = array[0]
    if array.shape != (int(header.Rows), int(header.Columns)) or _native_pixel_data_too_short(item):
        raise InputError(f"corrupt DICOM file {item.path.name} (pixel data does not match Rows x Columns)", where,
                         "re-export the series from PACS")
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else True
    if not np.all(finite) or np.abs(array).max(initial=0) > np.finfo(np.float32).max:
        raise InputError(f"RescaleSlope/RescaleIntercept of {item.path.name} give infinite HU values", where,
                         "re-export the series with a valid rescale slope and intercept")
    array = array.astype(np.float32)
    padded = np.zeros(array.shape, dtype=bool)
    padding = header.get("PixelPaddingValue")
    if padding is not None and not isinstance(padding, (bytes, bytearray)):
        slope = float(header.get("RescaleSlope", 1) or 1)
        intercept = float(header.get("RescaleIntercept", 0) or 0)
        limit = header.get("PixelPaddingRangeLimit")
        bounds = sorted([padding, padding if limit is None else limit])
        lo, hi = (b * slope + intercept for b in bounds)
        lo, hi = min(lo, hi), max(lo, hi)
        padded = (array >= lo) & (array <= hi)
        if hi < CT_PLAUSIBLE_RANGE_HU[0]:  # only ever replace values that cannot be tissue
            array[padded] = PADDING_FILL_HU
    return array, padded
