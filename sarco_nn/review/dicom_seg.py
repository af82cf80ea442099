"""DICOM Segmentation output (``sarco predict --dicom-seg``): the mask back where clinicians read images.

PACS, OHIF and 3D Slicer speak DICOM, not NIfTI. For a DICOM input this writes one DICOM SEG
object (highdicom) per scan that references the source series instance by instance, with each
tissue coded in SNOMED CT from DICOM's own code dictionary (pydicom ``codes.SCT``).

PRIVACY: a SEG that goes back to PACS must attach to the patient's study, so it copies the
source's patient and study identity (name, id, birth date, study UID). It is therefore OPT-IN
(``--dicom-seg``) and the ONE sarco output that carries patient identity; every default output
(results.csv, masks, overlays, review.html) stays pseudonymous.

UIDs: a SEG must reference the Study, Series, SOP Instance and Frame of Reference UIDs of its
source. When the source lacks any of them (anonymisers often blank them) the default is a clear
refusal; ``uid_policy="generate"`` makes up the missing UIDs instead and says so in the result:
such a SEG opens in a viewer with the series as loaded, but will not attach to the original
series in a PACS.

Needs the optional extra ``dicom-seg`` (``pip install sarco_nn[dicom-seg]``: highdicom).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.errors import InputError, SarcoError

__all__ = ["TissueCode", "TISSUE_CODES", "SegResult", "write_dicom_seg", "write_batch_segs", "read_source_series",
           "REQUIRED_UIDS", "check_dicom_seg_inputs", "seg_summary"]

#: UIDs a SEG must reference (source attribute names).
REQUIRED_UIDS: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
                                  "SOPClassUID")
#: An instance's own UIDs that its file meta repeats: anonymisers often blank the dataset's copy
#: and leave the meta's (the real TotalSegmentator test series does), and the meta's is the same identity.
_FILE_META_UIDS: tuple[tuple[str, str], ...] = (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                                ("SOPClassUID", "MediaStorageSOPClassUID"))

#: Type-2 patient/study attributes highdicom copies from the source. Anonymisers and exporters often
#: drop them; DICOM allows them empty, so a missing one is written empty instead of failing the SEG.
TYPE2_COPIED: tuple[str, ...] = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                                 "StudyID", "StudyDate", "StudyTime")


@dataclass(frozen=True)
class TissueCode:
    """How one sarco tissue is coded in a SEG: property type (+ anatomic region) under category Tissue."""

    label: str
    type_name: str  # attribute of pydicom's codes.SCT for SegmentedPropertyType
    region_name: str | None = None  # attribute of codes.SCT for AnatomicRegionSequence, if any
    color_lab: tuple[float, float, float] = (50.0, 70.0, 50.0)  # CIELab display colour

    def codes(self):
        from pydicom.sr.codedict import codes

        return (codes.SCT.Tissue, getattr(codes.SCT, self.type_name),
                getattr(codes.SCT, self.region_name) if self.region_name else None)


#: Tissue name (as in constants.TISSUE_LABELS) → its coding. A muscle-only model predicts `muscle`;
#: a four-tissue model (`sarco convert --keep-tissues`) also the adipose compartments, each coded as
#: SCT Adipose tissue (55603005) with its anatomic region: Subcutaneous tissue (71966008), Peritoneal
#: cavity (83670000), Skeletal muscle (127954009); code values as in DICOM's dictionary (pydicom codes.SCT).
TISSUE_CODES: dict[str, TissueCode] = {
    "muscle": TissueCode("Skeletal muscle", "SkeletalMuscle", None, (50.0, 70.0, 50.0)),
    "imat": TissueCode("Intermuscular adipose tissue", "AdiposeTissue", "SkeletalMuscle", (90.0, 0.0, 40.0)),
    "vat": TissueCode("Visceral adipose tissue", "AdiposeTissue", "PeritonealCavity", (80.0, -10.0, 70.0)),
    "sat": TissueCode("Subcutaneous adipose tissue", "AdiposeTissue", "SubcutaneousTissue", (85.0, 10.0, 60.0)),
}


@dataclass
class SegResult:
    path: Path
    n_frames: int
    generated_uids: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        """One line for the result row ('' when the SEG references the source as it is)."""
        if not self.generated_uids:
            return ""
        return (f"generated {', '.join(self.generated_uids)} (missing in the source): "
                "the SEG will not attach to the original series in PACS")


def read_source_series(source: Path) -> list:
    """The CT image instances of a DICOM file or series folder (pydicom datasets, with pixels), a scout
    (LOCALIZER) stored in the series left out as the image reader leaves it out: highdicom refused the SEG."""
    import pydicom

    from sarco_nn.io.dicom import is_localizer

    source = Path(source)
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    datasets = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
        except Exception:  # not DICOM (a README, a thumbnail): the series reader already judged the folder
            continue
        if "ImagePositionPatient" in ds and "PixelData" in ds and str(ds.get("Modality", "CT")).upper() == "CT":
            datasets.append(ds)
    axial = [ds for ds in datasets if not is_localizer(ds)]  # the reader's rule: a scout is no slice of the series
    datasets = axial or datasets
    if not datasets:
        raise InputError("no DICOM CT images to reference", source, "--dicom-seg needs DICOM input; give the series")
    return datasets


def _blank(ds, name: str) -> bool:
    return not str(ds.get(name, "") or "").strip()


def _uids_from_file_meta(datasets: list) -> None:
    """An instance's SOP Instance / Class UID blanked in the dataset but kept in its file meta: the
    meta's (in memory only; the source files are never modified)."""
    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        for name, meta_name in _FILE_META_UIDS:
            if _blank(ds, name) and meta is not None and not _blank(meta, meta_name):
                setattr(ds, name, str(meta.get(meta_name)))


