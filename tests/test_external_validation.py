"""bench/external_validation.py: finished arms are skipped, errors are binned by HU, reports sit side by side."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import write_dropin_dataset

BENCH = Path(__file__).resolve().parents[1] / "bench" / "external_validation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("external_validation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arm(train: str, seed: int, dice: float) -> dict:
    bins = {name: {"fp_cm2": 1.0, "fn_cm2": 2.0} for name, _, _ in
            (("air <-200", 0, 0), ("fat -200..-30", 0, 0), ("low muscle -30..30", 0, 0),
             ("muscle-like 30..150", 0, 0), ("dense >150", 0, 0))}
    test = {fam: {"n": 2, "dice": dice, "sma_err_mean_pct": 3.0, "sma_err_max_pct": 5.0, "flag_accuracy": 1.0,
                  "hu_bins": bins} for fam in "AB"}
    return {"arm": f"train{train}_seed{seed}", "train": train, "seed": seed, "test": test}


def test_finished_arms_are_skipped_and_tabled(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    out.mkdir()
    for seed, dice in ((0, 0.9), (1, 0.8)):
        (out / f"trainA_seed{seed}.json").write_text(json.dumps(_arm("A", seed, dice)))

    def refuse(*args, **kwargs):
        raise AssertionError("a finished arm was run again")

    monkeypatch.setattr(bench, "run_arm", refuse)
    monkeypatch.setattr(sys, "argv", ["external_validation.py", "--train-on", "A", "--seeds", "0", "1",
                                      "--out", str(out), "--work", str(tmp_path / "work")])
    bench.main()
    text = capsys.readouterr().out
    assert text.count("done earlier") == 2
    assert "| A → A (internal) | 2 | 0.850 (worst 0.800) |" in text and "A → B (external)" in text
    assert (out / "table.md").read_text().startswith("| lever | train → test |")
    assert "| baseline | A → A (internal) | 2 | 0.850 (worst 0.800) |" in text


def test_hu_bins_place_false_positives_and_negatives(bench, tmp_path):
    drop = write_dropin_dataset(tmp_path / "drop", n_cases=1, seed=0, matrix=64)
    pred = tmp_path / "pred" / "masks"
    pred.mkdir(parents=True)
    ref_img = sitk.ReadImage(str(drop / "masks" / "case_000.nii.gz"))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(drop / "images" / "case_000.nii.gz")))
    ref = sitk.GetArrayFromImage(ref_img) == 1
    guess = ref.copy()
    guess[ct < -900] = True  # all air called muscle
    guess[ref & (ct > 30)] = False  # muscle-like muscle missed
    out = sitk.GetImageFromArray(guess.astype(np.uint8))
    out.CopyInformation(ref_img)
    sitk.WriteImage(out, str(pred / "case_000.nii.gz"))
    bins = bench.hu_bin_errors(pred.parent, drop)
    sx, sy = ref_img.GetSpacing()[:2]
    assert bins["air <-200"]["fp_cm2"] == pytest.approx(np.count_nonzero((ct < -900) & ~ref) * sx * sy / 100)
    assert bins["muscle-like 30..150"]["fn_cm2"] > 0 and bins["fat -200..-30"]["fp_cm2"] == 0
    assert all(b["fn_cm2"] == 0 for name, b in bins.items() if name != "muscle-like 30..150" and
               name != "dense >150")


def test_compare_puts_two_reports_side_by_side(bench, tmp_path):
    for name, dice in (("a", 0.97), ("b", 0.85)):
        (tmp_path / name).mkdir()
        pooled = {"n": 12, "dice_mean": dice, "sma_abs_error_percent_mean": 2.0, "sma_abs_error_percent_max": 9.0,
                  "accuracy": 1.0}
        (tmp_path / name / "summary.json").write_text(json.dumps({"pooled": pooled}))
    text = bench.compare_reports([f"internal={tmp_path / 'a'}", f"external={tmp_path / 'b'}"])
    assert "| metric | internal | external |" in text and "| Dice (mean) | 0.970 | 0.850 |" in text


# ---- robustness levers (--lever): arm names, the lever column, what each lever changes --------------
def test_lever_names_and_arm_names(bench):
    assert bench.arm_name("A", 0) == "trainA_seed0"  # no lever: the baseline's names
    levers = bench.parse_levers("wideA+ctaug")
    assert levers == ("ctaug", "wideA") and bench.arm_name("A", 2, levers) == "trainA_ctaug+wideA_seed2"
    assert bench.arm_name("B", 1, ("tissues4",)) == "trainB_tissues4_seed1"
    assert bench.train_key("A", levers) == "train_A-wide" and bench.train_key("A", ()) == "train_A"
    assert bench.DATA["train_A-wide"] == ("A-wide", bench.DATA["train_A"][1])  # A's patients, widened
    with pytest.raises(ValueError, match="unknown lever"):
        bench.parse_levers("ctaug+bigger")
    levers = bench.parse_levers("muscle1.3x+tissues4")
    assert levers == ("tissues4", "muscle1.3x") and bench.arm_name("A", 0, levers) == "trainA_tissues4+muscle1.3x_seed0"
    assert bench.parse_levers("muscleDice2x+tissues4+ctaug") == ("ctaug", "tissues4", "muscleDice2x")
    with pytest.raises(ValueError, match="muscle2x and muscleDice2x both set the loss weights"):
        bench.parse_levers("tissues4+muscleDice2x+muscle2x")  # two loss weightings in one arm: refused
    with pytest.raises(ValueError, match="combine it with tissues4"):
        bench.parse_levers("muscleDice2x")  # one Dice class: the weighted mean is the plain one, an arm for nothing


def test_lever_arms_are_run_once_and_tabled_beside_the_baseline(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "trainA_seed0.json").write_text(json.dumps(_arm("A", 0, 0.9)))  # a baseline arm of an earlier run
    calls = []

    def fake_run_arm(arm, train_key, seed, args, levers=()):
        calls.append((arm, train_key, seed, levers))
        return {**_arm("A", seed, 0.95), "arm": arm, "lever": bench.lever_tag(levers)}

    monkeypatch.setattr(bench, "run_arm", fake_run_arm)
    argv = ["external_validation.py", "--train-on", "A", "--seeds", "0", "1", "--lever", "wideA+ctaug",
            "--out", str(out), "--work", str(tmp_path / "work")]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    assert calls == [("trainA_ctaug+wideA_seed0", "train_A-wide", 0, ("ctaug", "wideA")),
                     ("trainA_ctaug+wideA_seed1", "train_A-wide", 1, ("ctaug", "wideA"))]
    bench.main()  # resumable: finished lever arms are skipped
    assert len(calls) == 2
    text = (out / "table.md").read_text()
    rows = [line for line in text.splitlines() if "A → A (internal)" in line]
    assert rows[0].startswith("| baseline | A → A (internal) | 1 | 0.900 |")
    assert rows[1].startswith("| ctaug+wideA | A → A (internal) | 2 | 0.950 (worst 0.950) |")


def test_wide_lever_refuses_training_on_b(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["external_validation.py", "--train-on", "B", "--lever", "wideA",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main()


def test_table_has_per_tissue_dice_of_four_tissue_arms(bench):
    arm = {**_arm("A", 0, 0.9), "lever": "tissues4"}
    for fam in "AB":
        arm["test"][fam]["tissues"] = {t: {"n": 2, "dice_mean": d, "dice_min": d}
                                       for t, d in (("muscle", 0.9), ("imat", 0.5), ("vat", 0.8), ("sat", 0.95))}
    text = bench.table([_arm("A", 0, 0.8), arm])
    assert "| tissues4 | A → B (external) | 1 | 0.900 | 0.500 | 0.800 | 0.950 |" in text
    assert "| baseline | A → A (internal) | 1 | 0.800 |" in text


def _tissues4_arm(seed: int, muscle_dice: float, sma_err: float, tissue_dice: dict[str, float]) -> dict:
    arm = {**_arm("A", seed, muscle_dice), "arm": f"trainA_tissues4_seed{seed}", "lever": "tissues4"}
    for fam in "AB":
        arm["test"][fam]["sma_err_mean_pct"] = sma_err
        arm["test"][fam]["tissues"] = {t: {"n": 2, "dice_mean": d, "dice_min": d - 0.01}
                                       for t, d in {"muscle": muscle_dice, **tissue_dice}.items()}
    return arm


def test_body_composition_table_sets_four_tissue_arm_beside_muscle_only_with_targets(bench, tmp_path, monkeypatch,
                                                                                     capsys):
    """The #18 table reads the arm JSON files run_arm writes: tissues4 beside the muscle-only seeds, each target judged."""
    out = tmp_path / "results"
    out.mkdir()
    for seed, dice in ((0, 0.95), (1, 0.94)):
        base = _arm("A", seed, dice)
        base["test"]["A"]["sma_err_mean_pct"] = base["test"]["B"]["sma_err_mean_pct"] = 4.0 + seed
        base["train_s"] = 340.0 + 20 * seed
        (out / f"trainA_seed{seed}.json").write_text(json.dumps(base))
    (out / "trainA_tissues4_seed0.json").write_text(json.dumps(
        {**_tissues4_arm(0, 0.945, 4.5, {"sat": 0.97, "vat": 0.96, "imat": 0.70}), "train_s": 360.2}))
    monkeypatch.setattr(sys, "argv", ["external_validation.py", "--table-only", "--train-on", "A", "--seeds", "0",
                                      "--out", str(out), "--work", str(tmp_path / "work")])
    bench.main()
    text = capsys.readouterr().out
    assert "Body composition (issue #18 targets" in text
    assert "| baseline (muscle only) | A → A (internal) | 2 | - | - | - | 0.945 (worst 0.940) | 4.500 (worst 5.000) " \
           "| 350 | reference |" in text
    assert ("| tissues4 (four tissues) | A → B (external) | 1 | 0.970 | 0.960 | 0.700 | 0.945 | 4.500 | 360 | "
            "SAT met, VAT met, IMAT not met, muscle met |") in text
    assert "Body composition" in (out / "table.md").read_text()


