"""Hostile-user pass, session 15 helper a (HOSTILE_FINDINGS #150-): an empty DICOM character set, NaN
weights and bad check-weights / train-l3 / predict options, an empty vertebra map, an implausible height."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import sarco_inprocess
from helpers import make_image, muscle_of, phantom_array, write
from sarco_nn import api
from sarco_nn.errors import SarcoError
from sarco_nn.models.pretrained import export_encoder
from sarco_nn.models.smit import SMITConfig, SMITEncoder

TINY = SMITConfig(embed_dim=12, drop_path=0.0)


def _one_line_refusal(*args, needles: tuple[str, ...]) -> str:
    """`sarco ARGS` (its real main()) refused in one error line: exit != 0, no traceback, each needle named."""
    result = sarco_inprocess(*args)  # an unexpected exception escapes and fails the test
    assert result.code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- #150 DICOM SEG character set
def _series_with_charset(folder: Path, charset) -> None:
    import pydicom

    from test_review_dicom_seg import _series

    _series(folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = charset
        ds.save_as(path)


@pytest.mark.parametrize("charset", ["", ["", "ISO 2022 IR 100"]])
def test_an_empty_specific_character_set_gives_a_valid_seg(tmp_path, charset):
    hd = pytest.importorskip("highdicom")
    from test_review_dicom_seg import _mask_like

    from sarco_nn.image_io import read_image
    from sarco_nn.review.dicom_seg import write_dicom_seg

    series = tmp_path / "series"
    _series_with_charset(series, charset)
    mask, _ = _mask_like(read_image(series))
    result = write_dicom_seg(series, mask, tmp_path / "seg.dcm")  # before: ValueError '' is not a valid ...
    seg = hd.seg.segread(str(result.path))
    assert str(seg.PatientName) == "Doe^Jane" and int(seg.NumberOfFrames) == result.n_frames == 2
    declared = seg.get("SpecificCharacterSet")
    assert declared in (None, "") if charset == "" else list(declared) == ["ISO 2022 IR 6", "ISO 2022 IR 100"]


def test_a_bogus_character_set_is_a_one_line_note_in_the_batch_row(tmp_path):
    pytest.importorskip("highdicom")
    from test_review_dicom_seg import _mask_like

    from sarco_nn.image_io import read_image
    from sarco_nn.review.dicom_seg import write_batch_segs

    series = tmp_path / "series"
    _series_with_charset(series, "LATIN-1")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    mask, _ = _mask_like(read_image(series))
    sitk.WriteImage(mask, str(out / "masks" / "s.nii.gz"))
    row = {"case_id": "s", "status": "ok", "mask": "masks/s.nii.gz", "input": str(series)}
    write_batch_segs(out, [(series, row)])
    assert row["dicom_seg"] == "" and not (out / "dicom_seg" / "s.dcm").exists()
    note = row["dicom_seg_note"]
    assert note.startswith("not written: ") and "'LATIN-1'" in note and "no DICOM character set" in note
    assert "unexpected" not in note and "\n" not in note


# --------------------------------------------------------------------------- #151/#152 check-weights
def _weights(path: Path, poison: float | None = None, config: SMITConfig = TINY) -> Path:
    encoder = SMITEncoder(1, 2, config)
    if poison is not None:
        with torch.no_grad():
            dict(encoder.named_parameters())["layers2.0.blocks.0.mlp.linear1.weight"].view(-1)[3] = poison
    export_encoder(encoder, path, dims=2)
    return path


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_not_reported_as_loadable(tmp_path, poison):
    from sarco_nn.models.pretrained import load_pretrained_encoder

    path = _weights(tmp_path / "diverged.pt", poison)
    result = api.check_weights(path)
    assert not result.loadable and "NaN or infinite" in result.error
    assert "layers2.0.blocks.0.mlp.linear1" in result.error
    assert result.report.non_finite == ["layers2.0.blocks.0.mlp.linear1.weight"]
    res = sarco_inprocess("check-weights", path)
    assert res.code == 1 and "NaN or infinite" in res.stderr and res.stderr.startswith("error: "), res.output
    with pytest.raises(SarcoError, match="NaN or infinite"):  # train --pretrained takes the same rule
        load_pretrained_encoder(SMITEncoder(1, 2, TINY), path)
    assert api.check_weights(_weights(tmp_path / "fine.pt")).loadable


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "inf"])
def test_min_fraction_outside_0_to_1_is_refused_by_the_command(tmp_path, value):
    path = _weights(tmp_path / "fine.pt")
    _one_line_refusal("check-weights", path, "--min-fraction", value,
                      needles=("--min-fraction must be a fraction from 0 to 1",))
    with pytest.raises(SarcoError, match="min_fraction must be"):
        api.check_weights(path, min_fraction=float(value))


# --------------------------------------------------------------------------- #156 check-weights --tissues
def test_check_weights_tissues_checks_the_multi_tissue_network_of_the_preset(tmp_path):
    from sarco_nn.presets import load_preset, preset_for_dataset, smit_network_config

    one = smit_network_config(load_preset("cpu"))
    four = smit_network_config(preset_for_dataset(load_preset("cpu"), 4))
    assert one != four  # the cpu preset widens the network for several tissues, so the check must follow
    muscle = _weights(tmp_path / "muscle.pt", config=one)
    tissues = _weights(tmp_path / "tissues.pt", config=four)
    for path, n, loads in ((muscle, 1, True), (muscle, 4, False), (tissues, 4, True), (tissues, 1, False)):
        res = sarco_inprocess("check-weights", path, "-p", "cpu", "--tissues", n, "--json")
        assert (res.code == 0) is loads, (path.name, n, res.output)
        data = json.loads(res.stdout)
        assert data["loadable"] is loads
        assert data["checked_against"].endswith("for 4 tissues") is (n == 4)
    _one_line_refusal("check-weights", muscle, "--tissues", "0", "-p", "cpu", needles=("--tissues must be at least 1",))
    _one_line_refusal("check-weights", muscle, "--tissues", "4", needles=("needs --preset",))


# --------------------------------------------------------------------------- #153 train-l3
@pytest.mark.parametrize("options, needle", [
    (["--steps", "0"], "steps=0"), (["--steps", "-3"], "steps=-3"),
    (["--max-minutes", "0"], "max_minutes=0.0"), (["--max-minutes", "-1"], "max_minutes=-1.0"),
    (["--max-minutes", "nan"], "max_minutes=nan"), (["--phantoms", "-2"], "phantoms=-2"),
    (["--validation", "nan"], "validation=nan"), (["--validation", "1"], "validation=1.0"),
])
def test_train_l3_refuses_bad_settings_before_any_work(tmp_path, monkeypatch, options, needle):
    import sarco_nn.l3.train_l3 as train_l3

    def no_work(*args, **kwargs):
        raise AssertionError("volumes were read before the settings were checked")

    monkeypatch.setattr(train_l3, "train_from_sources", no_work)
    monkeypatch.setattr(train_l3, "cases_from_phantoms", no_work)
    base = ["train-l3", "--phantoms", "2", "--steps", "5", "--model-dir", tmp_path / "loc"]
    _one_line_refusal(*base, *options, needles=(needle,))
    assert not (tmp_path / "loc").exists()


# --------------------------------------------------------------------------- #154 empty vertebra map
def test_an_all_zero_vertebra_map_is_a_failed_row_saying_so(tmp_path):
    from sarco_nn.inference import _failure_reason, _prepare_case, _ReadContext, discover_scans
    from sarco_nn.status import Status, Verdict

    volume = write(make_image(phantom_array(nz=6, ny=48, nx=48)), tmp_path / "scans" / "abd.nii.gz")
    blank = write(make_image(np.zeros((6, 48, 48), np.uint8)), tmp_path / "blank.nii.gz")
    folder = tmp_path / "totalseg"  # TotalSegmentator's folder: vertebrae_L3.nii.gz empty when L3 is not in view
    write(make_image(np.zeros((6, 48, 48), np.uint8)), folder / "vertebrae_L3.nii.gz")
    for l3_from, named in ((blank, "blank.nii.gz"), (folder, "vertebrae_L3.nii.gz")):
        context = _ReadContext(l3_slice=None, l3_rows={}, l3_from=l3_from, locator="auto", l3_rule="centroid",
                               l3_dir=tmp_path / "no_localizer", slab=1, predictor=None)
        case = _prepare_case(discover_scans(volume)[0], context)
        assert case.error is not None
        reason = _failure_reason(case.error, tmp_path / "out")
        assert Verdict([reason]).status is Status.FAILED
        assert reason.code == "l3_not_in_view", reason  # before: unreadable, "binary mask, not vertebra labels"
        assert "vertebra map is empty" in reason.message and named in reason.message


def test_measure_with_an_all_zero_vertebra_map_says_it_is_empty(tmp_path):
    hu = phantom_array(nz=6, ny=48, nx=48)
    mask = write(make_image(muscle_of(hu)), tmp_path / "mask.nii.gz")
    blank = write(make_image(np.zeros(hu.shape, np.uint8)), tmp_path / "blank.nii.gz")
    _one_line_refusal("measure", mask, "--vertebrae", blank, "--level", "L1", "--level", "L3",
                      needles=("vertebra map is empty", "blank.nii.gz"))


# --------------------------------------------------------------------------- #157 --slab
@pytest.mark.parametrize("slab", [0, -2])
def test_predict_refuses_slab_below_1_before_the_model_loads(tmp_path, monkeypatch, slab):
    import sarco_nn.model_store as model_store

    def no_model(*args, **kwargs):
        raise AssertionError("the model was looked up before --slab was checked")

    monkeypatch.setattr(model_store, "find_model", no_model)
    write(make_image(phantom_array(nz=1, ny=64, nx=64)[0], spacing=(0.8, 0.8)), tmp_path / "in" / "a.nii.gz")
    _one_line_refusal("predict", "-i", tmp_path / "in", "-o", tmp_path / "out", "--slab", slab, "-w", tmp_path / "ws",
                      needles=(f"--slab {slab} must be a whole number of slices",))
    assert not (tmp_path / "out").exists()
    with pytest.raises(SarcoError, match="--slab"):
        api.PredictOptions(slab=slab)
    assert api.PredictOptions(slab=np.int64(3)).slab == 3


# --------------------------------------------------------------------------- #155 height
@pytest.mark.parametrize("height", ["0.5", "0.53"])
def test_measure_refuses_a_height_below_the_shortest_adult_as_clinical_csv_does(tmp_path, height):
    from sarco_nn.clinical import ClinicalDataError, read_clinical_csv

    hu = phantom_array(nz=1, ny=64, nx=64)[0]
    mask = write(make_image(muscle_of(hu), spacing=(0.8, 0.8)), tmp_path / "mask.nii.gz")
    _one_line_refusal("measure", mask, "--sex", "F", "--height", height, "--json",
                      needles=(f"--height {height} is below 0.54 m",))  # before (0.5): status ok-or-review with an SMI
    csv_path = tmp_path / "clinical.csv"
    csv_path.write_text(f"case_id,sex,height_m\np1,F,{height}\n", encoding="utf-8")
    with pytest.raises(ClinicalDataError, match="is below 0.54 m"):  # predict's clinical.csv: the one rule
        read_clinical_csv(csv_path)
    ok = sarco_inprocess("measure", mask, "--sex", "F", "--height", "0.55", "--json")
    assert ok.code == 0 and json.loads(ok.stdout)["smi_cm2_m2"] is not None


# ---------------------------------------------------------------------------- lead: the two findings left open
def test_l3_from_beside_a_locator_that_finds_l3_itself_is_refused(tmp_path):
    """#158: `--l3-from V --locator model` never read V; now refused before any scan is read."""
    from sarco_nn.errors import SarcoError
    from sarco_nn.predict_options import PredictOptions

    for locator in ("model", "totalsegmentator"):
        with pytest.raises(SarcoError, match="would never be read"):
            PredictOptions(l3_from=tmp_path, locator=locator)
    for locator in ("auto", "vertebrae"):
        assert PredictOptions(l3_from=tmp_path, locator=locator).l3_from == tmp_path


def test_pretrain_refuses_tissues_without_a_preset_before_any_volume_is_read(tmp_path):
    """#159: `sarco pretrain --tissues 4` without --preset ignored the count (the default encoder is the
    muscle-only one); check-weights and pretrain now share one rule."""
    from sarco_nn import api
    from sarco_nn.errors import SarcoError

    with pytest.raises(SarcoError, match="tissues 4 needs preset"):
        api.pretrain(tmp_path / "missing", output=tmp_path / "out", tissues=4)
    with pytest.raises(SarcoError, match="--tissues 4 needs --preset"):
        api.check_weights(tmp_path / "missing.pt", dims=2, tissues=4, cli_names=True)
    assert not (tmp_path / "out").exists()
