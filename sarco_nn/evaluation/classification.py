"""Sarcopenia classification: confusion matrix and proportions with Wilson 95 % intervals.

Small test sets are the norm (the reference study tested 16 patients), where the Wald interval
collapses at 0 % / 100 %; Wilson's score interval does not. Balanced accuracy is the mean of
two proportions, not one binomial proportion, so it is reported without an interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sarco_nn.evaluation.agreement import Z_95


def wilson_ci(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for successes/n; (NaN, NaN) when n == 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Confusion:
    """Counts with sarcopenic = positive: tp = predicted and truly sarcopenic, etc."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @classmethod
    def from_flags(cls, predicted, truth) -> "Confusion":
        """Pairs where either flag is None (undecidable) are skipped."""
        c = cls()
        for p, t in zip(predicted, truth):
            if p is None or t is None:
                continue
            if p and t:
                c.tp += 1
            elif p and not t:
                c.fp += 1
            elif t:
                c.fn += 1
            else:
                c.tn += 1
        return c

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def summary(self) -> dict:
        """accuracy / sensitivity / specificity / ppv / npv with Wilson CIs, balanced accuracy."""
        out: dict = {"n": self.n, "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}
        for name, hits, total in (
            ("accuracy", self.tp + self.tn, self.n),
            ("sensitivity", self.tp, self.tp + self.fn),
            ("specificity", self.tn, self.tn + self.fp),
            ("ppv", self.tp, self.tp + self.fp),
            ("npv", self.tn, self.tn + self.fn),
        ):
            out[name] = hits / total if total else math.nan
            out[f"{name}_ci"] = list(wilson_ci(hits, total))
        sens, spec = out["sensitivity"], out["specificity"]
        out["balanced_accuracy"] = (sens + spec) / 2 if not (math.isnan(sens) or math.isnan(spec)) else math.nan
        return out
