"""The one image reader of sarco: files or DICOM series in, a checked CT volume in HU out.

`dataset_conversion` and `sarco predict` both go through this module, so a case that converts for
training reads exactly the same way at prediction time. It refuses, with one line naming the path,
every input that would silently give a wrong muscle area: non-CT data, gantry tilt, missing or
duplicated slices, mixed series, non-axial slices, NaN voxels, missing spacing.

Conventions: images are brought to `constants.CANONICAL_ORIENTATION` (LPS, identity direction), so
the axial slice `k` is `array[k]` and slice 0 is the most inferior one. An extracted L3 slice is a
3-D image with one slice whose slice-axis spacing is `constants.SLICE_AXIS_SPACING_MM` (nnU-Net then
plans a pure 2d configuration); its in-plane spacing and origin are those of the source, unchanged.

DICOM: pydicom reads the headers (modality, tilt, orientation, positions: facts SimpleITK does not
give per file) and GDCM (through SimpleITK) decodes the pixels, which covers JPEG, JPEG-LS, JPEG 2000
and RLE without extra packages. Images are rebuilt from arrays, so no DICOM header field (patient
name, id, birth date...) travels with a returned image.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import CANONICAL_ORIENTATION, CT_PLAUSIBLE_RANGE_HU, IMAGE_SUFFIXES, SLICE_AXIS_SPACING_MM
from sarco_nn.errors import InputError

#: Largest angle (degrees) between an image's slice normal and the head-feet axis still treated as
#: axial. Beyond it the cross-section is oblique and the muscle area is inflated by 1/cos(angle).
AXIAL_TOLERANCE_DEG: float = 5.0

#: Fewest pixels an axial slice may have along each in-plane axis; fewer means the file is a
#: handful of sagittal/coronal slices that reorientation would turn into a sliver.
MIN_AXIAL_PIXELS: int = 16

#: Largest gantry tilt (degrees, tag or sheared slice stack) accepted as "no tilt".
GANTRY_TILT_TOLERANCE_DEG: float = 0.5

#: Value written into DICOM padding voxels (outside the scan field of view): air.
PADDING_FILL_HU: int = -1024

#: An abdominal CT slice always holds air or fat; with nothing below this it is not CT in HU
#: (MR, an image scaled to [0, 1] or an 8-bit screenshot).
_AIR_OR_FAT_HU: float = -100.0

#: DICOM objects that may sit beside a series without being part of it (segmentations, reports...).
_NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"})

_MIN_STEP_MM = 0.01  # two positions closer than this are "the same position"


@dataclass(frozen=True)
class SliceSource:
    """Where an extracted slice came from, enough to put a predicted mask back on the user's grid."""

    path: Path
    slice_index: int  # index in the canonical (LPS) image: 0 = most inferior slice
    n_slices: int
    stored_index: int  # the same slice counted along the file's own slice axis (what a viewer shows)
    z_mm: float  # world z (LPS, mm) of the slice
    original: sitk.Image  # the image as read, in its stored orientation


# --------------------------------------------------------------------------------------- reading


