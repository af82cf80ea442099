"""What ITK hides in file headers, read from the bytes ourselves.

Measured reasons (SimpleITK 2.5 / ITK 5.4) for not leaving these to SimpleITK alone:

- a zero or absent spacing (NIfTI pixdim 0, NRRD without spacings, MetaImage without
  ElementSpacing) is silently read as 1 mm, making every pixel 1 mm²;
- a truncated NIfTI voxel block is padded with zeros (water/muscle HU) without an error;
- NaN/Inf float voxels are turned into 0;
- ``scl_slope = 0`` is read as slope 1 while ``scl_inter`` is still applied (a scan written with
  slope 0 and inter -60 reads 60 HU too low), although the NIfTI standard says slope 0 means
  "no scaling";
- a qform and an sform that disagree are resolved silently (ITK keeps the qform when the sform has
  "unexpected scales"; the only sign is a raw warning on stderr).

One NIfTI header parser serves all of these; everything else (orientation, data types, compression,
pixel decoding) is left to SimpleITK.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: NIfTI datatype codes of floating-point voxels (float32, float64).
_NIFTI_FLOAT_TYPES = {16: "<f4", 64: "<f8"}


@dataclass(frozen=True)
class NiftiHeader:
    """The NIfTI-1/2 header fields sarco checks (the rest is SimpleITK's)."""

    endian: str
    header_size: int  # 348 (NIfTI-1) or 540 (NIfTI-2)
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: int
    scl_slope: float
    scl_inter: float
    qform_code: int
    sform_code: int
    quatern: tuple[float, ...]  # b, c, d, qoffset_x, qoffset_y, qoffset_z
    srow: tuple[float, ...]  # 12 values: srow_x, srow_y, srow_z

    @property
    def ndim(self) -> int:
        return self.dims[0]

    @property
    def zooms(self) -> tuple[float, ...]:
        return self.pixdim[1:1 + min(max(self.ndim, 1), 3)]


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def parse_nifti_header(head: bytes) -> NiftiHeader | None:
    """The header of NIfTI bytes (either endianness, NIfTI-1 or -2); None when it is not NIfTI."""
    for e in "<>":
        if len(head) >= 348 and struct.unpack(e + "i", head[:4])[0] == 348:
            return NiftiHeader(
                e, 348, struct.unpack(e + "8h", head[40:56]), *struct.unpack(e + "2h", head[70:74]),
                struct.unpack(e + "8f", head[76:108]), int(struct.unpack(e + "f", head[108:112])[0]),
                *struct.unpack(e + "2f", head[112:120]), *struct.unpack(e + "2h", head[252:256]),
                struct.unpack(e + "6f", head[256:280]), struct.unpack(e + "12f", head[280:328]))
        if len(head) >= 540 and struct.unpack(e + "i", head[:4])[0] == 540:
            return NiftiHeader(
                e, 540, struct.unpack(e + "8q", head[16:80]), *struct.unpack(e + "2h", head[12:16]),
                struct.unpack(e + "8d", head[104:168]), struct.unpack(e + "q", head[168:176])[0],
                *struct.unpack(e + "2d", head[176:192]), *struct.unpack(e + "2i", head[344:352]),
                struct.unpack(e + "6d", head[352:400]), struct.unpack(e + "12d", head[400:496]))
    return None


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """The header of a .nii/.nii.gz file, or None (not NIfTI, unreadable: SimpleITK judges it)."""
    if not _is_nifti(path):
        return None
    try:
        with _open(path) as handle:
            return parse_nifti_header(handle.read(540))
    except (OSError, EOFError, zlib.error, struct.error, ValueError):
        return None


def _header_spacing_problem(path: Path) -> str | None:
    """A zero or absent spacing that SimpleITK would silently turn into 1 mm (see the module doc)."""
    name = path.name.lower()
    if _is_nifti(path):
        header = read_nifti_header(path)
        if header is not None and not all(math.isfinite(z) and z > 0 for z in header.zooms):
            return f"missing or zero voxel spacing in the NIfTI header (pixdim {tuple(header.zooms)})"
        return None
    try:
        if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
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
            if name.endswith((".mha", ".mhd")):
                return _meta_spacing_problem(head)
    except (OSError, EOFError, ValueError):
        return None  # unreadable: SimpleITK's reader gives the error
    return None


def _meta_spacing_problem(head: str) -> str | None:
    """A MetaImage ElementSpacing (ElementSize where it has none, as ITK reads it) of zero, negative or
    non-numbers: read as "cannot read this image file", which names no cause. `head`: the header text,
    lower-cased; the pixel data follows the ElementDataFile line."""
    fields: dict[str, str] = {}
    for line in head.splitlines():
        key, sep, value = (part.strip() for part in line.partition("="))
        if key == "elementdatafile":
            break
        if sep:
            fields[key] = value
    key = "elementspacing" if "elementspacing" in fields else "elementsize"
    try:
        numbers = [float(v) for v in fields.get(key, "").split()]
    except ValueError:
        numbers = []
    if not numbers or not all(math.isfinite(v) and v > 0 for v in numbers):
        shown = {"elementspacing": "ElementSpacing", "elementsize": "ElementSize"}[key]
        return f"missing or zero voxel spacing in the MetaImage header ({shown} = {fields.get(key, '')})"
    return None


def _nifti_payload_problem(path: Path) -> str | None:
    """A truncated voxel block and NaN/Inf float voxels, which ITK's NIfTI reader hides."""
    if not _is_nifti(path):
        return None
    try:
        if path.name.lower().endswith(".gz"):
            with open(path, "rb") as raw:
                if raw.read(2) != b"\x1f\x8b":
                    return "not a NIfTI file: the name ends in .nii.gz but the content is not gzip-compressed " \
                           "(another format renamed?)"
        with _open(path) as handle:
            h = parse_nifti_header(handle.read(540))
            if h is None:
                return None  # not NIfTI at all: the reader refuses it
            ndim = h.ndim
            if not 1 <= ndim <= 7 or any(d < 1 for d in h.dims[1:ndim + 1]) or h.bitpix <= 0 \
                    or h.vox_offset < h.header_size:
                return "corrupt NIfTI header (dimensions, datatype or voxel offset)"
            if not all(math.isfinite(v) for v in (h.scl_slope, h.scl_inter)):
                return f"NIfTI scaling (scl_slope, scl_inter) {(h.scl_slope, h.scl_inter)} is not finite"
            expected = int(np.prod(h.dims[1:ndim + 1], dtype=np.int64)) * h.bitpix // 8
            dtype = (np.dtype(_NIFTI_FLOAT_TYPES[h.datatype]).newbyteorder(h.endian)
                     if h.datatype in _NIFTI_FLOAT_TYPES else None)
            handle.seek(h.vox_offset)
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


def nifti_intercept_wrongly_applied(header: NiftiHeader | None) -> float:
    """The intercept ITK added although ``scl_slope == 0`` (standard: no scaling), else 0.

    Subtracting it from what SimpleITK read gives the stored values, as the standard asks.
    """
    if header is None or header.scl_slope != 0 or not math.isfinite(header.scl_inter):
        return 0.0
    return float(header.scl_inter)


def label_scaling_note(path: Path | str) -> str | None:
    """Say how a NIfTI mask's header scaled its stored labels (ITK applies scl_slope/scl_inter), else None.

    Why: a mask saved with ``scl_slope 2`` (muscle stored 1) reads as 2, 4, 6 ..., so "label 1 absent"
    would send the user looking for the wrong label value; the header is the cause and its fix.
    A slope of 0 means "no scaling" (standard), but ITK still adds scl_inter (module doc). The text
    ends with the fix, so a message or an error line can end with it."""
    header = read_nifti_header(Path(path))
    if header is None or not all(math.isfinite(v) for v in (header.scl_slope, header.scl_inter)):
        return None
    slope = header.scl_slope if header.scl_slope != 0 else 1.0
    if slope == 1 and header.scl_inter == 0:
        return None
    return (f"its stored values were scaled by its NIfTI header (scl_slope {header.scl_slope:g}, scl_inter "
            f"{header.scl_inter:g}: a stored 1 reads as {slope + header.scl_inter:g}). Fix: re-save the mask "
            "unscaled (scl_slope 1, scl_inter 0; nibabel: img.header.set_slope_inter(1, 0))")


def _quaternion_matrix(b: float, c: float, d: float) -> np.ndarray:
    a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])


