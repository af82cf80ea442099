"""Does SMIT pretraining help when few L3 slices are labeled? A resumable ablation, arm by arm (issue #20).

Arms (each writes one JSON under bench/results/pretraining_ablation/<profile>/arms/ when it
finishes; a rerun skips finished arms, so the ablation runs in pieces):
  * `pretrain-<recipe>`: `python -m sarco_nn.pretraining` (= `sarco pretrain`) in 2D at the
    fine-tuning spacing and crop, on unlabeled phantoms of every available family (family A: whole
    T12-S1 volumes; other families: their L3 slices) plus the real CTs of ../shared/data when that
    folder exists. Its JSON holds the per-epoch losses; the loss curve is saved beside it as PNG.
    The longest arm: stopped midway (Ctrl-C saves at the step end), it continues from its checkpoint.
  * `ft-nNN-scratch-sS` and `ft-nNN-<recipe>-sS`: `sarco convert` -> `sarco plan` (one preset
    written here: same spacing, patch, network and budget for every arm) -> `sarco train all`
    from scratch or with `--pretrained encoder.pt`, at a fixed budget of epochs x iterations (never
    wall-clock) -> `sarco predict` on held-out internal (family A, unseen seed) and external (other
    family) phantoms -> Dice and |SMA error| per case. Seed S picks the labeled cases (nested:
    the 2 cases of seed S are the first 2 of its 4, ...) and the fine-tuning seed, so scratch and
    pretrained arms of one seed are paired.

Run:   python bench/pretraining_ablation.py --cpu --plan          (measure a tiny run, print the plan)
       python bench/pretraining_ablation.py --cpu --only-pretrain (the pretraining arm(s) alone)
       python bench/pretraining_ablation.py --cpu --arms 4        (at most 4 unfinished arms, then stop)
       python bench/pretraining_ablation.py --cpu --sizes 4       (only the 4-label arms: the issue's target)
       python bench/pretraining_ablation.py --cpu                 (everything still missing)
       python bench/pretraining_ablation.py report --cpu          (mean ± SD, paired deltas, table.md)
Recipes (`--recipe NAME`, repeatable; scratch arms are shared by every recipe): see RECIPES.
Phantoms only: no accuracy claim about real patients follows from this table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "pretraining_ablation"
#: Real CTs used as unlabeled data when ../shared/data exists (plumbing-grade real anatomy, no masks).
REAL_CTS = ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_ct_dicom",
            "moose/CT_enhance_pet_1446_neck_slice.nii.gz")
#: The family the labeled and internal held-out cases come from; every other family is external.
TRAIN_FAMILY = "A"
#: Disjoint phantom seeds per role (write_dropin_dataset: different seeds give disjoint cohorts).
SEED_UNLABELED, SEED_INTERNAL, SEED_EXTERNAL, SEED_LABELED = 1000, 2, 3, 100


# ============================================================================ profiles and recipes
@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one ablation scale. Schedules are in epochs x steps, never seconds."""

    name: str
    matrix: int  # phantom image matrix
    spacing: float  # mm, pretraining and fine-tuning in-plane spacing
    patch: int  # fine-tuning patch edge = pretraining crop edge (multiple of 32)
    unlabeled_per_family: int
    pre_epochs: int
    pre_steps: int
    pre_batch: int
    ft_epochs: int
    ft_iters: int
    held_per_family: int
    sizes: tuple[int, ...] = (2, 4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    families: tuple[str, ...] = ("A", "B")
    require_families: bool = True  # False: a family missing from this checkout is skipped with a note
    ft_lr: float = 1e-3
    network: dict[str, Any] = field(default_factory=lambda: {"embed_dim": 24, "num_heads": [2, 2, 2, 2]})
    #: reuse this profile's pretraining arms (results and encoders): a fine-tuning-only variant
    pretrain_from: str | None = None

    def pretrain_schedule(self) -> dict[str, int]:
        """The official warm-ups (lr 20, teacher temperature 30, patch start 30 of 500 epochs), scaled to this run."""
        scale = lambda official: max(1, round(self.pre_epochs * official / 500))  # noqa: E731
        return {"warmup_epochs": scale(20), "teacher_temp_warmup_epochs": scale(30), "patch_temp_start_epoch": scale(30)}


PROFILES: dict[str, Profile] = {
    # plumbing proof: a couple of epochs, one seed, n = 2; minutes on a loaded CPU
    "smoke": Profile("smoke", matrix=128, spacing=3.0, patch=64, unlabeled_per_family=1, pre_epochs=2, pre_steps=2,
                     pre_batch=2, ft_epochs=2, ft_iters=2, held_per_family=2, sizes=(2,), seeds=(0,),
                     require_families=False),
    # a few hours of 2 CPU cores in all (see --plan for the measured estimate)
    "cpu": Profile("cpu", matrix=256, spacing=2.0, patch=128, unlabeled_per_family=16, pre_epochs=50, pre_steps=20,
                   pre_batch=4, ft_epochs=20, ft_iters=10, held_per_family=8),
    # the cpu profile's pretrained encoders fine-tuned 4x longer (800 iterations), 4 labels only:
    # is the 200-iteration budget what limits every arm?
    "cpu_long": Profile("cpu_long", matrix=256, spacing=2.0, patch=128, unlabeled_per_family=16, pre_epochs=50,
                        pre_steps=20, pre_batch=4, ft_epochs=80, ft_iters=10, held_per_family=8, sizes=(4,),
                        pretrain_from="cpu"),
    # a GPU: the study's 1.5 mm, 256^2 crops, long pretraining and fine-tuning
    "gpu": Profile("gpu", matrix=512, spacing=1.5, patch=256, unlabeled_per_family=60, pre_epochs=300, pre_steps=50,
                   pre_batch=8, ft_epochs=100, ft_iters=50, held_per_family=24, ft_lr=3e-4, network={}),
}


@dataclass(frozen=True)
class Recipe:
    """A pretraining / fine-tuning lever. `pretrain`: PretrainConfig overrides; `finetune`: preset
    `trainer_overrides.smit` overrides for the pretrained arms only (scratch is the shared baseline);
    `pretrain_from`: reuse another recipe's pretraining arm (the lever is in fine-tuning only)."""

    name: str
    summary: str
    pretrain: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    pretrain_from: str | None = None

    @property
    def pretrain_name(self) -> str:
        return self.pretrain_from or self.name


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("official", "full SMIT losses (rec 1, image 0.1, patch 0.1), crop and spacing = fine-tuning patch and spacing"),
    Recipe("mim", "masked-image modelling only (image- and patch-level distillation weights 0; teacher skipped)",
           pretrain={"cls_weight": 0.0, "patch_weight": 0.0}),
    Recipe("unmatched", "full SMIT losses at the 2D defaults (96^2 crops at 1.5 mm), not the fine-tuning patch/spacing",
           pretrain={"crop_size": 96, "spacing_mm": 1.5}),
    # distillation levers (the official heads stay at ln 8192 on this data: uniform teacher, see --probe)
    Recipe("sharp", "full SMIT losses, teacher temperature held at 0.02 (image and patch; official 0.04 -> 0.07)",
           pretrain={"warmup_teacher_temp": 0.02, "teacher_temp": 0.02, "warmup_teacher_patch_temp": 0.02,
                     "teacher_patch_temp": 0.02}),
    Recipe("small_heads", "full SMIT losses, distillation heads of 1024 outputs (official 8192)",
           pretrain={"out_dim": 1024, "patch_out_dim": 1024}),
    Recipe("lld", "official pretraining; fine-tuning with layer-wise lr decay 0.75 on the encoder",
           finetune={"layer_decay": 0.75}, pretrain_from="official"),
    Recipe("freeze", "official pretraining; the encoder kept fixed for the first 20 % of fine-tuning epochs",
           finetune={"freeze_encoder_epochs": "20%"}, pretrain_from="official"),
)}


