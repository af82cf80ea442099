"""Every `sarco` command is a thin wrapper over `sarco_nn.api`: it translates its options, calls the
api function and prints. So a script (the api) and the command line cannot disagree.

Each command is run through typer's CliRunner with its api function replaced by a recorder; the test
asserts the function was called, with the options translated as documented. A new command without
a case here fails `test_every_command_has_a_delegation_case`.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import typer.main
from typer.testing import CliRunner

from sarco_nn import api, cli
from sarco_nn.errors import SarcoError

ROOT = Path(__file__).resolve().parents[1]


class _Blank(dict):
    """A summary dict whose missing numbers print as n/a."""

    def __missing__(self, key):
        return None


def _summary(report_dir: Path) -> dict:
    return _Blank(report_dir=str(report_dir), n_cases=0, n_cases_in_statistics=0, n_cases_classified=0,
                  threshold_set="paper", excluded_from_statistics=[], failed_predictions=[], folds=[],
                  pooled=_Blank(fold="pooled", n=0))


def _measurement(**record: Any) -> api.MuscleMeasurement:
    base = dict(slice_index=0, sma_cm2=150.0, smi_cm2_m2=None, muscle_hu_mean=None, hu_gate=None, sarcopenic="unknown",
                threshold_set="paper", threshold="SMA<144 cm² (paper, M)", status="ok", reasons=[])
    base.update(record)
    return api.MuscleMeasurement(slice_index=0, sma_cm2=150.0, smi_cm2_m2=None, muscle_hu_mean=None, hu_gate=None,
                                 sarcopenic=None, threshold_set="paper", threshold=base["threshold"], record=base)


_LOCATION = SimpleNamespace(slice_index=3, stored_index=4, z_mm=-12.5, method="vertebrae", rule="centroid",
                            confidence=1.0, as_dict=lambda: {"slice_index": 3})
_PRETRAINED = SimpleNamespace(stopped_early=False, steps_done=2, epochs_done=1, encoder=Path("pre/encoder.pt"))
_CONVERTED = SimpleNamespace(dataset_name="Dataset501_X", n_cases=2, dataset_dir=Path("ws/raw/Dataset501_X"), notes=[], warnings=[])
_PLANNED = {"dataset": "Dataset501_X", "preset": "cpu", "plans": "sarcoPlans_cpu", "cases": 2,
            "median_inplane_spacing_mm": 0.8, "target_spacing_mm": 0.8, "patch_size": [256, 256], "batch_size": 2,
            "network": "smit", "normalization": "window"}


@dataclass
class Case:
    """argv of one command, the api function it must call, what that returns, and the call it must make."""

    argv: list[str]
    function: str
    returns: Callable[[Path], Any]
    expect: Callable[[Path, list[tuple[tuple, dict]]], None]
    exit_code: int = 0
    needs: list[str] = field(default_factory=list)


def _one(calls):
    assert len(calls) == 1, calls
    return calls[0]


def _expect_demo(tmp, calls):
    args, kw = _one(calls)
    assert args == (Path("d"),) and kw == dict(cases=3, seed=2, matrix=64, volumes=True, case_prefix="p", family="B")


def _expect_convert(tmp, calls):
    args, kw = _one(calls)
    assert args == (Path("drop"),) and kw == dict(name="X", dataset_id=7, overwrite=True, keep_tissues=True,
                                                  workspace=Path("ws"))


def _expect_plan(tmp, calls):
    args, kw = _one(calls)
    assert args == (None,) and kw == dict(preset="cpu", processes=2, workspace=Path("ws"))


def _expect_train(tmp, calls):
    assert [c[0][0] for c in calls] == ["0", "1", "2", "3", "4"]  # `5fold`: one api.train per fold
    (_, options), kw = calls[0]
    assert kw == {"workspace": Path("ws")}
    assert options == api.TrainOptions(dataset="X", trainer="nnunet", preset="cpu", epochs=3, iterations=4, device="cpu",
                                       continue_training=True, pretrained=Path("enc.pt"), num_gpus=2, val_best=True)


def _expect_postprocess(tmp, calls):
    assert _one(calls) == ((), dict(dataset="X", trainer="smit", preset="cpu", workspace=Path("ws")))


def _expect_predict(tmp, calls):
    (inputs, out, options), kw = _one(calls)
    assert (inputs, out, kw) == (Path("scans"), Path("out"), {"workspace": Path("ws")})
    assert options == api.PredictOptions(
        dataset="X", trainer="smit", preset="cpu", clinical_csv=Path("c.csv"), thresholds="prado", fast=True,
        device="cpu", l3_csv=Path("l3.csv"), l3_from=Path("vert"), locator="vertebrae", l3_rule="max-area",
        slab=3, hu_gate=True, overwrite=True, part=1, parts=2, dicom_seg=True)


def _expect_merge(tmp, calls):
    assert _one(calls) == (([Path("p0"), Path("p1")],), {"output": Path("all"), "allow_incomplete": True})


def _expect_measure(tmp, calls):
    args, kw = _one(calls)
    assert args == (Path("m.nii.gz"),)
    assert kw == dict(image=Path("ct.nii.gz"), slice_index=4, label=2, sex="F", height_m=1.62, weight_kg=60.0,
                      hu_gate=True, thresholds="martin", tissues=True, labels_file=Path("labels.json"), level="L4",
                      vertebrae=None, hu_convention="alberta", myosteatosis="martin_myosteatosis", cli_names=True)


def _expect_evaluate(tmp, calls):
    args, kw = _one(calls)
    assert args == (Path("preds"),)
    assert kw == dict(reference=Path("refs"), clinical=Path("c.csv"), output=tmp / "rep", thresholds="prado",
                      images=Path("imgs"), at_annotated=Path("ann"), crossval=False, dataset="X", trainer="smit",
                      label=3, workspace=Path("ws"), cli_names=True)


def _expect_check_weights(tmp, calls):
    assert _one(calls) == ((Path("enc.pt"),), dict(dims=3, min_fraction=0.5, preset="cpu", tissues=1,
                                                              cli_names=True))


def _expect_pretrain(tmp, calls):
    (folder,), kw = _one(calls)
    assert folder == Path("ct") and kw["output"] == Path("pre") and kw["preset"] == "cpu"
    assert (kw["device"], kw["resume"], kw["workers"], kw["progress"]) == ("cpu", True, 2, False)
    settings = kw["settings"]
    assert (settings["dims"], settings["epochs"], settings["crop_size"], settings["spacing_mm"], settings["seed"]) == (
        3, 7, 64, 1.5, 9)
    from sarco_nn.pretraining.config import PretrainConfig

    assert set(settings) < set(PretrainConfig.__dataclass_fields__)  # every CLI setting is a config field


def _expect_locate(tmp, calls):
    assert _one(calls) == ((Path("ct.nii.gz"),), dict(l3_from=Path("v.nii.gz"), rule="max-area", locator="model",
                                                        model_dir=Path("mdl"), thumbnail=Path("t.png"), level="L1",
                                                        workspace=Path("ws")))


def _expect_train_l3(tmp, calls):
    assert _one(calls) == ((Path("drop"),), dict(drop_dir=Path("orig"), phantoms=2, model_dir=Path("mdl"), steps=5,
                                                  max_minutes=1.5, validation=0.3, seed=4, level="L1",
                                                  workspace=Path("ws")))


def _expect_classify_train(tmp, calls):
    args, kw = _one(calls)
    assert args == ("1",) and kw.pop("log") is typer.echo
    assert kw == dict(arch="resnet50", weights=Path("w.pt"), unfreeze="head", epochs=2, batch_size=4, lr=0.01,
                      input_size=128, patience=3, balance="sampler", thresholds="prado", restart=True, device="cpu",
                      dataset="X", workspace=Path("ws"))


def _expect_classify_predict(tmp, calls):
    args, kw = _one(calls)
    assert args == (Path("scans"), Path("out")) and kw.pop("log") is typer.echo
    assert kw == dict(arch="resnet50", folds=["0", "2"], l3_slice=6, device="cpu", dataset="X", workspace=Path("ws"))


def _expect_classify_compare(tmp, calls):
    args, kw = _one(calls)
    assert args == () and kw.pop("log") is typer.echo
    assert kw == dict(arch="resnet50", trainer="smit", output=Path("cmp"), thresholds="prado", dataset="X",
                      workspace=Path("ws"))


CASES: dict[str, Case] = {
    "demo-data": Case(["demo-data", "d", "--cases", "3", "--seed", "2", "--matrix", "64", "--volumes",
                       "--case-prefix", "p", "--family", "B"], "demo_data", lambda t: Path("d"), _expect_demo),
    "convert": Case(["convert", "drop", "-n", "X", "--id", "7", "--overwrite", "--keep-tissues", "-w", "ws"], "convert",
                    lambda t: _CONVERTED, _expect_convert),
    "plan": Case(["plan", "--preset", "cpu", "--processes", "2", "-w", "ws"], "plan", lambda t: [_PLANNED], _expect_plan),
    "train": Case(["train", "5fold", "-d", "X", "-t", "nnunet", "-p", "cpu", "--epochs", "3", "--iterations", "4",
                   "--device", "cpu", "--continue", "--pretrained", "enc.pt", "--num-gpus", "2", "--val-best",
                   "-w", "ws"], "train", lambda t: t / "fold", _expect_train),
    "postprocess": Case(["postprocess", "-d", "X", "-t", "smit", "-p", "cpu", "-w", "ws"], "postprocess",
                        lambda t: {"postprocessing_fns": []}, _expect_postprocess),
    "predict": Case(["predict", "-i", "scans", "-o", "out", "--clinical", "c.csv", "--thresholds", "prado", "--fast",
                     "--l3-csv", "l3.csv", "--l3-from", "vert", "--locator", "vertebrae",
                     "--l3-rule", "max-area", "--slab", "3", "--hu-gate", "-d", "X", "-t", "smit", "-p", "cpu",
                     "--device", "cpu", "--overwrite", "--dicom-seg", "--part", "1", "--parts", "2", "-w", "ws"],
                    "predict", lambda t: api.PredictResult(t / "results.csv", 1, ("not_ct: not a CT",)), _expect_predict,
                    exit_code=1),
    "predict-merge": Case(["predict-merge", "p0", "p1", "-o", "all", "--allow-incomplete"], "predict_merge",
                          lambda t: api.MergeResult(t / "results.csv", 4, 2), _expect_merge),
    "measure": Case(["measure", "m.nii.gz", "--image", "ct.nii.gz", "--slice", "4", "--label", "2", "--sex", "F",
                     "--height", "1.62", "--weight", "60", "--hu-gate", "--thresholds", "martin", "--json", "--tissues",
                     "--labels", "labels.json", "--level", "L4", "--hu-convention", "alberta"], "measure",
                    lambda t: [_measurement()], _expect_measure),
    "evaluate": Case(["evaluate", "preds", "-r", "refs", "-c", "c.csv", "-o", "{tmp}/rep", "--thresholds", "prado",
                      "--images", "imgs", "--at-annotated", "ann", "-d", "X", "--trainer", "smit", "--label", "3",
                      "-w", "ws"], "evaluate", lambda t: _summary(t / "rep"), _expect_evaluate),
    "check-weights": Case(["check-weights", "enc.pt", "--dims", "3", "--min-fraction", "0.5", "-p", "cpu", "--json"],
                          "check_weights", lambda t: api.WeightsCheck(Path("enc.pt"), False, None, "unreadable"),
                          _expect_check_weights, exit_code=1),
    "pretrain": Case(["pretrain", "ct", "-o", "pre", "--dims", "3", "-p", "cpu", "--epochs", "7", "--crop-size", "64",
                      "--spacing", "1.5", "--device", "cpu", "--continue", "--workers", "2", "--seed", "9",
                      "--no-progress"], "pretrain", lambda t: _PRETRAINED, _expect_pretrain),
    "locate-l3": Case(["locate-l3", "ct.nii.gz", "--l3-from", "v.nii.gz", "--rule", "max-area", "--locator",
                       "model", "--model-dir", "mdl", "--thumbnail", "t.png", "--json", "--level", "L1", "-w", "ws"],
                      "locate_l3",
                      lambda t: _LOCATION, _expect_locate),
    "train-l3": Case(["train-l3", "drop", "--drop-dir", "orig", "--phantoms", "2", "--model-dir", "mdl", "--steps", "5",
                      "--max-minutes", "1.5", "--validation", "0.3", "--seed", "4", "--level", "L1", "-w", "ws"],
                     "train_l3",
                     lambda t: api.L3Training(t / "l3.pt", {"level": "L1",
                                                            "training": {"cases": 2, "steps": 5, "seconds": 1}}),
                     _expect_train_l3),
    "classify train": Case(["classify", "train", "1", "-a", "resnet50", "--weights", "w.pt", "--unfreeze", "head",
                            "--epochs", "2", "--batch-size", "4", "--lr", "0.01", "--input-size", "128", "--patience",
                            "3", "--balance", "sampler", "--thresholds", "prado", "--restart", "--device", "cpu",
                            "-d", "X", "-w", "ws"], "classify_train", lambda t: t / "fold_1", _expect_classify_train),
    "classify predict": Case(["classify", "predict", "-i", "scans", "-o", "out", "-a", "resnet50", "--folds", "0, 2",
                              "--l3-slice", "6", "--device", "cpu", "-d", "X", "-w", "ws"], "classify_predict",
                             lambda t: api.ClassifierPredictions(t / "predictions.csv", 0), _expect_classify_predict),
    "classify compare": Case(["classify", "compare", "-a", "resnet50", "-t", "smit", "-o", "cmp", "--thresholds",
                              "prado", "-d", "X", "-w", "ws"], "classify_compare",
                             lambda t: {"rows": [], "missed_sarcopenic": {"classifier": []}}, _expect_classify_compare),
}


def _command_paths(command, prefix: tuple[str, ...] = ()) -> set[str]:
    if hasattr(command, "commands"):  # a group (typer vendors its own click)
        return set().union(*(_command_paths(sub, (*prefix, name)) for name, sub in command.commands.items()))
    return {" ".join(prefix)}


def test_every_command_has_a_delegation_case():
    assert _command_paths(typer.main.get_command(cli.app)) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_command_delegates_to_its_api_function(name, tmp_path, monkeypatch):
    case = CASES[name]
    calls: list[tuple[tuple, dict]] = []

    def recorder(*args, **kwargs):
        calls.append((args, kwargs))
        return case.returns(tmp_path)

    assert case.function in api.__all__
    monkeypatch.setattr(api, case.function, recorder)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    result = CliRunner().invoke(cli.app, argv)
    assert result.exit_code == case.exit_code, (result.output, result.exception)
    case.expect(tmp_path, calls)


def test_command_output_comes_from_the_api_result(tmp_path, monkeypatch):
    """What the command prints is the api's answer (predict's per-input errors, measure's JSON record)."""
    monkeypatch.setattr(api, "predict", lambda *a, **k: api.PredictResult(tmp_path / "results.csv", 2,
                                                                          ("not_ct: a", "unreadable: b")))
    result = CliRunner().invoke(cli.app, ["predict", "-i", "x", "-o", "y"])
    assert result.exit_code == 1
    assert "error: not_ct: a" in result.stderr and "error: unreadable: b" in result.stderr
    assert f"2 case(s) failed; see {tmp_path / 'errors.log'}" in result.stderr

    monkeypatch.setattr(api, "measure", lambda *a, **k: [_measurement(n_pixels=9)])
    out = json.loads(CliRunner().invoke(cli.app, ["measure", "m.nii.gz", "--json"]).stdout)
    assert isinstance(out, dict) and out["n_pixels"] == 9  # one slice of a 2-D mask: one object