def _check_uids(datasets: list, source: Path, uid_policy: str) -> list[str]:
    from pydicom.uid import CTImageStorage, generate_uid

    _uids_from_file_meta(datasets)
    missing = sorted({name for ds in datasets for name in REQUIRED_UIDS if not str(ds.get(name, "") or "").strip()})
    if not missing:
        return []
    if uid_policy != "generate":
        raise InputError(f"DICOM series lacks {', '.join(missing)}, which a DICOM SEG must reference", source,
                         "export the series with its UIDs from PACS, or drop --dicom-seg (NIfTI masks are written anyway)")
    shared = {name: generate_uid() for name in missing if name != "SOPInstanceUID"}
    shared["SOPClassUID"] = CTImageStorage  # read_source_series kept CT images only
    for ds in datasets:
        for name in missing:
            if not str(ds.get(name, "") or "").strip():
                setattr(ds, name, generate_uid() if name == "SOPInstanceUID" else shared[name])
        if "SOPInstanceUID" in missing:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return missing


#: What a source's Specific Character Set may say for DICOM's default repertoire (ISO IR 6): the
#: attribute empty (allowed, and common in exports) or the non-standard term many writers use.
_DEFAULT_REPERTOIRE = ("", "ISO_IR 6")


def _character_set(ds, source: Path) -> str | list[str] | None:
    """The Specific Character Set the SEG declares: the source's, with an empty value (DICOM: the
    default repertoire) read as such. highdicom copies the value as it is and rejects '' with a
    ValueError, so a series exported with the attribute present but empty got no SEG."""
    from highdicom.enum import SpecificCharacterSetValues

    raw = ds.get("SpecificCharacterSet")
    values = [str(v or "").strip() for v in ([raw] if raw is None or isinstance(raw, str) else raw)]
    if not values or all(v.upper() in _DEFAULT_REPERTOIRE for v in values):
        return None  # absent: the default repertoire
    if len(values) > 1 and values[0].upper() in _DEFAULT_REPERTOIRE:
        values[0] = "ISO 2022 IR 6"  # an empty first value of a code-extension list means IR 6 (PS3.3 C.12.1.1.2)
    known = {member.value for member in SpecificCharacterSetValues}
    odd = [v for v in values if v not in known]
    if odd:
        raise InputError(f"DICOM series has Specific Character Set {odd[0]!r}, which is no DICOM character set", source,
                         "re-export the series from PACS (or correct SpecificCharacterSet), or drop --dicom-seg")
    return values[0] if len(values) == 1 else values


