"""DICOM SEG: read back, its frames are the mask on the source grid; missing UIDs are refused or said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

hd = pytest.importorskip("highdicom", reason="the dicom-seg extra (highdicom) is part of the test extra")

from sarco_nn.errors import InputError  # noqa: E402
from sarco_nn.image_io import read_image  # noqa: E402
from sarco_nn.review.dicom_seg import write_dicom_seg  # noqa: E402

ROWS, COLS, N = 24, 32, 5


def _series(folder: Path, uids: bool = True, flip_rows: bool = False, rows: int = ROWS, cols: int = COLS) -> list:
    """A synthetic CT series (patient name set, so identity can be checked), written in shuffled order."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    col_dir = [0.0, -1.0, 0.0] if flip_rows else [0.0, 1.0, 0.0]
    out = []
    for k in (3, 0, 4, 1, 2):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop if uids else ""
        ds.StudyInstanceUID = study if uids else ""
        ds.SeriesInstanceUID = series if uids else ""
        ds.FrameOfReferenceUID = frame if uids else ""
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "PID-42", "19500101", "F"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20260101", "120000", "A1", "", "1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.Manufacturer = "synthetic"
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, *col_dir]
        ds.ImagePositionPatient = [-20.0, -15.0 if not flip_rows else 15.0, 2.5 * k]
        ds.PixelSpacing, ds.SliceThickness = [1.25, 1.5], 2.5
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        pixels = rng.integers(900, 1100, (rows, cols)).astype(np.int16)  # soft tissue around 0 HU
        pixels[:4], pixels[rows // 2 - 3: rows // 2 + 3, cols // 2 - 3: cols // 2 + 3] = 24, 1724  # air, bone
        ds.PixelData = pixels.tobytes()  # (a CT needs both: a -124..75 HU image is refused as not_ct)
        ds.save_as(str(folder / f"im{k}.dcm"), enforce_file_format=True)
        out.append(ds)
    del pydicom
    return out


def _mask_like(image: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
    arr = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)  # (z, y, x) in the reader's stored order
    arr[2, 5:15, 3:20] = 1
    arr[2, 18, 30] = 1  # an off-centre pixel catches a flipped or transposed frame
    arr[3, 0:4, 0:6] = 1
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(image)
    return mask, arr


def _roundtrip(tmp_path, flip_rows: bool):
    series = tmp_path / "series"
    sources = _series(series, flip_rows=flip_rows)
    image = read_image(series)
    mask, _ = _mask_like(image)
    result = write_dicom_seg(series, mask, tmp_path / "seg.dcm")
    assert result.generated_uids == [] and result.note == ""
    seg = hd.seg.segread(str(result.path))
    assert seg.Modality == "SEG" and seg.PatientName == "Doe^Jane" and seg.PatientID == "PID-42"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "127954009"  # SNOMED CT skeletal muscle
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    # every source instance: the SEG's frame equals the mask sampled at that instance's pixels
    for ds in sources:
        z = ds.ImagePositionPatient[2]
        expected = np.zeros((ROWS, COLS), np.uint8)
        for r in range(ROWS):
            for c in range(COLS):
                point = (np.array(ds.ImagePositionPatient, float) + c * 1.5 * np.array(ds.ImageOrientationPatient[:3], float)
                         + r * 1.25 * np.array(ds.ImageOrientationPatient[3:], float))
                idx = mask.TransformPhysicalPointToIndex(tuple(point))
                expected[r, c] = mask[idx]
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1],
                                                ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
        assert np.array_equal(got[0, :, :, 0], expected), f"slice z={z}"
    assert result.n_frames == 2  # empty frames are left out


def test_seg_frames_match_the_mask_on_the_source_grid(tmp_path):
    _roundtrip(tmp_path, flip_rows=False)


def test_seg_follows_a_flipped_source_orientation(tmp_path):
    _roundtrip(tmp_path, flip_rows=True)


def test_series_without_uids_is_refused_or_gets_generated_uids_said_so(tmp_path):
    series = tmp_path / "series"
    _series(series, uids=False)
    mask, _ = _mask_like(read_image(series))
    # the instances' own UID stays in their file meta (as anonymisers leave it): that one is used, not refused
    with pytest.raises(InputError, match="lacks FrameOfReferenceUID, SeriesInstanceUID, StudyInstanceUID, which"):
        write_dicom_seg(series, mask, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
    result = write_dicom_seg(series, mask, tmp_path / "seg.dcm", uid_policy="generate")
    assert "StudyInstanceUID" in result.generated_uids and "will not attach" in result.note
    assert hd.seg.segread(str(result.path)).NumberOfFrames == 2


def test_nifti_input_is_refused(tmp_path):
    path = tmp_path / "ct.nii.gz"
    image = sitk.GetImageFromArray(np.zeros((2, 8, 8), np.int16))
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="DICOM"):
        write_dicom_seg(path, image, tmp_path / "seg.dcm")