def test_body_composition_muscle_worse_than_every_muscle_only_seed_is_not_met(bench):
    base = _arm("A", 0, 0.95)
    four = _tissues4_arm(0, 0.90, 3.0, {"sat": 0.99, "vat": 0.99, "imat": 0.85})
    line = next(l for l in bench.body_composition_table([base, four]).splitlines()
                if l.startswith("| tissues4 (four tissues) | A → A"))
    assert line.endswith("SAT met, VAT met, IMAT met, muscle not met |")
    assert bench.body_composition_table([base]) == ""  # no four-tissue arm: no table
    combined = {**four, "lever": "ctaug+tissues4"}  # compared with the ctaug arm, absent here
    assert "muscle: no ctaug arm to compare" in bench.body_composition_table([base, combined])


def test_compare_reports_shows_per_tissue_dice(bench, tmp_path):
    tissues = {"muscle": {"dice_mean": 0.95}, "imat": {"dice_mean": 0.61}, "vat": {"dice_mean": 0.97},
               "sat": {"dice_mean": 0.98}}
    for name, t in (("four", tissues), ("muscle_only", None)):
        (tmp_path / name).mkdir()
        pooled = {"n": 12, "dice_mean": 0.9, "sma_abs_error_percent_mean": 2.0, "sma_abs_error_percent_max": 9.0,
                  "accuracy": 1.0}
        (tmp_path / name / "summary.json").write_text(json.dumps({"pooled": pooled, "tissues": t or {}}))
    text = bench.compare_reports([f"internal={tmp_path / 'four'}", f"muscle-only={tmp_path / 'muscle_only'}"])
    assert "| IMAT Dice (mean, per tissue) | 0.610 | - |" in text and "| SAT Dice (mean, per tissue) | 0.980 | - |" in text
    plain = bench.compare_reports([f"x={tmp_path / 'muscle_only'}"])
    assert "per tissue" not in plain
    (tmp_path / "noclin").mkdir()  # evaluated without clinical.csv: no accuracy (null in summary.json)
    (tmp_path / "noclin" / "summary.json").write_text(json.dumps({"pooled": {
        "n": 2, "dice_mean": 0.9, "sma_abs_error_percent_mean": 2.0, "sma_abs_error_percent_max": 9.0, "accuracy": None}}))
    assert "| flag accuracy | n/a |" in bench.compare_reports([f"x={tmp_path / 'noclin'}"])


