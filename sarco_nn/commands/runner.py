"""Run a typer app the sarco way: user errors become one line on stderr (exit 2), never a traceback.

Shared by the `sarco` app (`sarco_nn.cli`) and `python -m sarco_nn.pretraining` (what torchrun
launches), so the pretraining entry point does not import every command through the CLI.
"""

from __future__ import annotations

import sys

import typer

from sarco_nn.errors import SarcoError

__all__ = ["INTERRUPTED_BEFORE_LINE", "INTERRUPTED_LINE", "INTERRUPTED_NO_RESUME_LINE", "RESUME_HINT", "os_error_line",
           "resumes", "run_app"]


#: What a rerun of a resuming command does, unless the command says more (`resumes`).
RESUME_HINT = "run the same command again to resume"
#: The line of a Ctrl-C that stopped a resuming command (`resumes`) outside predict's per-case loop (which says more).
INTERRUPTED_LINE = f"interrupted (Ctrl-C): {RESUME_HINT}"
#: The line of a Ctrl-C that stopped a command whose rerun starts from the beginning (measure, evaluate, convert ...).
INTERRUPTED_NO_RESUME_LINE = "interrupted (Ctrl-C): this command does not resume; run it again to start over"
#: The line of a Ctrl-C before any command ran (typer parsing the arguments, printing --help).
INTERRUPTED_BEFORE_LINE = "interrupted (Ctrl-C) before the command started: nothing was done"

#: The attribute `resumes` sets on a command's function (typer's wrapper copies it: functools.update_wrapper).
_RESUME_ATTRIBUTE = "sarco_resume_hint"


def resumes(hint: str = RESUME_HINT):
    """Mark a command whose interrupted work a rerun continues (predict, train --continue, ...).

    Why: the Ctrl-C line is the runner's (shared by every command), but only the command knows
    whether running it again resumes; the mark sits on the command, the runner reads it.
    `hint` says how to resume (e.g. "run it again with --continue ...")."""
    def mark(function):
        setattr(function, _RESUME_ATTRIBUTE, hint)
        return function
    return mark


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


#: Returned by `_running_command` when a command ran but its function cannot be named.
_UNNAMED = object()


def _running_command(ctrl_c: KeyboardInterrupt):
    """The function of the command the Ctrl-C stopped (the innermost click `Context.invoke`, which
    calls it, was on the stack), `_UNNAMED` when a command ran but its function is not found there,
    or None when no command ran: a Ctrl-C while typer parses or prints --help has nothing to resume.
    Where the frame cannot be named exactly (Python < 3.11: no qualified name), any click `invoke`
    counts, so the line errs towards "run again to resume"."""
    found = None
    tb = ctrl_c.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if (tb.tb_frame.f_globals.get("__name__") in _CLICK_CORE and code.co_name == "invoke"
                and getattr(code, "co_qualname", "Context.invoke") == "Context.invoke"):
            callback = tb.tb_frame.f_locals.get(code.co_varnames[1]) if code.co_argcount > 1 else None
            found = getattr(callback, "callback", callback) if callable(callback) else _UNNAMED
        tb = tb.tb_next
    return found


def _interrupted_line(ctrl_c: KeyboardInterrupt) -> str:
    """The Ctrl-C line: nothing done, how to resume (a command marked with `resumes`), or start over."""
    command = _running_command(ctrl_c)
    if command is None:
        return INTERRUPTED_BEFORE_LINE
    if command is _UNNAMED:
        return INTERRUPTED_LINE
    hint = getattr(command, _RESUME_ATTRIBUTE, None)
    return INTERRUPTED_NO_RESUME_LINE if hint is None else f"interrupted (Ctrl-C): {hint}"


def run_app(typer_app: typer.Typer) -> None:
    """Run a typer app so that user errors become one line on stderr (exit 2), never a traceback;
    Ctrl-C is one line too (exit 130, the shell's code for SIGINT): how to resume once a command
    marked with `resumes` ran, "does not resume" for the others, "nothing was done" before (typer
    still parsing or printing --help)."""
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
