"""A full disk ends `convert` and `predict` with one line and leaves nothing that looks finished (#14)."""

from __future__ import annotations

import errno
import shutil

import pytest

from bad_inputs import good_slice, write_clinical
from conftest import sarco_inprocess
from helpers import write


def _drop(tmp_path):
    drop = tmp_path / "drop"
    image, mask = good_slice()
    for case in ("A", "B"):
        write(image, drop / "images" / f"{case}.nii.gz")
        write(mask, drop / "masks" / f"{case}.nii.gz")
    write_clinical(drop / "clinical.csv", ["A", "B"])
    return drop


def test_convert_on_a_full_disk_is_one_line_and_leaves_no_dataset(tmp_path, monkeypatch):
    import dataset_conversion.convert as convert

    def full(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: No space left on device")

    drop = _drop(tmp_path)
    monkeypatch.setattr(convert.sitk, "WriteImage", full)
    result = sarco_inprocess("convert", drop, "--name", "Full", "-w", tmp_path / "ws")
    assert "Traceback" not in result.output and result.code == 2, result.output
    assert len(result.error_lines()) == 1 and "disk full" in result.output
    raw = tmp_path / "ws" / "nnUNet_raw"
    assert not raw.is_dir() or not any(raw.iterdir())


def test_convert_metadata_write_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import dataset_conversion.convert as convert

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert, "_write_metadata", full)
    result = sarco_inprocess("convert", _drop(tmp_path), "--name", "Full", "-w", tmp_path / "ws")
    assert "Traceback" not in result.output and result.code == 2, result.output
    assert len(result.error_lines()) == 1 and "No space left" in result.output and "free disk space" in result.output
    assert not any((tmp_path / "ws" / "nnUNet_raw").iterdir())


@pytest.mark.slow
def test_predict_on_a_full_disk_stops_in_one_line_and_resumes(tiny_model, tmp_path, monkeypatch):
    from sarco_nn.batch import Journal

    scans = tmp_path / "scans"
    shutil.copytree(tiny_model.held / "images", scans)
    real_append = Journal.append
    calls = []

    def fill_up(self, key, row):
        calls.append(key)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(self, key, row)

    monkeypatch.setattr(Journal, "append", fill_up)
    args = ["predict", "-i", scans, "-o", tmp_path / "out", "--fast", "--device", "cpu", "-w", tiny_model.workspace]
    result = sarco_inprocess(*args)
    assert "Traceback" not in result.output and result.code == 2, result.output
    assert len(result.error_lines()) == 1 and "free disk space" in result.output
    monkeypatch.setattr(Journal, "append", real_append)
    again = sarco_inprocess(*args)
    assert again.code == 0, again.output
    import csv

    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    from helpers import accepted_and_measured

    assert len(rows) == 3 and all(accepted_and_measured(r) for r in rows), rows