def _write_plans(ws, overrides):
    folder = ws.preprocessed / "Dataset501_ExtVal"
    folder.mkdir(parents=True)
    (folder / "sarcoPlans_smoke.json").write_text(json.dumps(
        {"sarco": {"preset": {"name": "smoke", "training": {"seed": 0}, "trainer_overrides": overrides}}}))


def test_run_arm_applies_each_lever_to_the_real_chain(bench, tmp_path, monkeypatch):
    """ctaug reaches the plans the trainer reads, wideA trains on its own A-wide drop, tissues4 converts
    with the tissues kept and records per-tissue Dice; the training and prediction are stubbed."""
    import argparse

    import dataset_conversion.convert as convert
    import sarco_nn.evaluation.evaluate as evaluate
    import sarco_nn.inference as inference
    import sarco_nn.planning as planning
    import sarco_nn.training.run as run

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, "unset")
    seen: dict = {}

    def fake_convert(drop, raw, name, dataset_id, keep_tissues=False):
        seen["drop"], seen["keep_tissues"] = Path(drop).name, keep_tissues

    def fake_plan(ws, dataset_id, preset):
        _write_plans(ws, {"smit": {"initial_lr": 0.001, "network": {"embed_dim": 24, "num_heads": [2, 2, 2, 2]}}})

    def fake_train(ws, *args):
        plans = json.loads(next((ws.preprocessed / "Dataset501_ExtVal").glob("*.json")).read_text())
        seen["training"] = plans["sarco"]["preset"]["training"]
        seen["preset"] = plans["sarco"]["preset"]

    def fake_predict(ws, images, out, *args, **kwargs):
        Path(out).mkdir(parents=True)

    def fake_evaluate(*args, **kwargs):
        pooled = {"n": 1, "dice_mean": 0.9, "sma_abs_error_percent_mean": 2.0, "sma_abs_error_percent_max": 3.0,
                  "accuracy": 1.0}
        tissues = {"muscle": {"n": 1, "dice_mean": 0.9, "dice_min": 0.9}, "sat": {"n": 1, "dice_mean": 0.8,
                                                                              "dice_min": 0.8}}
        return {"pooled": pooled, "worst_cases": [], "tissues": tissues if seen["keep_tissues"] else {}}

    monkeypatch.setattr(convert, "convert_dropin", fake_convert)
    monkeypatch.setattr(planning, "plan_dataset", fake_plan)
    monkeypatch.setattr(run, "train_fold", fake_train)
    monkeypatch.setattr(inference, "predict", fake_predict)
    monkeypatch.setattr(evaluate, "evaluate_folder", fake_evaluate)
    args = argparse.Namespace(work=tmp_path / "work", train_cases=2, test_cases=1, matrix=48, preset="smoke",
                              trainer="smit", device="cpu")

    base = bench.run_arm("trainA_seed3", "train_A", 3, args)
    assert seen["drop"] == "train_A_2_48" and seen["keep_tissues"] is False
    assert seen["training"] == {"seed": 3} and base["lever"] == "baseline" and "tissues" not in base["test"]["B"]

    levers = ("ctaug", "wideA", "tissues4")
    arm = bench.run_arm(bench.arm_name("A", 0, levers), bench.train_key("A", levers), 0, args, levers)
    assert seen["drop"] == "train_A-wide_2_48" and seen["keep_tissues"] is True
    assert seen["training"] == {"seed": 0, "ct_augmentation": True}
    assert arm["train"] == "A" and arm["train_family"] == "A-wide" and arm["lever"] == "ctaug+wideA+tissues4"
    assert arm["test"]["B"]["tissues"]["sat"]["dice_mean"] == 0.8
    assert (tmp_path / "work" / "data" / "train_A_2_48").is_dir()  # the baseline's drop is left as it was

    levers = bench.parse_levers("muscle2x+tissues4")
    assert levers == ("tissues4", "muscle2x") and bench.arm_name("A", 1, levers) == "trainA_tissues4+muscle2x_seed1"
    arm = bench.run_arm(bench.arm_name("A", 1, levers), bench.train_key("A", levers), 1, args, levers)
    assert seen["keep_tissues"] is True and seen["drop"] == "train_A_2_48"
    assert seen["training"] == {"seed": 1, "label_loss_weights": {"muscle": 2}}  # what the trainer's _build_loss reads
    assert arm["lever"] == "tissues4+muscle2x"
    # its four-tissue arms are set beside the muscle-only model they should match, not a muscle2x muscle-only one
    assert bench._muscle_only_tag("tissues4+muscle2x") == "baseline"
    assert bench._muscle_only_tag("ctaug+tissues4+muscle2x") == "ctaug"

    # the Dice-only weighting and the smaller weight: what the trainer reads, and the same comparison arms
    from sarco_nn.presets import loss_weight_terms_problem

    for text, training in (("tissues4+muscleDice2x", {"label_loss_weights": {"muscle": 2},
                                                      "label_loss_weight_terms": "dice"}),
                           ("tissues4+muscle1.3x", {"label_loss_weights": {"muscle": 1.3}})):
        levers = bench.parse_levers(text)
        arm = bench.run_arm(bench.arm_name("A", 2, levers), bench.train_key("A", levers), 2, args, levers)
        assert seen["keep_tissues"] is True and seen["training"] == {"seed": 2, **training}
        assert loss_weight_terms_problem(seen["training"]) is None  # the trainer accepts what the lever writes
        assert arm["lever"] == text and bench._muscle_only_tag(text) == "baseline"
        assert bench._muscle_only_tag("ctaug+" + text) == "ctaug"
    assert bench.LOSS_WEIGHT_LEVERS["muscle2x"] == {"label_loss_weights": {"muscle": 2}}  # not changed by an arm

    # the network-width remedy: the preset's own network widened (heads kept), valid for the trainer, and
    # judged against the muscle-only model without it
    from sarco_nn.presets import smit_network_config

    levers = bench.parse_levers("embed32+tissues4")
    arm = bench.run_arm(bench.arm_name("A", 0, levers), bench.train_key("A", levers), 0, args, levers)
    assert seen["keep_tissues"] is True and seen["training"] == {"seed": 0}
    assert seen["preset"]["trainer_overrides"]["smit"]["network"] == {"embed_dim": 32, "num_heads": [2, 2, 2, 2]}
    assert smit_network_config(seen["preset"]).embed_dim == 32
    assert seen["preset"]["trainer_overrides"]["smit"]["initial_lr"] == 0.001
    assert arm["lever"] == "tissues4+embed32" and bench._muscle_only_tag("tissues4+embed32") == "baseline"
    assert bench.NETWORK_LEVERS["embed32"] == {"embed_dim": 32}  # not changed by an arm

    # the lighter network (#16's speed road): its network and its prediction tiles, both valid for sarco
    from sarco_nn.inference_settings import InferenceSettings

    arm = bench.run_arm(bench.arm_name("A", 0, ("light",)), "train_A", 0, args, ("light",))
    assert seen["keep_tissues"] is False and arm["lever"] == "light"
    config = smit_network_config(seen["preset"])
    assert (config.embed_dim, config.base_channels, config.num_heads) == (16, 8, (2, 2, 2, 2))
    assert InferenceSettings.from_dict(seen["preset"]["inference"]).tile_step_size == 1.0
    assert bench._muscle_only_tag("tissues4+light") == "light"  # a speed lever, not a four-tissue remedy
    with pytest.raises(ValueError, match="both set the network"):
        bench.parse_levers("light+embed32")

    # an arm starts from the preset's own network, whatever the planner chose for several tissues, so a
    # tissues4 arm planned today is the model measured before presets.preset_for_dataset existed
    from sarco_nn.presets import load_preset

    cpu_network = load_preset("cpu")["trainer_overrides"]["smit"]["network"]
    planned_wide = {"smit": {"initial_lr": 0.001, "network": {**cpu_network, "embed_dim": 32}}}
    monkeypatch.setattr(planning, "plan_dataset", lambda ws, dataset_id, preset: _write_plans(ws, planned_wide))
    cpu_args = argparse.Namespace(**{**vars(args), "preset": "cpu"})
    bench.run_arm(bench.arm_name("A", 5, ("tissues4",)), "train_A", 5, cpu_args, ("tissues4",))
    assert seen["preset"]["trainer_overrides"]["smit"]["network"] == cpu_network
    bench.run_arm(bench.arm_name("A", 5, ("tissues4", "embed32")), "train_A", 5, cpu_args, ("tissues4", "embed32"))
    assert seen["preset"]["trainer_overrides"]["smit"]["network"] == {**cpu_network, "embed_dim": 32}


