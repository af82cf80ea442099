"""Seconds per case of `sarco predict`, broken down: read, L3 choice, network, postprocessing
(+ measurement and quality score), mask/overlay/thumbnail writing; for 1 fold, the 5-fold ensemble
and the ensemble with test-time mirroring; per L3 slice and per whole abdominal volume (L3 from the
trained L3 localizer, `sarco train-l3`); and whole batches through `predict` itself with
`--io-workers 1` and `2` (reading and writing overlapped with the network).

Each preset (`cpu`, `default`) gets its own small workspace under --work: phantoms, `sarco convert`,
`sarco plan --preset P`, one fold trained for one iteration (speed does not depend on the weights)
and copied to folds 0-4; one L3 localizer is trained for all presets. The stage arms run predict's
own functions (`sarco_nn.inference`: `_prepare_case`, `_segment_and_measure`, the write job) case
by case, timing the library calls inside them; the batch arms time `sarco_nn.inference.predict`.

Speed levers (`sarco_nn.inference_settings`: bf16 autocast, tile step, one whole-slice tile, the body
crop; `crop+jit` is the crop with the answer-keeping frozen trace) are
chosen with --inference NAME (one of LEVERS; `preset`: the model's own settings) for the stage arms;
every row records the settings that computed it (`inference`) and its file name carries them. The
agreement arm (--agreement DROP...) runs each lever and nnU-Net's reference (fp32, step 0.5) on
held-out drops with truth (images/, masks/, truth.csv) and reports per lever: Dice and |SMA
difference| against the reference, Dice and |SMA error| against the truth, the network's CPU
seconds, and whether the lever may be a default (AGREEMENT_RULE).

Every arm writes its own JSON under --results (default bench/results/inference/) and is skipped
when that file exists, so a killed run resumes where it stopped (--force re-measures).

Run (idle machine, warm file cache; `taskset -c 0,1` gives the 2-core figures on a larger machine):
    taskset -c 0,1 python bench/inference_bench.py --presets cpu default --threads 2
    python bench/inference_bench.py --tiny --presets smoke   # plumbing check: timings meaningless

Speed levers on a quiet machine (each arm < 3 min on 2 cores; WS = a trained `cpu`-preset workspace,
e.g. bench_runs/external_validation/trainA_seed0/ws; DROP_A/B = held-out drops with truth, e.g.
bench_runs/external_validation/data/test_A_12_512 and test_B_12_512):
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS --agreement DROP_A DROP_B
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS --agreement DROP_A DROP_B \
        --levers fp32 crop crop+jit   # the body crop (its own file: a subset of the levers)
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS --inference crop+jit \
        --configs 1-fold 5-folds
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS   # the preset's (bf16)
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS --inference bf16+whole \\
        --configs 1-fold 5-folds
    taskset -c 0,1 python bench/inference_bench.py --presets default --threads 2 --configs 1-fold-mirroring \\
        --cases 3 --volumes 1 [--inference fp32 | bf16+whole]

Where one fold pass goes, and the answer-keeping levers (bench/network_profile.py; IMAGE = one L3 slice,
e.g. DROP_B/images/test_b_000.nii.gz; add --machine loaded on a shared machine: files get __loaded):
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS --profile IMAGE
    taskset -c 0,1 python bench/inference_bench.py --presets cpu --threads 2 --from-workspace WS --inference jit \\
        --configs 1-fold 5-folds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = [("1 fold", ["0"], False), ("5 folds", ["0", "1", "2", "3", "4"], False),
           ("5 folds + mirroring", ["0", "1", "2", "3", "4"], True)]
#: Only when --configs names it: the `default` preset's target configuration.
EXTRA_CONFIGS = [("1 fold + mirroring", ["0"], True)]
#: The batch arms: the 5-fold ensemble without mirroring (the `cpu` target's configuration).
BATCH_CONFIG = "5 folds"
IO_WORKERS = (1, 2)
STAGES = ("read", "l3", "network", "post", "write")
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "inference"
#: The speed levers measured (InferenceSettings fields); "fp32" is nnU-Net's own setting, the reference.
LEVERS: dict[str, dict[str, Any]] = {
    "fp32": {"bf16": False},
    "bf16": {"bf16": True},
    "step1": {"bf16": False, "tile_step_size": 1.0},
    "bf16+step1": {"bf16": True, "tile_step_size": 1.0},
    "whole": {"bf16": False, "whole_slice": True},
    "bf16+whole": {"bf16": True, "whole_slice": True},
    "jit": {"bf16": False, "jit_freeze": True},
    "crop": {"bf16": False, "body_crop": True},
    "crop+jit": {"bf16": False, "body_crop": True, "jit_freeze": True},
}
REFERENCE = "fp32"
#: Appended to every arm's JSON name: "__loaded" for --machine loaded (shared-machine figures).
ARM_SUFFIX = [""]
#: When a lever may become a default: agreement with the reference and no loss against the truth.
AGREEMENT_RULE = {"min_dice_vs_reference": 0.99, "max_mean_abs_sma_diff_pct": 0.5,
                  "max_truth_dice_drop": 0.002, "max_truth_sma_error_rise_pct": 0.25}


def lever_settings(name: str):
    """The InferenceSettings of a lever (nnU-Net's defaults for every field it does not set)."""
    from sarco_nn.inference_settings import InferenceSettings

    return InferenceSettings(**LEVERS[name])


def bench_label(settings) -> str:
    """The settings' label plus the answer-keeping levers (which results.csv leaves out): a bench
    arm's row and file name say everything that ran."""
    return settings.label() + (", jit-frozen" if settings.jit_freeze else "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --------------------------------------------------------------------------- preparation

def _data(work: Path, n_train: int, n_test: int, n_volumes: int, matrix: int) -> Path:
    """Phantom folders shared by every preset: drop (training), slices, volumes (+ vertebrae)."""
    from dataset_conversion.phantom import write_dropin_dataset

    data = work / f"data_{matrix}"
    done = data / "done"
    if not done.exists():
        shutil.rmtree(data, ignore_errors=True)
        write_dropin_dataset(data / "drop", n_cases=n_train, seed=1, matrix=matrix)
        write_dropin_dataset(data / "slices", n_cases=n_test, seed=2, matrix=matrix, case_prefix="slice")
        if n_volumes:
            write_dropin_dataset(data / "volumes", n_cases=n_volumes, seed=3, matrix=matrix, volumes=True,
                                 case_prefix="vol")
        done.write_text("ok\n")
    return data


def _localizer(work: Path, phantoms: int, steps: int) -> Path:
    """A trained L3 localizer (`sarco train-l3 --phantoms N`'s training), once for all presets."""
    from sarco_nn.l3.localizer import CHECKPOINT_FILE
    from sarco_nn.l3.train_l3 import cases_from_phantoms, train_localizer

    model_dir = work / f"l3_localizer_{phantoms}x{steps}"
    if not (model_dir / CHECKPOINT_FILE).exists():
        localizer = train_localizer(cases_from_phantoms(phantoms, seed=0, matrix=128), steps=steps, seed=0)
        localizer.save(model_dir, {"bench": "inference_bench", "phantoms": phantoms, "steps": steps})
    return model_dir


def _model(work: Path, preset: str, data: Path, source: Path | None = None):
    """A workspace with a 5-fold model of `preset` (one training iteration, folds are copies), or a
    copy of the trained model in workspace `source` (its first fold copied to folds 0-4)."""
    from dataset_conversion.convert import convert_dropin
    from sarco_nn.planning import plan_dataset
    from sarco_nn.training.run import train_fold
    from sarco_nn.workspace import Workspace

    root = work / (f"{preset}_{data.name}" if source is None else f"{preset}_from_{Path(source).name}")
    ws = Workspace(root / "ws")
    if not any(ws.results.glob("*/*__*__2d/fold_4/checkpoint_final.pth")):
        shutil.rmtree(root, ignore_errors=True)
        ws = Workspace(root / "ws").activate()
        if source is None:
            convert_dropin(data / "drop", ws.raw, "Bench", 501)
            plan_dataset(ws, "Bench", preset)
            fold = train_fold(ws, "all", "Bench", "smit", preset, epochs=1, iterations=1, validate=False,
                              settings={"val_iterations_per_epoch": 1})
        else:
            shutil.copytree(Path(source), ws.root, dirs_exist_ok=True)
            fold = sorted(ws.results.glob("*/*__*__2d/fold_*/checkpoint_final.pth"))[0].parent
        for k in range(5):
            if fold.name != f"fold_{k}":
                shutil.copytree(fold, fold.parent / f"fold_{k}", dirs_exist_ok=True)
    ws.activate()
    return ws, next(ws.results.glob("*/*__*__2d/fold_4")).parent


# --------------------------------------------------------------------------- stage timing

class StageClock:
    """Seconds spent inside the library calls predict's functions make, gathered by wrapping them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out

    @contextmanager
    def wrapping(self) -> Iterator["StageClock"]:
        import SimpleITK as sitk

        import sarco_nn.l3.choose as choose
        import sarco_nn.l3.locate as locate
        import sarco_nn.review.fold_ensemble as fold_ensemble

        def timed(name: str, fn: Callable, when: Callable[..., bool] = lambda *a, **k: True) -> Callable:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    if when(*args, **kwargs):
                        self.add(name, time.perf_counter() - start)
            return wrapper

        saved = [(locate, "read_volume"), (choose, "load_l3_slice"), (fold_ensemble, "preprocess"),
                 (fold_ensemble, "predict_folds")]
        originals = [getattr(module, name) for module, name in saved]
        # a path is a read from disk; an in-memory image (the localizer's own check) is L3 work
        locate.read_volume = timed("disk_read", originals[0], lambda image, *a, **k: not isinstance(image, sitk.Image))
        choose.load_l3_slice = timed("load_l3_slice", originals[1])
        fold_ensemble.preprocess = timed("preprocess", originals[2])
        fold_ensemble.predict_folds = timed("predict_folds", originals[3])
        try:
            yield self
        finally:
            for (module, name), original in zip(saved, originals):
                setattr(module, name, original)


def _time_case(scan, ctx, predictor, out: Path, clock: StageClock, fallback_ctx) -> dict[str, float]:
    """One case through predict's own functions; the stages are read off the wrapped calls."""
    from sarco_nn.constants import DEFAULT_TRUNK_ONLY
    from sarco_nn.inference import _prepare_case, _segment_and_measure
    from sarco_nn.status import Verdict
    from sarco_nn.thresholds import get_threshold_set

    start = time.perf_counter()
    case = _prepare_case(scan, ctx)
    prepare_s = time.perf_counter() - start
    inner = clock.take()
    load, read, preprocess = (inner.get(k, 0.0) for k in ("load_l3_slice", "disk_read", "preprocess"))
    checks = prepare_s - load - preprocess  # file and CT checks, array copy
    found = case.error is None
    if not found and fallback_ctx is not None:  # the localizer declined (barely trained): its time counts,
        case = _prepare_case(scan, fallback_ctx)  # the vertebra masks' slice feeds the other stages
        preprocess = clock.take().get("preprocess", 0.0)
    if case.error is not None:
        raise RuntimeError(f"{scan.path.name}: {case.error}")
    start = time.perf_counter()
    _, job = _segment_and_measure(scan, scan.case_id, case, Verdict(list(case.reasons)), predictor, [], out, {},
                                  get_threshold_set("paper"), None, 1, DEFAULT_TRUNK_ONLY)  # predict's default
    segment_s = time.perf_counter() - start
    network = clock.take().get("predict_folds", 0.0)
    start = time.perf_counter()
    if job is not None:
        job()
    write_s = time.perf_counter() - start
    return {"read": read + checks, "l3": load - read, "network": preprocess + network, "post": segment_s - network,
            "write": write_s, "l3_found": float(found)}


def _stage_arm(preset: str, label: str, folds: list[str], mirroring: bool, kind: str, model_folder: Path,
               cases: list, ctx, fallback_ctx, args) -> dict:
    import torch

    from sarco_nn.inference import _ReadContext
    from sarco_nn.model_store import TrainedModel, build_predictor

    start = time.perf_counter()
    settings = None if args.inference == "preset" else lever_settings(args.inference)
    predictor = build_predictor(TrainedModel(model_folder, folds), torch.device(args.device), use_mirroring=mirroring,
                                settings=settings)
    load_s = time.perf_counter() - start
    ctx = _ReadContext(**{**ctx.__dict__, "predictor": predictor})
    fallback_ctx = _ReadContext(**{**fallback_ctx.__dict__, "predictor": predictor}) if fallback_ctx else None
    clock = StageClock()
    with tempfile.TemporaryDirectory(prefix="sarco_bench_") as tmp, clock.wrapping():
        for scan in cases[:args.warmup]:  # first-call costs (allocator, oneDNN kernels)
            _time_case(scan, ctx, predictor, Path(tmp), clock, fallback_ctx)
        timings = [_time_case(scan, ctx, predictor, Path(tmp), clock, fallback_ctx) for scan in cases]
    mean = {s: statistics.mean(t[s] for t in timings) for s in STAGES}
    row = {"preset": preset, "config": label, "input": kind, "io_workers": 1, "n": len(cases),
           "inference": bench_label(predictor.sarco_settings), "model_load_s": load_s, **mean, "total": sum(mean.values())}
    if kind == "volume":
        row["l3_found"] = sum(t["l3_found"] for t in timings) / len(timings)
    return row


def _batch_arm(preset: str, ws, data: Path, kind: str, io_workers: int, l3_dir: Path, args) -> dict:
    """Wall seconds per case of `sarco predict` itself (model loading included, once per batch)."""
    import csv

    import torch

    from sarco_nn.inference import predict

    folder = data / ("slices" if kind == "slice" else "volumes") / "images"
    n = len(list(folder.glob("*.nii.gz")))
    with tempfile.TemporaryDirectory(prefix="sarco_bench_batch_") as tmp:
        start = time.perf_counter()
        results, failures = predict(ws, folder, Path(tmp) / "out", fast=True, device=args.device, progress=False,
                                    locator="model", l3_model_dir=l3_dir, io_workers=io_workers)
        wall = time.perf_counter() - start
        torch.set_num_threads(args.threads)  # predict takes every core of this process's share

        with open(results, newline="", encoding="utf-8") as handle:
            measured = sum(1 for r in csv.DictReader(handle) if r["mask"])
    return {"preset": preset, "config": f"{BATCH_CONFIG}, sarco predict", "input": kind, "io_workers": io_workers,
            "inference": bench_label(_preset_settings(ws, args.device)), "n": n, "measured": measured, "failed": failures,
            **{s: None for s in STAGES}, "total": wall / n}


# --------------------------------------------------------------------------- inference settings

def _preset_settings(ws, device: str = "cpu"):
    """The effective settings `sarco predict` runs the workspace's model with (its preset's)."""
    from sarco_nn.model_store import find_model, inference_settings

    return inference_settings(find_model(ws), device.split(":")[0])


def _arm_settings(model_folder: Path, args):
    """The effective settings a stage arm runs with: --inference's lever, or the model's preset's."""
    from sarco_nn.inference_settings import InferenceSettings

    if args.inference != "preset":
        return lever_settings(args.inference).effective(args.device.split(":")[0])
    plans = json.loads((Path(model_folder) / "plans.json").read_text())
    return InferenceSettings.of_plans(plans).effective(args.device.split(":")[0])


# --------------------------------------------------------------------------- agreement arm

def _truth_cases(drop: Path) -> list[tuple[Path, Path, float | None]]:
    """(image, truth mask, true SMA in cm² or None) of a held-out drop (images/, masks/, and
    truth.csv's true_sma_cm2 where the drop has one; else the SMA of the truth mask)."""
    import csv

    sma: dict[str, float] = {}
    if (drop / "truth.csv").is_file():
        with open(drop / "truth.csv", newline="", encoding="utf-8") as handle:
            sma = {r["case_id"]: float(r["true_sma_cm2"]) for r in csv.DictReader(handle)}
    out = []
    for image in sorted((drop / "images").glob("*.nii.gz")):
        if (drop / "masks" / image.name).is_file():
            out.append((image, drop / "masks" / image.name, sma.get(image.name[: -len(".nii.gz")])))
    return out


def _dice(a, b) -> float:
    import numpy as np

    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def _agreement_arm(preset: str, model_folder: Path, drops: list[Path], levers: list[str], args) -> dict:
    """Every lever against the reference (fp32, step 0.5) and the truth, case by case.

    The slice goes through predict's own reading (`_prepare_case`: L3 choice, CT checks, nnU-Net's
    preprocessing) and `predict_folds` (nnU-Net's ensemble); the muscle mask is the network's
    (no postprocessing, which is a workspace decision, not a lever's)."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from sarco_nn.constants import MUSCLE_LABEL
    from sarco_nn.inference import Scan, _prepare_case, _ReadContext
    from sarco_nn.measure import sma_cm2
    from sarco_nn.image_io import mask_to_source_geometry
    from sarco_nn.model_store import TrainedModel, build_predictor, trained_folds
    from sarco_nn.review.fold_ensemble import predict_folds

    model = TrainedModel(model_folder, trained_folds(model_folder)[:1])
    names = [REFERENCE] + [n for n in levers if n != REFERENCE]
    predictors = {n: build_predictor(model, torch.device(args.device), use_mirroring=False, settings=lever_settings(n))
                  for n in names}
    base = dict(l3_slice=None, l3_rows={}, l3_from=None, locator="auto", l3_rule="centroid", l3_dir=Path("."), slab=1)
    per_case: list[dict] = []
    for drop in drops:
        for image, truth_path, true_sma in _truth_cases(Path(drop))[: args.agreement_cases]:
            scan = Scan(image.name[: -len(".nii.gz")], image)
            truth_image = sitk.ReadImage(str(truth_path))
            truth = sitk.GetArrayFromImage(truth_image).reshape(-1) == MUSCLE_LABEL
            if true_sma is None:  # the truth mask's own area
                true_sma = float(np.count_nonzero(truth)) * float(np.prod(truth_image.GetSpacing()[:2])) / 100.0
            case = {"drop": Path(drop).name, "case": scan.case_id}
            for name in names:
                predictor = predictors[name]
                prepared = _prepare_case(scan, _ReadContext(predictor=predictor, **base))
                if prepared.error is not None:
                    raise RuntimeError(f"{image}: {prepared.error}")
                start = time.process_time()
                folds = predict_folds(predictor, prepared.ct[None], {"spacing": prepared.spacing_zyx},
                                      preprocessed=prepared.preprocessed)
                cpu_s = time.process_time() - start
                mask = folds.segmentation[0] == MUSCLE_LABEL
                on_grid = sitk.GetImageFromArray(folds.segmentation)  # back to the file's geometry, as predict writes
                on_grid.CopyInformation(prepared.slice_image)
                in_file = sitk.GetArrayFromImage(mask_to_source_geometry(on_grid, prepared.source)).reshape(-1)
                case[name] = {"mask": in_file == MUSCLE_LABEL, "cpu_s": cpu_s,
                              "sma": sma_cm2(mask.astype(np.uint8), tuple(prepared.spacing_zyx[1:]))}
            ref = case[REFERENCE]
            for name in names:
                got = case[name]
                got.update(dice_ref=_dice(got["mask"], ref["mask"]),
                           sma_diff_pct=100.0 * abs(got["sma"] - ref["sma"]) / max(ref["sma"], 1e-6),
                           dice_truth=_dice(got["mask"], truth),
                           sma_err_pct=100.0 * abs(got["sma"] - true_sma) / max(true_sma, 1e-6))
            for name in names:
                del case[name]["mask"]
            per_case.append(case)
            print(f"  agreement {case['drop']}/{case['case']}: " + ", ".join(
                f"{n} Dice {case[n]['dice_ref']:.4f}" for n in names[1:]), flush=True)
    summary = _summarise(per_case, names)
    for name, got in summary.items():
        got["settings"] = bench_label(predictors[name].sarco_settings)
        got["by_drop"] = {k: _summarise([c for c in per_case if c["drop"] == k], [name, REFERENCE])[name]
                          for k in (Path(d).name for d in drops)}
        # the rule holds pooled AND on every drop (family): a lever must not trade one family for another
        got["may_be_default"] = _meets_rule(got, summary[REFERENCE]) and all(
            _meets_rule(got["by_drop"][k], _summarise([c for c in per_case if c["drop"] == k], [REFERENCE])[REFERENCE])
            for k in got["by_drop"])
    return {"preset": preset, "config": "agreement", "model": str(model_folder), "folds": model.folds,
            "drops": [str(d) for d in drops], "n": len(per_case), "rule": AGREEMENT_RULE, "levers": summary,
            "cases": per_case, "total": summary[REFERENCE]["mean_cpu_s"]}


def _summarise(per_case: list[dict], names: list[str]) -> dict[str, dict]:
    """Per lever: means of the per-case figures, the worst agreement, and CPU speed-up vs the reference."""
    summary = {}
    for name in names:
        rows = [c[name] for c in per_case]
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("dice_ref", "sma_diff_pct", "dice_truth",
                                                                 "sma_err_pct", "cpu_s")}
        summary[name] = {**{f"mean_{k}": v for k, v in mean.items()}, "n": len(rows),
                         "min_dice_ref": min(r["dice_ref"] for r in rows),
                         "max_sma_diff_pct": max(r["sma_diff_pct"] for r in rows)}
    reference_cpu = statistics.mean(c[REFERENCE]["cpu_s"] for c in per_case)
    for got in summary.values():
        got["speedup_cpu"] = reference_cpu / got["mean_cpu_s"]
    return summary


def _meets_rule(got: dict, ref: dict) -> bool:
    return (got["mean_dice_ref"] >= AGREEMENT_RULE["min_dice_vs_reference"]
            and got["mean_sma_diff_pct"] <= AGREEMENT_RULE["max_mean_abs_sma_diff_pct"]
            and got["mean_dice_truth"] >= ref["mean_dice_truth"] - AGREEMENT_RULE["max_truth_dice_drop"]
            and got["mean_sma_err_pct"] <= ref["mean_sma_err_pct"] + AGREEMENT_RULE["max_truth_sma_error_rise_pct"])


def print_agreement(row: dict) -> None:
    print(f"\nagreement with {REFERENCE} (fp32, step 0.5), {row['n']} held-out slices, folds {row['folds']}; "
          "CPU s = network CPU seconds per slice (a relative figure on a busy machine)\n")
    print("| lever | settings | Dice vs ref (mean / min) | abs SMA diff % (mean / max) | Dice vs truth "
          "| abs SMA error vs truth % | CPU s | speed-up | may be default |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in row["levers"].items():
        print(f"| {name} | {r['settings']} | {r['mean_dice_ref']:.4f} / {r['min_dice_ref']:.4f} "
              f"| {r['mean_sma_diff_pct']:.2f} / {r['max_sma_diff_pct']:.2f} | {r['mean_dice_truth']:.4f} "
              f"| {r['mean_sma_err_pct']:.2f} | {r['mean_cpu_s']:.2f} | {r['speedup_cpu']:.2f}x "
              f"| {'yes' if r['may_be_default'] else 'no'} |")
    print("\nper drop: Dice vs ref / abs SMA diff % / Dice vs truth / abs SMA error vs truth %\n")
    for name, r in row["levers"].items():
        print(f"- {name}: " + "; ".join(
            f"{drop} {d['mean_dice_ref']:.4f} / {d['mean_sma_diff_pct']:.2f} / {d['mean_dice_truth']:.4f} / "
            f"{d['mean_sma_err_pct']:.2f}" for drop, d in r.get("by_drop", {}).items()))


# --------------------------------------------------------------------------- arms and table

def _arm(results: Path, name: str, force: bool, measure: Callable[[], dict]) -> dict:
    """One arm's row from its JSON, or measured now and written (atomically) for the next run."""
    from sarco_nn.atomic import write_json_atomic

    path = results / f"{name}{ARM_SUFFIX[0]}.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    row = measure()
    write_json_atomic(path, row)
    print(f"  {name}: {row['total']:.3f} s per case", flush=True)
    return row


def bench_preset(preset: str, args) -> list[dict]:
    from sarco_nn.inference import Scan, _ReadContext

    work, results = args.work.resolve(), args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    data = _data(work, args.train_cases, args.cases, args.volumes, args.matrix)
    l3_dir = _localizer(work, args.l3_phantoms, args.l3_steps)
    ws, model_folder = _model(work, preset, data, args.from_workspace)
    slices = [Scan(p.name[: -len(".nii.gz")], p) for p in sorted((data / "slices" / "images").glob("*.nii.gz"))]
    volumes = [Scan(p.name[: -len(".nii.gz")], p) for p in sorted((data / "volumes" / "images").glob("*.nii.gz"))]
    base = dict(l3_slice=None, l3_rows={}, l3_rule="centroid", l3_dir=l3_dir, slab=1, predictor=None)
    by_model = _ReadContext(l3_from=None, locator="model", **base)
    by_vertebrae = _ReadContext(l3_from=data / "volumes" / "vertebrae", locator="vertebrae", **base)
    rows = []
    tag = _slug(bench_label(_arm_settings(model_folder, args)))  # results are keyed by what computed them
    for label, folds, mirroring in CONFIGS + EXTRA_CONFIGS:
        if _slug(label) not in args.configs:
            continue
        for kind, cases in (("slice", slices), ("volume", volumes)):
            if cases:
                rows.append(_arm(results, f"{preset}__{_slug(label)}__{kind}__{tag}", args.force, lambda: _stage_arm(
                    preset, label, folds, mirroring, kind, model_folder, cases, by_model,
                    by_vertebrae if kind == "volume" else None, args)))
    if args.inference != "preset" or _slug(BATCH_CONFIG) not in args.configs:  # predict: the preset's settings
        return rows
    tag = _slug(bench_label(_preset_settings(ws, args.device)))
    for io_workers in IO_WORKERS:
        for kind, cases in (("slice", slices), ("volume", volumes)):
            if cases:
                rows.append(_arm(results, f"{preset}__batch-io{io_workers}__{kind}__{tag}", args.force,
                                 lambda: _batch_arm(preset, ws, data, kind, io_workers, l3_dir, args)))
    return rows


def agreement_main(args) -> int:
    """The agreement arm alone: the model of --from-workspace (or the bench's own) on --agreement drops."""
    work, results = args.work.resolve(), args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    preset = args.presets[0]
    if args.from_workspace is not None:
        found = sorted(Path(args.from_workspace).glob("nnUNet_results/*/*__*__2d/fold_*/checkpoint_final.pth"))
        if not found:
            raise SystemExit(f"no trained fold in {args.from_workspace}")
        model_folder, source = found[0].parent.parent, Path(args.from_workspace)
    else:
        data = _data(work, args.train_cases, args.cases, args.volumes, args.matrix)
        model_folder, source = _model(work, preset, data)[1], work
    name = f"{preset}__agreement__{_slug(source.parent.name if source.name == 'ws' else source.name)}__" \
           f"{_slug('-'.join(Path(d).name for d in args.agreement))}"
    if args.levers != list(LEVERS):  # a subset of the levers: its own file
        name += f"__{_slug('-'.join(args.levers))}"
    row = _arm(results, name, args.force, lambda: _agreement_arm(preset, model_folder, args.agreement, args.levers, args))
    print_agreement(row)
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


def profile_cli(args) -> int:
    """The network profile alone: the first fold of --from-workspace's model on --profile's image."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (also when imported by a test)
    from network_profile import print_profile, profile_main

    if args.from_workspace is None:
        raise SystemExit("--profile needs --from-workspace WS (a trained model)")
    found = sorted(Path(args.from_workspace).glob("nnUNet_results/*/*__*__2d/fold_*/checkpoint_final.pth"))
    if not found:
        raise SystemExit(f"no trained fold in {args.from_workspace}")
    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    source = Path(args.from_workspace)
    name = f"{args.presets[0]}__profile__{_slug(source.parent.name if source.name == 'ws' else source.name)}__" \
           f"t{args.threads}"
    row = _arm(results, name, args.force, lambda: profile_main(args, args.presets[0], found[0].parent.parent,
                                                               args.profile))
    print_profile(row)
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


def print_table(rows: list[dict], note: str) -> None:
    print(f"\nseconds per case{note}\n")
    print("| preset | ensemble | input | io workers | read | L3 choice | network | post + measure | writing | total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = " | ".join("—" if r[s] is None else f"{r[s]:.3f}" for s in STAGES)
        extra = f" (L3 found {r['l3_found']:.0%})" if "l3_found" in r else ""
        if r.get("measured") is not None and r["measured"] < r["n"]:
            extra += f" ({r['measured']}/{r['n']} measured)"
        settings = f" [{r['inference']}]" if r.get("inference") else ""
        print(f"| {r['preset']} | {r['config']}{settings} | {r['input']}{extra} | {r['io_workers']} | {cells} "
              f"| **{r['total']:.3f}** |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "default"])
    parser.add_argument("--cases", type=int, default=5, help="timed L3 slices per arm")
    parser.add_argument("--volumes", type=int, default=2, help="timed whole volumes per arm")
    parser.add_argument("--train-cases", type=int, default=6)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=1, help="untimed cases before each stage arm")
    parser.add_argument("--l3-phantoms", type=int, default=18, help="phantom volumes the L3 localizer learns from")
    parser.add_argument("--l3-steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (set the CPU share with taskset)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("bench_runs/inference"))
    parser.add_argument("--results", type=Path, help=f"one JSON per arm (default {DEFAULT_RESULTS}; --tiny: WORK/results)")
    parser.add_argument("--from-workspace", type=Path, help="time the trained model of this workspace (its "
                        "preset given by --presets) instead of training one: for quick checks")
    parser.add_argument("--configs", nargs="+", default=[_slug(c[0]) for c in CONFIGS],
                        choices=[_slug(c[0]) for c in CONFIGS + EXTRA_CONFIGS],
                        help="ensembles to time (the batch arms run with 5-folds)")
    parser.add_argument("--inference", default="preset", choices=["preset", *LEVERS],
                        help="speed lever the stage arms run with (preset: the model's own settings)")
    parser.add_argument("--agreement", type=Path, nargs="+", metavar="DROP",
                        help="only the agreement arm: every lever vs fp32 step 0.5 and vs the truth on these "
                             "held-out drops (images/, masks/, truth.csv)")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS),
                        help="levers the agreement arm compares")
    parser.add_argument("--agreement-cases", type=int, default=12, help="slices per drop in the agreement arm")
    parser.add_argument("--profile", type=Path, metavar="IMAGE",
                        help="only the network profile (bench/network_profile.py): one fold pass of the model of "
                             "--from-workspace on this L3 slice or volume, split into encoder / decoder / nnU-Net "
                             "bookkeeping, and the answer-preserving levers")
    parser.add_argument("--profile-reps", type=int, default=3, help="timed repetitions in the profile")
    parser.add_argument("--machine", choices=["quiet", "loaded"], default="quiet",
                        help="loaded: a shared machine's figures; their JSON files get the suffix __loaded")
    parser.add_argument("--force", action="store_true", help="re-measure arms whose JSON exists")
    parser.add_argument("--tiny", action="store_true", help="128² images, 1 slice, 1 volume, no warm-up, "
                                                            "a 2-step localizer: plumbing only")
    parser.add_argument("--json", type=Path, help="also write every row to this file")
    args = parser.parse_args(argv)
    if args.from_workspace is not None and len(args.presets) != 1:
        parser.error("--from-workspace times one model: give its preset alone with --presets")
    if args.tiny:
        args.cases, args.volumes, args.matrix = 1, 1, 128
        args.warmup, args.l3_phantoms, args.l3_steps = 0, 2, 2
    if args.results is None:
        args.results = args.work / "results" if args.tiny else DEFAULT_RESULTS
    ARM_SUFFIX[0] = "__loaded" if args.machine == "loaded" else ""
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("nnUNet_def_n_proc", str(args.threads))
    if args.profile:
        return profile_cli(args)
    if args.agreement:
        return agreement_main(args)
    rows = []
    for preset in args.presets:
        rows.extend(bench_preset(preset, args))
    threads = f", {torch.get_num_threads()} torch thread(s) on {len(os.sched_getaffinity(0))} core(s)" \
        if hasattr(os, "sched_getaffinity") else ""
    print_table(rows, threads + (" (tiny: timings meaningless)" if args.tiny else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
