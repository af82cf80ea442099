"""External validation: train on one phantom family, score held-out phantoms of both families.

Arms: train on family A (the demo's) and on family B (an independently designed "other site"),
each with several training seeds; every arm scores a held-out A set and a held-out B set through
the real sarco chain (convert → plan → train → predict → evaluate) and adds where the errors lie:
false-positive / false-negative muscle area by HU bin. Each finished arm writes
<out>/<arm>.json; a rerun skips finished arms, so a long run can be stopped at any moment and
continued. The evaluation folders (with overlays of the worst cases) stay under <work>/<arm>/.

  python bench/external_validation.py                    # cpu preset, 40 train / 12+12 test, seeds 0 1 2
  python bench/external_validation.py --smoke            # plumbing check: smoke preset, tiny data, one seed
  python bench/external_validation.py --table-only       # print the table of the finished arms
  python bench/external_validation.py --attribute        # add "false positives by true tissue" to finished arms
  python bench/external_validation.py --train-on A --lever ctaug        # a robustness lever (arms trainA_ctaug_seedN)
  python bench/external_validation.py --train-on A --lever ctaug+wideA  # levers combined

Levers (`--lever`, combined with "+"; no lever = the baseline arms trainA_seedN / trainB_seedN):
  ctaug     CT site-shift augmentation in the trainer (preset training.ct_augmentation = true)
  wideA     train on family A-wide (A domain-randomised, dataset_conversion/phantoms/widen_a.py); train A only
  tissues4  a four-tissue model (muscle, IMAT, VAT, SAT: convert with keep_tissues), per-tissue Dice recorded
  muscle2x  muscle weighted 2 in the loss (preset training.label_loss_weights = {"muscle": 2}: CE class weight
            and weighted soft Dice, sarco_nn/training/loss_weights.py); with tissues4 (`tissues4+muscle2x`)
            it gives muscle back the loss share it loses beside three other tissues (issue #18). Its four-tissue
            arms are compared with the muscle-only arms without it (the model they should match)
  muscleDice2x  muscle weighted 2 in the soft-Dice term only (label_loss_weight_terms = "dice"): nnU-Net's CE,
            and so its decision boundary, untouched (muscle2x over-called muscle, #18); with tissues4 only
            (a muscle-only model has one Dice class: weighting it changes nothing)
  muscle1.3x  muscle weighted 1.3 in CE and soft Dice: a smaller muscle2x; a four-tissue remedy.
            The loss-weight levers (muscle2x, muscleDice2x, muscle1.3x) exclude each other
  embed32   the SMIT network widened from the cpu preset's embed 24 to 32 (decoder widths follow; 1.8x the
            parameters, 1.4x the CPU per forward tile): does a four-tissue model lack capacity at the demo's iterations (#18)? A four-tissue
            remedy like the loss weights: its arms are compared with the muscle-only arms without it
  light     a lighter SMIT (embed 16, decoder base 8: ~0.45x the cpu network's CPU per 256² tile) predicted with
            tile step 1.0 (4 instead of 9 tiles on a 512² slice): issue #16's road to a 5-fold cpu ensemble
            <= 1 s per slice, at what accuracy? Compared with the baseline like any lever; not with embed32
  long1.5x  1.5 times the preset's epochs (146 x 10 iterations from the cpu preset's 97): the longest
            training that keeps `make demo` within its 15 minutes on 2 cores
  lr2x      twice the trainer's initial learning rate at the same iterations: under-fitting cured without time?
  long2x    twice the preset's epochs (1940 iterations): is a lever's loss under-fitting? (beyond the
            demo's 15-minute budget on 2 cores: a diagnosis, not a preset candidate there)
  trunk     at prediction: tissue outside the trunk is not counted (sarco_nn.trunk; predict's default
            since it was measured). A prediction-time lever: an arm reuses the trained model of its
            arm without it when that one is finished (trainA_trunk_seed0 predicts with trainA_seed0's).
            Arms without it predict with trunk_only=False, so earlier arms stay comparable.
The table has one row per lever and train → test pair, over every finished arm in --out; with tissues4 arms a
"Body composition" table follows: each beside its muscle-only arms (same levers without tissues4), SAT/VAT/IMAT
and muscle Dice, SMA error and issue #18's targets (SAT, VAT ≥ 0.95, IMAT ≥ 0.80, muscle no worse).
  python bench/external_validation.py --compare "internal=demo/report" "external=demo/report_external"
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: HU bins of the false-positive / false-negative analysis: what the wrongly labelled tissue was.
HU_BINS: tuple[tuple[str, float, float], ...] = (
    ("air <-200", -math.inf, -200.0), ("fat -200..-30", -200.0, -30.0), ("low muscle -30..30", -30.0, 30.0),
    ("muscle-like 30..150", 30.0, 150.0), ("dense >150", 150.0, math.inf))
#: Data seeds of the drops (fixed: the arms' seeds vary the training only). train_A-wide is train_A's
#: patients widened (same seed, the family's own widening stream), a drop of its own.
DATA = {"train_A": ("A", 1), "train_B": ("B", 11), "test_A": ("A", 2), "test_B": ("B", 3),
        "train_A-wide": ("A-wide", 1)}
#: Robustness levers, in the order their names are joined in an arm name (what each changes: module doc).
LEVERS: tuple[str, ...] = ("ctaug", "wideA", "tissues4", "muscle2x", "muscleDice2x", "muscle1.3x", "embed32",
                           "light", "long1.5x", "long2x", "lr2x", "trunk")
#: Loss-weight levers: the preset training fields each sets (sarco_nn/training/loss_weights.py). Four-tissue
#: remedies (#18): their arms are compared with the muscle-only arms without them; one per arm.
LOSS_WEIGHT_LEVERS: dict[str, dict[str, Any]] = {
    "muscle2x": {"label_loss_weights": {"muscle": 2}},
    "muscleDice2x": {"label_loss_weights": {"muscle": 2}, "label_loss_weight_terms": "dice"},
    "muscle1.3x": {"label_loss_weights": {"muscle": 1.3}},
}
#: Network-width levers: the SMIT `network` settings each sets in the trainer's overrides. Four-tissue remedies
#: (#18), compared like the loss-weight levers with the muscle-only arms without them.
NETWORK_LEVERS: dict[str, dict[str, Any]] = {"embed32": {"embed_dim": 32},
                                             "light": {"embed_dim": 16, "decoder_base": 8}}
#: Prediction settings a lever writes into the preset's `inference` block (sarco_nn/inference_settings.py).
INFERENCE_LEVERS: dict[str, dict[str, Any]] = {"light": {"tile_step_size": 1.0}}
#: Four-tissue remedies: levers whose arms are judged against the muscle-only model without them.
FOUR_TISSUE_REMEDIES: frozenset[str] = frozenset(LOSS_WEIGHT_LEVERS) | frozenset({"embed32"})
#: Levers that change only the prediction, not the training: their arms reuse a finished trained model.
PREDICTION_LEVERS: frozenset[str] = frozenset({"trunk"})
BASELINE = "baseline"


def parse_levers(text: str | None) -> tuple[str, ...]:
    """Lever names of `--lever` ("ctaug+wideA"), in LEVERS order; () for none. Unknown names are refused."""
    names = [n.strip() for n in (text or "").split("+") if n.strip()]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise ValueError(f"unknown lever(s) {unknown}; use {', '.join(LEVERS)} (combine with '+')")
    weighting = [n for n in LEVERS if n in names and n in LOSS_WEIGHT_LEVERS]
    if len(weighting) > 1:
        raise ValueError(f"levers {' and '.join(weighting)} both set the loss weights; give one of them")
    networks = [n for n in LEVERS if n in names and n in NETWORK_LEVERS]
    if len(networks) > 1:
        raise ValueError(f"levers {' and '.join(networks)} both set the network; give one of them")
    if "muscleDice2x" in names and "tissues4" not in names:  # a weighted mean over one Dice class is that class
        raise ValueError("lever muscleDice2x changes nothing in a muscle-only model: combine it with tissues4")
    return tuple(n for n in LEVERS if n in names)


def lever_tag(levers: tuple[str, ...]) -> str:
    """The levers as they appear in arm names and the table ("baseline" when none)."""
    return "+".join(levers) if levers else BASELINE


def arm_name(train: str, seed: int, levers: tuple[str, ...] = ()) -> str:
    """train{A|B}[_{levers}]_seed{N}: no lever keeps the baseline's names (trainA_seed0)."""
    return f"train{train}_{lever_tag(levers)}_seed{seed}" if levers else f"train{train}_seed{seed}"


