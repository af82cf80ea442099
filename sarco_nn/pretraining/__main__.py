"""`python -m sarco_nn.pretraining ...` = `sarco pretrain ...`; the form torchrun launches for multi-GPU:

    torchrun --standalone --nproc_per_node=4 -m sarco_nn.pretraining CT_DIR -o ckpt --device cuda
"""

from __future__ import annotations

import sys

import typer

from sarco_nn.commands.pretrain_cmd import pretrain
from sarco_nn.errors import SarcoError


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(pretrain)
    try:
        app()
    except SarcoError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
