"""The one result vocabulary of the toolkit: `ok` / `review` / `failed`, reasons and `qc_score`.

Every command that reports a per-case answer (`predict`, `measure`, `classify predict`, the L3
locator, `evaluate`'s case table) uses these names, so a row means the same thing wherever it
was written:

- ``ok``: the input was plausible, every check passed; the numbers and the flag stand.
- ``review``: numbers were computed but a human must look before using them (an implausible
  mask, a suspicious quality score, a geometry warning). A reason that ``blocks_flag`` withholds
  the sarcopenia flag (``unknown``): an empty or implausible mask never becomes a diagnosis.
- ``failed``: no number could be given (unreadable file, not a CT in HU, no L3 in the field of
  view); the SMA columns stay empty.

A row carries its reasons as ``code: message`` items joined by :data:`REASON_SEPARATOR`; codes
are stable identifiers a script may filter on, messages name the fix. ``qc_score`` is a float
(higher = more suspicious) or empty where no score was computed. A ``review`` row counts as
finished when a batch resumes; a ``failed`` row is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from sarco_nn.errors import SarcoError

__all__ = [
    "Status", "Reason", "Verdict", "REASON_SEPARATOR", "STATUS_COLUMNS", "FLAG_UNKNOWN",
    "format_reasons", "parse_reasons", "is_finished", "shown_against",
]


class Status(str, Enum):
    """Outcome of one case. Ordered: ok < review < failed (the worst of several wins)."""

    OK = "ok"
    REVIEW = "review"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return {"ok": 0, "review": 1, "failed": 2}[self.value]

    def __str__(self) -> str:  # so f-strings and csv cells show "ok", not "Status.OK"
        return self.value


#: Separator of reasons in one CSV cell (a reason message never contains it).
REASON_SEPARATOR = " | "

#: Columns every per-case table carries, in this order, right after `case_id`.
STATUS_COLUMNS: tuple[str, ...] = ("status", "reasons", "qc_score")

#: Value of the sarcopenia flag cell when no flag may be given.
FLAG_UNKNOWN = "unknown"


@dataclass(frozen=True)
class Reason:
    """Why a case is not plainly `ok`.

    code: stable snake_case identifier (e.g. ``empty_mask``, ``not_ct``, ``qc_score_high``).
    message: one line for a person, naming the fix where there is one.
    status: the least severe status this reason implies (``review`` or ``failed``).
    blocks_flag: True when no sarcopenia flag may be derived while this reason stands.
    error: the structured error (text, path, fix) the message was made of (`Reason.of`), for a command
        that refuses instead of writing a row (`ct_checks.reason_error`): never re-parsed from the message.
    """

    code: str
    message: str
    status: Status = Status.REVIEW
    blocks_flag: bool = True
    error: SarcoError | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, code: str, error: SarcoError, status: Status = Status.REVIEW, blocks_flag: bool = True) -> "Reason":
        """The reason whose message is `error`'s one line ("path: text Fix: fix"), carrying the error."""
        return cls(code, str(error), status, blocks_flag, error)

    def __post_init__(self) -> None:
        if self.status is Status.OK:
            raise ValueError("a Reason implies review or failed, never ok")
        if REASON_SEPARATOR.strip() in self.message:
            object.__setattr__(self, "message", self.message.replace(REASON_SEPARATOR.strip(), "/"))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class Verdict:
    """The reasons gathered for one case, and the status and flag rule they imply."""

    reasons: list[Reason] = field(default_factory=list)
    qc_score: float | None = None

    def add(self, reason: Reason | None) -> None:
        if reason is not None and reason not in self.reasons:
            self.reasons.append(reason)

    def extend(self, reasons) -> None:
        for reason in reasons:
            self.add(reason)

    @property
    def status(self) -> Status:
        worst = Status.OK
        for reason in self.reasons:
            if reason.status.rank > worst.rank:
                worst = reason.status
        return worst

    @property
    def flag_allowed(self) -> bool:
        """A sarcopenia flag may be given only for a non-failed case with no blocking reason."""
        return self.status is not Status.FAILED and not any(r.blocks_flag for r in self.reasons)

    def columns(self) -> dict[str, str]:
        """The three status cells of a result row."""
        return {
            "status": self.status.value,
            "reasons": format_reasons(self.reasons),
            "qc_score": "" if self.qc_score is None else f"{self.qc_score:.3f}",
        }


def format_reasons(reasons) -> str:
    return REASON_SEPARATOR.join(str(r) for r in reasons)


def parse_reasons(cell: str | None) -> list[tuple[str, str]]:
    """(code, message) pairs of a reasons cell; a legacy free-text reason gets code ``other``."""
    out = []
    for item in (cell or "").split(REASON_SEPARATOR.strip()):
        item = item.strip()
        if not item:
            continue
        code, sep, message = item.partition(": ")
        if sep and code.replace("_", "").isalnum() and code == code.lower():
            out.append((code, message))
        else:
            out.append(("other", item))
    return out


def is_finished(status: str | None) -> bool:
    """Resume rule shared by every batch: ok and review rows are done, failed rows are retried."""
    return status in (Status.OK.value, Status.REVIEW.value)


def shown_against(value: float, bound: float, digits: int = 2) -> str:
    """`value` with `digits` decimals, or more where that rounding would hide the comparison a message
    states (an SMA of 29.996 cm² "below the floor of 30" printed as "30.00"): the text then shows a
    number on the same side of `bound` as the value itself (up to 6 decimals)."""
    for shown_digits in range(digits, 7):
        text = f"{value:.{shown_digits}f}"
        if (float(text) < bound) == (value < bound) and (float(text) > bound) == (value > bound):
            return text
    return f"{value:.6f}"