def test_batch_writes_one_seg_per_finished_dicom_case_and_resumes(tmp_path):
    from sarco_nn.review.dicom_seg import write_batch_segs

    series = tmp_path / "scans" / "ct1"
    _series(series, uids=False)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    mask, _ = _mask_like(read_image(series))
    sitk.WriteImage(mask, str(out / "masks" / "ct1.nii.gz"))
    rows = [{"case_id": "ct1", "status": "ok", "mask": "masks/ct1.nii.gz"},
            {"case_id": "nii", "status": "review", "mask": "masks/nii.nii.gz"},
            {"case_id": "bad", "status": "failed", "mask": ""}]
    cases = [(series, rows[0]), (tmp_path / "nii.nii.gz", rows[1]), (tmp_path / "bad", rows[2])]
    index = write_batch_segs(out, cases)
    assert rows[0]["dicom_seg"] == "dicom_seg/ct1.dcm" and "generated" in rows[0]["dicom_seg_note"]
    assert rows[1]["dicom_seg_note"] == "not written: the input is not DICOM" and "dicom_seg" not in rows[2]
    assert [r["case_id"] for r in index] == ["ct1"] and (out / "dicom_seg" / "dicom_seg.csv").is_file()
    stamp = (out / "dicom_seg" / "ct1.dcm").stat().st_mtime_ns
    again = [{"case_id": "ct1", "status": "ok", "mask": "masks/ct1.nii.gz"}]  # as read back from results.csv
    write_batch_segs(out, [(series, again[0])])
    assert (out / "dicom_seg" / "ct1.dcm").stat().st_mtime_ns == stamp  # resumed, not rewritten
    assert again[0]["dicom_seg"] == "dicom_seg/ct1.dcm" and again[0]["dicom_seg_note"] == rows[0]["dicom_seg_note"]


def test_seg_of_an_anonymised_series_without_patient_sex_or_study_date(tmp_path):
    """Anonymisers drop Type-2 attributes (PatientSex, StudyDate, ...): the SEG is still written."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_factory import write_series  # writes no PatientSex, StudyDate, StudyID, AccessionNumber

    from sarco_nn.review.dicom_seg import write_batch_segs

    hu = np.full((1, ROWS, COLS), 40.0)
    series = write_series(tmp_path / "scans" / "anon", hu)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    image = read_image(series)
    arr = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    arr[0, 5:15, 3:20] = 1
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(out / "masks" / "anon.nii.gz"))
    row = {"case_id": "anon", "status": "ok", "mask": "masks/anon.nii.gz"}
    write_batch_segs(out, [(series, row)])
    assert row["dicom_seg"] == "dicom_seg/anon.dcm", row["dicom_seg_note"]
    seg = hd.seg.segread(str(out / "dicom_seg" / "anon.dcm"))
    assert seg.PatientSex == "" and int(seg.NumberOfFrames) == 1


def test_four_tissue_mask_gets_one_coded_segment_per_present_tissue(tmp_path):
    """A four-tissue model's mask (muscle 1, IMAT 2, VAT 3, SAT 4): every tissue it holds is its own
    SNOMED-coded segment (adipose tissue 55603005 in its region), one it lacks is left out."""
    from sarco_nn.body_composition import model_tissue_labels
    from sarco_nn.review.dicom_seg import write_batch_segs

    series = tmp_path / "scans" / "ct1"
    sources = _series(series)
    image = read_image(series)
    arr = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    arr[2, 5:15, 3:20] = 1
    arr[2, 16:18, 3:20] = 3  # VAT
    arr[2, 20:23, 3:20] = 4  # SAT; no IMAT
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(image)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    sitk.WriteImage(mask, str(out / "masks" / "ct1.nii.gz"))
    row = {"case_id": "ct1", "status": "ok", "mask": "masks/ct1.nii.gz"}
    labels = model_tissue_labels({"background": 0, "muscle": 1, "imat": 2, "vat": 3, "sat": 4})
    write_batch_segs(out, [(series, row)], labels=labels)
    seg = hd.seg.segread(str(out / row["dicom_seg"]))
    segments = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert list(segments) == ["Skeletal muscle", "Visceral adipose tissue", "Subcutaneous adipose tissue"]
    assert segments["Skeletal muscle"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "127954009"
    for name, region in (("Visceral adipose tissue", "83670000"), ("Subcutaneous adipose tissue", "71966008")):
        assert segments[name].SegmentedPropertyTypeCodeSequence[0].CodeValue == "55603005"
        assert segments[name].AnatomicRegionSequence[0].CodeValue == region
    [holding] = [ds for ds in sources if float(ds.ImagePositionPatient[2]) == 2.5 * 2]  # the slice with tissue
    for label, value in (("Skeletal muscle", 1), ("Visceral adipose tissue", 3), ("Subcutaneous adipose tissue", 4)):
        got = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[holding.SOPInstanceUID], segment_numbers=[segments[label].SegmentNumber],
            ignore_spatial_locations=True, assert_missing_frames_are_empty=True)[0, :, :, 0]
        assert got.sum() == np.count_nonzero(arr[2] == value), label  # each segment holds its tissue's pixels only
    muscle_only = {"case_id": "ct2", "status": "ok", "mask": "masks/ct1.nii.gz"}
    write_batch_segs(out, [(series, muscle_only)])  # a muscle-only model: muscle only, as before
    assert [s.SegmentLabel for s in hd.seg.segread(str(out / muscle_only["dicom_seg"])).SegmentSequence] == [
        "Skeletal muscle"]


def test_a_recomputed_mask_gets_a_new_seg_not_the_earlier_scans(tmp_path):
    """A rerun that recomputes a case (its scan changed) writes a new mask under the same name; the
    SEG made from the earlier mask must not be kept as this scan's (results keyed by inputs)."""
    from sarco_nn.review.dicom_seg import write_batch_segs

    series = tmp_path / "scans" / "ct1"
    _series(series)
    image = read_image(series)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)

    def write_mask(rows: slice) -> int:
        arr = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
        arr[2, rows, 3:20] = 1
        mask = sitk.GetImageFromArray(arr)
        mask.CopyInformation(image)
        sitk.WriteImage(mask, str(out / "masks" / "ct1.nii.gz"))
        return int(arr.sum())

    write_mask(slice(5, 8))
    write_batch_segs(out, [(series, {"case_id": "ct1", "status": "ok", "mask": "masks/ct1.nii.gz"})])
    n_new = write_mask(slice(5, 15))  # the recomputed case's mask
    row = {"case_id": "ct1", "status": "ok", "mask": "masks/ct1.nii.gz"}
    write_batch_segs(out, [(series, row)])
    assert int(np.asarray(hd.seg.segread(str(out / row["dicom_seg"])).pixel_array).sum()) == n_new


