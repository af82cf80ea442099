"""`sarco_nn.api`: the public Python surface runs on generated phantoms and is documented like MONAI's."""

from __future__ import annotations

import csv
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from sarco_nn import api
from sarco_nn.errors import SarcoError

VERBS = ("convert", "plan", "train", "predict", "measure", "evaluate")
#: every public function: the six verbs and the rest of the `sarco` commands' api (tests/test_cli_api.py)
FUNCTIONS = tuple(n for n in api.__all__ if inspect.isfunction(getattr(api, n)))


@pytest.fixture(scope="module")
def drop(tmp_path_factory) -> Path:
    from dataset_conversion.phantom import write_dropin_dataset

    return write_dropin_dataset(tmp_path_factory.mktemp("api") / "drop", n_cases=2, seed=3, matrix=96)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_measure_returns_the_phantoms_true_area_smi_and_flag(drop):
    truth = _rows(drop / "truth.csv")[0]
    clinical = _rows(drop / "clinical.csv")[0]
    case = truth["case_id"]
    [m] = api.measure(drop / "masks" / f"{case}.nii.gz", image=drop / "images" / f"{case}.nii.gz",
                      sex=clinical["sex"], height_m=float(clinical["height_m"]), thresholds="paper")
    assert m.sma_cm2 == pytest.approx(float(truth["true_sma_cm2"]), rel=1e-6)
    assert m.smi_cm2_m2 == pytest.approx(m.sma_cm2 / float(clinical["height_m"]) ** 2)
    assert m.sarcopenic is bool(int(truth["sarcopenic_truth"])) and m.threshold_set == "paper"
    assert m.muscle_hu_mean is not None and -29 <= m.muscle_hu_mean <= 150 and m.hu_gate is None
    gated = api.measure(drop / "masks" / f"{case}.nii.gz", image=drop / "images" / f"{case}.nii.gz", hu_gate=True)[0]
    assert gated.hu_gate == (-29.0, 150.0) and gated.sma_cm2 <= m.sma_cm2


@pytest.mark.parametrize("kwargs, message", [
    ({"hu_gate": True}, "needs the CT"),
    ({"height_m": 162.0}, "centimetres"),
    ({"sex": "X"}, "not understood"),
    ({"weight_kg": -70.0}, "must be positive"),
    ({"height_m": 0.176}, "below 0.54 m"),  # HOSTILE_FINDINGS #81: SMI 4937.99, status ok
    ({"weight_kg": 7000.0}, "above 650 kg"),  # HOSTILE_FINDINGS #81: BMI 2197, martin's obese cut-off: flag flipped
    ({"weight_kg": 0.072}, "below 2 kg"),  # HOSTILE_FINDINGS #103: tonnes, BMI 0.02: martin's lower-BMI cut-offs
])
def test_measure_refuses_bad_options_with_a_fix(drop, kwargs, message):
    case = _rows(drop / "truth.csv")[0]["case_id"]
    with pytest.raises(SarcoError, match=message):
        api.measure(drop / "masks" / f"{case}.nii.gz", **kwargs)


def test_convert_writes_an_nnunet_raw_dataset_in_the_workspace(drop, tmp_path):
    result = api.convert(drop, name="ApiPhantoms", workspace=tmp_path / "ws")
    assert result.dataset_name == "Dataset501_ApiPhantoms" and result.n_cases == 2
    assert result.dataset_dir == tmp_path / "ws" / "nnUNet_raw" / "Dataset501_ApiPhantoms"
    assert len(list((result.dataset_dir / "imagesTr").glob("*_0000.nii.gz"))) == 2
    assert len(list((result.dataset_dir / "labelsTr").glob("*.nii.gz"))) == 2
    again = api.convert(drop, name="ApiPhantoms", dataset_id=501, overwrite=True, workspace=tmp_path / "ws")
    assert again.dataset_dir == result.dataset_dir


def test_evaluate_refuses_mixed_kinds():
    with pytest.raises(SarcoError, match="crossval"):
        api.evaluate("preds", reference="refs", crossval=True)
    with pytest.raises(SarcoError, match="required"):
        api.evaluate("preds")


def test_the_six_verbs_are_public():
    assert set(VERBS) <= set(FUNCTIONS)