# ============================================================================ arm bookkeeping (no torch)
@dataclass(frozen=True)
class Arm:
    """One unit of work that writes one JSON. kind: pretrain | finetune; recipe None = scratch."""

    kind: str
    recipe: str | None = None
    n_labeled: int = 0
    seed: int = 0

    @property
    def init(self) -> str:
        return "scratch" if self.recipe is None else "pretrained"

    @property
    def id(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain-{self.recipe}"
        return f"ft-n{self.n_labeled:02d}-{self.recipe or 'scratch'}-s{self.seed}"


def plan_arms(profile: Profile, recipes: Iterable[str]) -> list[Arm]:
    """Every arm of a profile, in run order: pretraining first, then seed by seed (a whole seed gives
    a first paired table), labeled size, scratch then each recipe."""
    recipes = list(dict.fromkeys(recipes))
    for r in recipes:
        if r not in RECIPES:
            raise SystemExit(f"unknown recipe {r!r}: use one of {', '.join(RECIPES)}")
    arms = [] if profile.pretrain_from else [Arm("pretrain", p) for p in dict.fromkeys(RECIPES[r].pretrain_name
                                                                                          for r in recipes)]
    for seed in profile.seeds:
        for n in profile.sizes:
            arms.append(Arm("finetune", None, n, seed))
            arms.extend(Arm("finetune", r, n, seed) for r in recipes)
    return arms


def only_sizes(arms: list[Arm], sizes: Iterable[int] | None) -> list[Arm]:
    """The arms of these labeled-set sizes (pretraining arms always stay: every fine-tuning arm needs
    them); None keeps all. Why: the issue's target is at 4 labels, so a short piece runs those first."""
    if not sizes:
        return arms
    wanted = set(sizes)
    return [a for a in arms if a.kind == "pretrain" or a.n_labeled in wanted]


def arm_path(results_dir: Path, arm: Arm) -> Path:
    return Path(results_dir) / "arms" / f"{arm.id}.json"


def is_finished(results_dir: Path, arm: Arm) -> bool:
    """An arm is finished when its JSON exists, parses and says so (written last, atomically)."""
    path = arm_path(results_dir, arm)
    try:
        return json.loads(path.read_text()).get("finished") is True
    except (OSError, ValueError):
        return False


def pending_arms(arms: list[Arm], results_dir: Path, only_pretrain: bool = False, limit: int | None = None) -> list[Arm]:
    """Unfinished arms in run order; `limit`: at most that many (the pieces a session can afford)."""
    todo = [a for a in arms if not is_finished(results_dir, a) and (a.kind == "pretrain" or not only_pretrain)]
    return todo if limit is None else todo[: max(limit, 0)]


def write_arm(results_dir: Path, arm: Arm, record: dict[str, Any]) -> Path:
    """The arm's JSON, written atomically with `finished: true` so a killed run never looks done."""
    path = arm_path(results_dir, arm)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"arm": arm.id, **asdict(arm), "init": arm.init, **record, "finished": True}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# ============================================================================ report (no torch)
#: (result key, label, better) per held-out set; `better` = +1 if higher is better.
METRICS = (("dice_mean", "Dice", +1), ("sma_abs_err_cm2", "abs SMA error cm²", -1))


def load_finetune_arms(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((Path(results_dir) / "arms").glob("ft-*.json")):
        rec = json.loads(path.read_text())
        if rec.get("finished") is True and rec.get("kind") == "finetune":
            out.append(rec)
    return out


def held_order(names: Iterable[str]) -> list[str]:
    """internal first, then the external sets by name."""
    return sorted(names, key=lambda h: (h != "internal", h))


def _mean_sd(values: list[float]) -> tuple[float, float, int]:
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values)