def _frame_on_instance(mask: sitk.Image, ds) -> np.ndarray:
    """The mask sampled (nearest neighbour) on one source instance's pixel grid: (rows, cols)."""
    row_dir = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
    col_dir = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
    normal = np.cross(row_dir, col_dir)
    spacing = [float(v) for v in ds.PixelSpacing]  # (between rows, between columns)
    ref = sitk.Image([int(ds.Columns), int(ds.Rows), 1], sitk.sitkUInt8)
    ref.SetSpacing((spacing[1], spacing[0], 1.0))
    ref.SetOrigin(tuple(float(v) for v in ds.ImagePositionPatient))
    ref.SetDirection(tuple(np.column_stack([row_dir, col_dir, normal]).ravel()))
    mask3d = mask if mask.GetDimension() == 3 else sitk.JoinSeries(mask)
    sampled = sitk.Resample(sitk.Cast(mask3d, sitk.sitkUInt8), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(sampled)[0]


def write_dicom_seg(source: Path, mask: sitk.Image, out_path: Path, labels: dict[str, int] | None = None,
                    uid_policy: str = "refuse", model_name: str = "sarco_nn") -> SegResult:
    """Write a DICOM SEG of `mask` (on the source's grid, as predict's masks/) referencing `source`.

    Args:
        source: the DICOM file or series folder the mask was predicted from.
        mask: label image in the source's physical space (any orientation; sampled per instance).
        out_path: where the SEG (.dcm) goes.
        labels: tissue name → label value in `mask` (default: constants.LABELS without background);
            one segment per tissue the mask holds (a tissue it lacks gets none).
        uid_policy: "refuse" (default) or "generate" for sources missing REQUIRED_UIDS.
    """
    try:
        import highdicom as hd
    except ImportError:
        raise SarcoError("--dicom-seg needs highdicom", fix="pip install 'sarco_nn[dicom-seg]'") from None
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from sarco_nn import __version__
    from sarco_nn.atomic import atomic_path
    from sarco_nn.constants import LABELS

    labels = labels or {name: value for name, value in LABELS.items() if value != 0}
    unknown = sorted(set(labels) - set(TISSUE_CODES))
    if unknown:
        raise SarcoError(f"no DICOM code for tissue(s) {', '.join(unknown)}",
                         fix="add them to sarco_nn.review.dicom_seg.TISSUE_CODES")
    source = Path(source)
    datasets = read_source_series(source)
    generated = _check_uids(datasets, source, uid_policy)
    charset = _character_set(datasets[0], source)  # highdicom copies the first instance's
    for ds in datasets:  # in memory only: the source files are never modified
        for name in TYPE2_COPIED:
            if name not in ds:
                setattr(ds, name, "")
    frames = np.stack([_frame_on_instance(mask, ds) for ds in datasets])  # (n, rows, cols) of label values
    present = {name: value for name, value in labels.items() if np.any(frames == value)}
    labels = present or labels  # an empty mask keeps its (empty) segments, as before
    segment_map = np.zeros(frames.shape, np.uint8)
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(name=model_name[:64], version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    for number, (name, value) in enumerate(labels.items(), start=1):
        segment_map[frames == value] = number
        code = TISSUE_CODES[name]
        category, prop_type, region = code.codes()
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=code.label, segmented_property_category=category,
            segmented_property_type=prop_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=generate_uid(), tracking_id=f"sarco {name}",
            anatomic_regions=[region] if region else None, display_color=hd.color.CIELabColor(*code.color_lab)))
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=segment_map, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=9901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="sarco_nn",
        manufacturer_model_name=model_name[:64], software_versions=__version__, device_serial_number="0",
        content_description="sarco skeletal muscle segmentation" if list(labels) == ["muscle"] else
        "sarco body composition segmentation", content_label="SARCO", omit_empty_frames=True,
        specific_character_set=charset)
    with atomic_path(Path(out_path)) as tmp:
        seg.save_as(str(tmp))
    return SegResult(Path(out_path), int(seg.NumberOfFrames), generated)


