"""`sarco pretrain UNLABELED_DIR -o CKPT_DIR`: SMIT self-supervised pretraining on unlabeled CT.

Thin wrapper over `sarco_nn.api.pretrain` (which says where each setting comes from); the defaults
shown are the official SMIT values (`sarco_nn.pretraining.config`). Multi-GPU:
    torchrun --standalone --nproc_per_node=4 -m sarco_nn.pretraining CT_DIR -o ckpt --device cuda
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import typer

from sarco_nn import api
from sarco_nn.commands.runner import resumes
from sarco_nn.pretraining.config import PretrainConfig


def _typed(ctx: typer.Context, name: str) -> bool:
    """True when the option came from the command line (or its environment variable), not its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


#: PretrainConfig field -> this command's parameter name, where they differ
_PARAM = {"spacing_mm": "spacing"}
# the official defaults, read from the dataclass fields: building a PretrainConfig validates its
# encoder, which imports torch and MONAI (seconds) - too slow for `sarco --help`
_D = SimpleNamespace(**{f.name: f.default for f in fields(PretrainConfig) if f.default is not MISSING})


@resumes("run it again with --continue to resume the run in --output where it stopped")
def pretrain(
    ctx: typer.Context,
    unlabeled_dir: Path = typer.Argument(..., help="Folder of unlabeled CTs (NIfTI/MHA/NRRD files, DICOM series folders)."),
    out_dir: Path = typer.Option(Path("sarco_pretrain"), "--output", "-o", help="Checkpoint folder (encoder.pt, card.json, loss_curve.png, checkpoint.pt)."),
    dims: int = typer.Option(_D.dims, "--dims", help="2: axial slices of the abdomen (the L3 network); 3: sub-volumes."),
    preset: Optional[str] = typer.Option(
        None, "--preset", "-p", help="Pretrain the SMIT encoder this plan preset fine-tunes (default: Trans-Small); "
             "its 'pretraining' section, if any, replaces the defaults shown here."),
    tissues: int = typer.Option(1, "--tissues", help="With --preset: pretrain the encoder of that preset's model for a "
                                "dataset of this many tissues (4: muscle, IMAT, VAT, SAT; the planner widens the "
                                "network for several, e.g. cpu: embed 32)."),
    epochs: int = typer.Option(_D.epochs, help="Epochs (official 500)."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Steps per epoch (default: one pass over the volumes)."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", help="Samples (two views each) per step and process."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    continue_run: bool = typer.Option(False, "--continue", "-c", help="Resume the run in --output exactly where it stopped, with its own settings (only --epochs may change)."),
    crop_size: int = typer.Option(_D.crop_size, "--crop-size", help="Crop edge in voxels (multiple of 32); use the fine-tuning patch size."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Voxel spacing in mm (default 2.0 in 3D, 1.5 in-plane in 2D); use your plan's."),
    mask_ratio: float = typer.Option(_D.mask_ratio, "--mask-ratio", help="Fraction of blocks masked in the student's views."),
    mask_block: int = typer.Option(_D.mask_block, "--mask-block", help="Mask block edge in voxels."),
    rec_weight: float = typer.Option(_D.rec_weight, "--rec-weight", help="Weight of the masked-voxel L1 reconstruction."),
    cls_weight: float = typer.Option(_D.cls_weight, "--cls-weight", help="Weight of image-level self-distillation."),
    patch_weight: float = typer.Option(_D.patch_weight, "--patch-weight", help="Weight of patch-token self-distillation."),
    student_temp: float = typer.Option(_D.student_temp, "--student-temp"),
    warmup_teacher_temp: float = typer.Option(_D.warmup_teacher_temp, "--warmup-teacher-temp"),
    teacher_temp: float = typer.Option(_D.teacher_temp, "--teacher-temp"),
    warmup_teacher_patch_temp: float = typer.Option(_D.warmup_teacher_patch_temp, "--warmup-teacher-patch-temp"),
    teacher_patch_temp: float = typer.Option(_D.teacher_patch_temp, "--teacher-patch-temp"),
    teacher_temp_warmup_epochs: int = typer.Option(_D.teacher_temp_warmup_epochs, "--teacher-temp-warmup-epochs"),
    patch_temp_start_epoch: int = typer.Option(_D.patch_temp_start_epoch, "--patch-temp-start-epoch",
                                               help="Epoch the patch teacher's temperature warm-up starts (official 30)."),
    center_momentum: float = typer.Option(_D.center_momentum, "--center-momentum"),
    momentum_teacher: float = typer.Option(_D.momentum_teacher, "--momentum-teacher", help="EMA momentum at step 0 (cosine to 1)."),
    out_dim: int = typer.Option(_D.out_dim, "--out-dim", help="Image-level head outputs."),
    patch_out_dim: int = typer.Option(_D.patch_out_dim, "--patch-out-dim", help="Patch-level head outputs."),
    lr_per_sample: float = typer.Option(_D.lr_per_sample, "--lr-per-sample", help="AdamW lr = this x global batch size."),
    weight_decay: float = typer.Option(_D.weight_decay, "--weight-decay"),
    warmup_epochs: int = typer.Option(_D.warmup_epochs, "--warmup-epochs", help="Linear lr warm-up, then cosine."),
    freeze_last_layer_epochs: int = typer.Option(_D.freeze_last_layer_epochs, "--freeze-last-layer-epochs"),
    min_body_area_cm2: float = typer.Option(_D.min_body_area_cm2, "--min-body-area", help="2D: slices with at least this body area (cm²)."),
    samples_per_read: int = typer.Option(_D.samples_per_read, "--samples-per-read", help="Samples cut from each volume read."),
    cache_volumes: int = typer.Option(_D.cache_volumes, "--cache-volumes", help="Preprocessed volumes kept per loader worker."),
    workers: Optional[int] = typer.Option(None, help="Data-loading workers (default: 0 on CPU, up to 8 on CUDA)."),
    seed: int = typer.Option(_D.seed),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with the loss terms."),
) -> None:
    """Self-supervised SMIT pretraining on unlabeled CT; writes encoder.pt for `sarco train --pretrained`.

    Example: sarco pretrain ~/ct_archive -o pre2d --dims 2 --crop-size 256 --spacing 1.5 ;
    sarco train all --pretrained pre2d/encoder.pt
    """
    given = dict(
        dims=dims, crop_size=crop_size, spacing_mm=spacing, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, lr_per_sample=lr_per_sample, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        mask_ratio=mask_ratio, mask_block=mask_block, rec_weight=rec_weight, cls_weight=cls_weight,
        patch_weight=patch_weight, student_temp=student_temp, warmup_teacher_temp=warmup_teacher_temp,
        teacher_temp=teacher_temp, warmup_teacher_patch_temp=warmup_teacher_patch_temp,
        teacher_patch_temp=teacher_patch_temp, teacher_temp_warmup_epochs=teacher_temp_warmup_epochs,
        patch_temp_start_epoch=patch_temp_start_epoch, center_momentum=center_momentum,
        momentum_teacher=momentum_teacher, freeze_last_layer_epochs=freeze_last_layer_epochs, out_dim=out_dim,
        patch_out_dim=patch_out_dim, min_body_area_cm2=min_body_area_cm2, samples_per_read=samples_per_read,
        cache_volumes=cache_volumes, seed=seed)
    # only what the user typed: a preset's `pretraining` section (api.pretrain) fills the rest before
    # the official defaults, so an option left out must not arrive as its official value
    settings = {key: value for key, value in given.items() if _typed(ctx, _PARAM.get(key, key))} or None
    result = api.pretrain(unlabeled_dir, output=out_dir, preset=preset, tissues=tissues, settings=settings, device=device,
                          resume=continue_run, workers=workers, progress=progress, echo=typer.echo)
    state = "stopped (continue with --continue)" if result.stopped_early else "done"
    typer.echo(f"{state}: {result.steps_done} steps, {result.epochs_done} epochs; encoder: {result.encoder} "
               f"(use: sarco train FOLD --pretrained {result.encoder})")