def summarize(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows: mean ± SD over seeds per n x init x held set x metric,
        paired: per n x recipe x held set x metric, the per-seed differences pretrained - scratch).

    Paired differences use only seeds where both arms finished and both have the metric."""
    def value(rec, held, key):
        v = rec.get("metrics", {}).get(held, {}).get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    helds = held_order({h for r in records for h in r.get("metrics", {})})
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["n_labeled"], r["recipe"] or "scratch"), []).append(r)
    rows = []
    for (n, init), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "scratch", kv[0][1])):
        for held in helds:
            for key, _, _ in METRICS:
                vals = [v for v in (value(r, held, key) for r in recs) if v is not None]
                mean, sd, count = _mean_sd(vals)
                rows.append({"n_labeled": n, "init": init, "held": held, "metric": key, "mean": mean, "sd": sd,
                             "seeds": count})
    scratch = {(r["n_labeled"], r["seed"]): r for r in records if r["recipe"] is None}
    paired = []
    for (n, init), recs in sorted(groups.items()):
        if init == "scratch":
            continue
        for held in helds:
            for key, _, better in METRICS:
                diffs = {}
                for r in recs:
                    base = scratch.get((n, r["seed"]))
                    a, b = value(r, held, key), value(base, held, key) if base else None
                    if a is not None and b is not None:
                        diffs[r["seed"]] = a - b
                mean, sd, count = _mean_sd(list(diffs.values()))
                paired.append({"n_labeled": n, "recipe": init, "held": held, "metric": key, "mean_diff": mean,
                               "sd_diff": sd, "seeds": count, "per_seed": dict(sorted(diffs.items())),
                               "pretrained_better": sum(1 for d in diffs.values() if d * better > 0)})
    return rows, paired


def _fmt(mean: float, sd: float, digits: int) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def markdown_table(profile_name: str, rows: list[dict], paired: list[dict], pretrain: list[dict]) -> str:
    """table.md: the per-arm table and the paired comparison, as the README quotes them."""
    digits = {"dice_mean": 3, "sma_abs_err_cm2": 1}
    lines = [f"# SMIT pretraining ablation, profile `{profile_name}` (phantoms only)", ""]
    for p in pretrain:
        h = p.get("history", [])
        if h:
            first, last = h[0], h[-1]
            lines.append(f"- `{p['arm']}`: {p.get('volumes', '?')} unlabeled volumes, {len(h)} epochs; loss "
                         + ", ".join(f"{t} {first[t]:.3f} → {last[t]:.3f}" for t in ("rec", "cls", "patch")))
    helds = held_order({r["held"] for r in rows})
    cols = [(h, k) for h in helds for k, _, _ in METRICS]
    label = dict((k, lab) for k, lab, _ in METRICS)
    lines += ["", "Mean ± SD over seeds:", "",
              "| labeled | init | seeds | " + " | ".join(f"{h} {label[k]}" for h, k in cols) + " |",
              "|---|---|---|" + "---|" * len(cols)]
    index = {(r["n_labeled"], r["init"], r["held"], r["metric"]): r for r in rows}
    for n, init in dict.fromkeys((r["n_labeled"], r["init"]) for r in rows):
        cells = [_fmt(index[(n, init, h, k)]["mean"], index[(n, init, h, k)]["sd"], digits[k])
                 if (n, init, h, k) in index else "—" for h, k in cols]
        seeds = max(index[(n, init, h, k)]["seeds"] for h, k in cols if (n, init, h, k) in index)
        lines.append(f"| {n} | {init} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", "Paired per seed, pretrained − scratch (mean ± SD of the differences; wins = seeds where "
              "pretrained is better):", "",
              "| labeled | recipe | " + " | ".join(f"{h} Δ{label[k]} (wins)" for h, k in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    pindex = {(p["n_labeled"], p["recipe"], p["held"], p["metric"]): p for p in paired}
    for n, recipe in dict.fromkeys((p["n_labeled"], p["recipe"]) for p in paired):
        cells = []
        for h, k in cols:
            p = pindex.get((n, recipe, h, k))
            cells.append("—" if p is None or not p["seeds"] else
                         f"{_fmt(p['mean_diff'], p['sd_diff'], digits[k])} ({p['pretrained_better']}/{p['seeds']})")
        lines.append(f"| {n} | {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def probe_table(results_dir: Path) -> str:
    """The --probe diagnoses: does each recipe's distillation leave ln(out_dim), the loss of a uniform teacher?"""
    probes = [json.loads(p.read_text()) for p in sorted((Path(results_dir) / "probes").glob("*.json"))]
    if not probes:
        return ""
    lines = ["", "Distillation probes (short pretraining, the full arm's warm-ups; loss at epoch 1 → epoch 2 → last; "
             "uniform = ln out_dim, the cross-entropy a uniform teacher gives):", "",
             "| recipe | epochs | image-level | patch-level | uniform | reconstruction L1 |", "|---|---|---|---|---|---|"]
    for p in probes:
        h = p["history"]
        trace = lambda t: " → ".join(f"{h[i][t]:.3f}" for i in dict.fromkeys((0, min(1, len(h) - 1), len(h) - 1)))  # noqa: E731
        lines.append(f"| {p['recipe']} | {p['epochs']} | {trace('cls')} | {trace('patch')} | {p['uniform_cls']:.3f} | "
                     f"{trace('rec')} |")
    return "\n".join(lines) + "\n"


def report(results_dir: Path, profile_name: str) -> str:
    """Print and write table.md (and summary.json) from whatever arms have finished."""
    results_dir = Path(results_dir)
    records = load_finetune_arms(results_dir)
    source = PROFILES[profile_name].pretrain_from if profile_name in PROFILES else None
    pre_dir = RESULTS / source if source else results_dir  # a fine-tuning-only profile: its source's encoders
    pretrain = [json.loads(p.read_text()) for p in sorted((pre_dir / "arms").glob("pretrain-*.json"))]
    rows, paired = summarize(records)
    text = markdown_table(profile_name, rows, paired, pretrain) + probe_table(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "table.md").write_text(text)
    (results_dir / "summary.json").write_text(json.dumps({"rows": rows, "paired": paired}, indent=2, default=str) + "\n")
    return text


