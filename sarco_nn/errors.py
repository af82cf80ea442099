"""User-facing errors: one line that names the file and says what to do."""

from __future__ import annotations

from pathlib import Path


class SarcoError(Exception):
    """An input or usage problem the user can fix; the CLI prints it as one line, no traceback.

    `reason_code`: the `sarco_nn.status.Reason` code of the failed row a batch command (predict,
    classify predict) writes when this error stops one case, so the same fact gets the same code
    in every command (a subclass that names a fact, e.g. `NotCTError`, says which).
    """

    reason_code: str = "unreadable"
    #: Exit status of the `sarco` command this error stops (2: a usage or input problem).
    exit_code: int = 2

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.path = None if path is None else str(path)
        self.message = message  # without the path and fix: for callers that re-place it (a batch's failed row)
        self.fix = fix
        parts = [f"{self.path}: {message}" if self.path else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))


class InputError(SarcoError):
    """A file or folder the user gave is unusable (wrong type, corrupt, inconsistent geometry)."""


class NotCTError(InputError):
    """The image's values cannot be a CT in Hounsfield units (MR, normalised, windowed, rescale lost)."""

    reason_code = "not_ct"


class ClinicalDataError(SarcoError):
    """clinical.csv is malformed or holds a value sarco cannot interpret (unknown sex, height)."""


class Interrupted(SarcoError):
    """Ctrl-C stopped a batch after its finished cases were saved: one line saying how far it got and
    how to resume, with the shell's exit status for SIGINT (130)."""

    exit_code = 130