def test_measure_passes_several_levels_and_the_vertebrae_to_the_api(monkeypatch):
    """`--level L1 --level L3 --vertebrae V`: the api gets both levels (in order) and the labels; the
    rows it returns are printed one per (slice, level), each naming its level."""
    calls: list[dict] = []
    from dataclasses import replace

    rows = [replace(_measurement(slice_index=s, level=lv), level=lv) for s, lv in ((40, "L1"), (20, "L3"))]
    monkeypatch.setattr(api, "measure", lambda *a, **k: calls.append(k) or rows)
    result = CliRunner().invoke(cli.app, ["measure", "m.nii.gz", "--level", "L1", "--level", "l3", "--vertebrae",
                                          "v.nii.gz"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert calls[0]["level"] == ["L1", "l3"] and calls[0]["vertebrae"] == Path("v.nii.gz")
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("slice")] == [
        "slice 40 (L1)", "slice 20 (L3)"]
    json_out = json.loads(CliRunner().invoke(cli.app, ["measure", "m.nii.gz", "--level", "L1", "--level", "L3",
                                                       "--vertebrae", "v.nii.gz", "--json"]).stdout)
    assert [o["level"] for o in json_out] == ["L1", "L3"]  # several levels: always a list


#: What a command module may import besides the api: typer/stdlib, option defaults, the error the
#: runner prints, and what translates CLI syntax (`5fold`) or reads the pretraining defaults for --help.
ALLOWED_COMMAND_IMPORTS = {
    "sarco_nn.api", "sarco_nn.commands", "sarco_nn.constants", "sarco_nn.status", "sarco_nn.thresholds",
    "sarco_nn.errors.SarcoError",
    "sarco_nn.training.run.expand_folds", "sarco_nn.pretraining.config.PretrainConfig",
}


def test_commands_import_only_the_api_and_option_defaults():
    """A command that imported a library function could do the work itself, and drift from the api."""
    found = set()
    for path in [ROOT / "sarco_nn" / "cli.py", *sorted((ROOT / "sarco_nn" / "commands").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                    "sarco_nn", "dataset_conversion"):
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    if not any(name == a or name.startswith(a + ".") for a in ALLOWED_COMMAND_IMPORTS):
                        found.add((path.name, name))
            elif isinstance(node, ast.Import):
                found |= {(path.name, a.name) for a in node.names if a.name.split(".")[0] in ("sarco_nn", "torch")}
    assert found == set(), f"commands importing the library directly: {sorted(found)}"


# ------------------------------------------------------------------ CLI and API agree (bugs found)
def test_convert_id_zero_is_refused_on_both_paths(tmp_path):
    """`sarco convert --id 0` once took the next free id (`0 or next`), api.convert refused it."""
    from dataset_conversion.phantom import write_dropin_dataset

    drop = write_dropin_dataset(tmp_path / "drop", n_cases=1, seed=1, matrix=64)
    with pytest.raises(SarcoError, match="outside 1..999"):
        api.convert(drop, name="Z", dataset_id=0, workspace=tmp_path / "ws")
    result = CliRunner().invoke(cli.app, ["convert", str(drop), "-n", "Z", "--id", "0", "-w", str(tmp_path / "ws")])
    assert isinstance(result.exception, SarcoError) and "outside 1..999" in str(result.exception)
    assert not list((tmp_path / "ws" / "nnUNet_raw").glob("Dataset*"))


def test_plan_without_a_dataset_means_the_same_on_both_paths(tmp_path, monkeypatch):
    """api.plan(None) once planned 'the only dataset' (re-planning it); `sarco plan` plans every dataset
    not yet planned with the preset. Both now plan the unplanned ones, and nothing when all are."""
    import sarco_nn.planning as planning
    from sarco_nn.presets import plans_identifier

    ws = tmp_path / "ws"
    for name in ("Dataset501_A", "Dataset502_B"):
        (ws / "nnUNet_raw" / name).mkdir(parents=True)
        (ws / "nnUNet_raw" / name / "dataset.json").write_text("{}")
    (ws / "nnUNet_preprocessed" / "Dataset501_A").mkdir(parents=True)
    (ws / "nnUNet_preprocessed" / "Dataset501_A" / f"{plans_identifier('cpu')}.json").write_text("{}")
    planned: list[str] = []
    monkeypatch.setattr(planning, "plan_dataset", lambda w, name, preset, processes: planned.append(name) or {
        **_PLANNED, "dataset": name})
    assert [s["dataset"] for s in api.plan(preset="cpu", workspace=ws)] == ["Dataset502_B"]
    (ws / "nnUNet_preprocessed" / "Dataset502_B").mkdir(parents=True)
    (ws / "nnUNet_preprocessed" / "Dataset502_B" / f"{plans_identifier('cpu')}.json").write_text("{}")
    assert api.plan(preset="cpu", workspace=ws) == []
    result = CliRunner().invoke(cli.app, ["plan", "--preset", "cpu", "-w", str(ws)])
    assert result.exit_code == 0 and "every dataset is already planned" in result.stdout
    assert planned == ["Dataset502_B"]


def test_api_measure_takes_every_option_of_the_command(tmp_path):
    """api.measure once lacked the body-composition options and the HU convention, so a script could
    not get what `sarco measure --tissues --hu-convention alberta` prints; now both are one call."""
    import numpy as np
    import SimpleITK as sitk

    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:50] = 1  # muscle
    mask[40:50, 10:50] = 4  # SAT
    ct = np.where(mask == 1, 40, np.where(mask == 4, -100, -1000)).astype(np.int16)
    ct[10:12, 10:50] = 300  # muscle pixels outside the muscle HU gate
    for array, name in ((mask, "m.nii.gz"), (ct, "ct.nii.gz")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8))
        sitk.WriteImage(image, str(tmp_path / name))
    args = [str(tmp_path / "m.nii.gz"), "--image", str(tmp_path / "ct.nii.gz"), "--hu-convention", "alberta",
            "--tissues", "--json"]
    printed = json.loads(CliRunner().invoke(cli.app, ["measure", *args]).stdout)
    [m] = api.measure(tmp_path / "m.nii.gz", image=tmp_path / "ct.nii.gz", hu_convention="alberta", tissues=True)
    assert dict(m.record) == printed and m.hu_gate == (-29.0, 150.0)  # alberta gates the SMA path as well
    assert m.sma_cm2 == pytest.approx(18 * 40 * 0.64 / 100) and printed["sat_area_cm2"] == pytest.approx(400 * 0.64 / 100)
    with pytest.raises(SarcoError, match="height_m 162.0 looks like centimetres"):  # the api's own argument name
        api.measure(tmp_path / "m.nii.gz", height_m=162.0)
    result = CliRunner().invoke(cli.app, ["measure", str(tmp_path / "m.nii.gz"), "--height", "162"])
    assert "--height 162.0 looks like centimetres" in str(result.exception)
    with pytest.raises(SarcoError, match="hu_gate contradicts hu_convention label"):
        api.measure(tmp_path / "m.nii.gz", image=tmp_path / "ct.nii.gz", hu_gate=True, hu_convention="label")