# ============================================================================ running sarco
def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))


def run_cmd(argv: list[str], log: Path, threads: int, module: str = "sarco_nn.cli") -> float:
    """One sarco command as a user runs it; output appended to `log`; returns its wall time (s)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"\n$ python -m {module} {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", module, *argv], stdout=fh, stderr=subprocess.STDOUT,
                              env=_env(threads), cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"`{module} {' '.join(argv[:3])} ...` failed (exit {proc.returncode}); see {log}")
    return time.monotonic() - started


_FAMILY_OPTION: bool | None = None


def family_option_available() -> bool:
    """Whether this checkout's `sarco demo-data` has `--family` (phantom family B lives behind it)."""
    global _FAMILY_OPTION
    if _FAMILY_OPTION is None:
        out = subprocess.run([sys.executable, "-m", "sarco_nn.cli", "demo-data", "--help"], capture_output=True,
                             text=True, env=_env(1), cwd=REPO)
        _FAMILY_OPTION = "--family" in (out.stdout + out.stderr)
    return _FAMILY_OPTION


def resolve_families(profile: Profile, requested: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """(usable families, notes). Family A is built in; any other is asked of `sarco demo-data --family`."""
    families = [f.upper() for f in (requested or profile.families)]
    if TRAIN_FAMILY not in families:
        families.insert(0, TRAIN_FAMILY)
    usable, notes = [], []
    for fam in families:
        if fam == TRAIN_FAMILY or family_option_available():
            usable.append(fam)
            continue
        msg = (f"phantom family {fam} is not available on this checkout (`sarco demo-data` has no --family option); "
               f"merge the branch that adds it, or pass --families A to run without an external family")
        if profile.require_families and requested is None:
            raise SystemExit(msg)
        notes.append(msg)
    return usable, notes


def write_phantoms(out: Path, cases: int, seed: int, matrix: int, family: str, log: Path, prefix: str,
                   volumes: bool = False) -> Path:
    """`sarco demo-data` for one family (kept when already complete: phantoms are deterministic)."""
    if (out / "truth.csv").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    argv = ["demo-data", str(out), "--cases", str(cases), "--seed", str(seed), "--matrix", str(matrix),
            "--case-prefix", prefix] + (["--volumes"] if volumes else [])
    if family != TRAIN_FAMILY:
        argv += ["--family", family]
    run_cmd(argv, log, 1)
    return out


def shared_data_dir(given: Path | None) -> Path | None:
    if given is not None:
        return given if given.is_dir() else None
    for cand in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


def write_unlabeled(work: Path, profile: Profile, families: list[str], shared: Path | None, log: Path) -> dict:
    """Folder of unlabeled CTs: family A volumes, other families' slices (images only), real CTs linked."""
    folder = work / "unlabeled"
    done = folder / ".complete.json"
    if done.is_file():
        return json.loads(done.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    listing: dict[str, Any] = {"phantoms": {}, "real": []}
    for fam in families:
        src = write_phantoms(work / "phantom_src" / f"unlabeled_{fam}", profile.unlabeled_per_family, SEED_UNLABELED,
                             profile.matrix, fam, log, f"unl{fam.lower()}", volumes=fam == TRAIN_FAMILY)
        for img in sorted((src / "images").iterdir()):
            os.symlink(img.resolve(), folder / f"{fam}_{img.name}")
        listing["phantoms"][fam] = {"count": profile.unlabeled_per_family,
                                    "kind": "T12-S1 volumes" if fam == TRAIN_FAMILY else "L3 slices"}
    if shared is not None:
        for rel in REAL_CTS:
            src = shared / rel
            if src.exists():
                os.symlink(src.resolve(), folder / f"real_{src.name}")
                listing["real"].append(rel)
    done.write_text(json.dumps(listing))
    return listing


def write_preset(path: Path, profile: Profile, seed: int, finetune: dict[str, Any]) -> Path:
    """One plan preset per arm: every arm gets the same spacing, patch, network and epochs x iterations."""
    smit = {"initial_lr": profile.ft_lr, "weight_decay": 1e-5, "warmup_fraction": 0.1, **finetune}
    if profile.network:
        smit["network"] = profile.network
    preset = {
        "name": path.stem, "description": "pretraining ablation: identical plan and budget for every arm",
        "target_spacing_mm": profile.spacing, "max_patch_size": [profile.patch, profile.patch], "batch_size": 2,
        "training": {"trainer": "smit", "num_epochs": profile.ft_epochs, "iterations_per_epoch": profile.ft_iters,
                     "val_iterations_per_epoch": 1, "time_budget_s": None, "rotation_deg": 15, "mirror_axes": [],
                     "save_every": profile.ft_epochs, "plot_every": profile.ft_epochs, "cpu_bf16": True, "seed": seed},
        "trainer_overrides": {"smit": smit},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(preset, indent=2))
    return path


def score(pred_dir: Path, held: Path) -> dict[str, Any]:
    """Per-case Dice (muscle = label 1) and SMA error of one prediction folder against the truth."""
    import numpy as np
    import SimpleITK as sitk

    truth = {r["case_id"]: float(r["true_sma_cm2"]) for r in csv.DictReader(open(held / "truth.csv"))}
    cases, failed = {}, 0
    for row in csv.DictReader(open(pred_dir / "results.csv")):
        case = row["case_id"]
        if row["status"] == "failed" or not row.get("mask") or case not in truth:
            failed += 1
            continue
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / row["mask"]))) == 1
        t = sitk.GetArrayFromImage(sitk.ReadImage(str(held / "masks" / f"{case}.nii.gz"))) == 1
        if p.shape != t.shape:
            p = p.reshape(t.shape) if p.size == t.size else p
        dice = 2.0 * np.logical_and(p, t).sum() / max(p.sum() + t.sum(), 1)
        err = float(row["sma_cm2"]) - truth[case]
        cases[case] = {"dice": round(float(dice), 5), "sma_err_cm2": round(err, 3), "true_sma_cm2": truth[case]}
    dice = [c["dice"] for c in cases.values()]
    abs_err = [abs(c["sma_err_cm2"]) for c in cases.values()]
    return {"cases": len(cases), "failed": failed,
            "dice_mean": statistics.fmean(dice) if dice else math.nan,
            "dice_sd": statistics.pstdev(dice) if dice else math.nan,
            "sma_abs_err_cm2": statistics.fmean(abs_err) if abs_err else math.nan,
            "sma_rel_err_pct": statistics.fmean(abs(c["sma_err_cm2"]) / c["true_sma_cm2"] * 100 for c in cases.values())
            if cases else math.nan,
            "per_case": cases}


