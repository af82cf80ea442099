"""Does SMIT pretraining on unlabeled CT help when few L3 slices are labeled? (issue #9, point 5)

1. Unlabeled data: phantom T12-S1 volumes (`generate_phantom_volume`, written to NIfTI, seeds
   disjoint from the labeled ones) plus the real CTs in ../shared/data (TotalSegmentator's
   abdominal example_ct, MOOSE's neck CT) when that folder exists.
2. `python -m sarco_nn.pretraining` (= `sarco pretrain`) in 2D at the fine-tuning spacing and
   patch size -> encoder.pt.
3. For n = 4, 8, 16 labeled phantom L3 slices: `sarco convert` -> `sarco plan` (a preset written
   here: same spacing, patch, schedule for every arm) -> `sarco train all` from scratch and with
   `--pretrained encoder.pt` at the same budget (epochs x iterations) -> `sarco predict` on
   held-out phantoms -> Dice and SMA error against their truth.

Run:  python bench/pretraining_ablation.py --quick          (CPU, minutes; a plumbing-scale answer)
      python bench/pretraining_ablation.py --device cuda     (longer pretraining and fine-tuning)
Phantoms only: no accuracy claim about real patients follows from this table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL_CTS = [SHARED / "totalsegmentator" / "example_ct.nii.gz", SHARED / "moose" / "CT_enhance_pet_1446_neck_slice.nii.gz"]

QUICK = dict(unlabeled=6, matrix=128, spacing=3.0, patch=64, pre_epochs=5, pre_steps=8, pre_batch=4,
             ft_epochs=6, ft_iters=8, held=6)
FULL = dict(unlabeled=60, matrix=256, spacing=1.5, patch=256, pre_epochs=100, pre_steps=50, pre_batch=8,
            ft_epochs=50, ft_iters=50, held=24)


def sarco(args: list[str], log: Path, threads: int) -> float:
    """Run one sarco CLI command as a user would; returns its wall time. Output goes to `log`."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    started = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"\n$ sarco {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", "sarco_nn.cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env=env, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"`sarco {' '.join(args)}` failed (exit {proc.returncode}); see {log}")
    return time.monotonic() - started


def write_unlabeled(folder: Path, n: int, matrix: int) -> list[str]:
    import SimpleITK as sitk

    from dataset_conversion.phantom import to_sitk
    from dataset_conversion.phantom_volume import generate_phantom_volume

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ph = generate_phantom_volume(np.random.default_rng([1000, i]), matrix=matrix)
        sitk.WriteImage(to_sitk(ph.ct_hu.astype(np.int16), ph.spacing_mm, i % 3 == 1, -400.0),
                        str(folder / f"phantom_{i:03d}.nii.gz"), True)
    real = []
    for src in REAL_CTS:
        if src.is_file():
            (folder / src.name).symlink_to(src)
            real.append(src.name)
    return real


def write_preset(path: Path, p: dict) -> None:
    preset = {
        "name": path.stem, "description": "pretraining ablation: identical plan and budget for every arm",
        "target_spacing_mm": p["spacing"], "max_patch_size": [p["patch"], p["patch"]], "batch_size": 2,
        "training": {"trainer": "smit", "num_epochs": p["ft_epochs"], "iterations_per_epoch": p["ft_iters"],
                     "val_iterations_per_epoch": 1, "time_budget_s": None, "rotation_deg": 15, "mirror_axes": [1],
                     "save_every": p["ft_epochs"]},
        "trainer_overrides": {"smit": {"initial_lr": 3e-4, "weight_decay": 1e-5, "warmup_fraction": 0.05},
                              "nnunet": {"initial_lr": 0.01}, "resenc": {"initial_lr": 0.01}},
    }
    path.write_text(json.dumps(preset, indent=2))


