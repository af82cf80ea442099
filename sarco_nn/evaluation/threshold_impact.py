"""Threshold impact: how many borderline patients a given SMA error budget puts at risk.

For each case the reference SMA (and SMI, which scales with it) is perturbed by ±k % for
k = 1..K; the case is "at risk at k" when either perturbation changes its sarcopenia flag under
the chosen threshold set. `flip_k` is the smallest such k (None if none up to K). This answers
the question the reference study left open: at an observed error of x %, how many flags could
change.
"""

from __future__ import annotations

from dataclasses import dataclass

from sarco_nn.thresholds import ThresholdSet

#: Error budgets examined, in percent.
IMPACT_PERCENTS: tuple[int, ...] = tuple(range(1, 11))


@dataclass
class CaseImpact:
    flip_k: int | None  # smallest k (%) at which ±k % changes the flag; None if no k in range does
    distance_to_cutoff_percent: float | None  # (value − cut-off) / value · 100; None if undecidable


def case_impact(ts: ThresholdSet, sex, sma_cm2: float | None, smi: float | None, bmi: float | None,
                percents: tuple[int, ...] = IMPACT_PERCENTS) -> CaseImpact:
    base = ts.is_sarcopenic(sex, sma_cm2, smi, bmi)
    if base is None:
        return CaseImpact(None, None)
    value = sma_cm2 if ts.metric == "sma" else smi
    cutoff = ts.cutoff_for(sex, bmi)
    distance = (value - cutoff) / value * 100.0 if value else None
    for k in percents:
        for sign in (+1, -1):
            factor = 1.0 + sign * k / 100.0
            scaled_smi = None if smi is None else smi * factor
            if ts.is_sarcopenic(sex, sma_cm2 * factor, scaled_smi, bmi) != base:
                return CaseImpact(k, distance)
    return CaseImpact(None, distance)


def at_risk_counts(flip_ks: list[int | None], percents: tuple[int, ...] = IMPACT_PERCENTS) -> dict[int, int]:
    """k -> number of cases whose flag can change at an error of ±k % (cumulative in k)."""
    return {k: sum(1 for f in flip_ks if f is not None and f <= k) for k in percents}
