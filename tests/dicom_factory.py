"""Synthetic DICOM CT series written with pydicom, so a fresh clone (no ../shared/data) checks every
DICOM and privacy guarantee: planted patient identifiers, stripped rescale tags, padding values,
missing slices, mixed series, other modalities and orientations.

`write_series(folder, hu)` stores a (z, y, x) HU volume as one classic single-frame CT file per
slice, with stored value = HU - intercept (slope 1, intercept -1024 by default, unsigned 16 bit),
ordered feet to head (z increases with the slice index), as scanners do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

#: Identifiers planted in every generated file; no output of sarco may contain any of them.
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = "Zyxwq^Privacyplant", "PID-734519-XQ", "19230817"
PLANTED = (PATIENT_NAME, "Zyxwq", "Privacyplant", PATIENT_ID, BIRTH_DATE, "1923-08-17", "Privacyplant Hospital")


def write_series(folder: Path, hu: np.ndarray, spacing_yx: tuple[float, float] = (0.8, 0.8), step_z: float = 2.5,
                 origin: tuple[float, float, float] = (-20.0, -20.0, 100.0), intercept: float = -1024.0,
                 padding: int | None = None, padding_mask: np.ndarray | None = None, modality: str = "CT",
                 orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0), series_uid: str | None = None,
                 names: Callable[[int], str] = lambda k: f"IM{k:04d}", signed: bool = False,
                 edit: Callable | None = None) -> Path:
    """Write `hu` (z, y, x) as a DICOM series in `folder`; `edit(dataset, k)` may change each file.

    padding: a PixelPaddingValue (stored value) written where `padding_mask` is True (outside the
    field of view), as scanners mark the voxels outside the reconstruction circle."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.asarray(hu)
    if hu.ndim == 2:
        hu = hu[None]
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    for k, plane in enumerate(hu):
        stored = np.round(plane - intercept).astype(np.int32)
        if padding is not None and padding_mask is not None:
            stored = np.where(padding_mask, padding, stored)
        stored = stored.astype(np.int16) if signed else np.clip(stored, 0, 65535).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / names(k)), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
        ds.InstitutionName = "Privacyplant Hospital"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in np.array(origin) + k * step_z * normal]
        ds.PixelSpacing = [float(spacing_yx[0]), float(spacing_yx[1])]
        ds.SliceThickness = float(step_z)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, float(intercept), "HU"
        if padding is not None:
            ds.PixelPaddingValue = int(padding)
        ds.PixelData = stored.tobytes()
        if edit is not None:
            edit(ds, k)
        ds.save_as(str(folder / names(k)), enforce_file_format=True)
    del pydicom
    return folder


def strip_rescale(ds, k) -> None:
    """What some anonymisers and exporters do: drop the rescale tags, keep the stored values."""
    for tag in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if tag in ds:
            delattr(ds, tag)