def read_image(path: Path | str) -> sitk.Image:
    """Read a NIfTI/MHA/NRRD file, one DICOM file or a folder holding one DICOM series, in HU.

    Returns a 2-D or 3-D scalar image (int16 when the HU values are integers that fit, else
    float32) without any header metadata attached. Raises InputError for anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path, "check the path")
    if path.is_dir():
        image = _read_dicom_folder(path)
    elif _image_suffix(path):
        image = _read_sitk_file(path)
    elif _looks_like_dicom(path):
        image = _read_dicom_files(path, [path])
    else:
        raise InputError(
            "unknown file type",
            path,
            f"give a NIfTI/MHA/NRRD file ({', '.join(IMAGE_SUFFIXES)}), a DICOM file or a folder with one DICOM series",
        )
    _check_voxels_and_spacing(image, path)
    return image


def read_label_image(path: Path | str) -> sitk.Image:
    """Read a label mask (any SimpleITK file format) as a uint16 image of non-negative integers."""
    path = Path(path)
    if not path.is_file():
        raise InputError("mask must be one image file", path, "give the mask as a NIfTI/MHA/NRRD file")
    problem = _header_spacing_problem(path)
    if problem:
        raise InputError(problem, path, "re-export the mask with its pixel spacing (mm) in the header")
    problem = _nifti_payload_problem(path)
    if problem:
        raise InputError(problem.replace("image holds", "mask holds"), path, "re-export the mask")
    try:
        image = _sitk_read(path)
    except RuntimeError:
        raise InputError("cannot read this mask file (unknown format or corrupt)", path,
                         "save the mask as .nii.gz, .mha or .nrrd") from None
    _check_dimensions(image, path)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
        raise InputError("mask holds non-integer, negative or NaN values", path,
                         "save the mask with integer labels (0 = background, 1 = muscle)")
    if array.max(initial=0) > np.iinfo(np.uint16).max:
        raise InputError("mask label values are too large", path, "use small integer labels (1 = muscle)")
    _check_voxels_and_spacing(image, path)
    return _fresh(array.astype(np.uint16), image)


def _image_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def _header_spacing_problem(path: Path) -> str | None:
    """SimpleITK silently turns a zero or absent spacing into 1 mm (NIfTI pixdim 0, NRRD without
    'spacings', MetaImage without ElementSpacing), which would make every pixel 1 mm². Read the
    header ourselves to catch that."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import gzip

            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as handle:
                head = handle.read(540)
            for endian in "<>":
                size = struct.unpack(endian + "i", head[:4])[0]
                if size == 348:
                    ndim = struct.unpack(endian + "h", head[40:42])[0]
                    pixdim = struct.unpack(endian + "8f", head[76:108])
                    break
                if size == 540:
                    ndim = struct.unpack(endian + "q", head[16:24])[0]
                    pixdim = struct.unpack(endian + "8d", head[104:168])
                    break
            else:
                return None  # let SimpleITK judge the file
            zooms = pixdim[1:1 + min(max(ndim, 1), 3)]
            if not all(math.isfinite(z) and z > 0 for z in zooms):
                return f"missing or zero voxel spacing in the NIfTI header (pixdim {tuple(zooms)})"
        elif name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
            with open(path, "rb") as handle:
                head = handle.read(8192).split(b"\n\n", 1)[0].decode("latin-1").lower()
            first = head.split("\n", 1)[0]
            if name.endswith((".nrrd", ".nhdr")) and not first.startswith("nrrd"):
                return "not a NRRD file: the content does not match the name (another format renamed?)"
            if name.endswith((".mha", ".mhd")) and "=" not in first:
                return "not a MetaImage file: the content does not match the name (another format renamed?)"
            keys = {line.split(":", 1)[0].split("=", 1)[0].strip() for line in head.splitlines()}
            if name.endswith((".nrrd", ".nhdr")) and not keys & {"space directions", "spacings"}:
                return "no voxel spacing in the NRRD header ('space directions' or 'spacings')"
            if name.endswith((".mha", ".mhd")) and not keys & {"elementspacing", "elementsize"}:
                return "no ElementSpacing in the MetaImage header"
    except (OSError, EOFError, ValueError, struct.error):
        return None  # unreadable: SimpleITK's reader gives the error
    return None


#: The ITK reader each file ending must be read with: a PNG or a text file renamed .nii.gz is
#: refused instead of being read by whichever reader recognises its bytes.
_IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO",
             ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO"}

#: NIfTI datatype codes of floating-point voxels (float32, float64, float128).
_NIFTI_FLOAT_TYPES = {16: "<f4", 64: "<f8"}


