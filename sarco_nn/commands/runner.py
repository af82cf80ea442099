"""Run a typer app the sarco way: user errors become one line on stderr (exit 2), never a traceback.

Shared by the `sarco` app (`sarco_nn.cli`) and `python -m sarco_nn.pretraining` (what torchrun
launches), so the pretraining entry point does not import every command through the CLI.
"""

from __future__ import annotations

import sys

import typer

from sarco_nn.errors import SarcoError

__all__ = ["os_error_line", "run_app"]


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
    except OSError as exc:  # a path of the wrong kind, no permission, a full or read-only disk
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        sys.exit(2)


def os_error_line(exc: OSError) -> str:
    """An operating-system error as sarco's one line: the path, what the system said, the fix.

    Why: the commands turn the errors they expect into SarcoErrors; one they did not expect (an -o
    that is a file, a read-only folder) must still be one line naming the path, never a traceback.
    """
    path = exc.filename if exc.filename is not None else "?"
    what = exc.strerror or exc.__class__.__name__
    return (f"{path}: {what} Fix: check that this path exists, is a folder where a folder is expected "
            "(a file where a file is), and is writable; then run the same command again")