# ============================================================================ the arms
@dataclass
class Context:
    profile: Profile
    results: Path
    work: Path
    families: list[str]
    notes: list[str]
    shared: Path | None
    device: str
    threads: int
    pretrain_results: Path | None = None  # where the pretraining arms' JSONs are (default: results)

    @property
    def pretrained(self) -> Path:
        return self.pretrain_results or self.results

    @property
    def log(self) -> Path:
        return self.work / "log.txt"

    def held_sets(self) -> dict[str, Path]:
        """internal (family A, unseen seed) and one external set per other family, written on first use."""
        p = self.profile
        sets = {"internal": write_phantoms(self.work / "held" / "internal", p.held_per_family, SEED_INTERNAL, p.matrix,
                                           TRAIN_FAMILY, self.log, "int")}
        for fam in self.families:
            if fam != TRAIN_FAMILY:
                sets[f"external_{fam}"] = write_phantoms(self.work / "held" / f"external_{fam}", p.held_per_family,
                                                         SEED_EXTERNAL, p.matrix, fam, self.log, f"ext{fam.lower()}")
        return sets


def pretrain_config_args(profile: Profile, recipe: Recipe, preset: Path) -> tuple[list[str], dict[str, Any]]:
    """CLI options of the pretraining arm and the settings they mean (recorded in its JSON)."""
    settings: dict[str, Any] = {"dims": 2, "crop_size": profile.patch, "spacing_mm": profile.spacing,
                                "epochs": profile.pre_epochs, "steps_per_epoch": profile.pre_steps,
                                "batch_size": profile.pre_batch, **profile.pretrain_schedule(), **recipe.pretrain}
    flag = {"dims": "--dims", "crop_size": "--crop-size", "spacing_mm": "--spacing", "epochs": "--epochs",
            "steps_per_epoch": "--steps-per-epoch", "batch_size": "--batch-size", "warmup_epochs": "--warmup-epochs",
            "teacher_temp_warmup_epochs": "--teacher-temp-warmup-epochs",
            "patch_temp_start_epoch": "--patch-temp-start-epoch", "cls_weight": "--cls-weight",
            "patch_weight": "--patch-weight", "rec_weight": "--rec-weight", "mask_ratio": "--mask-ratio",
            "student_temp": "--student-temp", "warmup_teacher_temp": "--warmup-teacher-temp",
            "teacher_temp": "--teacher-temp", "warmup_teacher_patch_temp": "--warmup-teacher-patch-temp",
            "teacher_patch_temp": "--teacher-patch-temp", "center_momentum": "--center-momentum",
            "out_dim": "--out-dim", "patch_out_dim": "--patch-out-dim"}
    argv = ["--preset", str(preset), "--cache-volumes", "1000", "--no-progress"]
    for key, value in settings.items():
        if key not in flag:
            raise SystemExit(f"recipe {recipe.name}: no pretraining flag for {key!r}")
        argv += [flag[key], str(value)]
    return argv, settings


def run_pretrain_arm(ctx: Context, arm: Arm) -> dict[str, Any]:
    recipe = RECIPES[arm.recipe]
    listing = write_unlabeled(ctx.work, ctx.profile, ctx.families, ctx.shared, ctx.log)
    out = ctx.work / arm.id
    preset = write_preset(ctx.work / "presets" / "pretrain_network.json", ctx.profile, 0, {})
    argv, settings = pretrain_config_args(ctx.profile, recipe, preset)
    if (out / "checkpoint.pt").is_file():  # an interrupted pretraining (Ctrl-C, killed piece) continues exactly
        stored = json.loads((out / "card.json").read_text())["config"] if (out / "card.json").is_file() else {}
        if all(stored.get(k) == v for k, v in settings.items()):
            argv += ["--continue"]
            print(f"    continuing {out} from its checkpoint", flush=True)
        else:
            shutil.rmtree(out)
    elif out.exists():
        shutil.rmtree(out)
    wall = run_cmd([str(ctx.work / "unlabeled"), "-o", str(out), "--device", ctx.device, *argv], ctx.log, ctx.threads,
                   module="sarco_nn.pretraining")
    card = json.loads((out / "card.json").read_text())
    if card["epochs_done"] < card["epochs_planned"]:  # stopped by a signal: saved, exit 0, but not finished
        raise SystemExit(f"{arm.id}: pretraining stopped at epoch {card['epochs_done']} of {card['epochs_planned']}; "
                         "rerun the same command to continue it from its checkpoint")
    curve = ctx.results / f"{arm.id}_loss_curve.png"
    curve.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "loss_curve.png", curve)
    return {"recipe_summary": recipe.summary, "settings": settings, "unlabeled": listing,
            "volumes": card["data"]["volumes_listed"], "volumes_skipped": card["data"]["volumes_skipped"],
            "history": card["history"], "encoder": str(out / "encoder.pt"), "encoder_sha256": card["encoder"]["sha256"],
            "loss_curve": curve.name, "wall_s": round(wall, 1), "card_wall_s": card["wall_s"]}