#: Folder (in predict's output) and index file of the SEG objects.
SEG_DIR = "dicom_seg"
SEG_INDEX = "dicom_seg.csv"


def _is_dicom_input(path: Path) -> bool:
    from sarco_nn.image_io import IMAGE_SUFFIXES

    path = Path(path)
    return path.is_dir() or not path.name.lower().endswith(tuple(IMAGE_SUFFIXES))


def check_dicom_seg_inputs(paths: list[Path], inputs: Path) -> None:
    """Refuse --dicom-seg before any model is loaded when it cannot give one SEG: highdicom missing,
    or no input is DICOM (`paths`: the usable scans predict found in `inputs`)."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise SarcoError("--dicom-seg needs highdicom, which is not installed",
                         fix="pip install 'sarco_nn[dicom-seg]', or drop --dicom-seg") from None
    if paths and not any(_is_dicom_input(p) for p in paths):
        names = ", ".join(Path(p).name for p in paths[:3]) + (", …" if len(paths) > 3 else "")
        raise SarcoError(f"--dicom-seg: none of the {len(paths)} input(s) is DICOM ({names}); a DICOM SEG must "
                         "reference a DICOM source series", inputs,
                         "give the DICOM series (one folder per series, or DICOM files), or drop --dicom-seg "
                         "(the NIfTI masks in masks/ are written anyway)")


def seg_summary(out_dir: Path, rows: list[dict]) -> str:
    """One console line on the SEGs of these rows (predict prints it): how many were written, which
    carry made-up UIDs (they will not attach in PACS) and which were not written, and why."""
    def names(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f", … ({len(items) - 5} more)" if len(items) > 5 else "")

    written = [r for r in rows if r.get("dicom_seg")]
    generated = [r["case_id"] for r in written if str(r.get("dicom_seg_note", "")).startswith("generated")]
    skipped: dict[str, list[str]] = {}
    for r in rows:
        note = str(r.get("dicom_seg_note") or "")
        if not r.get("dicom_seg") and note.startswith("not written: "):
            skipped.setdefault(note[len("not written: "):], []).append(r["case_id"])
    parts = [f"dicom-seg: {len(written)} SEG(s) in {Path(out_dir) / SEG_DIR}"]
    if generated:
        parts.append(f"{len(generated)} with made-up UIDs (missing in the source), so they will not attach to the "
                     f"original series in PACS ({names(generated)})")
    for why, cases in sorted(skipped.items()):
        parts.append(f"{len(cases)} not written: {why} ({names(cases)})")
    return "; ".join(parts)


def _file_digest(path: Path) -> str:
    """sha256 of a mask file ("" when unreadable): which mask an existing SEG was made from."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


#: Columns of dicom_seg/dicom_seg.csv: which input and which mask (sha256) each SEG was made from.
SEG_INDEX_COLUMNS = ["case_id", "input", "mask", "dicom_seg", "note", "mask_sha256", "made_from"]


def seg_path_for(mask_rel: str | Path) -> Path:
    """The SEG of a mask, named by the mask's file stem (never by case id): predict makes that stem
    unique per input of the output folder (`inference._output_stem`), so two scans with one case
    id never share, overwrite or point at one SEG (a SEG carries patient identity)."""
    name = Path(mask_rel).name
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(SEG_DIR) / f"{name}.dcm"