def train_key(train: str, levers: tuple[str, ...]) -> str:
    """The DATA key of an arm's training drop (wideA trains on A-wide)."""
    return "train_A-wide" if "wideA" in levers and train == "A" else f"train_{train}"


def _write_json_atomic(path: Path, data: Any) -> None:
    from sarco_nn.atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _drop(work: Path, key: str, n_cases: int, matrix: int) -> Path:
    """A phantom drop under work/data, written beside and renamed (a killed run leaves no half drop)."""
    from dataset_conversion.phantom import write_dropin_dataset

    target = work / "data" / f"{key}_{n_cases}_{matrix}"
    if not target.is_dir():
        family, seed = DATA[key]
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        write_dropin_dataset(tmp, n_cases, seed=seed, matrix=matrix, family=family,
                             case_prefix=key.lower().replace("-", "_"))
        os.replace(tmp, target)
    return target


def hu_bin_errors(pred_dir: Path, drop: Path) -> dict[str, dict[str, float]]:
    """Mean FP and FN muscle area (cm² per case) by the CT value of the wrongly labelled pixels."""
    import SimpleITK as sitk

    from sarco_nn.constants import MUSCLE_LABEL

    masks = pred_dir / "masks" if (pred_dir / "masks").is_dir() else pred_dir
    sums = {name: {"fp_cm2": 0.0, "fn_cm2": 0.0} for name, _, _ in HU_BINS}
    n = 0
    for ref_path in sorted((drop / "masks").glob("*.nii.gz")):
        pred_path = masks / ref_path.name
        if not pred_path.is_file():
            continue
        ref_img = sitk.ReadImage(str(ref_path))
        ref = sitk.GetArrayFromImage(ref_img) == MUSCLE_LABEL
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_path))) == MUSCLE_LABEL
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(drop / "images" / ref_path.name))).astype(np.float32)
        if not (ref.shape == pred.shape == ct.shape):
            continue
        sx, sy = ref_img.GetSpacing()[:2]
        pixel_cm2 = sx * sy / 100.0
        for name, lo, hi in HU_BINS:
            in_bin = (ct >= lo) & (ct < hi)
            sums[name]["fp_cm2"] += float(np.count_nonzero(pred & ~ref & in_bin)) * pixel_cm2
            sums[name]["fn_cm2"] += float(np.count_nonzero(ref & ~pred & in_bin)) * pixel_cm2
        n += 1
    return {name: {k: v / max(n, 1) for k, v in d.items()} for name, d in sums.items()}