def test_two_scans_with_one_case_id_each_get_their_own_seg(tmp_path):
    """Two series predicted into one folder under the same case id (Monday's and Tuesday's
    `patient`): predict gives their masks distinct names, so each SEG must be its own series'
    (a SEG carries patient identity), and a rerun keeps both; an earlier run's entry stays indexed."""
    from sarco_nn.review.dicom_seg import write_batch_segs

    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    rows, sources = [], []
    for day, stem in (("monday", "patient"), ("tuesday", "patient-0123456789")):
        series = tmp_path / day / "patient"
        sources.append((series, _series(series)))
        mask, _ = _mask_like(read_image(series))
        sitk.WriteImage(mask, str(out / "masks" / f"{stem}.nii.gz"))
        rows.append({"case_id": "patient", "status": "ok", "mask": f"masks/{stem}.nii.gz", "input": str(series)})
    write_batch_segs(out, [(sources[0][0], rows[0])])  # Monday's run
    write_batch_segs(out, [(sources[1][0], rows[1])])  # Tuesday's, into the same folder
    assert rows[0]["dicom_seg"] != rows[1]["dicom_seg"]
    for row, (_, datasets) in zip(rows, sources):
        seg = hd.seg.segread(str(out / row["dicom_seg"]))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID, row
    import csv

    with open(out / "dicom_seg" / "dicom_seg.csv", newline="", encoding="utf-8") as handle:
        assert sorted(r["dicom_seg"] for r in csv.DictReader(handle)) == sorted(r["dicom_seg"] for r in rows)


def test_a_case_that_fails_on_rerun_loses_its_earlier_seg(tmp_path):
    """A recomputed case that now fails has no mask: the SEG of its earlier mask must not stay
    indexed (or on disk) as its result."""
    from sarco_nn.review.dicom_seg import write_batch_segs

    series = tmp_path / "scans" / "ct1"
    _series(series)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    mask, _ = _mask_like(read_image(series))
    sitk.WriteImage(mask, str(out / "masks" / "ct1.nii.gz"))
    row = {"case_id": "ct1", "status": "ok", "mask": "masks/ct1.nii.gz", "input": str(series)}
    write_batch_segs(out, [(series, row)])
    assert (out / row["dicom_seg"]).is_file()
    failed = {"case_id": "ct1", "status": "failed", "mask": "", "input": str(series)}
    write_batch_segs(out, [(series, failed)])
    assert not (out / row["dicom_seg"]).exists()
    assert "ct1" not in (out / "dicom_seg" / "dicom_seg.csv").read_text(encoding="utf-8")
