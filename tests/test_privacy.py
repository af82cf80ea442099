"""No DICOM patient identifier reaches any output of sarco: names, CSVs, logs, JSON, NIfTI headers, PNGs.

Identifiers are planted in generated DICOM series (`dicom_factory`) and, when ../shared/data is
present, in real ones, which then go through
`sarco convert` and `sarco predict`; every byte of every output file is scanned for them
(also gzip-decompressed files, and PNG text chunks, which are stored uncompressed or zlib'd).
"""

from __future__ import annotations

import gzip
import shutil
import zlib
from pathlib import Path

import pytest

from bad_inputs import good_slice, write_clinical
from conftest import sarco_inprocess
from helpers import DATA, needs_data, write

NAME, PATIENT_ID, BIRTH_DATE = "Zyxwq^Privacyplant", "PID-734519-XQ", "19230817"
PLANTED = (NAME, "Zyxwq", "Privacyplant", PATIENT_ID, BIRTH_DATE, "1923-08-17")


def _plant(source: list[Path], target: Path) -> Path:
    import pydicom

    target.mkdir(parents=True)
    for k, path in enumerate(source):
        ds = pydicom.dcmread(str(path))
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH_DATE
        ds.InstitutionName = "Privacyplant Hospital"
        ds.save_as(str(target / f"IM{k:04d}"))
    return target


def _texts(path: Path) -> list[bytes]:
    """The bytes of a file, plus its decompressed content (gzip) and PNG zTXt/iTXt payloads."""
    data = path.read_bytes()
    found = [data]
    if data[:2] == b"\x1f\x8b":
        found.append(gzip.decompress(data))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos:pos + 4], "big")
            kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
            if kind in (b"zTXt", b"iTXt") and b"\x00" in body:
                payload = body.split(b"\x00", 1)[1]
                for skip in range(0, 4):
                    try:
                        found.append(zlib.decompress(payload[skip:]))
                        break
                    except zlib.error:
                        continue
            pos += 12 + length
    return found


def _leaks(folder: Path) -> list[str]:
    leaks = []
    for path in sorted(folder.rglob("*")):
        for secret in PLANTED:
            if secret.lower() in path.name.lower():
                leaks.append(f"file name {path}")
        if path.is_file():
            for blob in _texts(path):
                for secret in PLANTED:
                    for encoding in ("utf-8", "utf-16-le"):
                        if secret.lower().encode(encoding) in blob.lower():
                            leaks.append(f"{path.relative_to(folder)} holds {secret!r} ({encoding})")
    return leaks


def test_the_scanner_finds_a_planted_identifier(tmp_path):
    """The scan itself must be able to fail: plant the id in a PNG text chunk and a gzip file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure().savefig(tmp_path / "x.png", metadata={"Title": PATIENT_ID})
    plt.close("all")
    (tmp_path / "y.json.gz").write_bytes(gzip.compress(NAME.encode()))
    leaks = _leaks(tmp_path)
    assert any("x.png" in leak for leak in leaks) and any("y.json.gz" in leak for leak in leaks)


@needs_data
@pytest.mark.slow
def test_no_identifier_reaches_any_output(tiny_model, tmp_path):
    three = [DATA / "dcmqi_ct3slice" / f"0{k}.dcm" for k in (1, 2, 3)]
    # convert: a drop-in whose one case is a DICOM series full of identifiers
    drop = tmp_path / "drop"
    series = _plant(three, drop / "images" / "case_a")
    import numpy as np
    import SimpleITK as sitk

    from sarco_nn.image_io import read_image

    image = read_image(series)
    mask = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    mask[1, 200:300, 150:350] = 1
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(image)
    write(mask_image, drop / "masks" / "case_a.nii.gz")
    write_clinical(drop / "clinical.csv", ["case_a"])
    ws = tmp_path / "ws"
    result = sarco_inprocess("convert", drop, "--name", "Private", "-w", ws)
    assert result.code == 0, result.output

    # predict: the planted series (single DICOM folder), a single planted file, and a NIfTI
    scans = tmp_path / "scans"
    _plant(three, scans / "series_b")
    image, _ = good_slice()
    write(image, scans / "plain_c.nii.gz")
    out = tmp_path / "pred"
    result = sarco_inprocess("predict", "-i", scans, "-o", out, "--fast", "--device", "cpu", "--l3-slice", "1",
                             "-w", tiny_model.workspace)
    assert "Traceback" not in result.output
    assert (out / "results.csv").is_file() and (out / "masks" / "series_b.nii.gz").is_file(), result.output
    for text in (result.output,):
        assert not [s for s in PLANTED if s.lower() in text.lower()]
    leaks = _leaks(ws / "nnUNet_raw") + _leaks(out)
    assert not leaks, "\n".join(leaks)
    shutil.rmtree(drop)


@pytest.mark.slow
def test_no_identifier_from_generated_dicom_reaches_any_output(tiny_model, tmp_path):
    """The same guarantee in a fresh clone: DICOM series generated with pydicom, identifiers planted
    in every file (no ../shared/data needed)."""
    import numpy as np
    import SimpleITK as sitk

    import dicom_factory
    from helpers import phantom_array
    from sarco_nn.image_io import read_image

    assert set(dicom_factory.PLANTED) >= set(PLANTED)  # one list of identifiers for both tests
    hu = phantom_array(nz=3, ny=64, nx=64, seed=4)
    drop = tmp_path / "drop"
    series = dicom_factory.write_series(drop / "images" / "case_a", hu)
    image = read_image(series)
    mask = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    mask[1] = (hu[1] > 20) & (hu[1] < 150)
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(image)
    write(mask_image, drop / "masks" / "case_a.nii.gz")
    write_clinical(drop / "clinical.csv", ["case_a"])
    ws = tmp_path / "ws"
    result = sarco_inprocess("convert", drop, "--name", "Private", "-w", ws)
    assert result.code == 0, result.output

    scans = tmp_path / "scans"
    dicom_factory.write_series(scans / "series_b", hu)
    single = dicom_factory.write_series(tmp_path / "one", hu[1:2])
    shutil.copyfile(single / "IM0000", scans / "single_d.dcm")
    image, _ = good_slice()
    write(image, scans / "plain_c.nii.gz")
    out = tmp_path / "pred"
    result = sarco_inprocess("predict", "-i", scans, "-o", out, "--fast", "--device", "cpu", "--l3-slice", "1",
                             "-w", tiny_model.workspace)
    assert "Traceback" not in result.output
    assert (out / "results.csv").is_file() and (out / "masks" / "series_b.nii.gz").is_file(), result.output
    assert not [s for s in dicom_factory.PLANTED if s.lower() in result.output.lower()]
    leaks = _leaks(ws / "nnUNet_raw") + _leaks(out)
    assert not leaks, "\n".join(leaks)
