"""Fuzzing the readers and the checkpoint loader: the only allowed outcomes are success or SarcoError.

Hypothesis drives `read_image` / `read_label_image` with random bytes under every accepted file
ending, with mutated real files (NIfTI and DICOM), and with random geometry; and
`read_clinical_csv` with random text. Bounded by max_examples and a per-example deadline.
A crafted malicious pickle must be refused by both checkpoint paths without running its payload.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import DATA, make_image, phantom_array, write
from sarco_nn.clinical import read_clinical_csv
from sarco_nn.errors import SarcoError
from sarco_nn.image_io import load_axial_slice, read_image, read_label_image

FUZZ = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow], derandomize=True)
SUFFIXES = [".nii.gz", ".nii", ".mha", ".nrrd", ".dcm", ""]


def _clean(call, *args) -> None:
    try:
        call(*args)
    except SarcoError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()


_GOOD: dict[str, bytes] = {}


def _good_bytes(suffix: str) -> bytes:
    if suffix not in _GOOD:
        with tempfile.TemporaryDirectory() as tmp:
            path = write(make_image(phantom_array(nz=2, ny=20, nx=24)), Path(tmp) / f"g{suffix}")
            _GOOD[suffix] = path.read_bytes()
    return _GOOD[suffix]


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_never_crash_the_readers(tmp_path, data, suffix):
    path = tmp_path / f"f{suffix or '_noext'}"
    path.write_bytes(data)
    _clean(read_image, path)
    _clean(read_label_image, path)


@FUZZ
@given(suffix=st.sampled_from([".nii.gz", ".nii", ".mha", ".nrrd"]), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_mutated_image_files_never_crash_the_readers(tmp_path, suffix, cut, flips):
    data = bytearray(_good_bytes(suffix))
    if suffix != ".nii.gz":  # headers are where parsers break: aim most flips at the first 400 bytes
        for where, value in flips:
            data[int(where * min(len(data) - 1, 400))] = value
    data = bytes(data[: max(1, int(len(data) * (0.5 + cut / 2)))]) if cut < 0.9 else bytes(data)
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    _clean(load_axial_slice, path, 0)
    _clean(read_label_image, path)


@pytest.mark.skipif(not DATA.is_dir(), reason="shared/data (real CT test data) is absent")
@FUZZ
@given(cut=st.integers(0, 526474), flips=st.lists(st.tuples(st.integers(128, 1400), st.integers(0, 255)), max_size=6))
def test_mutated_dicom_never_crashes_the_reader(tmp_path, cut, flips):
    data = bytearray((DATA / "dcmqi_ct3slice" / "01.dcm").read_bytes())
    for where, value in flips:
        data[where] = value
    folder = tmp_path / "series"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "IM1").write_bytes(bytes(data[: max(cut, 132)]))
    shutil.copyfile(DATA / "dcmqi_ct3slice" / "02.dcm", folder / "IM2")
    _clean(read_image, folder)
    _clean(read_image, folder / "IM1")


_GENERATED_SERIES: list[bytes] = []


def _generated_series() -> list[bytes]:
    """Two files of a generated DICOM series (dicom_factory): the fuzz seed of a fresh clone."""
    if not _GENERATED_SERIES:
        import tempfile

        from dicom_factory import write_series

        with tempfile.TemporaryDirectory() as tmp:
            folder = write_series(Path(tmp) / "s", phantom_array(nz=2, ny=32, nx=32))
            _GENERATED_SERIES.extend((folder / name).read_bytes() for name in ("IM0000", "IM0001"))
    return _GENERATED_SERIES


@FUZZ
@given(cut=st.integers(0, 3000), flips=st.lists(st.tuples(st.integers(128, 1200), st.integers(0, 255)), max_size=6))
def test_mutated_generated_dicom_never_crashes_the_reader(tmp_path, cut, flips):
    first, second = _generated_series()
    data = bytearray(first)
    for where, value in flips:
        data[where % len(data)] = value
    folder = tmp_path / "series"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "IM1").write_bytes(bytes(data[: max(cut, 132)]))
    (folder / "IM2").write_bytes(second)
    _clean(read_image, folder)
    _clean(read_image, folder / "IM1")


@FUZZ
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 24), st.integers(1, 24)),
       spacing=st.tuples(*[st.floats(1e-3, 50)] * 3), origin=st.tuples(*[st.floats(-1e4, 1e4)] * 3),
       angle=st.floats(-180, 180), axis=st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]),
       dtype=st.sampled_from([np.int16, np.uint8, np.float32, np.int32]), scale=st.floats(-5000, 5000))
def test_random_geometry_never_crashes(tmp_path, shape, spacing, origin, angle, axis, dtype, scale):
    array = (np.random.default_rng(0).random(shape) * scale).astype(dtype)
    direction = sitk.VersorTransform(tuple(float(a) for a in axis), float(np.radians(angle))).GetMatrix()
    image = make_image(array, spacing=spacing, origin=origin, direction=direction)
    path = write(image, tmp_path / "g.nii.gz")
    for index in (None, 0, shape[0] - 1):
        _clean(load_axial_slice, path, index)


@FUZZ
@given(text=st.text(max_size=400), header=st.sampled_from(["case_id,sex,height_m\n", "case_id;sex;height_m\n", ""]))
def test_random_clinical_text_never_crashes(tmp_path, text, header):
    path = tmp_path / "clinical.csv"
    path.write_text(header + text, encoding="utf-8", errors="surrogatepass") if _encodable(header + text) \
        else path.write_bytes((header + text).encode("utf-8", "replace"))
    _clean(read_clinical_csv, path)
    try:
        table = read_clinical_csv(path, strict=False)
    except SarcoError:
        return
    for record in table.values():
        assert record.sex in (None, "M", "F")
        assert record.height_m is None or 0 < record.height_m <= 3.0


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_clinical_bytes_never_crash(tmp_path, data):
    path = tmp_path / "clinical.csv"
    path.write_bytes(b"case_id,sex,height_m\n" + data)
    _clean(read_clinical_csv, path)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ----------------------------------------------------------------------- malicious checkpoints

_MARKER = Path(tempfile.gettempdir()) / "sarco_pickle_payload_ran"


class _Payload:
    """Unpickling this runs `touch MARKER` (what an attacker's checkpoint would do)."""

    def __reduce__(self):
        import os

        return (os.system, (f"touch {_MARKER}",))


def _malicious_checkpoint(path: Path) -> Path:
    import torch

    torch.save({"network_weights": {}, "init_args": {"configuration": "2d"}, "trainer_name": "SarcoSMITTrainer",
                "payload": _Payload()}, path)
    return path


def _plain_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"network_weights": _Payload()}))
    return path


