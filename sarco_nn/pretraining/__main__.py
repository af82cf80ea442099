"""`python -m sarco_nn.pretraining ...` = `sarco pretrain ...`; the form torchrun launches for multi-GPU:

    torchrun --standalone --nproc_per_node=4 -m sarco_nn.pretraining CT_DIR -o ckpt --device cuda
"""

from __future__ import annotations

import typer

from sarco_nn.commands.pretrain_cmd import pretrain
from sarco_nn.commands.runner import run_app

__all__ = ["main"]


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(pretrain)
    run_app(app)


if __name__ == "__main__":
    main()