def run_probe(ctx: Context, recipe: Recipe, epochs: int) -> dict[str, Any]:
    """A short pretraining of one recipe (the full arm's settings, `epochs` epochs) whose per-epoch losses
    say whether the self-distillation terms leave their uniform value ln(out_dim): a diagnosis, not an arm."""
    out_json = ctx.results / "probes" / f"{recipe.name}-e{epochs}.json"
    if out_json.is_file():
        print(f"probe {recipe.name} ({epochs} epochs): finished, {out_json}")
        return json.loads(out_json.read_text())
    listing = write_unlabeled(ctx.work, ctx.profile, ctx.families, ctx.shared, ctx.log)
    preset = write_preset(ctx.work / "presets" / "pretrain_network.json", ctx.profile, 0, {})
    argv, settings = pretrain_config_args(ctx.profile, recipe, preset)
    i = argv.index("--epochs")
    argv[i + 1] = str(epochs)
    out = ctx.work / f"probe-e{epochs}-{recipe.name}"
    if out.exists():
        shutil.rmtree(out)
    print(f"probe {recipe.name}: {epochs} epochs ...", flush=True)
    wall = run_cmd([str(ctx.work / "unlabeled"), "-o", str(out), "--device", ctx.device, *argv], ctx.log, ctx.threads,
                   module="sarco_nn.pretraining")
    card = json.loads((out / "card.json").read_text())
    cfg = card["config"]
    record = {"recipe": recipe.name, "recipe_summary": recipe.summary, "epochs": epochs, "settings": settings,
              "uniform_cls": math.log(cfg["out_dim"]), "uniform_patch": math.log(cfg["patch_out_dim"]),
              "history": card["history"], "unlabeled": listing, "wall_s": round(wall, 1), **_provenance(ctx)}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out_json)
    h = card["history"]
    print(f"probe {recipe.name}: cls {h[0]['cls']:.3f} -> {h[-1]['cls']:.3f} (uniform {record['uniform_cls']:.3f}), "
          f"patch {h[0]['patch']:.3f} -> {h[-1]['patch']:.3f}, rec {h[0]['rec']:.3f} -> {h[-1]['rec']:.3f}", flush=True)
    return record


def restore_encoder(ctx: Context, pre: Arm, pre_rec: dict[str, Any]) -> Path:
    """A finished pretraining arm whose encoder file is gone (the work folder lives outside the
    repository and does not outlive a machine): rerun it with the same settings and seed, and keep
    it only if it is bit-identical (same SHA-256) to the encoder the finished arms were tuned from."""
    print(f"    {pre.id}: its encoder {pre_rec['encoder']} is gone; rerunning the pretraining to restore it", flush=True)
    home = Path(pre_rec["encoder"]).parent.parent  # back where the record says, so every later arm finds it
    record = run_pretrain_arm(replace(ctx, work=home), pre)
    if record["encoder_sha256"] == pre_rec["encoder_sha256"]:
        print(f"    {pre.id}: restored, bit-identical (SHA-256 {record['encoder_sha256'][:12]})", flush=True)
    elif _same_history(record.get("history"), pre_rec.get("history")):
        # encoders written before export_encoder serialised in memory hash by their temporary file name
        print(f"    {pre.id}: restored; every epoch's losses equal the record's (its file was written under a "
              "temporary name, so its SHA-256 cannot match)", flush=True)
    else:
        raise SystemExit(f"{pre.id}: the rerun gave another encoder (SHA-256 {record['encoder_sha256'][:12]} instead of "
                         f"{pre_rec['encoder_sha256'][:12]}, other losses), so the finished arms of that recipe cannot "
                         f"be extended: delete {arm_path(ctx.pretrained, pre)} and its fine-tuning arms' JSONs and "
                         "rerun them")
    return Path(record["encoder"])


def _same_history(a: Any, b: Any) -> bool:
    """Per-epoch losses equal to every recorded digit (records may hold the list or its repr)."""
    import ast

    a, b = (ast.literal_eval(h) if isinstance(h, str) else h for h in (a, b))
    return bool(a) and a == b


def _labeled_workspace(ctx: Context, n: int, seed: int) -> Path:
    """Converted + planned workspace of the first n labeled cases of `seed` (shared by its arms)."""
    base = ctx.work / "datasets" / f"n{n:02d}_s{seed}"
    preset = write_preset(ctx.work / "presets" / f"abl_{ctx.profile.name}_s{seed}.json", ctx.profile, seed, {})
    if (base / ".planned").is_file() and (base / ".planned").read_text() == preset.read_text():
        return base  # planned from this very preset (a profile with another budget sharing --work replans)
    if base.exists():
        shutil.rmtree(base)
    drop = write_phantoms(ctx.work / "phantom_src" / f"labeled_n{n:02d}_s{seed}", n, SEED_LABELED + seed,
                          ctx.profile.matrix, TRAIN_FAMILY, ctx.log, "lab")
    run_cmd(["convert", str(drop), "--name", f"Abl{n}s{seed}", "-w", str(base)], ctx.log, ctx.threads)
    run_cmd(["plan", "--preset", str(preset), "-w", str(base), "--processes", "1"], ctx.log, ctx.threads)
    (base / ".planned").write_text(preset.read_text())
    return base