#: The phantom families' own tissues grouped into what a reader would call them (family A's and family B's
#: enum names, lower case; bench-only, so the analysis can say "bowel" where the HU bins say "30..150 HU").
STRUCTURE_GROUPS: dict[str, tuple[str, ...]] = {
    "organs": ("liver", "spleen", "kidney", "pancreas"),
    "bowel": ("bowel_wall", "bowel_fluid", "bowel_gas", "stool", "oral_contrast", "fluid", "gas", "feces", "oral"),
    "vessels": ("aorta", "ivc", "small_vessel", "vessel", "calcium"),
    "fascia/skin": ("fascia", "skin"),
    "fat (SAT/VAT/IMAT)": ("sat", "vat", "imat", "subcut_fat", "visc_fat", "im_fat"),
    "arm": ("arm_skin", "arm_fat", "arm_muscle", "arm_bone"),
    "bone/canal": ("cortex", "marrow", "canal", "cortical", "trabecular", "csf", "disc"),
    "outside/table": ("outside", "air", "table", "pad", "table_foam"),
}


def structure_group(name: str) -> str:
    """The STRUCTURE_GROUPS group of a phantom tissue name ("other" for one not listed)."""
    return next((group for group, names in STRUCTURE_GROUPS.items() if name in names), "other")


@functools.lru_cache(maxsize=64)
def _phantom_truth(key: str, index: int, matrix: int) -> tuple[np.ndarray, np.ndarray, dict[int, str]] | None:
    """(four-tissue mask, the family's own tissue map, its names) of a drop's case, in the stored array
    layout; regenerated from the drop's seed once per case (every arm scores the same held-out cases)."""
    import SimpleITK as sitk

    from dataset_conversion.phantoms.writer import dropin_case, to_sitk

    family, seed = DATA[key]
    case = dropin_case(seed, index, matrix, False, key.lower().replace("-", "_"), family)
    ph = case.phantom
    if ph.anatomy is None:
        return None
    spacing = (case.z_spacing_mm, *ph.spacing_mm)

    def layout(a: np.ndarray) -> np.ndarray:
        return sitk.GetArrayFromImage(to_sitk(a[None].astype(np.uint8), spacing, case.flipped, case.origin_z_mm))

    return layout(ph.tissue_mask), layout(ph.anatomy), dict(ph.anatomy_names or {})


