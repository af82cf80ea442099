"""Run a typer app the sarco way: user errors become one line on stderr (exit 2), never a traceback.

Shared by the `sarco` app (`sarco_nn.cli`) and `python -m sarco_nn.pretraining` (what torchrun
launches), so the pretraining entry point does not import every command through the CLI.
"""

from __future__ import annotations

import sys

import typer

from sarco_nn.errors import SarcoError

__all__ = ["os_error_line", "run_app"]


#: The line of a Ctrl-C that stopped a command outside predict's per-case loop (which says more).
INTERRUPTED_LINE = "interrupted (Ctrl-C): run the same command again to resume"


def _from_ctrl_c(exc: BaseException) -> bool:
    """True when `exc` was caused by a KeyboardInterrupt. typer turns Ctrl-C into a silent exit 130
    (SystemExit from its Exit, from the KeyboardInterrupt), so the handler below never saw one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def run_app(typer_app: typer.Typer) -> None:
    """Run a typer app so that user errors become one line on stderr (exit 2), never a traceback;
    Ctrl-C is one line too (exit 130, the shell's code for SIGINT)."""
    try:
        typer_app()
    except SarcoError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED_LINE, err=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130 and _from_ctrl_c(exc):
            typer.echo(INTERRUPTED_LINE, err=True)
        raise
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