def printable_path(path: Path | str) -> str:
    """The path as text that can always be printed and written to UTF-8 files: bytes of a name
    that is not UTF-8 (Linux allows any) are shown as \\xNN escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _sitk_name(path: Path, where: Path | None = None) -> str:
    """The file name handed to SimpleITK/GDCM. A name that is not valid UTF-8 aborts the whole
    Python process inside SimpleITK (no exception), so it is refused here first."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"file name {printable_path(Path(name).name)} is not valid UTF-8", printable_path(where or path),
                         "rename the file (letters, digits, '_' and '-'), then run again") from None
    return name


def _sitk_read(path: Path) -> sitk.Image:
    """sitk.ReadImage with the reader fixed by the file ending (RuntimeError when it does not fit)."""
    reader = sitk.ImageFileReader()
    io = _IMAGE_IO.get(_image_suffix(path) or "")
    if io:
        reader.SetImageIO(io)
    reader.SetFileName(_sitk_name(path))
    return reader.Execute()


def _nifti_payload_problem(path: Path) -> str | None:
    """What ITK's NIfTI reader would hide: a truncated voxel block (it fills the rest with zeros)
    and NaN/Inf float voxels (it turns them into 0, which is water/muscle HU)."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    opener = gzip.open if name.endswith(".gz") else open
    try:
        if name.endswith(".gz"):
            with open(path, "rb") as raw:
                if raw.read(2) != b"\x1f\x8b":
                    return "not a NIfTI file: the name ends in .nii.gz but the content is not gzip-compressed " \
                           "(another format renamed?)"
        with opener(path, "rb") as handle:
            head = handle.read(540)
            for endian in "<>":
                if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
                    dims = struct.unpack(endian + "8h", head[40:56])
                    datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
                    offset = int(struct.unpack(endian + "f", head[108:112])[0])
                    slope_inter = struct.unpack(endian + "2f", head[112:120])
                    header_size = 348
                    break
                if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
                    datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
                    dims = struct.unpack(endian + "8q", head[16:80])
                    offset = struct.unpack(endian + "q", head[168:176])[0]
                    slope_inter = struct.unpack(endian + "2d", head[176:192])
                    header_size = 540
                    break
            else:
                return None  # not NIfTI at all: the reader refuses it
            ndim = dims[0]
            if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0 or offset < header_size:
                return "corrupt NIfTI header (dimensions, datatype or voxel offset)"
            if not all(math.isfinite(v) for v in slope_inter):
                return f"NIfTI scaling (scl_slope, scl_inter) {slope_inter} is not finite"
            expected = int(np.prod(dims[1:ndim + 1], dtype=np.int64)) * bitpix // 8
            dtype = np.dtype(_NIFTI_FLOAT_TYPES[datatype]).newbyteorder(endian) if datatype in _NIFTI_FLOAT_TYPES else None
            handle.seek(offset)
            got, pending, finite = 0, b"", True
            while got < expected:
                chunk = handle.read(min(1 << 22, expected - got))
                if not chunk:
                    break
                got += len(chunk)
                if dtype is not None and finite:
                    pending += chunk
                    usable = len(pending) - len(pending) % dtype.itemsize
                    finite = bool(np.all(np.isfinite(np.frombuffer(pending[:usable], dtype=dtype))))
                    pending = pending[usable:]
    except (OSError, EOFError, zlib.error, struct.error, ValueError, OverflowError):
        return "corrupt or truncated NIfTI file (the compressed data ends early or is damaged)"
    if got < expected:
        return f"truncated NIfTI file: {got} of {expected} voxel bytes present"
    if not finite:
        return "image holds NaN or infinite voxel values"
    return None


def _read_sitk_file(path: Path) -> sitk.Image:
    problem = _header_spacing_problem(path)
    if problem:
        raise InputError(problem, path, "re-export the image with its pixel spacing (mm) in the header")
    problem = _nifti_payload_problem(path)
    if problem:
        raise InputError(problem, path, "re-export the image from the original CT")
    try:
        image = _sitk_read(path)
    except RuntimeError:
        raise InputError(f"cannot read this image file (corrupt, truncated, or not a {_image_suffix(path)} image)",
                         path, "re-export the image in the format its name says (.nii.gz, .mha or .nrrd)") from None
    _check_dimensions(image, path)
    array = sitk.GetArrayViewFromImage(image)
    return _fresh(_hu_array(array), image)


def _check_dimensions(image: sitk.Image, path: Path) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("image has several components per voxel (RGB or vector), not a CT", path,
                         "give the grey-value CT in HU")
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(f"4-D image ({size[3]} volumes)", path, "give a single 3-D CT volume or one 2-D slice")
    elif image.GetDimension() not in (2, 3):
        raise InputError(f"{image.GetDimension()}-D image", path, "give a 3-D CT volume or one 2-D slice")


def _fresh(array: np.ndarray, geometry: sitk.Image) -> sitk.Image:
    """A new image with `geometry`'s grid and no metadata dictionary (no header fields leak)."""
    if geometry.GetDimension() == 4:  # 4-D with one volume: drop the time axis
        array = array[0]
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(geometry.GetSpacing()[:3])
        image.SetOrigin(geometry.GetOrigin()[:3])
        d = np.array(geometry.GetDirection()).reshape(4, 4)[:3, :3]
        image.SetDirection(tuple(d.ravel()))
        return image
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(geometry)
    return image


