"""card.json and loss_curve.png: what an encoder.pt learned from, and how its losses went.

The card travels with encoder.pt: it says how many volumes were seen and which file list (by its
SHA-256, not the names, which may carry patient identifiers), for how long, the final loss terms,
the whole configuration and the sarco version, so a fine-tuned model can be traced to its
pretraining. Both files are written atomically (`sarco_nn.atomic`) at every epoch end.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sarco_nn.atomic import atomic_path, write_text_atomic

__all__ = ["CARD_NAME", "CURVE_NAME", "LOSS_TERMS", "build_card", "write_card", "write_loss_curve"]

CARD_NAME = "card.json"
CURVE_NAME = "loss_curve.png"
LOSS_TERMS = ("total", "rec", "cls", "patch")


def build_card(*, config: dict[str, Any], data: dict[str, Any], epochs_done: int, steps_done: int,
               steps_per_epoch: int, history: list[dict[str, float]], mask_ratio: dict[str, float],
               encoder_file: str, encoder_sha256: str, device: str, world_size: int,
               wall_s: float) -> dict[str, Any]:
    from sarco_nn import __version__

    return {
        "kind": "sarco SMIT self-supervised pretraining",
        "sarco_version": __version__,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": {"file": encoder_file, "sha256": encoder_sha256, "dims": config["dims"]},
        "data": data,
        "epochs_done": epochs_done,
        "epochs_planned": config["epochs"],
        "steps_done": steps_done,
        "steps_per_epoch": steps_per_epoch,
        "final_loss": history[-1] if history else {},
        "mask_ratio": mask_ratio,
        "device": device,
        "world_size": world_size,
        "wall_s": round(wall_s, 1),
        "config": config,
        "history": history,
    }


def write_card(out_dir: Path, card: dict[str, Any]) -> Path:
    target = Path(out_dir) / CARD_NAME
    write_text_atomic(target, json.dumps(card, indent=2) + "\n")
    return target


def write_loss_curve(out_dir: Path, history: list[dict[str, float]]) -> Path:
    """One panel per loss term (unweighted), per epoch, as the official Training_loss_plots.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(out_dir) / CURVE_NAME
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(8, 6))
    titles = {"total": "total (weighted)", "rec": "masked-voxel L1", "cls": "image-level distillation",
              "patch": "patch-token distillation"}
    for ax, term in zip(axes.ravel(), LOSS_TERMS):
        ax.plot(epochs, [h[term] for h in history], marker="o" if len(history) < 30 else None)
        ax.set_title(titles[term], fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return target