def anatomy_errors(pred_dir: Path, drop: Path, key: str, matrix: int) -> dict[str, float]:
    """Mean false-positive muscle area (cm² per case) by what the pixel really was, from the phantom's own
    tissue map (bowel, liver, fascia, arm muscle ...), regenerated from the drop's seed: the region view of
    the errors that the HU bins cannot give. A case whose regenerated mask differs from the drop's is
    skipped (a drop written by other generator code)."""
    import SimpleITK as sitk

    from sarco_nn.constants import MUSCLE_LABEL

    prefix = key.lower().replace("-", "_")
    masks = pred_dir / "masks" if (pred_dir / "masks").is_dir() else pred_dir
    sums: dict[str, float] = {}
    n = 0
    for ref_path in sorted((drop / "masks").glob("*.nii.gz")):
        pred_path = masks / ref_path.name
        case_id = ref_path.name[: -len(".nii.gz")]
        if not pred_path.is_file() or not case_id.startswith(prefix + "_"):
            continue
        truth = _phantom_truth(key, int(case_id.rsplit("_", 1)[1]), matrix)
        ref_img = sitk.ReadImage(str(ref_path))
        ref = sitk.GetArrayFromImage(ref_img)
        if truth is None or not np.array_equal(truth[0], ref):
            print(f"  {case_id}: no regenerated tissue map that matches the drop; not attributed")
            continue
        _, anatomy, names = truth
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_path))) == MUSCLE_LABEL
        fp = pred & (ref != MUSCLE_LABEL)
        sx, sy = ref_img.GetSpacing()[:2]
        values, counts = np.unique(anatomy[fp], return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            name = names.get(int(value), f"tissue_{value}")
            sums[name] = sums.get(name, 0.0) + count * sx * sy / 100.0
        n += 1
    return {name: v / max(n, 1) for name, v in sorted(sums.items(), key=lambda kv: -kv[1])}


def add_anatomy_errors(out: Path, work: Path, matrix: int, test_cases: int) -> list[str]:
    """Fill `fp_by_tissue` into every finished arm of `out` that lacks it, from its prediction folders under
    `work` (no training, no prediction: about a second per case). Returns the arms updated."""
    updated = []
    for path in sorted(out.glob("*.json")):
        result = json.loads(path.read_text())
        if "test" not in result or all("fp_by_tissue" in v for v in result["test"].values()):
            continue
        for key in ("test_A", "test_B"):
            family = DATA[key][0]
            pred = work / result["arm"] / f"pred_{key}"
            drop = work / "data" / f"{key}_{test_cases}_{matrix}"
            if family in result["test"] and pred.is_dir() and drop.is_dir():
                result["test"][family]["fp_by_tissue"] = anatomy_errors(pred, drop, key, matrix)
        _write_json_atomic(path, result)
        updated.append(result["arm"])
    return updated


def _scores(summary: dict) -> dict[str, float]:
    pooled = summary["pooled"]
    return {"n": pooled["n"], "dice": pooled["dice_mean"], "sma_err_mean_pct": pooled["sma_abs_error_percent_mean"],
            "sma_err_max_pct": pooled["sma_abs_error_percent_max"], "flag_accuracy": pooled["accuracy"]}


def run_arm(arm: str, train_key: str, seed: int, args: argparse.Namespace, levers: tuple[str, ...] = ()) -> dict:
    """Train one model and score it on both held-out families; returns the arm's result."""
    from dataset_conversion.convert import convert_dropin
    from sarco_nn.evaluation.evaluate import evaluate_folder
    from sarco_nn.inference import predict
    from sarco_nn.planning import plan_dataset
    from sarco_nn.presets import load_preset
    from sarco_nn.training.run import train_fold
    from sarco_nn.workspace import Workspace

    drops = {key: _drop(args.work, key, args.test_cases if key.startswith("test") else args.train_cases, args.matrix)
             for key in (train_key, "test_A", "test_B")}
    arm_dir = args.work / arm
    shutil.rmtree(arm_dir, ignore_errors=True)  # an unfinished arm starts again
    trained_by = _finished_training_arm(arm, train_key, seed, args, levers)
    result: dict[str, Any] = {"arm": arm, "train": DATA[train_key][0].split("-")[0], "train_family": DATA[train_key][0],
                              "lever": lever_tag(levers), "seed": seed, "preset": args.preset,
                              "trainer": args.trainer, "train_cases": args.train_cases, "matrix": args.matrix,
                              "trunk_only": "trunk" in levers, "test": {}}
    if trained_by is not None:  # a prediction-time lever: the same trained model as that arm
        ws = Workspace(args.work / trained_by["arm"] / "ws").activate()
        result.update(train_s=trained_by["train_s"], trained_by=trained_by["arm"])
    else:
        ws = Workspace(arm_dir / "ws").activate()
        convert_dropin(drops[train_key], ws.raw, "ExtVal", 501, keep_tissues="tissues4" in levers)
        plan_dataset(ws, 501, args.preset)
        plans_file = next((ws.preprocessed / "Dataset501_ExtVal").glob("sarcoPlans_*.json"))
        plans = json.loads(plans_file.read_text())
        plans["sarco"]["preset"]["training"]["seed"] = seed  # the seed is a preset field, recorded in the plans
        if "ctaug" in levers:
            plans["sarco"]["preset"]["training"]["ct_augmentation"] = True
        for lever in (n for n in levers if n in LOSS_WEIGHT_LEVERS):
            plans["sarco"]["preset"]["training"].update(copy.deepcopy(LOSS_WEIGHT_LEVERS[lever]))
        # every arm starts from the preset's own network, not the planner's multi-tissue choice
        # (presets.preset_for_dataset): a tissues4 arm stays the model it was when measured
        own = (load_preset(args.preset).get("trainer_overrides") or {}).get(args.trainer, {}).get("network")
        overrides = plans["sarco"]["preset"].get("trainer_overrides", {}).get(args.trainer)
        if overrides is not None and own is not None:
            overrides["network"] = dict(own)
        for lever in (n for n in levers if n in NETWORK_LEVERS):
            overrides = plans["sarco"]["preset"]["trainer_overrides"][args.trainer]
            overrides["network"] = {**overrides.get("network", {}), **NETWORK_LEVERS[lever]}
        for lever in (n for n in levers if n in INFERENCE_LEVERS):
            preset = plans["sarco"]["preset"]
            preset["inference"] = {**(preset.get("inference") or {}), **INFERENCE_LEVERS[lever]}
        if "long2x" in levers:
            plans["sarco"]["preset"]["training"]["num_epochs"] *= 2
        if "long1.5x" in levers:
            plans["sarco"]["preset"]["training"]["num_epochs"] = round(plans["sarco"]["preset"]["training"]["num_epochs"] * 1.5)
        if "lr2x" in levers:
            plans["sarco"]["preset"]["trainer_overrides"][args.trainer]["initial_lr"] *= 2
        plans_file.write_text(json.dumps(plans, indent=1))
        started = time.monotonic()
        train_fold(ws, "all", 501, args.trainer, None, None, None, args.device)
        result["train_s"] = round(time.monotonic() - started, 1)
    for key in ("test_A", "test_B"):
        out = arm_dir / f"pred_{key}"
        predict(ws, drops[key] / "images", out, dataset=501, trainer=args.trainer,
                clinical_csv=drops[key] / "clinical.csv", device=args.device, progress=False, trunk_only="trunk" in levers)
        summary = evaluate_folder(out, drops[key] / "masks", drops[key] / "clinical.csv", arm_dir / f"eval_{key}",
                                  images_dir=drops[key] / "images")
        result["test"][DATA[key][0]] = {**_scores(summary), "hu_bins": hu_bin_errors(out, drops[key]),
                                        "fp_by_tissue": anatomy_errors(out, drops[key], key, args.matrix),
                                        "worst_cases": summary.get("worst_cases", []),
                                        **({"tissues": _tissue_dice(summary)} if summary.get("tissues") else {})}
    return result


def _finished_training_arm(arm: str, train_key: str, seed: int, args: argparse.Namespace,
                           levers: tuple[str, ...]) -> dict | None:
    """The finished arm whose trained model this arm may reuse: same training, without the
    prediction-time levers (None: this arm trains its own)."""
    training_levers = tuple(n for n in levers if n not in PREDICTION_LEVERS)
    if training_levers == levers:
        return None
    base = arm_name(DATA[train_key][0].split("-")[0], seed, training_levers)
    path = args.out / f"{base}.json"
    model = args.work / base / "ws" / "nnUNet_results"
    if not path.is_file() or not any(model.rglob("checkpoint_final.pth")):
        return None
    return json.loads(path.read_text())


def _tissue_dice(summary: dict) -> dict[str, dict[str, float]]:
    """Per-tissue Dice of a multi-tissue evaluation (summary["tissues"], see evaluation/tissues.py)."""
    return {t: {"n": v["n"], "dice_mean": v["dice_mean"], "dice_min": v["dice_min"]}
            for t, v in summary["tissues"].items()}


def _fmt(values: list[float], worst) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.3f} (worst {worst(values):.3f})" if len(values) > 1 else f"{mean:.3f}"