def test_measure_reorients_the_mask_once_for_the_json_shape(tmp_path, monkeypatch):
    """The JSON shape (object vs list) comes from the stack already measured, not a second reorientation."""
    import numpy as np
    import SimpleITK as sitk

    import sarco_nn.measure as measure_module

    vol = np.zeros((3, 32, 32), np.uint8)
    vol[1, 5:20, 5:20] = 1
    image = sitk.GetImageFromArray(vol)
    sitk.WriteImage(image, str(tmp_path / "vol.nii.gz"))
    stacks = []
    original = measure_module.axial_stack
    monkeypatch.setattr(measure_module, "axial_stack", lambda *a, **k: stacks.append(1) or original(*a, **k))
    out = json.loads(CliRunner().invoke(cli.app, ["measure", str(tmp_path / "vol.nii.gz"), "--json"]).stdout)
    assert isinstance(out, list) and len(out) == 1  # a 3-slice volume: a list, even with one labelled slice
    assert len(stacks) == 2  # measure_image's and measure_objects' (was 3: a third only for the JSON shape)


def test_the_api_never_imports_the_command_line():
    """cli/commands → api → library: the api is usable without typer and cannot call back into a command."""
    tree = ast.parse((ROOT / "sarco_nn" / "api.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not {m for m in imported if m in ("typer", "sarco_nn.cli")  # not sarco_nn.clinical
                or m.startswith(("sarco_nn.cli.", "sarco_nn.commands"))}


#: each command with only its required arguments: every option it then passes must be the api's default
MINIMAL: dict[str, list[str]] = {
    "demo-data": ["demo-data", "d"], "convert": ["convert", "drop", "-n", "X"], "plan": ["plan"],
    "train": ["train", "0"], "postprocess": ["postprocess"], "predict": ["predict", "-i", "s", "-o", "o"],
    "predict-merge": ["predict-merge", "p0", "-o", "all"], "measure": ["measure", "m.nii.gz", "--json"],
    "evaluate": ["evaluate", "preds", "-r", "refs", "-o", "{tmp}/rep"], "check-weights": ["check-weights", "e.pt"],
    "pretrain": ["pretrain", "ct"], "locate-l3": ["locate-l3", "ct.nii.gz", "--json"], "train-l3": ["train-l3", "d"],
    "classify train": ["classify", "train", "0"], "classify predict": ["classify", "predict", "-i", "s", "-o", "o"],
    "classify compare": ["classify", "compare"],
}


GIVEN = {"evaluate": ("reference", "output")}  # required on the command line, optional keywords of the api


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, Path) and isinstance(default, str):
        return value == Path(default)
    return value == default


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_command_defaults_are_the_api_defaults(name, tmp_path, monkeypatch):
    """`sarco X` without options behaves as `api.X` without keywords: the two cannot drift apart."""
    import inspect

    assert set(MINIMAL) == set(CASES)
    case = CASES[name]
    function = getattr(api, case.function)
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(api, case.function, lambda *a, **k: calls.append((a, k)) or case.returns(tmp_path))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in MINIMAL[name]]
    result = CliRunner().invoke(cli.app, argv)
    assert result.exit_code == case.exit_code, (result.output, result.exception)
    args, kwargs = calls[0]
    params = inspect.signature(function).parameters
    differs = {k: (v, params[k].default) for k, v in kwargs.items()
               if k not in ("cli_names", "log", "echo", "settings", *GIVEN.get(name, ())) and params[k].default is not inspect.Parameter.empty
               and not _same(v, params[k].default)}
    for value in args:  # an options dataclass given by position: its defaults
        if isinstance(value, (api.TrainOptions, api.PredictOptions)):
            differs.update({f: (getattr(value, f), getattr(type(value)(), f)) for f in value.__dataclass_fields__
                            if getattr(value, f) != getattr(type(value)(), f)})
    assert differs == {}, f"sarco {name}: options whose CLI default is not the api's: {differs}"