def _hu_array(array: np.ndarray) -> np.ndarray:
    """int16 when the values are integers that fit (smaller files, exact), else float32."""
    if array.dtype == np.int16:
        return np.array(array)
    if array.size == 0:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer) or (
        np.all(np.isfinite(array)) and np.all(array == np.round(array))
    ):
        lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
        if array.min() >= lo and array.max() <= hi:
            return array.astype(np.int16)
    return array.astype(np.float32)


def _check_voxels_and_spacing(image: sitk.Image, path: Path) -> None:
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError("image holds NaN or infinite voxel values", path, "re-export the image from the original CT")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"missing or zero voxel spacing {tuple(spacing)}", path,
                         "re-export the image with its pixel spacing (mm) in the header")


# ------------------------------------------------------------------------------------ DICOM


def _looks_like_dicom(path: Path) -> bool:
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
    dicom_files = [p for p in files if _looks_like_dicom(p)]
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


def _check_dicom_header(item: _DicomFile, where: Path) -> None:
    header, name = item.header, item.path.name
    modality = str(header.get("Modality", "") or "").upper()
    if modality and modality != "CT":
        raise InputError(f"Modality is {modality}, not CT ({name})", where,
                         "sarco measures muscle on CT only: give the CT series")
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

    keys = Counter(geometry_key(i) for i in images)
    if len(keys) > 1:
        raise InputError(
            f"mixed series: the {len(images)} images have {len(keys)} different sizes/pixel spacings/orientations",
            where, "put each series in its own folder and give the CT series folder")


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
    volume = np.stack(slices)
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


def _read_dicom_pixels(item: _DicomFile, where: Path) -> np.ndarray:
    """Decode one slice in HU (GDCM applies slope/intercept); padding voxels become air."""
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
    padding = header.get("PixelPaddingValue")
    if padding is not None and not isinstance(padding, (bytes, bytearray)):
        slope = float(header.get("RescaleSlope", 1) or 1)
        intercept = float(header.get("RescaleIntercept", 0) or 0)
        limit = header.get("PixelPaddingRangeLimit")
        bounds = sorted([padding, padding if limit is None else limit])
        lo, hi = (b * slope + intercept for b in bounds)
        lo, hi = min(lo, hi), max(lo, hi)
        if hi < CT_PLAUSIBLE_RANGE_HU[0]:  # only ever replace values that cannot be tissue
            array[(array >= lo) & (array <= hi)] = PADDING_FILL_HU
    return array


