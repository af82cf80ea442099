"""Run a typer app the sarco way: user errors become one line on stderr (exit 2), never a traceback.

Shared by the `sarco` app (`sarco_nn.cli`) and `python -m sarco_nn.pretraining` (what torchrun
launches), so the pretraining entry point does not import every command through the CLI.
"""

from __future__ import annotations

import sys

import typer

from sarco_nn.errors import SarcoError

__all__ = ["run_app"]


def run_app(typer_app: typer.Typer) -> None:
    """Run a typer app so that user errors become one line on stderr (exit 2), never a traceback."""
    try:
        typer_app()
    except SarcoError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted (Ctrl-C): run the same command again to resume", err=True)
        sys.exit(130)