def _resolve_levers(finetune: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A lever given as "N%" of the fine-tuning epochs (e.g. freeze_encoder_epochs) → whole epochs."""
    return {k: max(1, round(epochs * float(v[:-1]) / 100)) if isinstance(v, str) and v.endswith("%") else v
            for k, v in finetune.items()}


def _set_finetune_overrides(ws: Path, finetune: dict[str, Any]) -> None:
    """Write a recipe's fine-tuning levers into the planned preset of this arm's workspace copy."""
    if not finetune:
        return
    found = sorted(ws.glob("nnUNet_preprocessed/*/sarcoPlans_*.json"))
    if not found:
        raise SystemExit(f"{ws}: no planned sarcoPlans_*.json to put the fine-tuning levers {finetune} in")
    for plans in found:
        data = json.loads(plans.read_text())
        smit = data["sarco"]["preset"]["trainer_overrides"].setdefault("smit", {})
        smit.update(finetune)
        plans.write_text(json.dumps(data, indent=2))


def run_finetune_arm(ctx: Context, arm: Arm) -> dict[str, Any]:
    recipe = RECIPES[arm.recipe] if arm.recipe else None
    encoder, pre_ref = None, None
    if recipe is not None:
        pre = Arm("pretrain", recipe.pretrain_name)
        if not is_finished(ctx.pretrained, pre):
            raise SystemExit(f"{arm.id} needs {pre.id}, which has not finished: run it first (--only-pretrain"
                             + (f" --{ctx.profile.pretrain_from})" if ctx.profile.pretrain_from else ")"))
        pre_rec = json.loads(arm_path(ctx.pretrained, pre).read_text())
        encoder = Path(pre_rec["encoder"])
        if not encoder.is_file():
            encoder = restore_encoder(ctx, pre, pre_rec)
        pre_ref = {"arm": pre.id, "encoder_sha256": pre_rec["encoder_sha256"]}
    base = _labeled_workspace(ctx, arm.n_labeled, arm.seed)
    ws = ctx.work / "runs" / arm.id
    if ws.exists():
        shutil.rmtree(ws)
    shutil.copytree(base, ws, symlinks=True)
    _set_finetune_overrides(ws, _resolve_levers(recipe.finetune if recipe else {}, ctx.profile.ft_epochs))
    train = ["train", "all", "-w", str(ws), "--device", ctx.device] + (["--pretrained", str(encoder)] if encoder else [])
    wall_train = run_cmd(train, ctx.log, ctx.threads)
    metrics, wall_pred = {}, 0.0
    for name, held in ctx.held_sets().items():
        pred = ws / f"pred_{name}"
        wall_pred += run_cmd(["predict", "-i", str(held / "images"), "-o", str(pred), "-w", str(ws), "--fast",
                              "--device", ctx.device], ctx.log, ctx.threads)
        metrics[name] = score(pred, held)
    shutil.rmtree(ws)  # the model is not kept: the JSON is the result
    return {"recipe_summary": recipe.summary if recipe else "random initialisation",
            "finetune_overrides": recipe.finetune if recipe else {}, "pretrain": pre_ref,
            "budget": {"epochs": ctx.profile.ft_epochs, "iterations_per_epoch": ctx.profile.ft_iters, "batch_size": 2},
            "labeled": {"family": TRAIN_FAMILY, "phantom_seed": SEED_LABELED + arm.seed, "cases": arm.n_labeled},
            "metrics": metrics, "wall_train_s": round(wall_train, 1), "wall_predict_s": round(wall_pred, 1)}


def _provenance(ctx: Context) -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"profile": ctx.profile.name, "profile_settings": asdict(ctx.profile), "families": ctx.families,
            "family_notes": ctx.notes, "device": ctx.device, "threads": ctx.threads, "git_commit": commit.stdout.strip(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_arms(ctx: Context, arms: list[Arm]) -> None:
    for i, arm in enumerate(arms, 1):
        print(f"[{i}/{len(arms)}] {arm.id} ...", flush=True)
        t0 = time.monotonic()
        record = run_pretrain_arm(ctx, arm) if arm.kind == "pretrain" else run_finetune_arm(ctx, arm)
        record["arm_wall_s"] = round(time.monotonic() - t0, 1)
        path = write_arm(ctx.results, arm, {**_provenance(ctx), **record})
        print(f"    done in {record['arm_wall_s']:.0f} s -> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}",
              flush=True)


# ============================================================================ --plan: measured estimate
def _epoch_times(ws: Path) -> list[float]:
    times = []
    for log in ws.glob("results/**/training_log_*.txt"):
        times += [float(m) for m in re.findall(r"Epoch time: ([0-9.]+) s", log.read_text())]
    return times


def measure(ctx: Context) -> dict[str, float]:
    """Tiny measured runs at the profile's sizes: s per pretraining step, per fine-tuning iteration,
    fixed overheads and s per predicted case. Numbers from a loaded machine are upper bounds."""
    p = ctx.profile
    tdir = ctx.work / "timing"
    if tdir.exists():
        shutil.rmtree(tdir)
    log = tdir / "log.txt"
    fams = [f for f in ctx.families]
    unl = tdir / "unlabeled"
    unl.mkdir(parents=True)
    t0 = time.monotonic()
    for fam in fams:
        src = write_phantoms(tdir / f"u_{fam}", 1, SEED_UNLABELED, p.matrix, fam, log, "t", volumes=fam == TRAIN_FAMILY)
        for img in (src / "images").iterdir():
            os.symlink(img.resolve(), unl / f"{fam}_{img.name}")
    gen_s = (time.monotonic() - t0) / len(fams)
    preset = write_preset(tdir / "t.json", replace(p, ft_epochs=2, ft_iters=3), 0, {})
    steps = 3
    argv, _ = pretrain_config_args(replace(p, pre_epochs=1, pre_steps=steps), RECIPES["official"], preset)
    wall_pre = run_cmd([str(unl), "-o", str(tdir / "pre"), "--device", ctx.device, *argv], log, ctx.threads,
                       module="sarco_nn.pretraining")
    card = json.loads((tdir / "pre" / "card.json").read_text())
    drop = write_phantoms(tdir / "lab", 2, SEED_LABELED, p.matrix, TRAIN_FAMILY, log, "lab")
    ws = tdir / "ws"
    t0 = time.monotonic()
    run_cmd(["convert", str(drop), "--name", "Timing", "-w", str(ws)], log, ctx.threads)
    run_cmd(["plan", "--preset", str(preset), "-w", str(ws), "--processes", "1"], log, ctx.threads)
    prep_s = time.monotonic() - t0
    wall_ft = run_cmd(["train", "all", "-w", str(ws), "--device", ctx.device], log, ctx.threads)
    epochs = _epoch_times(ws)
    per_epoch = epochs[-1] if epochs else wall_ft / 2
    held = write_phantoms(tdir / "held", 2, SEED_INTERNAL, p.matrix, TRAIN_FAMILY, log, "int")
    wall_pred = run_cmd(["predict", "-i", str(held / "images"), "-o", str(ws / "pred"), "-w", str(ws), "--fast",
                         "--device", ctx.device], log, ctx.threads)
    pre_step = card["wall_s"] / max(card["steps_done"], 1)
    return {"phantom_gen_s_per_case": round(gen_s, 2), "pretrain_step_s": round(pre_step, 3),
            "pretrain_overhead_s": round(max(wall_pre - card["wall_s"], 0.0), 1),
            "dataset_prep_s": round(prep_s, 1), "ft_iter_s": round(per_epoch / 4, 3),  # 3 train + 1 val iteration
            "ft_overhead_s": round(max(wall_ft - sum(epochs), 0.0), 1),
            "predict_overhead_s": round(max(wall_pred * 0.5, 0.0), 1),  # start-up ~ half of a 2-case run
            "predict_case_s": round(wall_pred * 0.25, 2)}


def estimate(profile: Profile, arms: list[Arm], n_families: int, m: dict[str, float]) -> list[tuple[str, float]]:
    """Estimated seconds per arm from the measured unit costs (phantom generation counted where it happens)."""
    p = profile
    held_sets = n_families  # internal + one external set per other family
    out = []
    for arm in arms:
        if arm.kind == "pretrain":
            s = (m["pretrain_overhead_s"] + p.pre_epochs * p.pre_steps * m["pretrain_step_s"]
                 + m["phantom_gen_s_per_case"] * p.unlabeled_per_family * n_families)
        else:
            s = (m["ft_overhead_s"] + p.ft_epochs * (p.ft_iters + 1) * m["ft_iter_s"]
                 + held_sets * (m["predict_overhead_s"] + p.held_per_family * m["predict_case_s"]))
            if arm.recipe is None:
                s += m["dataset_prep_s"] + m["phantom_gen_s_per_case"] * arm.n_labeled
        out.append((arm.id, s))
    return out


# ============================================================================ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", choices=("run", "report"), default="run")
    prof = ap.add_mutually_exclusive_group()
    for name in PROFILES:
        prof.add_argument(f"--{name}", dest="profile", action="store_const", const=name, help=f"profile {name}")
    ap.add_argument("--recipe", action="append", help=f"recipe(s) for the pretrained arms: {', '.join(RECIPES)} "
                                                       "(repeatable; default official)")
    ap.add_argument("--families", help="phantom families, comma-separated (default: the profile's, A,B)")
    ap.add_argument("--only-pretrain", action="store_true", help="run the pretraining arm(s) only")
    ap.add_argument("--arms", type=int, help="run at most N unfinished arms, then stop")
    ap.add_argument("--sizes", type=int, nargs="+", help="only these labeled-set sizes (default: the profile's)")
    ap.add_argument("--probe", type=int, metavar="EPOCHS",
                    help="diagnose the pretraining losses only: each recipe's pretraining for EPOCHS epochs (its "
                         "warm-ups as in the full arm), per-epoch losses to results/probes/, no fine-tuning")
    ap.add_argument("--plan", action="store_true", help="measure a tiny run, print the arms and estimated hours")
    ap.add_argument("--results", type=Path, help="results folder (default bench/results/pretraining_ablation/<profile>)")
    ap.add_argument("--work", type=Path, help="work folder, kept between pieces (default ~/.cache/sarco_ablation/<profile>)")
    ap.add_argument("--shared-data", type=Path, help="folder of real CTs (default ../shared/data when present)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.profile = args.profile or "cpu"
    args.recipe = args.recipe or ["official"]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    results = args.results or RESULTS / profile.name
    if args.command == "report":
        print(report(results, profile.name))
        print(f"written: {results / 'table.md'}")
        return
    requested = tuple(f.strip() for f in args.families.split(",")) if args.families else None
    families, notes = resolve_families(profile, requested)
    for note in notes:
        print(f"note: {note}")
    work = args.work or Path.home() / ".cache" / "sarco_ablation" / profile.name
    ctx = Context(profile, results, work, families, notes, shared_data_dir(args.shared_data), args.device, args.threads,
                  RESULTS / profile.pretrain_from if profile.pretrain_from else None)
    if args.probe:
        for name in dict.fromkeys(RECIPES[r].pretrain_name for r in args.recipe):
            run_probe(ctx, RECIPES[name], args.probe)
        return
    arms = only_sizes(plan_arms(profile, args.recipe), args.sizes)
    todo = pending_arms(arms, results, args.only_pretrain, args.arms)
    if args.plan:
        m = measure(ctx)
        # families missing here (B before its merge) are costed like family A, so the plan is the profile's
        est = dict(estimate(profile, arms, max(len(families), len(profile.families)), m))
        print(f"measured unit costs ({args.device}, {args.threads} threads): {json.dumps(m)}")
        print(f"\nplan for profile {profile.name}: {len(arms)} arms, {len(arms) - len(pending_arms(arms, results))} finished")
        for arm in arms:
            state = "done" if is_finished(results, arm) else "todo"
            print(f"  {arm.id:<28} {state}  ~{est[arm.id] / 60:6.1f} min")
        left = sum(est[a.id] for a in pending_arms(arms, results))
        print(f"estimated total {sum(est.values()) / 3600:.2f} h, still to run {left / 3600:.2f} h (an estimate)")
        results.mkdir(parents=True, exist_ok=True)
        (results / "plan.json").write_text(json.dumps({"measured": m, "arms_s": est, "total_h": sum(est.values()) / 3600,
                                                       "families": families}, indent=2) + "\n")
        return
    if not todo:
        print("every arm is finished; `report` prints the table")
    run_arms(ctx, todo)
    print(report(results, profile.name))


if __name__ == "__main__":
    main()