@pytest.mark.parametrize("make", [_malicious_checkpoint, _plain_pickle])
def test_trainer_checkpoint_loader_refuses_a_malicious_pickle(tmp_path, make):
    from sarco_nn.models.checkpoints import load_trainer_checkpoint

    _MARKER.unlink(missing_ok=True)
    path = make(tmp_path / "checkpoint_final.pth")
    with pytest.raises(SarcoError, match="checkpoint") as info:
        load_trainer_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not _MARKER.exists(), "the pickle payload ran"


@pytest.mark.slow
def test_predict_refuses_a_model_with_a_malicious_checkpoint(tiny_model, tmp_path):
    """The predictor path: swap the trained model's checkpoint for a malicious one in a copy of the workspace."""
    from conftest import sarco_inprocess

    ws = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, ws)
    checkpoint = next((ws / "nnUNet_results").rglob("checkpoint_final.pth"))
    _MARKER.unlink(missing_ok=True)
    _malicious_checkpoint(checkpoint)
    scan = sorted((tiny_model.held / "images").iterdir())[0]
    result = sarco_inprocess("predict", "-i", scan, "-o", tmp_path / "pred", "--fast", "--device", "cpu", "-w", ws)
    assert not _MARKER.exists(), "the pickle payload ran"
    assert result.code == 2 and "Traceback" not in result.output, result.output
    assert len(result.error_lines()) == 1 and "checkpoint_final.pth" in result.error_lines()[0], result.output


def test_pretrained_encoder_loader_refuses_a_malicious_pickle(tmp_path):
    from sarco_nn.models import pretrained

    _MARKER.unlink(missing_ok=True)
    path = _malicious_checkpoint(tmp_path / "encoder.pt")
    with pytest.raises(SarcoError):
        pretrained.read_checkpoint_state_dict(path)
    assert not _MARKER.exists(), "the pickle payload ran"