# ----------------------------------------------------------------------------- CT plausibility


def check_ct_intensities(image: sitk.Image, path: Path | str) -> None:
    """Refuse images whose values cannot be CT in HU (MR, rescaled or windowed images).

    A fill value below the plausible range (e.g. -3024 or -2048 outside the field of view, as some
    converters write) is ignored: only the image minimum is treated as such padding.
    """
    array = np.asarray(sitk.GetArrayViewFromImage(image)).ravel()
    lo, hi = CT_PLAUSIBLE_RANGE_HU
    minimum = array.min()
    if minimum < lo:
        array = array[array != minimum]
    if array.size == 0:
        raise InputError("image holds a single value (empty field of view)", path, "give the CT slice or volume")
    p_lo, p_hi = np.percentile(array, [0.1, 99.9])
    if p_lo < lo or p_hi > hi:
        raise InputError(
            f"intensities {p_lo:.0f}..{p_hi:.0f} lie outside the plausible CT range {lo:.0f}..{hi:.0f} HU",
            path, "give the CT in Hounsfield units (apply rescale slope/intercept; do not give a windowed or MR image)")
    if array.min() > _AIR_OR_FAT_HU:
        raise InputError(
            f"no voxel below {_AIR_OR_FAT_HU:.0f} HU (no air or fat): this is not a CT in Hounsfield units",
            path, "give the CT in HU, not a windowed, normalised or MR image")


# ------------------------------------------------------------------------------- orientation


def _as_3d(image: sitk.Image) -> sitk.Image:
    """2-D slice → 3-D image with one slice (z spacing 1 mm, origin z 0: unknown, irrelevant)."""
    if image.GetDimension() == 3:
        return image
    return sitk.JoinSeries(image)


def _direction(image: sitk.Image) -> np.ndarray:
    return np.array(image.GetDirection(), dtype=float).reshape(3, 3)


def _axis_angles_from_z(image: sitk.Image) -> np.ndarray:
    """Angle (degrees) between each image axis and the patient head-feet axis."""
    return np.degrees(np.arccos(np.clip(np.abs(_direction(image)[2, :]), 0.0, 1.0)))


def require_axial(image: sitk.Image, path: Path | str) -> None:
    """Refuse images whose slices are not axial (normal more than AXIAL_TOLERANCE_DEG from z)."""
    image = _as_3d(image)
    angles = _axis_angles_from_z(image)
    z_axis = int(np.argmin(angles))
    if angles[z_axis] > AXIAL_TOLERANCE_DEG:
        raise InputError(
            f"not an axial image: no image axis lies within {AXIAL_TOLERANCE_DEG:g} degrees of the head-feet axis "
            f"(closest {angles[z_axis]:.1f} degrees)", path,
            "give an axial CT (reformat oblique or tilted series to axial first)")
    size = image.GetSize()
    flat = [k for k in range(3) if size[k] == 1]
    if flat and z_axis not in flat:
        raise InputError("a single sagittal or coronal slice, not an axial one", path, "give the axial L3 slice")
    in_plane = [size[k] for k in range(3) if k != z_axis]
    if min(in_plane) < MIN_AXIAL_PIXELS:
        raise InputError(f"axial slices would be only {in_plane[0]} x {in_plane[1]} pixels: a stack of a few "
                         "sagittal or coronal slices, not an axial CT", path, "give the axial CT series")