def score(pred_dir: Path, held: Path) -> dict[str, float]:
    """Mean Dice and SMA errors of one prediction folder against the held-out truth."""
    import SimpleITK as sitk

    truth = {r["case_id"]: float(r["true_sma_cm2"]) for r in csv.DictReader(open(held / "truth.csv"))}
    dice, abs_err, rel_err = [], [], []
    for row in csv.DictReader(open(pred_dir / "results.csv")):
        if row["status"] != "ok":
            continue
        case = row["case_id"]
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / row["mask"]))) > 0
        t = sitk.GetArrayFromImage(sitk.ReadImage(str(held / "masks" / f"{case}.nii.gz"))) > 0
        dice.append(2.0 * np.logical_and(p, t).sum() / max(p.sum() + t.sum(), 1))
        err = float(row["sma_cm2"]) - truth[case]
        abs_err.append(abs(err))
        rel_err.append(abs(err) / truth[case] * 100.0)
    return {"cases": len(dice), "dice_mean": float(np.mean(dice)), "dice_sd": float(np.std(dice)),
            "sma_abs_err_cm2": float(np.mean(abs_err)), "sma_rel_err_pct": float(np.mean(rel_err))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU, minutes: small phantoms, short schedules")
    ap.add_argument("--work", type=Path, default=Path("/tmp/sarco_pretraining_ablation"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    p = dict(QUICK if args.quick else FULL)
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "log.txt"
    timings: dict[str, float] = {}

    # 1-2: unlabeled data and pretraining
    t0 = time.monotonic()
    real = write_unlabeled(work / "unlabeled", p["unlabeled"], p["matrix"])
    timings["write_unlabeled_s"] = time.monotonic() - t0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    pre_cmd = [sys.executable, "-m", "sarco_nn.pretraining", str(work / "unlabeled"), "-o", str(work / "pretrain"),
               "--dims", "2", "--crop-size", str(p["patch"]), "--spacing", str(p["spacing"]),
               "--epochs", str(p["pre_epochs"]), "--steps-per-epoch", str(p["pre_steps"]),
               "--batch-size", str(p["pre_batch"]), "--warmup-epochs", "1", "--cache-volumes", "100",
               "--device", args.device, "--no-progress"]
    t0 = time.monotonic()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(pre_cmd[2:]) + "\n")
        fh.flush()
        if subprocess.run(pre_cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode:
            raise SystemExit(f"pretraining failed; see {log}")
    timings["pretrain_s"] = time.monotonic() - t0
    encoder = work / "pretrain" / "encoder.pt"
    card = json.loads((work / "pretrain" / "card.json").read_text())

    # 3: labeled sets, held-out set, the same plan for every arm
    from dataset_conversion.phantom import write_dropin_dataset

    write_dropin_dataset(work / "held", p["held"], seed=2, matrix=p["matrix"], case_prefix="held")
    preset = work / "ablation.json"
    write_preset(preset, p)
    rows = []
    for n in args.sizes:
        drop = write_dropin_dataset(work / f"drop_{n}", n, seed=1, matrix=p["matrix"])
        base = work / f"ws_{n}"
        timings[f"convert_plan_{n}_s"] = (sarco(["convert", str(drop), "--name", f"Abl{n}", "-w", str(base)], log, args.threads)
                                          + sarco(["plan", "--preset", str(preset), "-w", str(base)], log, args.threads))
        for arm in ("scratch", "pretrained"):
            ws = work / f"ws_{n}_{arm}"
            shutil.copytree(base, ws)
            train = ["train", "all", "-w", str(ws), "--device", args.device]
            if arm == "pretrained":
                train += ["--pretrained", str(encoder)]
            timings[f"train_{n}_{arm}_s"] = sarco(train, log, args.threads)
            pred = work / f"pred_{n}_{arm}"
            sarco(["predict", "-i", str(work / "held" / "images"), "-o", str(pred), "-w", str(ws), "--fast",
                   "--device", args.device], log, args.threads)
            rows.append({"labeled": n, "init": arm, **score(pred, work / "held")})

    # 4: the table
    print(f"\nSMIT pretraining ablation ({'quick' if args.quick else 'full'}; phantoms, held-out n={p['held']})")
    print(f"pretraining: {card['data']['volumes_listed']} unlabeled volumes ({p['unlabeled']} phantoms + real: "
          f"{', '.join(real) or 'none'}), {card['epochs_done']} epochs x {card['steps_per_epoch']} steps, batch "
          f"{p['pre_batch']}, {p['patch']}^2 at {p['spacing']} mm; final loss {card['final_loss']}")
    print(f"fine-tuning: {p['ft_epochs']} epochs x {p['ft_iters']} iterations, batch 2, same for both arms\n")
    print("| labeled | init | Dice (mean ± sd) | SMA abs. error (cm²) | SMA rel. error (%) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['labeled']} | {r['init']} | {r['dice_mean']:.3f} ± {r['dice_sd']:.3f} | "
              f"{r['sma_abs_err_cm2']:.1f} | {r['sma_rel_err_pct']:.1f} |")
    out = {"params": p, "rows": rows, "timings_s": {k: round(v, 1) for k, v in timings.items()},
           "pretrain_card": {k: card[k] for k in ("data", "epochs_done", "final_loss", "mask_ratio")}}
    (work / "results.json").write_text(json.dumps(out, indent=2))
    print(f"\ntimings (s): {out['timings_s']}\nresults: {work / 'results.json'}; log: {log}")


if __name__ == "__main__":
    main()
