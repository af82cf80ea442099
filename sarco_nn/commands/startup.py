"""Ctrl-C while `sarco` starts: one line and exit 130, as after start-up, never an import traceback.

Why: the console script imports `sarco_nn.cli` (typer, the api, every command module) before
`main` runs `runner.run_app`, whose handler turns Ctrl-C into the one line. A Ctrl-C in those
first ~0.1 s used to print a KeyboardInterrupt traceback from inside an import. `sarco_nn.cli`
installs this handler first and puts the previous one back once it is imported, or its import
failed (a broken install), so a program that imports the cli (the tests) keeps its own Ctrl-C.
Left open: the interpreter's own start-up before any sarco code runs (site, an editable install's
`.pth` finder, the script's `import re`: about the first 10-25 ms), where Python prints the traceback.

Only the standard library here: this runs before everything else.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType

__all__ = ["INTERRUPTED_AT_START_LINE", "exit_130_on_ctrl_c"]

#: Nothing has run yet, so nothing is left half-done.
INTERRUPTED_AT_START_LINE = "interrupted (Ctrl-C) while sarco was starting: nothing was done"


def _exit_130(signum: int, frame: FrameType | None) -> None:
    """Raised from wherever the import was: SystemExit is not printed as a traceback."""
    sys.stderr.write(INTERRUPTED_AT_START_LINE + "\n")
    sys.stderr.flush()
    raise SystemExit(130)


def exit_130_on_ctrl_c() -> Callable[[], None]:
    """Make Ctrl-C exit 130 with one line from now on; returns the function that puts the previous
    SIGINT handler back. Does nothing off the main thread (signals are set there only) or where
    Ctrl-C is ignored (a background job, nohup): that stays so."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return lambda: None
    try:
        previous = signal.signal(signal.SIGINT, _exit_130)
    except ValueError:  # not the main thread
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    return restore