@pytest.mark.parametrize("family", ["A", "B"])
def test_phantom_anatomy_is_the_map_the_muscle_mask_came_from(family):
    """The kept tissue map says "muscle" exactly where the mask does (and names every value it holds)."""
    from dataset_conversion.phantoms.writer import dropin_case

    ph = dropin_case(5, 0, 96, False, "c", family).phantom
    names = ph.anatomy_names
    muscle_value = next(v for v, n in names.items() if n == "muscle")
    assert ph.anatomy.shape == ph.muscle_mask.shape
    assert np.array_equal(ph.anatomy == muscle_value, ph.muscle_mask > 0)
    assert set(np.unique(ph.anatomy).tolist()) <= set(names)


def test_false_positives_are_attributed_to_the_true_tissue(bench, tmp_path):
    """Muscle planted on the liver and on the table of site-B phantoms is reported as liver and table,
    in cm² per case, through the stored (possibly flipped) file layout."""
    from dataset_conversion.phantoms.writer import dropin_case

    key, matrix, n = "test_B", 96, 3
    family, seed = bench.DATA[key]
    drop = write_dropin_dataset(tmp_path / "drop", n, seed=seed, matrix=matrix, family=family, case_prefix="test_b")
    pred = tmp_path / "pred" / "masks"
    pred.mkdir(parents=True)
    planted: dict[str, float] = {}
    for path in sorted((drop / "masks").glob("*.nii.gz")):
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        ph = dropin_case(seed, int(path.name[:-7].rsplit("_", 1)[1]), matrix, False, "test_b", family).phantom
        # the stored layout may be flipped in x and y: find the liver/table through the stored muscle mask
        flipped = not np.array_equal(arr[0] == 1, ph.muscle_mask > 0)
        anatomy = ph.anatomy[::-1, ::-1] if flipped else ph.anatomy
        assert np.array_equal(arr[0] == 1, (ph.muscle_mask[::-1, ::-1] if flipped else ph.muscle_mask) > 0)
        out = (arr == 1).astype(np.uint8)
        pixel_cm2 = float(np.prod(img.GetSpacing()[:2])) / 100.0
        for name in ("liver", "table"):
            value = next(v for v, nm in ph.anatomy_names.items() if nm == name)
            where = anatomy == value
            out[0][where] = 1
            planted[name] = planted.get(name, 0.0) + float(where.sum()) * pixel_cm2 / n
        res = sitk.GetImageFromArray(out)
        res.CopyInformation(img)
        sitk.WriteImage(res, str(pred / path.name))
    got = bench.anatomy_errors(pred.parent, drop, key, matrix)
    assert set(got) == {name for name, v in planted.items() if v > 0}
    for name, area in planted.items():
        if area > 0:
            assert got[name] == pytest.approx(area, rel=1e-9)
    assert bench.structure_group("liver") == "organs" and bench.structure_group("table") == "outside/table"


def test_a_drop_from_other_generator_code_is_not_attributed(bench, tmp_path, capsys):
    key, matrix = "test_B", 96
    family, seed = bench.DATA[key]
    drop = write_dropin_dataset(tmp_path / "drop", 1, seed=seed + 1, matrix=matrix, family=family, case_prefix="test_b")
    (tmp_path / "pred").mkdir()
    for path in (drop / "masks").glob("*.nii.gz"):
        (tmp_path / "pred" / path.name).write_bytes(path.read_bytes())
    assert bench.anatomy_errors(tmp_path / "pred", drop, key, matrix) == {}
    assert "not attributed" in capsys.readouterr().out