def _lever_order(tag: str) -> tuple:
    """Baseline first, then single levers in LEVERS order, then combinations."""
    if tag == BASELINE:
        return (0,)
    names = tag.split("+")
    return (len(names), [LEVERS.index(n) if n in LEVERS else len(LEVERS) for n in names], tag)


def table(results: list[dict]) -> str:
    """Markdown: per lever and train → test family, mean over seeds with the worst seed beside it, then FP/FN
    by HU bin, then per-tissue Dice of the four-tissue arms and the body-composition table
    (`body_composition_table`). Arms without a lever (the baseline's) read "baseline"."""
    lines = ["| lever | train → test | seeds | Dice | mean abs SMA err % | max abs SMA err % | flag accuracy |",
             "|---|---|---|---|---|---|---|"]
    bins = ["| lever | train → test | " + " | ".join(f"FP / FN {name} (cm²)" for name, _, _ in HU_BINS) + " |",
            "|---|---|" + "---|" * len(HU_BINS)]
    tissue_names = ("muscle", "imat", "vat", "sat")
    tissues = ["| lever | train → test | seeds | " + " | ".join(f"{t} Dice" for t in tissue_names) + " |",
               "|---|---|---|" + "---|" * len(tissue_names)]
    levers = sorted({r.get("lever", BASELINE) for r in results}, key=_lever_order)
    for lever in levers:
        for train in ("A", "B"):
            for test in ("A", "B"):
                rows = [r["test"][test] for r in results
                        if r.get("lever", BASELINE) == lever and r["train"] == train and test in r["test"]]
                if not rows:
                    continue
                label = f"{lever} | {train} → {test}" + (" (internal)" if train == test else " (external)")
                lines.append(f"| {label} | {len(rows)} | {_fmt([r['dice'] for r in rows], min)} | "
                             f"{_fmt([r['sma_err_mean_pct'] for r in rows], max)} | "
                             f"{_fmt([r['sma_err_max_pct'] for r in rows], max)} | "
                             f"{_fmt([r['flag_accuracy'] for r in rows], min)} |")
                cells = []
                for name, _, _ in HU_BINS:
                    fp = statistics.fmean(r["hu_bins"][name]["fp_cm2"] for r in rows)
                    fn = statistics.fmean(r["hu_bins"][name]["fn_cm2"] for r in rows)
                    cells.append(f"{fp:.2f} / {fn:.2f}")
                bins.append(f"| {label} | " + " | ".join(cells) + " |")
                with_tissues = [r["tissues"] for r in rows if r.get("tissues")]
                if with_tissues:
                    cells = [_fmt([t[name]["dice_mean"] for t in with_tissues  # None: absent in every case
                                   if name in t and t[name]["dice_mean"] is not None], min) for name in tissue_names]
                    tissues.append(f"| {label} | {len(with_tissues)} | " + " | ".join(cells) + " |")
    body = body_composition_table(results)
    regions = structure_table(results)
    return "\n".join(lines + [""] + bins + ([""] + [regions] if regions else [])
                     + ([""] + tissues if len(tissues) > 2 else []) + ([""] + [body] if body else []))