def test_train_options_cover_every_library_parameter():
    """`sarco train --num-gpus/--val-best` once had no api counterpart; a new train_fold option must reach both."""
    import inspect

    from sarco_nn.training.run import train_fold

    library = set(inspect.signature(train_fold).parameters) - {"workspace", "fold", "settings"}
    assert library == set(api.TrainOptions.__dataclass_fields__)


def test_api_train_and_evaluate_forward_what_the_command_gives(tmp_path, monkeypatch):
    """The options the CLI once passed straight to the library (num_gpus, val_best, evaluate --label) reach it via the api."""
    import sarco_nn.evaluation.evaluate as evaluation
    import sarco_nn.training.run as run

    seen: dict[str, dict] = {}
    monkeypatch.setattr(run, "train_fold", lambda ws, fold, **kw: seen.setdefault("train", {"fold": fold, **kw}))
    monkeypatch.setattr(evaluation, "evaluate_folder", lambda *a, **kw: seen.setdefault("folder", kw))
    monkeypatch.setattr(evaluation, "evaluate_crossval", lambda *a, **kw: seen.setdefault("crossval", kw))
    api.train("all", api.TrainOptions(num_gpus=2, val_best=True), workspace=tmp_path)
    assert seen["train"]["fold"] == "all" and seen["train"]["num_gpus"] == 2 and seen["train"]["val_best"] is True
    api.evaluate("p", reference="r", label=4)
    api.evaluate(crossval=True, label=5, workspace=tmp_path)
    assert seen["folder"]["label"] == 4 and seen["crossval"]["label"] == 5
    assert run.expand_folds("5fold") == ["0", "1", "2", "3", "4"] and run.expand_folds(" ALL ") == [" ALL "]
    with pytest.raises(SarcoError, match="fold '7' does not exist"):
        run.expand_folds("7")
    with pytest.raises(SarcoError, match="trains one fold"):  # not "fold '5fold' does not exist ... use 5fold"
        api.train("5fold", workspace=tmp_path)
