"""Seconds per L3 slice of `sarco predict`, broken down: read, L3 choice, network, postprocessing
(+ measurement), mask/overlay writing; for 1 fold, the 5-fold ensemble, and the ensemble with
test-time mirroring; per single slice and per whole abdominal volume (L3 localisation included).

Each preset (`cpu`, `default`) gets its own small workspace under --work: phantoms, `sarco convert`,
`sarco plan --preset P`, one fold trained for one iteration (speed does not depend on the weights)
and copied to folds 0-4. The stages are the calls `sarco predict` makes, timed one by one.

Run (2 CPU cores, idle machine, warm file cache):
    python bench/inference_bench.py --presets cpu default --threads 2
    python bench/inference_bench.py --tiny      # plumbing check: tiny images, timings meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = [("1 fold", ["0"], False), ("5 folds", ["0", "1", "2", "3", "4"], False),
           ("5 folds + mirroring", ["0", "1", "2", "3", "4"], True)]
STAGES = ("read", "l3", "network", "post", "write")


def _prepare(work: Path, preset: str, n_train: int, n_test: int, n_volumes: int, matrix: int):
    """A workspace with a 5-fold model of `preset` (one training iteration, folds are copies)."""
    from dataset_conversion.convert import convert_dropin
    from dataset_conversion.phantom import write_dropin_dataset
    from sarco_nn.planning import plan_dataset
    from sarco_nn.training.run import train_fold
    from sarco_nn.workspace import Workspace

    root = work / preset
    ws = Workspace(root / "ws")
    model_root = ws.results / "Dataset501_Bench"
    if not any(model_root.glob("*/fold_4/checkpoint_final.pth")):
        shutil.rmtree(root, ignore_errors=True)
        write_dropin_dataset(root / "drop", n_cases=n_train, seed=1, matrix=matrix)
        write_dropin_dataset(root / "slices", n_cases=n_test, seed=2, matrix=matrix, case_prefix="slice")
        if n_volumes:
            write_dropin_dataset(root / "volumes", n_cases=n_volumes, seed=3, matrix=matrix, volumes=True,
                                 case_prefix="vol")
        ws.activate()
        convert_dropin(root / "drop", ws.raw, "Bench", 501)
        plan_dataset(ws, "Bench", preset)
        fold_all = train_fold(ws, "all", "Bench", "smit", preset, epochs=1, iterations=1, validate=False,
                              settings={"val_iterations_per_epoch": 1})
        for fold in range(5):
            shutil.copytree(fold_all, fold_all.parent / f"fold_{fold}", dirs_exist_ok=True)
    return ws, root, next(model_root.glob("*__*__2d"))


def _time_case(scan: Path, predictor, vertebrae: Path | None, out: Path) -> dict[str, float]:
    import SimpleITK as sitk

    from sarco_nn.l3.choose import choose_slice, slab_slice
    from sarco_nn.l3.locate import read_volume
    from sarco_nn.measure import measure_slice
    from sarco_nn.overlay import save_overlay

    t = {}
    start = time.perf_counter()
    original, canonical = read_volume(scan)
    t["read"] = time.perf_counter() - start
    start = time.perf_counter()
    location = choose_slice(scan, original, None, None, vertebrae, "vertebrae" if vertebrae else "auto")
    slice_image = slab_slice(canonical, location.slice_index, 1)
    ct = sitk.GetArrayFromImage(slice_image).astype("float32")
    spacing = list(slice_image.GetSpacing())[::-1]
    t["l3"] = time.perf_counter() - start
    start = time.perf_counter()
    seg = predictor.predict_single_npy_array(ct[None], {"spacing": spacing}, None, None, False).astype("uint8")
    t["network"] = time.perf_counter() - start
    start = time.perf_counter()
    measure_slice(seg[0], (spacing[1], spacing[2]), ct[0])
    t["post"] = time.perf_counter() - start
    start = time.perf_counter()
    mask = sitk.GetImageFromArray(seg)
    mask.CopyInformation(slice_image)
    sitk.WriteImage(mask, str(out / f"{scan.name}.mask.nii.gz"), True)
    save_overlay(ct[0], seg[0], (spacing[1], spacing[2]), out / f"{scan.name}.png", title=scan.name)
    t["write"] = time.perf_counter() - start
    return t


def bench_preset(work: Path, preset: str, args) -> list[dict]:
    import torch

    from sarco_nn.model_store import TrainedModel, build_predictor

    ws, root, model_folder = _prepare(work, preset, args.train_cases, args.cases, args.volumes, args.matrix)
    inputs = [("slice", p, None) for p in sorted((root / "slices" / "images").glob("*.nii.gz"))]
    inputs += [("volume", p, root / "volumes" / "vertebrae" / p.name)
               for p in sorted((root / "volumes" / "images").glob("*.nii.gz"))] if args.volumes else []
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sarco_bench_") as tmp:
        for label, folds, mirroring in CONFIGS:
            start = time.perf_counter()
            predictor = build_predictor(TrainedModel(model_folder, folds), device, use_mirroring=mirroring)
            load_s = time.perf_counter() - start
            for kind in ("slice", "volume"):
                cases = [(p, v) for k, p, v in inputs if k == kind]
                if not cases:
                    continue
                _time_case(cases[0][0], predictor, cases[0][1], Path(tmp))  # warm-up (first-call costs)
                timings = [_time_case(p, predictor, v, Path(tmp)) for p, v in cases]
                mean = {s: statistics.mean(t[s] for t in timings) for s in STAGES}
                rows.append({"preset": preset, "config": label, "input": kind, "n": len(cases),
                             "model_load_s": load_s, **mean, "total": sum(mean.values())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "default"])
    parser.add_argument("--cases", type=int, default=5, help="timed L3 slices per configuration")
    parser.add_argument("--volumes", type=int, default=2, help="timed whole volumes per configuration")
    parser.add_argument("--train-cases", type=int, default=6)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("bench_runs/inference"))
    parser.add_argument("--tiny", action="store_true", help="128² images, 1 slice, 1 volume, smoke preset allowed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.tiny:
        args.cases, args.volumes, args.matrix = 1, 1, 128
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("nnUNet_def_n_proc", str(args.threads))
    rows = []
    for preset in args.presets:
        rows.extend(bench_preset(args.work.resolve(), preset, args))
    print(f"\nseconds per case, {args.threads} CPU thread(s){' (tiny: timings meaningless)' if args.tiny else ''}\n")
    print("| preset | ensemble | input | read | L3 choice | network | post + measure | mask + overlay | total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['config']} | {r['input']} | " + " | ".join(f"{r[s]:.3f}" for s in STAGES)
              + f" | **{r['total']:.3f}** |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