def _made_from(mask_digest: str, source: Path, labels: dict[str, int] | None, model_name: str, uid_policy: str) -> str:
    """Digest of everything a SEG's content depends on: the mask, the source series (its UIDs and
    geometry: a re-exported series gets a new SEG), the tissue labels, the model name and UID policy."""
    import hashlib
    import json

    from sarco_nn.batch import file_identity

    source_id = file_identity(source, by="stamp")  # "missing" when it cannot be stat'ed, as before
    text = json.dumps([mask_digest, source_id, labels, model_name, uid_policy], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _index_key(row: dict) -> str:
    """What an index entry belongs to: the input (its absolute path, as predict keys rows), else the mask."""
    return row.get("input") or str(row.get("mask") or row.get("case_id", ""))


def write_batch_segs(out_dir: Path, cases: list[tuple[Path, dict]], uid_policy: str = "generate",
                     model_name: str = "sarco_nn", labels: dict[str, int] | None = None) -> list[dict]:
    """SEG objects for every finished DICOM case of a predict batch; updates the rows in place.

    cases: (source path, results row) pairs; rows need case_id, status and mask (relative to
    out_dir), and predict's rows carry their `input`. labels: tissue → value the model segments
    (`body_composition.model_tissue_labels`; None: muscle only), so a four-tissue model's SEG holds
    each present tissue's segment. Sets ``dicom_seg`` (relative path, `seg_path_for` the mask) and
    ``dicom_seg_note`` on each row, writes ``dicom_seg/dicom_seg.csv`` (earlier runs' entries of
    other inputs kept) and returns this call's entries. A SEG that cannot be written never fails a
    case: the note says why. Resumable: an existing SEG is kept only if it was made from this very
    mask file (sha256), source series, labels and model; a case that failed on a rerun loses its
    earlier SEG.
    """
    import csv
    import io

    from sarco_nn.atomic import write_text_atomic
    from sarco_nn.status import is_finished

    out_dir = Path(out_dir)
    index_path = out_dir / SEG_DIR / SEG_INDEX
    previous: dict[str, dict[str, str]] = {}
    if index_path.is_file():
        with open(index_path, newline="", encoding="utf-8") as f:
            previous = {_index_key(r): r for r in csv.DictReader(f)}
    index = []
    stale: list[str] = []
    for source, row in cases:
        key = _index_key(row)
        if not is_finished(row.get("status")) or not row.get("mask"):
            if row.get("input") and key in previous:
                stale.append(key)  # recomputed and failed: the SEG of its earlier mask must not stay as its own
            continue
        if not _is_dicom_input(source):
            row["dicom_seg"], row["dicom_seg_note"] = "", "not written: the input is not DICOM"
            continue
        rel = seg_path_for(row["mask"])
        mask_digest = _file_digest(out_dir / row["mask"])
        made_from = _made_from(mask_digest, source, labels, model_name, uid_policy)
        kept = previous.get(key)  # an existing SEG is kept only if it was made from this very mask, series, model
        note = (kept["note"] if kept and kept.get("made_from") == made_from and kept.get("dicom_seg") == str(rel)
                and (out_dir / rel).is_file() else None)
        if note is None:
            try:
                result = write_dicom_seg(source, sitk.ReadImage(str(out_dir / row["mask"])), out_dir / rel,
                                         labels=labels, uid_policy=uid_policy, model_name=model_name)
                note = result.note
            except SarcoError as exc:
                rel, note = None, f"not written: {str(exc).splitlines()[0]}"
            except Exception as exc:  # a SEG never fails the batch after every case was measured
                rel, note = None, " ".join(f"not written: unexpected {type(exc).__name__}: {exc}".split())[:300]
        if rel is None:  # the SEG of an earlier mask of this input must not stay as this one's
            (out_dir / seg_path_for(row["mask"])).unlink(missing_ok=True)
        row["dicom_seg"], row["dicom_seg_note"] = ("" if rel is None else str(rel)), note
        index.append({"case_id": row["case_id"], "input": row.get("input", ""), "mask": row["mask"],
                      "dicom_seg": row["dicom_seg"],
                      "note": note, "mask_sha256": mask_digest, "made_from": made_from})
    for key in stale:
        gone = previous.pop(key)
        if gone.get("dicom_seg"):
            (out_dir / gone["dicom_seg"]).unlink(missing_ok=True)
    entries = {**previous, **{_index_key(e): e for e in index}}
    if entries or stale:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SEG_INDEX_COLUMNS, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(sorted(entries.values(), key=lambda e: (e.get("case_id", ""), e.get("dicom_seg", ""))))
        (out_dir / SEG_DIR).mkdir(parents=True, exist_ok=True)
        write_text_atomic(index_path, buffer.getvalue())
    return index
