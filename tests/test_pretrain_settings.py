"""`sarco pretrain` settings from the user, the API and a preset's `pretraining` section: a value
that cannot be the setting is refused in one line naming it, never a traceback or a silent run."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from sarco_nn import api
from sarco_nn.errors import SarcoError
from sarco_nn.presets import load_preset, pretraining_defaults
from sarco_nn.pretraining.config import PretrainConfig


@pytest.mark.parametrize("field, value", [
    ("epochs", 1.5), ("epochs", True), ("epochs", "ten"), ("epochs", None), ("crop_size", 0), ("mask_block", 0),
    ("steps_per_epoch", 0), ("out_dim", 0), ("patch_out_dim", -8), ("spacing_mm", -1.0), ("spacing_mm", float("nan")),
    ("lr_per_sample", -1.0), ("warmup_epochs", -3), ("teacher_temp", 0.0), ("momentum_teacher", 1.5),
    ("center_momentum", -0.1), ("cache_volumes", -1), ("min_body_area_cm2", -5.0), ("encoder", [1]),
])
def test_a_value_that_cannot_be_the_setting_is_refused_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be .*got {re.escape(repr(value))}$"):
        PretrainConfig(**{field: value})


def test_settings_that_are_fine_stay_accepted():
    cfg = PretrainConfig(spacing_mm=6, steps_per_epoch=None, warmup_epochs=0, cache_volumes=0, freeze_last_layer_epochs=0,
                         cls_weight=0.0, momentum_teacher=1.0, seed=0)
    assert cfg.spacing == 6.0 and cfg.steps_per_epoch is None
    assert PretrainConfig.from_json(PretrainConfig(dims=3).to_json()).spacing == 2.0  # a stored config reloads


@pytest.mark.parametrize("section, said", [
    ({"epochs": 1.5}, "pretraining.epochs must be a whole number"),
    ({"epochs": True}, "pretraining.epochs must be a whole number"),
    ({"cls_weight": "0"}, "pretraining.cls_weight must be a number"),
])
def test_a_wrong_value_in_a_presets_pretraining_section_names_the_preset_and_the_key(section, said):
    with pytest.raises(SarcoError, match=rf"preset 'mine': {said}"):
        pretraining_defaults({"name": "mine", "pretraining": section})


def test_the_cli_refuses_a_bad_flag_and_a_bad_preset_value_in_one_line(tmp_path):
    from sarco_nn.commands.pretrain_cmd import pretrain

    app = typer.Typer()
    app.command()(pretrain)
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps(dict(load_preset("smoke"), name="mine", pretraining={"epochs": 1.5})))
    for argv, said in ((["--crop-size", "0"], "crop_size must be"), (["--mask-block", "0"], "mask_block must be"),
                       (["-p", str(preset)], "preset 'mine': pretraining.epochs")):
        res = CliRunner().invoke(app, [str(tmp_path), "-o", str(tmp_path / "out"), "--no-progress", *argv])
        assert res.exit_code != 0 and isinstance(res.exception, (SarcoError, SystemExit)), (argv, res.exception)
        assert said in str(res.exception) or said in res.output, (argv, res.output, res.exception)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_api_settings_are_checked_before_any_data_is_read(tmp_path):
    with pytest.raises(SarcoError, match="steps_per_epoch must be"):
        api.pretrain(tmp_path / "no_such_folder", settings={"steps_per_epoch": 0})


@pytest.fixture(scope="module")
def one_volume(tmp_path_factory):
    import numpy as np
    import SimpleITK as sitk

    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume

    d = tmp_path_factory.mktemp("unlabeled")
    ph = generate_phantom_volume(np.random.default_rng(0), n_slices=12, matrix=64)
    sitk.WriteImage(to_sitk(ph.ct_hu.astype(np.int16), ph.spacing_mm, False, -300.0), str(d / "a.nii.gz"), True)
    return d


def test_continue_keeps_the_runs_own_epochs_unless_epochs_is_typed(one_volume, tmp_path):
    """`--continue` resumes "exactly where it stopped": an --epochs left out is not the official 500
    (a 1-epoch run continued without --epochs trained 500 epochs, on a new lr schedule)."""
    from sarco_nn.commands.pretrain_cmd import pretrain

    app = typer.Typer()
    app.command()(pretrain)
    out = tmp_path / "run"
    tiny = ["--steps-per-epoch", "1", "--batch-size", "1", "--crop-size", "32", "--spacing", "6", "--out-dim", "32",
            "--patch-out-dim", "32", "--device", "cpu", "--no-progress", "--min-body-area", "100"]
    res = CliRunner().invoke(app, [str(one_volume), "-o", str(out), "--epochs", "1", *tiny])
    assert res.exit_code == 0, (res.output, res.exception)
    res = CliRunner().invoke(app, [str(one_volume), "-o", str(out), "--continue", "--cls-weight", "0", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    card = json.loads((out / "card.json").read_text())
    assert (card["epochs_planned"], card["steps_done"], card["config"]["cls_weight"]) == (1, 1, 0.1)
    assert "not the given cls_weight" in res.output  # a typed setting --continue does not apply is said
    res = CliRunner().invoke(app, [str(one_volume), "-o", str(out), "--continue", "--epochs", "2", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads((out / "card.json").read_text())["steps_done"] == 2  # a typed --epochs still extends the run


def test_resumed_config_is_the_one_rule_of_what_a_continued_run_keeps():
    """`--continue` keeps the run's own settings; only a typed epochs changes its length, and every
    other typed setting that differs is named (api.pretrain and Pretrainer both defer to this rule)."""
    from sarco_nn.pretraining.config import resumed_config

    own = PretrainConfig(epochs=1, cls_weight=0.1)
    asked = PretrainConfig(epochs=7, cls_weight=0.0, seed=5)  # e.g. a preset's pretraining section + typed keys
    cfg, notes = resumed_config(own, asked, {"cls_weight": 0.0, "seed": 123})  # seed: equal to the run's own
    assert cfg == own and notes == ["continuing with the run's own settings, not the given cls_weight"]
    cfg, notes = resumed_config(own, asked, {"epochs": 7, "cls_weight": 0.0})
    assert (cfg.epochs, cfg.cls_weight, cfg.seed) == (7, 0.1, 123)
    assert notes == ["continuing with the run's own settings, not the given cls_weight",
                     "continuing with 7 epochs instead of 1"]
    assert own.epochs == 1  # the stored settings are not edited in place
    assert resumed_config(own, asked, {})[0] == own  # nothing typed: the run's own length too, not the preset's 7
    assert resumed_config(own, asked, None)[0].epochs == 7  # a Python caller giving a config alone: its epochs
