"""The pretraining loop: student + EMA teacher, AdamW with warm-up + cosine, exact resume, DDP.

Each step: both views of every sample go through the student with their block masks and
through the teacher unmasked; loss = rec_w * masked L1 + cls_w * image-level + patch_w *
patch-level distillation (both distillation weights 0 = masked-image modelling only: the teacher's
forward pass is skipped and the distillation terms are logged as 0); AdamW step (the heads' last layers frozen during the first
`freeze_last_layer_epochs`, as the official `cancel_gradients_last_layer`); per-step lr schedule
(linear warm-up over `warmup_epochs`, cosine to `min_lr`); EMA update of the teacher with a
momentum rising from 0.996 to 1.

Outputs in the checkpoint folder, all atomic and rewritten at each epoch end: `encoder.pt`
(`sarco_nn.models.pretrained.export_encoder`, what `sarco train --pretrained` loads),
`card.json`, `loss_curve.png` and `checkpoint.pt` (student, teacher, optimizer, scheduler,
grad scaler, loss centres, torch RNG states as tensors, step, epoch statistics; read back with
`torch.load(weights_only=True)`). `--continue` restores all of it; since every sample is a pure
function of its index (see `data`), the continued run computes exactly what an uninterrupted run
would. Ctrl-C / SIGTERM stop the run at the end of the current step and save a checkpoint there.

Scale: on CUDA the forward passes run under autocast (bf16 where supported, else fp16 with a
gradient scaler) and several loader workers stream the volumes. With more than one GPU, launch it
with torchrun; each process takes its share of every global batch and the loss centres are
all-reduced:

    torchrun --standalone --nproc_per_node=4 -m sarco_nn.pretraining CT_DIR -o ckpt --device cuda

(the learning rate scales with the global batch: lr_per_sample x batch_size x processes).
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist

from sarco_nn.atomic import atomic_path
from sarco_nn.devices import resolve_device
from sarco_nn.errors import SarcoError
from sarco_nn.hashing import sha256_file
from sarco_nn.pretraining.card import CARD_NAME, build_card, write_card, write_loss_curve
from sarco_nn.pretraining.config import PretrainConfig, resumed_config
from sarco_nn.pretraining.data import StepSampler, UnlabeledCTDataset, discover_volumes, file_list_sha256
from sarco_nn.pretraining.ema import ema_update, make_teacher, teacher_momentum
from sarco_nn.pretraining.losses import SelfDistillationLoss, masked_l1
from sarco_nn.pretraining.masking import applied_ratio, mask_at_stride
from sarco_nn.pretraining.model import PretrainNetwork
from sarco_nn.schedules import warmup_cosine

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "ENCODER_NAME", "PretrainResult", "Pretrainer", "lr_factor",
    "run_pretraining"
]

CHECKPOINT_NAME = "checkpoint.pt"
ENCODER_NAME = "encoder.pt"
CHECKPOINT_FORMAT = "sarco-pretrain-checkpoint-v1"


@dataclass
class PretrainResult:
    out_dir: Path
    encoder: Path
    card: Path
    steps_done: int
    epochs_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_fraction: float) -> float:
    """`schedules.warmup_cosine` counted in optimizer steps (warm-up from WARMUP_FLOOR, cosine to min_fraction)."""
    total = max(int(total_steps), 1)
    return warmup_cosine(step / total, min(warmup_steps, total) / total, min_fraction)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves and stops at the end of the current step."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handlers, stopping is the caller's business
            self._old.clear()
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Pretrainer:
    """One pretraining run (fresh or continued) writing into `out_dir`."""

    def __init__(self, data_dir: Path, out_dir: Path, config: PretrainConfig | None = None, device: str = "auto",
                 resume: bool = False, workers: int | None = None, progress: bool = True,
                 echo: Callable[[str], None] | None = None, requested: Mapping[str, Any] | None = None):
        """`config`: a new run's settings (None: the defaults). `requested`: the settings the caller typed.
        A continued run (`resume`) keeps its own settings; `pretraining.config.resumed_config` decides what of
        `config`/`requested` still applies (a typed epochs) and which requests it names as not applied."""
        self.data_dir, self.out_dir = Path(data_dir), Path(out_dir)
        self.progress = progress
        self.echo = echo or (lambda s: print(s, flush=True))
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        cfg = config or PretrainConfig()
        stored = None
        if resume:
            if not self.ckpt_path.is_file():
                raise SarcoError("nothing to continue: no checkpoint.pt", self.out_dir,
                                 "run without --continue to start, or give the folder of the run to continue.")
            stored = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            if stored.get("format") != CHECKPOINT_FORMAT:
                raise SarcoError("not a sarco pretraining checkpoint", self.ckpt_path, "start a new run in another -o folder.")
            cfg, notes = resumed_config(PretrainConfig.from_json(stored["config"]), config, requested)
            for note in notes:
                self.echo(note)
        elif self.ckpt_path.exists():
            raise SarcoError("folder already holds a pretraining run", self.out_dir,
                             "pass --continue to resume it, or choose another -o folder.")
        self.cfg = cfg
        smit = cfg.smit_config()
        if cfg.crop_size % smit.size_divisor or cfg.crop_size % cfg.mask_block or cfg.mask_block % smit.patch_size:
            raise SarcoError(f"crop size {cfg.crop_size} must be a multiple of {smit.size_divisor} and of the mask "
                             f"block {cfg.mask_block}, which must be a multiple of the patch size {smit.patch_size}",
                             fix="use e.g. --crop-size 96 (3D) or 96/256 (2D) and --mask-block 16.")

        # ---- distributed / device
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._own_group = False
        self.device = resolve_device(device)
        if self.world_size > 1:
            if self.device.type == "cuda":
                self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self._own_group = True
        self.is_main = self.rank == 0
        self.workers = workers if workers is not None else (min(8, os.cpu_count() or 1) if self.device.type == "cuda" else 0)

        # ---- data
        self.files = discover_volumes(self.data_dir)
        self.file_sha = file_list_sha256(self.files, self.data_dir)
        if stored is not None and stored["file_list_sha256"] != self.file_sha:
            raise SarcoError("the folder's list of CT files changed since this run started", self.data_dir,
                             "continue with the same files, or start a new run in another -o folder.")
        self.global_batch = cfg.batch_size * self.world_size
        self.steps_per_epoch = int(cfg.steps_per_epoch or max(1, math.ceil(len(self.files) / self.global_batch)))
        if stored is not None:
            self.steps_per_epoch = int(stored["steps_per_epoch"])
        self.total_steps = cfg.epochs * self.steps_per_epoch

        # ---- networks, loss, optimiser
        torch.manual_seed(cfg.seed)  # identical initialisation on every rank
        build = lambda: PretrainNetwork(cfg.dims, smit, cfg.out_dim, cfg.patch_out_dim,  # noqa: E731
                                        cfg.head_hidden_dim, cfg.head_bottleneck_dim)
        self.student = build().to(self.device)
        self.teacher = make_teacher(self.student, build().to(self.device))
        self.loss_fn = SelfDistillationLoss(
            cfg.out_dim, cfg.patch_out_dim, cfg.student_temp, cfg.warmup_teacher_temp, cfg.teacher_temp,
            cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp, cfg.teacher_temp_warmup_epochs,
            cfg.patch_temp_start_epoch, cfg.center_momentum).to(self.device)
        self.base_lr = cfg.lr_per_sample * self.global_batch
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=self.base_lr, weight_decay=cfg.weight_decay)
        warmup_steps = min(cfg.warmup_epochs, cfg.epochs) * self.steps_per_epoch
        min_fraction = cfg.min_lr / self.base_lr if self.base_lr > 0 else 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup_steps, self.total_steps, min_fraction))
        self.amp_dtype = None
        if self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ddp_student = self.student
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_student = DistributedDataParallel(self.student, device_ids=ids)

        # ---- run state
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.epoch_sums: dict[str, float] = {}
        self.seen: set[int] = set()
        self.skipped: set[int] = set()
        self.mask_sum, self.mask_n = 0.0, 0
        self.wall_before = 0.0
        torch.manual_seed(cfg.seed + 1 + self.rank)  # drop-path randomness, per rank
        if self.device.type == "cuda":
            torch.cuda.manual_seed(cfg.seed + 1 + self.rank)
        if stored is not None:
            self._restore(stored)

    # ------------------------------------------------------------------ checkpoint
    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _checkpoint(self) -> dict[str, Any]:
        rng = [self._rng_state()]
        seen, skipped = sorted(self.seen), sorted(self.skipped)
        if self.world_size > 1:
            rng = [None] * self.world_size
            dist.all_gather_object(rng, self._rng_state())
        return {
            "format": CHECKPOINT_FORMAT, "config": self.cfg.to_json(), "step": self.step,
            "steps_per_epoch": self.steps_per_epoch, "world_size": self.world_size,
            "student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "loss": self.loss_fn.state_dict(),
            "rng": [{k: v.cpu() for k, v in r.items()} for r in rng],
            "epoch_sums": dict(self.epoch_sums), "history": list(self.history),
            "seen": seen, "skipped": skipped, "mask_sum": self.mask_sum, "mask_n": self.mask_n,
            "file_list_sha256": self.file_sha, "wall_s": self._wall(),
        }

    def _restore(self, ck: dict[str, Any]) -> None:
        self.student.load_state_dict(ck["student"])
        self.teacher.load_state_dict(ck["teacher"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.loss_fn.load_state_dict(ck["loss"])
        rngs = ck["rng"]
        rng = rngs[self.rank] if len(rngs) == self.world_size else rngs[0]
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = int(ck["step"])
        self.epoch_sums = dict(ck["epoch_sums"])
        self.history = [dict(h) for h in ck["history"]]
        self.seen, self.skipped = set(ck["seen"]), set(ck["skipped"])
        self.mask_sum, self.mask_n = float(ck["mask_sum"]), int(ck["mask_n"])
        self.wall_before = float(ck["wall_s"])

    def _wall(self) -> float:
        return self.wall_before + (time.monotonic() - self._t0 if hasattr(self, "_t0") else 0.0)

    def _gather_sets(self) -> None:
        if self.world_size > 1:
            parts: list = [None] * self.world_size
            dist.all_gather_object(parts, (sorted(self.seen), sorted(self.skipped)))
            for seen, skipped in parts:
                self.seen.update(seen)
                self.skipped.update(skipped)

    def save(self) -> None:
        """checkpoint.pt, encoder.pt, card.json and loss_curve.png (main process; every rank must call)."""
        from sarco_nn.models.pretrained import export_encoder

        self._gather_sets()
        ck = self._checkpoint()
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        encoder_path = self.out_dir / ENCODER_NAME
        export_encoder(self.student.encoder, encoder_path, self.cfg.dims)
        card = build_card(
            config=self.cfg.to_json(),
            data={"root": str(self.data_dir.resolve()), "volumes_listed": len(self.files),
                  "volumes_seen": len(self.seen), "volumes_skipped": [str(self.files[i]) for i in sorted(self.skipped)],
                  "samples_seen": self.step * self.global_batch, "file_list_sha256": self.file_sha},
            epochs_done=len(self.history), steps_done=self.step, steps_per_epoch=self.steps_per_epoch,
            history=self.history,
            mask_ratio={"declared": self.cfg.mask_ratio,
                        "applied": round(self.mask_sum / self.mask_n, 6) if self.mask_n else
                        applied_ratio(self.cfg.crop_size, self.cfg.mask_block, self.cfg.dims, self.cfg.mask_ratio)},
            encoder_file=ENCODER_NAME, encoder_sha256=sha256_file(encoder_path), device=str(self.device),
            world_size=self.world_size, wall_s=self._wall())
        write_card(self.out_dir, card)
        if self.history:
            write_loss_curve(self.out_dir, self.history)
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(ck, tmp)

    # ------------------------------------------------------------------ training
    def _loader(self, stop: int):
        from torch.utils.data import DataLoader

        dataset = UnlabeledCTDataset(self.files, self.cfg)
        sampler = StepSampler(self.step, stop, self.cfg.batch_size, self.rank, self.world_size)
        return DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          generator=torch.Generator().manual_seed(self.cfg.seed))

    def train_step(self, batch: dict) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        epoch = self.step // self.steps_per_epoch
        views = batch["views"].to(dev, non_blocking=True)  # (B, 2, 1, *S)
        masks = batch["masks"].to(dev, non_blocking=True)  # (B, 2, *grid)
        x = torch.cat([views[:, 0], views[:, 1]])  # view-major (2B, 1, *S)
        block_mask = torch.cat([masks[:, 0], masks[:, 1]])
        embed_mask = mask_at_stride(block_mask, cfg.mask_block, self.student.embed_stride)
        token_mask = mask_at_stride(block_mask, cfg.mask_block, self.student.token_stride).flatten(1)
        voxel_mask = mask_at_stride(block_mask, cfg.mask_block, 1)
        self.student.train()
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            s_cls, s_patch, recon = self.ddp_student(x, embed_mask)
            if cfg.distills:
                with torch.no_grad():
                    t_cls, t_patch, _ = self.teacher(x, None, reconstruct=False)
        if cfg.distills:
            loss_cls, loss_patch = self.loss_fn(s_cls, s_patch, t_cls, t_patch, token_mask, epoch)
        else:  # masked-image modelling only: no teacher pass (half the forward cost); heads kept in the graph for DDP
            loss_cls = loss_patch = 0.0 * (s_cls.float().sum() + s_patch.float().sum())
        loss_rec = masked_l1(recon, x, voxel_mask)
        total = cfg.rec_weight * loss_rec + cfg.cls_weight * loss_cls + cfg.patch_weight * loss_patch
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if epoch < cfg.freeze_last_layer_epochs:
            for layer in self.student.heads.last_layers():
                for p in layer.parameters():
                    p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        ema_update(self.teacher, self.student, teacher_momentum(self.step, self.total_steps, cfg.momentum_teacher))
        self.step += 1
        applied = float(embed_mask.mean())
        self.mask_sum += applied
        self.mask_n += 1
        for i in batch["volume"].tolist():
            self.seen.add(int(i))
        for i in batch["tried"].flatten().tolist():
            if i >= 0:
                self.skipped.add(int(i))
        terms = {"total": total.item(), "rec": loss_rec.item(), "cls": loss_cls.item(), "patch": loss_patch.item()}
        for k, v in terms.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        self.epoch_sums["n"] = self.epoch_sums.get("n", 0.0) + 1
        return {**terms, "mask": applied, "lr": lr}

    def _close_epoch(self) -> None:
        n = max(self.epoch_sums.get("n", 0.0), 1.0)
        means = {k: v / n for k, v in self.epoch_sums.items() if k != "n"}
        if self.world_size > 1:
            t = torch.tensor([means[k] for k in ("total", "rec", "cls", "patch")], device=self.device)
            dist.all_reduce(t)
            means = dict(zip(("total", "rec", "cls", "patch"), (t / self.world_size).tolist()))
        self.history.append({"epoch": self.step // self.steps_per_epoch, **{k: round(float(means[k]), 6)
                                                                             for k in ("total", "rec", "cls", "patch")}})
        self.epoch_sums = {}

    def run(self, max_steps: int | None = None) -> PretrainResult:
        """Train to the end (or `max_steps` more steps, then save mid-epoch); returns what was written."""
        cfg = self.cfg
        self._t0 = time.monotonic()
        stop = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        if self.is_main:
            ratio = applied_ratio(cfg.crop_size, cfg.mask_block, cfg.dims, cfg.mask_ratio)
            self.echo(f"pretraining {cfg.dims}D SMIT encoder on {len(self.files)} CT volumes ({self.file_sha[:12]}), "
                      f"{cfg.crop_size}^{cfg.dims} crops at {cfg.spacing:g} mm, {cfg.epochs} epochs x "
                      f"{self.steps_per_epoch} steps, global batch {self.global_batch}, device {self.device}"
                      f"{f' x {self.world_size}' if self.world_size > 1 else ''}, from step {self.step}")
            self.echo(f"masking: declared ratio {cfg.mask_ratio:.3f}, applied {ratio:.3f} "
                      f"(blocks of {cfg.mask_block}^{cfg.dims} voxels)")
        bar = None
        stopped = False
        with _StopFlag() as flag:
            if self.step < stop:
                for batch in self._loader(stop):
                    if bar is None:
                        bar = self._bar()
                    terms = self.train_step(batch)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(rec=f"{terms['rec']:.4f}", cls=f"{terms['cls']:.3f}",
                                        patch=f"{terms['patch']:.3f}", mask=f"{terms['mask']:.3f}",
                                        lr=f"{terms['lr']:.2e}", refresh=False)
                    if self.step % self.steps_per_epoch == 0:
                        self._close_epoch()
                        if bar is not None:
                            bar.close()
                        bar = None
                        if self.is_main:
                            h = self.history[-1]
                            self.echo(f"epoch {h['epoch']}/{cfg.epochs}: total {h['total']:.4f} rec {h['rec']:.4f} "
                                      f"cls {h['cls']:.4f} patch {h['patch']:.4f} (mask ratio applied "
                                      f"{self.mask_sum / max(self.mask_n, 1):.3f})")
                        self.save()
                    if flag.raised:
                        stopped = True
                        break
            if bar is not None:
                bar.close()
            if self.step % self.steps_per_epoch or self.step == 0 or stopped:
                self.save()  # mid-epoch stop (max_steps, Ctrl-C): keep the exact position
        if self._own_group:
            dist.destroy_process_group()
        epochs_done = len(self.history)
        return PretrainResult(self.out_dir, self.out_dir / ENCODER_NAME, self.out_dir / CARD_NAME, self.step,
                              epochs_done, list(self.history), stopped or self.step < self.total_steps)

    def _bar(self):
        if not (self.progress and self.is_main):
            return None
        from tqdm import tqdm

        epoch = self.step // self.steps_per_epoch
        return tqdm(total=self.steps_per_epoch, initial=self.step % self.steps_per_epoch,
                    desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False, dynamic_ncols=True)


def run_pretraining(data_dir: Path, out_dir: Path, config: PretrainConfig | None = None, device: str = "auto",
                    resume: bool = False, workers: int | None = None, progress: bool = True,
                    max_steps: int | None = None, echo: Callable[[str], None] | None = None,
                    requested: Mapping[str, Any] | None = None) -> PretrainResult:
    """Pretrain (or continue) and return the paths written. See the module doc and `Pretrainer`."""
    return Pretrainer(data_dir, out_dir, config, device, resume, workers, progress, echo, requested).run(max_steps)
