"""nnU-Net's U-Net vs SMIT from scratch vs SMIT pretrained, on one phantom dataset, folds and budget.

Prints Dice, SMA error, training seconds per epoch and inference seconds per case for each.
Every number comes from the real sarco chain (convert → plan → train → predict → evaluate).

  python bench/compare_trainers.py                       # CPU, `cpu` preset (8 min per trainer)
  python bench/compare_trainers.py --budget 120 --train-cases 20
  python bench/compare_trainers.py --device cuda --preset default --epochs 50
  python bench/compare_trainers.py --pretrained runs/pretrain/encoder.pt
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from dataset_conversion.convert import convert_dropin
from dataset_conversion.phantom import write_dropin_dataset
from sarco_nn.evaluation.evaluate import evaluate_folder
from sarco_nn.inference import predict
from sarco_nn.planning import plan_dataset
from sarco_nn.training.run import train_fold
from sarco_nn.workspace import Workspace


def _epochs_and_seconds(fold_dir: Path) -> tuple[int, float]:
    progress = json.loads((fold_dir / "sarco_progress.json").read_text())
    return progress["epochs_done"], progress["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_runs/compare_trainers"))
    parser.add_argument("--train-cases", type=int, default=40)
    parser.add_argument("--test-cases", type=int, default=12)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--budget", type=float, default=None, help="override the preset's time budget (s)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pretrained", type=Path, default=None, help="encoder.pt from `sarco pretrain`")
    parser.add_argument("--trainers", default="nnunet,smit", help="comma list of nnunet, smit, resenc")
    args = parser.parse_args()

    if args.out.exists():
        shutil.rmtree(args.out)
    drop = write_dropin_dataset(args.out / "drop", args.train_cases, seed=1)
    held = write_dropin_dataset(args.out / "held", args.test_cases, seed=2, case_prefix="held")
    ws = Workspace(args.out / "ws").activate()
    convert_dropin(drop, ws.raw, "Compare", 501)
    plans_path = ws.preprocessed / "Dataset501_Compare"
    plan_dataset(ws, 501, args.preset)
    if args.budget is not None:  # the budget is a preset field: patch the planned preset, recorded in the plans
        plans_file = next(plans_path.glob("sarcoPlans_*.json"))
        plans = json.loads(plans_file.read_text())
        plans["sarco"]["preset"]["training"]["time_budget_s"] = args.budget
        plans_file.write_text(json.dumps(plans, indent=1))

    runs = [(t, None) for t in args.trainers.split(",")]
    if args.pretrained:
        runs.append(("smit", args.pretrained))
    rows = []
    for trainer, pretrained in runs:
        label = f"{trainer}{' pretrained' if pretrained else ''}"
        fold_dir = train_fold(ws, "all", 501, trainer, None, args.epochs, None, args.device, pretrained=pretrained)
        epochs, seconds = _epochs_and_seconds(fold_dir)
        out = args.out / f"pred_{label.replace(' ', '_')}"
        started = time.monotonic()
        predict(ws, held / "images", out, dataset=501, trainer=trainer, clinical_csv=held / "clinical.csv", fast=True,
                device=args.device, progress=False)
        infer_s = (time.monotonic() - started) / args.test_cases
        summary = evaluate_folder(out, held / "masks", held / "clinical.csv", out / "evaluation")
        rows.append((label, summary["dice_mean"], summary["sma_mape_percent"], summary["pooled"]["sma_abs_error_percent_max"],
                     summary["accuracy"], seconds / max(epochs, 1), epochs, infer_s))
        shutil.move(str(fold_dir), str(fold_dir.parent / f"fold_all_{label.replace(' ', '_')}"))

    print(f"\n{args.train_cases} training / {args.test_cases} held-out phantoms, preset {args.preset}, device {args.device}")
    print("| trainer | Dice | mean abs SMA err % | max abs SMA err % | flag accuracy | train s/epoch | epochs | infer s/case |")
    print("|---|---|---|---|---|---|---|---|")
    for label, dice, mape, worst, acc, s_epoch, epochs, infer in rows:
        print(f"| {label} | {dice:.3f} | {mape:.2f} | {worst:.2f} | {acc:.2f} | {s_epoch:.1f} | {epochs} | {infer:.2f} |")


if __name__ == "__main__":
    main()
