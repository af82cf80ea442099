"""Why do SMIT's self-distillation losses stay at ln(out_dim)? Look inside a pretraining checkpoint (issue #20).

A cross-entropy of ln K between teacher and student means the teacher's sharpened, centred output
is the uniform distribution. That happens when the teacher gives (nearly) the same logits to every
crop: centring removes what all crops share, and what is left is too small for the temperature to
sharpen. This script measures exactly that, on crops drawn as pretraining draws them, for the
trained teacher of a checkpoint and for the same network at its initialisation (seed of the run):

  * cross-crop cosine: mean cosine similarity of the image-level logits of different crops
    (1 = every crop looks the same to the network);
  * within-image token cosine: the same for the patch tokens of one crop;
  * teacher entropy: mean entropy (nats) of softmax((logits - centre) / temperature), against ln K;
  * top probability: mean largest teacher probability (uniform: 1 / K).
For the initialised network the centre is the crops' mean logit (what the running centre
converges to) and the temperature the warm-up one; for the trained teacher, the stored centre and
the temperature of its last epoch.

Run:  python bench/distillation_diagnosis.py RUN_DIR UNLABELED_DIR [--crops 32] [--out diag.json]
      (RUN_DIR: a `sarco pretrain -o` folder holding checkpoint.pt)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sarco_nn.pretraining.config import PretrainConfig
from sarco_nn.pretraining.data import UnlabeledCTDataset, discover_volumes
from sarco_nn.pretraining.losses import warmup_value
from sarco_nn.pretraining.model import PretrainNetwork


def _mean_offdiag_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity between different rows of x (N, D)."""
    z = F.normalize(x.float(), dim=-1)
    gram = z @ z.T
    n = len(z)
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def teacher_statistics(cls: torch.Tensor, patch: torch.Tensor, centre: torch.Tensor, temp: float) -> dict[str, float]:
    """The numbers in the module doc for one network's logits cls (N, K), patch (N, L, K')."""
    probs = F.softmax((cls.float() - centre) / temp, dim=-1)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    token_cos = sum(_mean_offdiag_cosine(p) for p in patch) / len(patch)
    return {"cross_crop_cosine": round(_mean_offdiag_cosine(cls), 6), "within_image_token_cosine": round(token_cos, 6),
            "teacher_entropy": round(float(entropy.mean()), 4), "uniform_entropy": round(math.log(cls.shape[-1]), 4),
            "top_probability": float(probs.max(-1).values.mean()), "uniform_probability": 1.0 / cls.shape[-1],
            "temperature": temp}


def crops(cfg: PretrainConfig, data_dir: Path, n: int) -> torch.Tensor:
    """n first views, drawn as pretraining draws its samples (indices spread over the volumes)."""
    ds = UnlabeledCTDataset(discover_volumes(data_dir), cfg)
    step = max(1, cfg.samples_per_read)
    return torch.stack([ds[i * step]["views"][0] for i in range(n)])


def diagnose(run_dir: Path, data_dir: Path, n_crops: int = 32) -> dict[str, Any]:
    ck = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = PretrainConfig.from_json(ck["config"])
    smit = cfg.smit_config()
    build = lambda: PretrainNetwork(cfg.dims, smit, cfg.out_dim, cfg.patch_out_dim,  # noqa: E731
                                    cfg.head_hidden_dim, cfg.head_bottleneck_dim)
    torch.manual_seed(cfg.seed)  # the trainer's own initialisation
    initial = build().eval()
    trained = build().eval()
    trained.load_state_dict(ck["teacher"])
    x = crops(cfg, data_dir, n_crops)
    epochs_done = ck["step"] // ck["steps_per_epoch"]
    last_temp = warmup_value(max(epochs_done - 1, 0), cfg.warmup_teacher_temp, cfg.teacher_temp,
                             cfg.teacher_temp_warmup_epochs)
    out: dict[str, Any] = {"run": str(run_dir), "crops": n_crops, "epochs_done": epochs_done, "out_dim": cfg.out_dim}
    with torch.no_grad():
        cls0, patch0, _ = initial(x, None, reconstruct=False)
        out["initial"] = teacher_statistics(cls0, patch0, cls0.float().mean(0, keepdim=True), cfg.warmup_teacher_temp)
        cls1, patch1, _ = trained(x, None, reconstruct=False)
        out["trained_teacher"] = teacher_statistics(cls1, patch1, ck["loss"]["center"].float(), last_temp)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--crops", type=int, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    result = diagnose(args.run_dir, args.data_dir, args.crops)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
