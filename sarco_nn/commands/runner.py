"""Run a typer app the sarco way: user errors become one line on stderr (exit 2), never a traceback.

Shared by the `sarco` app (`sarco_nn.cli`) and `python -m sarco_nn.pretraining` (what torchrun
launches), so the pretraining entry point does not import every command through the CLI.
"""

from __future__ import annotations

import sys

import typer

from sarco_nn.errors import SarcoError

__all__ = ["INTERRUPTED_BEFORE_LINE", "INTERRUPTED_LINE", "os_error_line", "run_app"]


#: The line of a Ctrl-C that stopped a command outside predict's per-case loop (which says more).
INTERRUPTED_LINE = "interrupted (Ctrl-C): run the same command again to resume"
#: The line of a Ctrl-C before any command ran (typer parsing the arguments, printing --help).
INTERRUPTED_BEFORE_LINE = "interrupted (Ctrl-C) before the command started: nothing was done"


def _ctrl_c_of(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that caused `exc`, or None. typer turns Ctrl-C into a silent exit 130
    (SystemExit from its Exit, from the KeyboardInterrupt), so the handler below never saw one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


#: click's core module: click's own, or the copy typer (0.29 on) carries.
_CLICK_CORE = ("click.core", "typer._click.core")


def _command_started(ctrl_c: KeyboardInterrupt) -> bool:
    """True when the Ctrl-C stopped a running command: click's `Context.invoke` (which calls the
    command's function) was on the stack. A Ctrl-C while typer parses or prints --help has nothing
    to resume. Where the frame cannot be named exactly (Python < 3.11: no qualified name), any click
    `invoke` counts, so the line errs towards "run again to resume"."""
    tb = ctrl_c.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if (tb.tb_frame.f_globals.get("__name__") in _CLICK_CORE and code.co_name == "invoke"
                and getattr(code, "co_qualname", "Context.invoke") == "Context.invoke"):
            return True
        tb = tb.tb_next
    return False


def _interrupted_line(ctrl_c: KeyboardInterrupt) -> str:
    return INTERRUPTED_LINE if _command_started(ctrl_c) else INTERRUPTED_BEFORE_LINE


def run_app(typer_app: typer.Typer) -> None:
    """Run a typer app so that user errors become one line on stderr (exit 2), never a traceback;
    Ctrl-C is one line too (exit 130, the shell's code for SIGINT): "run again to resume" once a
    command ran, "nothing was done" before (typer still parsing or printing --help)."""
    try:
        typer_app()
    except SarcoError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        typer.echo(_interrupted_line(exc), err=True)
        sys.exit(130)
    except SystemExit as exc:
        ctrl_c = _ctrl_c_of(exc) if exc.code == 130 else None
        if ctrl_c is not None:
            typer.echo(_interrupted_line(ctrl_c), err=True)
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