def qform_sform_disagreement(header: NiftiHeader | None) -> str | None:
    """Say how a qform and an sform that are both set disagree (voxel size, axes or origin), else None.

    Rule (stated once, here): sarco reads the geometry SimpleITK chooses and reports the
    disagreement as a `review` reason; it never silently picks one of two contradicting geometries.
    """
    if header is None or header.qform_code <= 0 or header.sform_code <= 0:
        return None
    qfac = -1.0 if header.pixdim[0] < 0 else 1.0
    zooms = np.array(header.pixdim[1:4], dtype=float)
    q_affine = _quaternion_matrix(*header.quatern[:3]) * np.array([zooms[0], zooms[1], zooms[2] * qfac])
    s_affine = np.array(header.srow, dtype=float).reshape(3, 4)[:, :3]
    q_origin, s_origin = np.array(header.quatern[3:6]), np.array(header.srow, dtype=float).reshape(3, 4)[:, 3]
    if not (np.all(np.isfinite(q_affine)) and np.all(np.isfinite(s_affine))):
        return "qform or sform is not finite"
    q_size, s_size = np.linalg.norm(q_affine, axis=0), np.linalg.norm(s_affine, axis=0)
    scale = max(float(zooms.min()), 1e-6)
    if np.any(np.abs(q_size - s_size) > 1e-3 * np.maximum(q_size, 1e-6)):
        return (f"voxel size {tuple(np.round(q_size, 3).tolist())} mm (qform) vs "
                f"{tuple(np.round(s_size, 3).tolist())} mm (sform)")
    if np.any(np.abs(q_affine - s_affine) > 1e-3 * scale) or np.any(np.abs(q_origin - s_origin) > 0.1 * scale):
        return "axes or origin differ between qform and sform"
    return None