def _reorient(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(_as_3d(image), CANONICAL_ORIENTATION)


def _snap_to_identity(image: sitk.Image) -> sitk.Image:
    """Set a nearly axis-aligned direction to exactly identity (a relabelling, no resampling)."""
    angles = _axis_angles_from_z(image)
    if angles[2] > AXIAL_TOLERANCE_DEG:
        raise InputError(f"oblique image ({angles[2]:.1f} degrees from axial)", None,
                         "reformat the series to axial first")
    snapped = sitk.Image(image)
    snapped.SetDirection(tuple(np.eye(3).ravel()))
    return snapped


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes to LPS and set the direction to identity, so axial slice k is array[k].

    Only axis permutations and flips are applied (voxel values never resampled); a residual
    obliquity up to AXIAL_TOLERANCE_DEG is dropped from the direction cosines.
    """
    return _snap_to_identity(_reorient(image))


def _is_canonical(image: sitk.Image) -> bool:
    return image.GetDimension() == 2 or np.allclose(_direction(image), np.eye(3), atol=1e-6)


#: Grid agreement asked of a mask and its image (NIfTI stores float32 geometry; writers round).
_SPACING_RTOL = 1e-3
_DIRECTION_ATOL = 1e-3
_ORIGIN_TOL_VOXELS = 0.1


def check_same_grid(image: sitk.Image, mask: sitk.Image, mask_path: Path | str | None,
                    image_path: Path | str | None = None) -> None:
    """Refuse a mask whose voxel grid is not the image's (compared after both are reoriented to LPS,
    so a LAS-stored mask may belong to an LPS-stored DICOM series). For a single slice, the slice
    thickness and, for 2-D files, the slice position are not compared (they carry no information).

    The one grid check of sarco (convert, measure, evaluate, L3): the error names `mask_path` and,
    when given, the image it was compared with."""
    a, b = _reorient(image), _reorient(mask)
    fix = "give the mask on the image's own grid (same size, spacing, origin and orientation)"
    of = f" of {image_path}" if image_path else ""
    if a.GetSize() != b.GetSize():
        raise InputError(f"mask size {_as_3d(mask).GetSize()} does not match image size {_as_3d(image).GetSize()}{of}",
                         mask_path, fix)
    both_3d = image.GetDimension() == 3 and mask.GetDimension() == 3
    axes = 3 if both_3d and a.GetSize()[2] > 1 else 2
    sa, sb = np.array(a.GetSpacing())[:axes], np.array(b.GetSpacing())[:axes]
    if np.any(np.abs(sa - sb) > _SPACING_RTOL * sa):
        raise InputError(f"mask spacing {tuple(np.round(sb, 4).tolist())} does not match image spacing "
                         f"{tuple(np.round(sa, 4).tolist())}{of}", mask_path, fix)
    if np.any(np.abs(_direction(a) - _direction(b)) > _DIRECTION_ATOL):
        raise InputError(f"mask orientation (direction cosines) does not match the image{of}", mask_path, fix)
    axes = 3 if both_3d else 2
    oa, ob = np.array(a.GetOrigin())[:axes], np.array(b.GetOrigin())[:axes]
    if np.any(np.abs(oa - ob) > _ORIGIN_TOL_VOXELS * np.array(a.GetSpacing())[:axes]):
        raise InputError(f"mask origin {tuple(np.round(ob, 2).tolist())} does not match image origin "
                         f"{tuple(np.round(oa, 2).tolist())}{of} (after reorientation to LPS)", mask_path, fix)


# -------------------------------------------------------------------------------- slices


def extract_axial_slice(image: sitk.Image, index: int) -> sitk.Image:
    """Axial slice `index` of a canonical image as a one-slice 3-D image.

    In-plane spacing and origin are kept exactly; the slice-axis spacing becomes
    SLICE_AXIS_SPACING_MM so that nnU-Net plans a 2d configuration.
    """
    if not _is_canonical(image):
        raise ValueError("extract_axial_slice needs a canonical image: call to_canonical first")
    image = _as_3d(image)
    n = image.GetSize()[2]
    if not 0 <= index < n:
        raise InputError(f"slice index {index} outside 0..{n - 1}", None, f"choose a slice between 0 and {n - 1}")
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    if max(spacing[:2]) >= SLICE_AXIS_SPACING_MM:
        raise InputError(f"in-plane pixel spacing {spacing[:2]} mm is not below {SLICE_AXIS_SPACING_MM} mm", None,
                         "give a CT with a usual in-plane resolution (about 0.5-1 mm)")
    array = sitk.GetArrayViewFromImage(image)[index]
    out = sitk.GetImageFromArray(np.array(array)[None])
    out.SetSpacing((spacing[0], spacing[1], SLICE_AXIS_SPACING_MM))
    out.SetOrigin((origin[0], origin[1], origin[2] + index * spacing[2]))
    out.SetDirection(tuple(np.eye(3).ravel()))
    return out


def load_axial_slice(path: Path | str, slice_index: int | None = None) -> tuple[sitk.Image, SliceSource]:
    """Read a CT, check it, and return its axial slice (the only one, or `slice_index` of a volume)."""
    path = Path(path)
    original = read_image(path)
    check_ct_intensities(original, path)
    require_axial(original, path)
    canonical = to_canonical(original)
    n = canonical.GetSize()[2]
    if n == 1:
        if slice_index not in (None, 0):
            raise InputError(f"single-slice image, but slice {slice_index} was asked for", path,
                             "leave out --l3-slice (or pass 0) for a single slice")
        index = 0
    else:
        if slice_index is None:
            raise InputError(f"volume with {n} slices: pass --l3-slice", path,
                             f"give the L3 slice index as your viewer counts it along the file's slice axis (0..{n - 1})")
        if not 0 <= slice_index < n:
            raise InputError(f"--l3-slice {slice_index} outside the volume's 0..{n - 1}", path,
                             "count slices along the file's own slice axis, from 0")
        index = canonical_slice_index(original, int(slice_index))
    slice_image = extract_axial_slice(canonical, index)
    z_mm = canonical.GetOrigin()[2] + index * canonical.GetSpacing()[2]
    return slice_image, SliceSource(path=path, slice_index=index, n_slices=n,
                                    stored_index=canonical_slice_index(original, index), z_mm=float(z_mm),
                                    original=original)


def canonical_slice_index(image: sitk.Image, index: int) -> int:
    """Map a slice index along the file's own head–foot axis to the canonical (LPS, 0 = most inferior)
    index, or back: the map is its own inverse (identity, or a reversal when the file runs head→foot)."""
    image3d = _as_3d(image)
    direction = _direction(image3d)
    stored_axis = int(np.argmax(np.abs(direction[2, :])))  # the stored axis that runs head–foot
    n = image3d.GetSize()[stored_axis]
    return n - 1 - index if direction[2, stored_axis] < 0 else index


def mask_to_source_geometry(mask_slice: sitk.Image, source: SliceSource) -> sitk.Image:
    """Put a predicted one-slice mask back onto the user's original grid (zeros on other slices)."""
    original3d = _as_3d(source.original)
    reoriented = _reorient(original3d)
    nx, ny, nz = reoriented.GetSize()
    mask_array = sitk.GetArrayFromImage(_as_3d(mask_slice))  # a view of a temporary image would dangle
    if mask_array.shape != (1, ny, nx):
        raise ValueError(f"mask of shape {mask_array.shape} does not fit the source slice grid {(1, ny, nx)}")
    full = np.zeros((nz, ny, nx), dtype=np.uint8)
    full[source.slice_index] = mask_array[0]
    canonical_mask = sitk.GetImageFromArray(full)
    canonical_mask.CopyInformation(reoriented)
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(original3d.GetDirection())
    back = sitk.DICOMOrient(canonical_mask, code)
    if back.GetSize() != original3d.GetSize():
        raise AssertionError("reorientation did not invert")  # cannot happen: permutations invert
    back.CopyInformation(original3d)
    if source.original.GetDimension() == 2:
        flat = sitk.GetImageFromArray(sitk.GetArrayFromImage(back)[0])
        flat.CopyInformation(source.original)
        return flat
    return back
