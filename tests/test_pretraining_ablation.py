"""The pretraining ablation's bookkeeping (bench/pretraining_ablation.py), without training anything.

Why: the ablation runs for hours in pieces; a rerun must skip exactly the finished arms, and the
paired per-seed comparison in its report must be the arithmetic it claims. Both are checked here
on fake arm JSONs, the paired deltas against an independent computation.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from sarco_nn.pretraining.config import PretrainConfig

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pretraining_ablation.py"


@pytest.fixture(scope="module")
def abl():
    spec = importlib.util.spec_from_file_location("pretraining_ablation", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pretraining_ablation"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _fake_metrics(dice: float, err: float) -> dict:
    return {"internal": {"dice_mean": dice, "sma_abs_err_cm2": err, "cases": 4},
            "external_B": {"dice_mean": dice - 0.1, "sma_abs_err_cm2": err + 5.0, "cases": 4}}


def test_cpu_profile_covers_the_issue(abl):
    p = abl.PROFILES["cpu"]
    arms = abl.plan_arms(p, ["official"])
    ft = [a for a in arms if a.kind == "finetune"]
    assert arms[0].id == "pretrain-official" and sum(a.kind == "pretrain" for a in arms) == 1
    assert {a.n_labeled for a in ft} == {2, 4, 8, 16} and len(p.seeds) >= 3
    assert len(ft) == 4 * len(p.seeds) * 2  # n x seed x (scratch, pretrained)
    assert p.families == ("A", "B")
    # schedules are epochs x steps; the official warm-ups scale with the run length
    assert p.pretrain_schedule()["teacher_temp_warmup_epochs"] < p.pre_epochs


def test_recipes_share_scratch_and_pretraining(abl):
    p = abl.PROFILES["cpu"]
    arms = abl.plan_arms(p, ["official", "lld", "mim"])
    ids = [a.id for a in arms]
    assert len(ids) == len(set(ids))
    assert [a.id for a in arms if a.kind == "pretrain"] == ["pretrain-official", "pretrain-mim"]  # lld reuses official
    assert sum(1 for a in arms if a.kind == "finetune" and a.recipe is None) == 4 * len(p.seeds)
    with pytest.raises(SystemExit, match="unknown recipe"):
        abl.plan_arms(p, ["nope"])


def test_recipe_pretrain_overrides_are_valid_configs(abl):
    """Every recipe's pretraining settings build a PretrainConfig (a typo'd field or value fails here)."""
    p = abl.PROFILES["cpu"]
    for recipe in abl.RECIPES.values():
        argv, settings = abl.pretrain_config_args(p, recipe, Path("preset.json"))
        cfg = PretrainConfig(**settings)
        assert cfg.crop_size == settings["crop_size"]
    mim = PretrainConfig(**abl.pretrain_config_args(p, abl.RECIPES["mim"], Path("x.json"))[1])
    assert not mim.distills and PretrainConfig().distills
    with pytest.raises(ValueError, match="loss weights"):
        PretrainConfig(rec_weight=0.0, cls_weight=0.0, patch_weight=0.0)


def test_resume_skips_finished_arms(abl, tmp_path):
    p = abl.PROFILES["cpu"]
    arms = abl.plan_arms(p, ["official"])
    assert abl.pending_arms(arms, tmp_path) == arms
    abl.write_arm(tmp_path, arms[0], {"history": []})
    abl.write_arm(tmp_path, arms[2], {"metrics": {}})
    # a killed arm leaves a partial file that must not count as done
    partial = abl.arm_path(tmp_path, arms[1])
    partial.write_text('{"arm": "x", "finished": fal')
    assert abl.is_finished(tmp_path, arms[0]) and not abl.is_finished(tmp_path, arms[1])
    todo = abl.pending_arms(arms, tmp_path)
    assert todo == [arms[1]] + arms[3:]
    assert abl.pending_arms(arms, tmp_path, limit=2) == [arms[1], arms[3]]
    assert abl.pending_arms(arms, tmp_path, only_pretrain=True) == []
    assert abl.pending_arms(arms, tmp_path / "empty", only_pretrain=True) == [arms[0]]


def test_report_paired_comparison_matches_independent_computation(abl, tmp_path):
    p = abl.PROFILES["cpu"]
    arms = [a for a in abl.plan_arms(p, ["official"]) if a.kind == "finetune" and a.n_labeled in (4, 8)]
    values = {}
    for k, arm in enumerate(arms):
        dice = 0.5 + 0.01 * ((k * 7) % 11) + (0.03 if arm.recipe else 0.0)
        err = 20.0 - ((k * 5) % 9) - (4.0 if arm.recipe else 0.0)
        values[arm.id] = (dice, err)
        abl.write_arm(tmp_path, arm, {"metrics": _fake_metrics(dice, err)})
    # one pretrained arm unfinished: its seed drops out of the paired comparison only
    missing = next(a for a in arms if a.recipe and a.n_labeled == 8 and a.seed == 1)
    abl.arm_path(tmp_path, missing).unlink()

    text = abl.report(tmp_path, "cpu")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "table.md").read_text() == text
    paired = {(r["n_labeled"], r["held"], r["metric"]): r for r in summary["paired"]}
    for n in (4, 8):
        seeds = [s for s in p.seeds if not (n == 8 and s == 1)]
        for held, shift in (("internal", (0.0, 0.0)), ("external_B", (-0.1, 5.0))):
            for idx, key in enumerate(("dice_mean", "sma_abs_err_cm2")):
                diffs = []
                for s in seeds:
                    pre = values[f"ft-n{n:02d}-official-s{s}"][idx] + shift[idx]
                    scr = values[f"ft-n{n:02d}-scratch-s{s}"][idx] + shift[idx]
                    diffs.append(pre - scr)
                got = paired[(n, held, key)]
                assert got["seeds"] == len(seeds)
                assert got["mean_diff"] == pytest.approx(statistics.mean(diffs))
                assert got["sd_diff"] == pytest.approx(statistics.stdev(diffs))
                wins = sum(1 for d in diffs if (d > 0 if key == "dice_mean" else d < 0))
                assert got["pretrained_better"] == wins
    rows = {(r["n_labeled"], r["init"], r["held"], r["metric"]): r for r in summary["rows"]}
    scratch4 = [values[f"ft-n04-scratch-s{s}"][0] for s in p.seeds]
    assert rows[(4, "scratch", "internal", "dice_mean")]["mean"] == pytest.approx(statistics.mean(scratch4))
    assert rows[(4, "scratch", "internal", "dice_mean")]["sd"] == pytest.approx(statistics.stdev(scratch4))
    assert rows[(8, "official", "internal", "dice_mean")]["seeds"] == len(p.seeds) - 1
    assert "| 4 | official |" in text and "Paired per seed" in text
    assert text.index("internal Dice") < text.index("external_B Dice")  # internal first


def test_report_handles_single_seed_and_missing_metric(abl, tmp_path):
    arm_s, arm_p = abl.Arm("finetune", None, 2, 0), abl.Arm("finetune", "official", 2, 0)
    abl.write_arm(tmp_path, arm_s, {"metrics": {"internal": {"dice_mean": 0.4, "sma_abs_err_cm2": float("nan")}}})
    abl.write_arm(tmp_path, arm_p, {"metrics": {"internal": {"dice_mean": 0.6, "sma_abs_err_cm2": 10.0}}})
    rows, paired = abl.summarize(abl.load_finetune_arms(tmp_path))
    dice = next(r for r in paired if r["metric"] == "dice_mean")
    assert dice["mean_diff"] == pytest.approx(0.2) and math.isnan(dice["sd_diff"]) and dice["pretrained_better"] == 1
    err = next(r for r in paired if r["metric"] == "sma_abs_err_cm2")
    assert err["seeds"] == 0  # scratch's NaN is not a number to subtract


def test_missing_family_is_a_clear_error_for_the_cpu_profile(abl, monkeypatch):
    monkeypatch.setattr(abl, "family_option_available", lambda: False)
    with pytest.raises(SystemExit, match="family B is not available.*--families A"):
        abl.resolve_families(abl.PROFILES["cpu"], None)
    fams, notes = abl.resolve_families(abl.PROFILES["smoke"], None)
    assert fams == ["A"] and notes
    assert abl.resolve_families(abl.PROFILES["cpu"], ("A",)) == (["A"], [])
    monkeypatch.setattr(abl, "family_option_available", lambda: True)
    assert abl.resolve_families(abl.PROFILES["cpu"], None)[0] == ["A", "B"]


def test_mim_only_pretraining_skips_the_teacher(tmp_path, monkeypatch):
    """The `mim` recipe (both distillation weights 0) trains on reconstruction alone, without the
    teacher's forward pass; the reconstruction loss is still computed and logged."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume
    from sarco_nn.pretraining.trainer import run_pretraining

    torch.set_num_threads(1)
    data = tmp_path / "unlabeled"
    data.mkdir()
    ph = generate_phantom_volume(np.random.default_rng(0), n_slices=8, matrix=64)
    sitk.WriteImage(to_sitk(ph.ct_hu.astype(np.int16), ph.spacing_mm, False, -300.0), str(data / "a.nii.gz"), True)
    cfg = PretrainConfig(dims=2, crop_size=32, spacing_mm=6.0, epochs=1, steps_per_epoch=2, batch_size=2, out_dim=64,
                         patch_out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16, warmup_epochs=0,
                         min_body_area_cm2=100.0, cls_weight=0.0, patch_weight=0.0,
                         encoder={"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]})
    from sarco_nn.pretraining.model import PretrainNetwork

    calls = []
    original = PretrainNetwork.forward
    monkeypatch.setattr(PretrainNetwork, "forward", lambda self, *a, **k: calls.append(self.training) or original(self, *a, **k))
    result = run_pretraining(data, tmp_path / "run", cfg, device="cpu", progress=False, echo=lambda s: None)
    h = result.history[-1]
    assert h["cls"] == 0.0 and h["patch"] == 0.0 and h["rec"] > 0.0
    assert calls and all(calls)  # only the student (train mode) ran; the teacher (eval) never did


def test_finetune_levers_reach_the_planned_preset(abl, tmp_path):
    """A fine-tuning recipe (lld) edits the plans nnU-Net trains from; a workspace without plans is an error."""
    plans = tmp_path / "nnUNet_preprocessed" / "Dataset501_X" / "sarcoPlans_abl_s0.json"
    plans.parent.mkdir(parents=True)
    plans.write_text(json.dumps({"sarco": {"preset": {"trainer_overrides": {"smit": {"initial_lr": 0.001}}}}}))
    abl._set_finetune_overrides(tmp_path, abl.RECIPES["lld"].finetune)
    smit = json.loads(plans.read_text())["sarco"]["preset"]["trainer_overrides"]["smit"]
    assert smit == {"initial_lr": 0.001, "layer_decay": 0.75}
    with pytest.raises(SystemExit, match="no planned"):
        abl._set_finetune_overrides(tmp_path / "empty", {"layer_decay": 0.75})


def test_freeze_recipe_resolves_to_whole_epochs(abl):
    """The `freeze` recipe keeps the encoder fixed for 20 % of the fine-tuning epochs (trainer field)."""
    assert abl.RECIPES["freeze"].finetune == {"freeze_encoder_epochs": "20%"}
    assert abl._resolve_levers(abl.RECIPES["freeze"].finetune, 20) == {"freeze_encoder_epochs": 4}
    assert abl._resolve_levers({"freeze_encoder_epochs": "20%"}, 2) == {"freeze_encoder_epochs": 1}
    assert abl._resolve_levers({"layer_decay": 0.75}, 20) == {"layer_decay": 0.75}


def test_a_pretraining_stopped_by_a_signal_is_not_a_finished_arm(abl, tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM make `sarco pretrain` save and exit 0 ("stopped, continue with --continue"): the arm
    must stay unfinished (no JSON), so the next piece continues it instead of fine-tuning a half encoder."""
    ctx = abl.Context(abl.PROFILES["smoke"], tmp_path / "results", tmp_path / "work", ["A"], [], None, "cpu", 1)
    arm = abl.plan_arms(ctx.profile, ["official"])[0]
    monkeypatch.setattr(abl, "write_unlabeled", lambda *a, **k: {})
    monkeypatch.setattr(abl, "write_preset", lambda *a, **k: tmp_path / "preset.json")

    def stopped_run(argv, log, threads, module="sarco_nn.cli"):
        out = Path(argv[argv.index("-o") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "card.json").write_text(json.dumps({"epochs_done": 1, "epochs_planned": 2, "config": {}}))
        return 1.0

    monkeypatch.setattr(abl, "run_cmd", stopped_run)
    with pytest.raises(SystemExit, match="stopped at epoch 1 of 2.*continue"):
        abl.run_pretrain_arm(ctx, arm)


def test_sizes_keep_the_pretraining_and_only_those_fine_tuning_arms(abl):
    arms = abl.plan_arms(abl.PROFILES["cpu"], ["official"])
    four = abl.only_sizes(arms, [4])
    assert [a.kind for a in four].count("pretrain") == 1
    assert {a.n_labeled for a in four if a.kind == "finetune"} == {4}
    assert len([a for a in four if a.kind == "finetune"]) == 2 * len(abl.PROFILES["cpu"].seeds)
    assert abl.only_sizes(arms, None) == arms


def test_cpu_long_fine_tunes_cpu_encoders_longer_and_runs_no_pretraining(abl):
    """The longer-fine-tuning variant reuses the cpu profile's pretraining arms: its plan holds
    fine-tuning arms only (scratch and pretrained at the same, longer budget)."""
    cpu, long = abl.PROFILES["cpu"], abl.PROFILES["cpu_long"]
    arms = abl.plan_arms(long, ["mim"])
    assert long.pretrain_from == "cpu" and all(a.kind == "finetune" for a in arms)
    assert {a.recipe for a in arms} == {None, "mim"} and {a.n_labeled for a in arms} == {4}
    assert long.ft_epochs * long.ft_iters == 4 * cpu.ft_epochs * cpu.ft_iters
    # everything that shapes the pretrained encoder is the cpu profile's
    for key in ("matrix", "spacing", "patch", "unlabeled_per_family", "pre_epochs", "pre_steps", "pre_batch", "network"):
        assert getattr(long, key) == getattr(cpu, key), key


def test_distillation_recipes_map_to_pretraining_flags(abl):
    """Every recipe's overrides reach `sarco pretrain` as flags and form a valid config."""
    p = abl.PROFILES["cpu"]
    argv, settings = abl.pretrain_config_args(p, abl.RECIPES["sharp"], Path("x.json"))
    assert argv[argv.index("--teacher-temp") + 1] == "0.02" and settings["warmup_teacher_patch_temp"] == 0.02
    cfg = PretrainConfig(**abl.pretrain_config_args(p, abl.RECIPES["small_heads"], Path("x.json"))[1])
    assert cfg.out_dim == cfg.patch_out_dim == 1024 and cfg.distills


def test_a_lost_encoder_is_restored_only_if_bit_identical(abl, tmp_path, monkeypatch):
    """Fine-tuning arms of a recipe whose encoder file is gone rerun its pretraining; a rerun that
    gives another encoder must stop, since the finished arms were tuned from the old one."""
    ctx = abl.Context(abl.PROFILES["cpu"], tmp_path / "res", tmp_path / "work", ["A", "B"], [], None, "cpu", 2)
    pre = abl.Arm("pretrain", "mim")
    homes = []

    def rerun(c, a):
        homes.append(c.work)
        return {"encoder_sha256": "ab" * 32, "encoder": str(c.work / a.id / "encoder.pt")}

    monkeypatch.setattr(abl, "run_pretrain_arm", rerun)
    recorded = tmp_path / "cpu_work" / "pretrain-mim" / "encoder.pt"  # another profile's work folder
    assert abl.restore_encoder(ctx, pre, {"encoder": str(recorded), "encoder_sha256": "ab" * 32}) == recorded
    assert homes == [tmp_path / "cpu_work"]  # restored where the record points, not into this profile's work
    with pytest.raises(SystemExit, match="another encoder.*delete"):
        abl.restore_encoder(ctx, pre, {"encoder": "/gone/encoder.pt", "encoder_sha256": "cd" * 32})
    # an old record (file hashed under its temporary name): the same losses at every epoch restore it
    hist = [{"epoch": 1, "rec": 0.29}, {"epoch": 2, "rec": 0.21}]
    monkeypatch.setattr(abl, "run_pretrain_arm", lambda c, a: {"encoder_sha256": "ef" * 32, "history": hist,
                                                                "encoder": str(c.work / a.id / "encoder.pt")})
    old = {"encoder": str(recorded), "encoder_sha256": "cd" * 32, "history": str(hist)}  # stored as its repr
    assert abl.restore_encoder(ctx, pre, old) == recorded
    with pytest.raises(SystemExit, match="other losses"):
        abl.restore_encoder(ctx, pre, {**old, "history": str(hist[:1])})


def test_probe_records_losses_against_the_uniform_value_and_is_not_rerun(abl, tmp_path, monkeypatch):
    """--probe: a short pretraining whose JSON holds per-epoch losses beside ln(out_dim), the value a
    uniform (collapsed) teacher gives; a finished probe is read back, not rerun."""
    ctx = abl.Context(abl.PROFILES["cpu"], tmp_path / "res", tmp_path / "work", ["A", "B"], [], None, "cpu", 2)
    monkeypatch.setattr(abl, "write_unlabeled", lambda *a: {"phantoms": {}, "real": []})
    calls = []

    def fake_run(argv, log, threads, module="x"):
        calls.append(argv)
        out = Path(argv[argv.index("-o") + 1])
        out.mkdir(parents=True)
        hist = [{"epoch": e, "total": 1.0, "rec": 0.3, "cls": 6.9 - e / 10, "patch": 6.93} for e in (1, 2, 3)]
        cfg = {"out_dim": 1024, "patch_out_dim": 1024}
        (out / "card.json").write_text(json.dumps({"config": cfg, "history": hist}))
        return 1.0

    monkeypatch.setattr(abl, "run_cmd", fake_run)
    rec = abl.run_probe(ctx, abl.RECIPES["small_heads"], 3)
    assert calls[0][calls[0].index("--epochs") + 1] == "3" and calls[0][calls[0].index("--out-dim") + 1] == "1024"
    assert rec["uniform_cls"] == pytest.approx(math.log(1024)) and rec["history"][-1]["cls"] == pytest.approx(6.6)
    assert json.loads((tmp_path / "res" / "probes" / "small_heads-e3.json").read_text())["epochs"] == 3
    assert abl.run_probe(ctx, abl.RECIPES["small_heads"], 3)["epochs"] == 3 and len(calls) == 1
    table = abl.probe_table(tmp_path / "res")
    assert "| small_heads | 3 | 6.800 → 6.700 → 6.600 | 6.930 → 6.930 → 6.930 | 6.931 |" in table


def test_a_labeled_workspace_planned_for_another_budget_is_replanned(abl, tmp_path, monkeypatch):
    """cpu and cpu_long may share --work: a dataset planned with 200 iterations must not be reused
    for an 800-iteration arm (the plan carries the budget)."""
    planned = []
    monkeypatch.setattr(abl, "write_phantoms", lambda out, *a, **k: out)
    def fake_run(argv, *a, **k):  # convert makes the workspace folder, plan is counted
        Path(argv[argv.index("-w") + 1]).mkdir(parents=True, exist_ok=True)
        planned.append(argv[0])
        return 0.0

    monkeypatch.setattr(abl, "run_cmd", fake_run)
    for name, expect in (("cpu", 1), ("cpu", 1), ("cpu_long", 2), ("cpu", 3)):
        ctx = abl.Context(abl.PROFILES[name], tmp_path / "res", tmp_path / "work", ["A"], [], None, "cpu", 2)
        base = abl._labeled_workspace(ctx, 4, 0)
        assert planned.count("plan") == expect, name
        assert json.loads((base / ".planned").read_text())["training"]["num_epochs"] == abl.PROFILES[name].ft_epochs