def structure_table(results: list[dict]) -> str:
    """Markdown: mean false-positive muscle area (cm² per case) by the phantom's true tissue, grouped
    (STRUCTURE_GROUPS), per lever and train → test pair, over the arms that have `fp_by_tissue`."""
    groups = list(STRUCTURE_GROUPS) + ["other"]
    lines = ["| lever | train → test | seeds | FP total (cm²) | " + " | ".join(groups) + " |",
             "|---|---|---|---|" + "---|" * len(groups)]
    for lever in sorted({r.get("lever", BASELINE) for r in results}, key=_lever_order):
        for train in ("A", "B"):
            for test in ("A", "B"):
                rows = [r["test"][test]["fp_by_tissue"] for r in results
                        if r.get("lever", BASELINE) == lever and r["train"] == train
                        and "fp_by_tissue" in r["test"].get(test, {})]
                if not rows:
                    continue
                by_group = [{g: sum(v for k, v in row.items() if structure_group(k) == g) for g in groups}
                            for row in rows]
                means = {g: statistics.fmean(b[g] for b in by_group) for g in groups}
                label = f"{lever} | {train} → {test}" + (" (internal)" if train == test else " (external)")
                lines.append(f"| {label} | {len(rows)} | {sum(means.values()):.2f} | "
                             + " | ".join(f"{means[g]:.2f}" for g in groups) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


#: Issue #18's targets on held-out phantoms at the demo budget: minimum mean Dice per adipose tissue.
TISSUE_TARGETS: dict[str, float] = {"sat": 0.95, "vat": 0.95, "imat": 0.80}
#: How "muscle no worse than the muscle-only model" is judged (printed under the table).
MUSCLE_RULE = ("muscle no worse = the four-tissue model's mean muscle Dice ≥ the muscle-only model's worst seed and "
               "its mean abs SMA error ≤ the muscle-only model's worst seed (the muscle-only seeds' spread is the noise)")


def _muscle_only_tag(tag: str) -> str:
    """The lever tag a four-tissue arm is compared with: the same levers without tissues4 (and without its
    loss-weight lever, a four-tissue remedy: the muscle-only model is the one to match)."""
    rest = [n for n in tag.split("+") if n != "tissues4" and n not in FOUR_TISSUE_REMEDIES]
    return "+".join(rest) if rest else BASELINE


def _train_s(arms: list[dict]) -> str:
    """Mean training wall time of the arms (s; machine load shifts it: compare arms of one run)."""
    values = [a["train_s"] for a in arms if a.get("train_s") is not None]
    return f"{statistics.fmean(values):.0f}" if values else "-"


def body_composition_table(results: list[dict]) -> str:
    """Markdown: each four-tissue lever (tissues4, alone or combined) beside its muscle-only arms, per train → test:
    SAT, VAT, IMAT and muscle Dice, mean abs SMA error, and which of #18's targets are met. "" without such arms.

    Reads what run_arm writes: test[fam]["tissues"][tissue]["dice_mean"] (evaluation/tissues.py) and the pooled
    muscle "dice" / "sma_err_mean_pct" (the same muscle metrics for both models)."""
    tags = sorted({r.get("lever", BASELINE) for r in results if "tissues4" in r.get("lever", "").split("+")},
                  key=_lever_order)
    if not tags:
        return ""
    adipose = ("sat", "vat", "imat")
    lines = ["| model | train → test | seeds | " + " | ".join(f"{t.upper()} Dice (≥ {TISSUE_TARGETS[t]:.2f})"
                                                         for t in adipose)
             + " | muscle Dice | mean abs SMA err % | train s | #18 targets |",
             "|---|---|---|" + "---|" * (len(adipose) + 4)]
    for tag in tags:
        ref_tag = _muscle_only_tag(tag)
        for train in ("A", "B"):
            for test in ("A", "B"):
                def arms(lever: str) -> list[dict]:
                    return [r for r in results if r.get("lever", BASELINE) == lever
                            and r["train"] == train and test in r["test"]]

                four_arms, ref_arms = arms(tag), arms(ref_tag)
                four, ref = [r["test"][test] for r in four_arms], [r["test"][test] for r in ref_arms]
                if not four:
                    continue
                pair = f"{train} → {test}" + (" (internal)" if train == test else " (external)")
                if ref:
                    lines.append(f"| {ref_tag} (muscle only) | {pair} | {len(ref)} | - | - | - | "
                                 f"{_fmt([r['dice'] for r in ref], min)} | "
                                 f"{_fmt([r['sma_err_mean_pct'] for r in ref], max)} | {_train_s(ref_arms)} | reference |")
                dice = {t: [r["tissues"][t]["dice_mean"] for r in four if t in (r.get("tissues") or {})]
                        for t in adipose}
                verdicts = []
                for t in adipose:
                    if not dice[t]:
                        verdicts.append(f"{t.upper()} not evaluated")
                    else:
                        met = statistics.fmean(dice[t]) >= TISSUE_TARGETS[t]
                        verdicts.append(f"{t.upper()} {'met' if met else 'not met'}")
                if ref:
                    met = (statistics.fmean(r["dice"] for r in four) >= min(r["dice"] for r in ref)
                           and statistics.fmean(r["sma_err_mean_pct"] for r in four)
                           <= max(r["sma_err_mean_pct"] for r in ref))
                    verdicts.append(f"muscle {'met' if met else 'not met'}")
                else:
                    verdicts.append(f"muscle: no {ref_tag} arm to compare")
                lines.append(f"| {tag} (four tissues) | {pair} | {len(four)} | "
                             + " | ".join(_fmt(dice[t], min) for t in adipose) + " | "
                             f"{_fmt([r['dice'] for r in four], min)} | "
                             f"{_fmt([r['sma_err_mean_pct'] for r in four], max)} | {_train_s(four_arms)} | "
                             f"{', '.join(verdicts)} |")
    return "\n".join(["Body composition (issue #18 targets: SAT and VAT Dice ≥ 0.95, IMAT ≥ 0.80, muscle no worse "
                      "than the muscle-only model)", "", *lines, "", f"Rule: {MUSCLE_RULE}."])


def finished_arms(out: Path) -> list[dict]:
    """Every finished arm result in `out` (any lever), for the one table that compares them."""
    results = []
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "arm" in data and "test" in data:
            results.append(data)
    return results


def compare_reports(pairs: list[str]) -> str:
    """Markdown table of several `sarco evaluate` reports side by side ("label=report_dir" each)."""
    header = "| metric | " + " | ".join(p.split("=", 1)[0] for p in pairs) + " |"
    summaries = [json.loads((Path(p.split("=", 1)[1]) / "summary.json").read_text()) for p in pairs]
    keys = [("cases", "n", "{:.0f}"), ("Dice (mean)", "dice_mean", "{:.3f}"),
            ("mean abs SMA error %", "sma_abs_error_percent_mean", "{:.2f}"),
            ("max abs SMA error %", "sma_abs_error_percent_max", "{:.2f}"), ("flag accuracy", "accuracy", "{:.2f}")]
    lines = [header, "|---|" + "---|" * len(pairs)]
    for label, key, fmt in keys:
        lines.append(f"| {label} | " + " | ".join("n/a" if s["pooled"].get(key) is None else fmt.format(s["pooled"][key])
                                               for s in summaries) + " |")
    lines += _compare_tissue_rows(summaries)
    return "\n".join(lines)


def _compare_tissue_rows(summaries: list[dict]) -> list[str]:
    """Per-tissue Dice rows (summary["tissues"], evaluation/tissues.py) when any report evaluated tissues;
    "-" where a report did not (a muscle-only model)."""
    names = {"muscle": "muscle", "imat": "IMAT", "vat": "VAT", "sat": "SAT"}
    present = [t for t in names if any(t in (s.get("tissues") or {}) for s in summaries)]
    rows = []
    for t in present:
        cells = []
        for s in summaries:
            value = ((s.get("tissues") or {}).get(t) or {}).get("dice_mean")
            cells.append("-" if value is None else f"{value:.3f}")
        rows.append(f"| {names[t]} Dice (mean, per tissue) | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny plumbing run (smoke preset, 4+2+2 cases at 96², one seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    parser.add_argument("--train-on", nargs="+", default=["A", "B"], choices=["A", "B"])
    parser.add_argument("--lever", default=None, metavar="NAME[+NAME]",
                        help=f"robustness lever(s) of these arms: {', '.join(LEVERS)} (default: none, the baseline)")
    parser.add_argument("--train-cases", type=int, default=None)
    parser.add_argument("--test-cases", type=int, default=None)
    parser.add_argument("--matrix", type=int, default=None)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--trainer", default="smit")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="arm results (default bench/results/external_validation)")
    parser.add_argument("--work", type=Path, default=None, help="scratch (default bench_runs/external_validation)")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--attribute", action="store_true",
                        help="fill the false positives by true tissue into finished arms that lack them (no training)")
    parser.add_argument("--compare", nargs="+", metavar="LABEL=REPORT", help="print evaluate reports side by side")
    args = parser.parse_args()
    try:
        levers = parse_levers(args.lever)
    except ValueError as exc:
        parser.error(str(exc))
    if "wideA" in levers and "B" in args.train_on:
        parser.error("lever wideA widens family A: give --train-on A")
    if args.compare:
        print(compare_reports(args.compare))
        return
    name = "external_validation_smoke" if args.smoke else "external_validation"
    defaults = (4, 2, 96, "smoke", [0]) if args.smoke else (40, 12, 512, "cpu", [0, 1, 2])
    args.train_cases = args.train_cases or defaults[0]
    args.test_cases = args.test_cases or defaults[1]
    args.matrix = args.matrix or defaults[2]
    args.preset = args.preset or defaults[3]
    args.seeds = args.seeds if args.seeds is not None else defaults[4]
    args.out = args.out or RESULTS / name
    args.work = (args.work or Path("bench_runs") / name).resolve()
    if args.attribute:
        print("attributed:", ", ".join(add_anatomy_errors(args.out, args.work, args.matrix, args.test_cases)) or "none")
    for train in args.train_on:
        for seed in args.seeds:
            arm = arm_name(train, seed, levers)
            path = args.out / f"{arm}.json"
            if not path.is_file() and not args.table_only and not args.attribute:
                print(f"[{arm}] training on family {train} ({lever_tag(levers)}), seed {seed} ...", flush=True)
                _write_json_atomic(path, run_arm(arm, train_key(train, levers), seed, args, levers))
            elif path.is_file():
                print(f"[{arm}] done earlier: {path}")
    results = finished_arms(args.out) if args.out.is_dir() else []
    text = table(results)
    print("\n" + text)
    if results:
        (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
