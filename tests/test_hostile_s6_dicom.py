"""Hostile inputs, session 6 (HOSTILE_FINDINGS.md, h5): DICOM folders as PACS exports and anonymisers leave them.

- two reconstructions without SeriesInstanceUID at interleaved positions were stacked into one volume of
  alternating series (status ok, half the slices another kernel / phase);
- a scout (LOCALIZER) stored in the CT series refused the whole series as "not an axial acquisition";
- MONOCHROME1 was decoded inverted and refused as "outside the plausible CT range", naming no cause.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_factory import write_series
from helpers import phantom_array
from sarco_nn.errors import InputError
from sarco_nn.image_io import read_image


def _no_uid(ds, k) -> None:
    del ds.SeriesInstanceUID


def test_two_series_without_uid_at_interleaved_positions_are_refused(tmp_path):
    hu = phantom_array(nz=4)
    write_series(tmp_path, hu, edit=_no_uid, names=lambda k: f"A{k}")
    write_series(tmp_path, hu + 300, origin=(-20.0, -20.0, 101.25), edit=_no_uid, names=lambda k: f"B{k}")
    with pytest.raises(InputError, match="mixed series: InstanceNumber 1 occurs 2 times"):
        read_image(tmp_path)


def test_series_without_uid_told_apart_by_their_kernel(tmp_path):
    hu = phantom_array(nz=4)

    def kernel(name):
        def edit(ds, k):
            _no_uid(ds, k)
            ds.ConvolutionKernel = name
            ds.InstanceNumber = 2 * k + (name == "B70f")  # numbered as one series: only the kernel tells
        return edit

    write_series(tmp_path, hu, edit=kernel("B30f"), names=lambda k: f"A{k}")
    write_series(tmp_path, hu + 300, origin=(-20.0, -20.0, 101.25), edit=kernel("B70f"), names=lambda k: f"B{k}")
    with pytest.raises(InputError, match="2 different ConvolutionKernel"):
        read_image(tmp_path)


def test_one_series_without_uid_still_reads(tmp_path):
    hu = phantom_array(nz=4)
    write_series(tmp_path, hu, edit=_no_uid)
    assert read_image(tmp_path).GetSize()[2] == 4


def test_a_scout_in_the_series_is_left_out_not_the_series_refused(tmp_path):
    hu = phantom_array(nz=4)
    write_series(tmp_path, hu, series_uid="1.2.826.0.1.5")

    def scout(ds, k):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal topogram
    write_series(tmp_path, hu[:1], series_uid="1.2.826.0.1.5", names=lambda k: "SCOUT", edit=scout)
    image = read_image(tmp_path)
    assert image.GetSize() == (hu.shape[2], hu.shape[1], 4)
    assert np.array_equal(np.rint(sitk.GetArrayFromImage(image)), hu)


def test_monochrome1_is_refused_naming_the_cause(tmp_path):
    def mono1(ds, k):
        ds.PhotometricInterpretation = "MONOCHROME1"
    write_series(tmp_path, phantom_array(nz=3), edit=mono1)
    with pytest.raises(InputError, match="MONOCHROME1"):
        read_image(tmp_path)