@pytest.mark.parametrize("verb", FUNCTIONS)
def test_every_verb_is_public_typed_keyword_and_documented(verb):
    fn = getattr(api, verb)
    assert fn.__module__ == api.__name__
    assert inspect.signature(fn).return_annotation is not inspect.Signature.empty, f"api.{verb} has no return type"
    doc = inspect.getdoc(fn) or ""
    assert "Args:" in doc and "Example:" in doc and "Returns:" in doc, f"api.{verb} docstring lacks a section"
    args = doc.split("Args:")[1].split("Returns:")[0]
    params = inspect.signature(fn).parameters
    for name, param in params.items():
        assert f"{name}:" in args, f"api.{verb}: argument {name!r} is not documented under Args"
        assert param.annotation is not inspect.Parameter.empty, f"api.{verb}: {name!r} has no type"
    positional = [n for n, p in params.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert len(positional) <= 3, f"api.{verb} takes {positional} by position; options must be keywords"


@pytest.mark.parametrize("options", [api.TrainOptions, api.PredictOptions, api.MuscleMeasurement, api.PredictResult,
                                     api.WeightsCheck])
def test_option_dataclasses_document_every_field(options):
    doc = inspect.getdoc(options) or ""
    for name in options.__dataclass_fields__:
        assert f"{name}:" in doc, f"{options.__name__}.{name} is not documented"


def test_predict_options_are_the_librarys_one_list_of_options():
    """`api.PredictOptions` is what `inference.predict` runs with: a new option is one field, for every layer."""
    from sarco_nn import predict_options
    from sarco_nn.inference import predict

    assert api.PredictOptions is predict_options.PredictOptions
    assert list(inspect.signature(predict).parameters) == ["workspace", "inputs", "out_dir", "options", "changes"]


def test_merge_result_is_the_librarys_one_type():
    """`api.MergeResult` is `batch_merge.MergeResult` itself: one field list, no copy to keep in step."""
    from sarco_nn import batch_merge

    assert api.MergeResult is batch_merge.MergeResult and "MergeResult" in api.__all__


def test_importing_the_api_does_not_import_torch():
    probe = "import sys, sarco_nn.api; print([m for m in ('torch', 'nnunetv2') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_api_measure_follows_the_command_lines_rules(tmp_path):
    """api.measure is the CLI's code path: an implausible mask withholds the flag, BMI is exact."""
    import numpy as np
    import SimpleITK as sitk

    from sarco_nn import api

    tiny = np.zeros((20, 20), np.uint8)
    tiny[5:8, 5:8] = 1  # 0.09 cm²: no patient's L3 muscle
    image = sitk.GetImageFromArray(tiny)
    sitk.WriteImage(image, str(tmp_path / "tiny.nii.gz"))
    [m] = api.measure(tmp_path / "tiny.nii.gz", sex="woman", height_m=1.6)
    assert m.sarcopenic is None and m.status == "review" and "sma_below_floor" in [c for c, _ in m.reasons]

    # 1.60 m / 64 kg is BMI exactly 25: martin's men's cut-off is SMI < 53 there (not 43)
    big = np.zeros((200, 200), np.uint8)
    big[:, :120] = 1  # 24 000 px
    image = sitk.GetImageFromArray(big)
    image.SetSpacing((0.8, 0.8 * 50 * 2.56 / 153.6))  # 24 000 px × 0.8 × 0.667 mm² = 128 cm² → SMI 50 at 1.60 m
    sitk.WriteImage(image, str(tmp_path / "big.nii.gz"))
    [m] = api.measure(tmp_path / "big.nii.gz", sex="M", height_m=1.6, weight_kg=64, thresholds="martin")
    assert m.smi_cm2_m2 == pytest.approx(50.0, abs=1e-6) and m.status == "ok"
    assert m.sarcopenic is True  # 50 < 53 (BMI ≥ 25 band); the float BMI 24.999… would give 50 ≥ 43 → False


@pytest.mark.parametrize("call, name", [
    (lambda tmp: api.convert(tmp, name=5), "name=5"),
    (lambda tmp: api.convert(tmp, name="X", dataset_id="501"), "dataset_id='501'"),
    (lambda tmp: api.convert(tmp, name="X", keep_tissues="yes"), "keep_tissues='yes'"),
    (lambda tmp: api.plan(preset=None), "preset=None"),
    (lambda tmp: api.plan(preset="cpu", processes=2.5), "processes=2.5"),
    (lambda tmp: api.TrainOptions(epochs="5"), "epochs='5'"),
    (lambda tmp: api.TrainOptions(validate="no"), "validate='no'"),
    (lambda tmp: api.TrainOptions(num_gpus=True), "num_gpus=True"),
    (lambda tmp: api.pretrain(tmp, settings=[("dims", 2)]), "settings is list"),
    (lambda tmp: api.pretrain(tmp, resume="no"), "resume='no'"),
    (lambda tmp: api.locate_l3(tmp, rule=1), "rule=1"),
    (lambda tmp: api.train_l3(phantoms="3"), "phantoms='3'"),
    (lambda tmp: api.train_l3(phantoms=3, validation="0.2"), "validation='0.2'"),
    (lambda tmp: api.classify_train(0, epochs=2.0), "epochs=2.0"),
    (lambda tmp: api.classify_train(0, lr="1e-3"), "lr='1e-3'"),
    (lambda tmp: api.classify_predict(tmp, tmp, folds="01"), "folds='01'"),
    (lambda tmp: api.classify_predict(tmp, tmp, l3_slice=3.5), "l3_slice=3.5"),
    (lambda tmp: api.demo_data(tmp / "d", cases="4"), "cases='4'"),
    (lambda tmp: api.demo_data(tmp / "d", volumes=1), "volumes=1"),
])
def test_every_verb_refuses_an_argument_of_the_wrong_type_in_one_line(tmp_path, call, name):
    """A script's epochs="5" or volumes=1 is one SarcoError naming the argument and its type, before any work:
    nothing is written (no workspace, no demo folder) and no torch-deep TypeError."""
    with pytest.raises(SarcoError) as caught:
        call(tmp_path)
    text = str(caught.value)
    assert name in text and "\n" not in text.split("Fix")[0].strip()
    assert caught.value.fix and "pass" in caught.value.fix or "settings" in text
    assert not (tmp_path / "d").exists() and not (tmp_path / "sarco_workspace").exists()
