"""Agreement between predicted and reference measurements (SMA, SMI, HU).

Bland–Altman: difference d = predicted − reference; bias = mean(d); 95 % limits of agreement
= bias ± 1.96 · SD(d) (sample SD, n−1). ICCs follow Shrout & Fleiss (1979) / McGraw & Wong
(1996) single-measure forms from the two-way ANOVA of the n × k table (k raters = prediction
and reference):
  ICC(2,1) absolute agreement, raters random: (MSR − MSE) / (MSR + (k−1)MSE + k(MSC − MSE)/n)
  ICC(3,1) consistency, raters fixed:          (MSR − MSE) / (MSR + (k−1)MSE)
Everything undefined (too few cases, zero variance) is NaN, never an exception.

"Zero variance" is judged with a RELATIVE tolerance (:data:`REL_TOL` of the data's magnitude),
not an exact zero: SMI = SMA / height² of identical areas differs in the last bits, and that
rounding residue would otherwise give an ICC of −0.4 or a Pearson r of ±1 from noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: z of the two-sided 95 % normal interval, used for the limits of agreement.
Z_95 = 1.959963984540054

#: Spread below this fraction of the values' magnitude counts as none (float rounding residue).
REL_TOL = 1e-9


def _near_constant(x: np.ndarray) -> bool:
    """True when x's spread is rounding residue: max − min ≤ REL_TOL · max |x| (or x is all zero)."""
    x = np.asarray(x, dtype=float)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    return x.size == 0 or float(np.ptp(x)) <= REL_TOL * scale


@dataclass
class Agreement:
    n: int
    mae: float
    mape_percent: float
    bias: float
    sd_diff: float
    loa_low: float
    loa_high: float
    icc_2_1: float
    icc_3_1: float
    pearson_r: float

    def to_dict(self) -> dict:
        return asdict(self)


def icc(table: np.ndarray) -> tuple[float, float]:
    """(ICC(2,1), ICC(3,1)) of an n-subjects × k-raters table without missing values."""
    x = np.asarray(table, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2 or _near_constant(x):
        return math.nan, math.nan
    grand = x.mean()
    ms_rows = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    ms_err = (residual**2).sum() / ((n - 1) * (k - 1))
    denom_2 = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    denom_3 = ms_rows + (k - 1) * ms_err
    floor = (REL_TOL * float(np.max(np.abs(x)))) ** 2  # a mean square below this is rounding residue
    icc21 = (ms_rows - ms_err) / denom_2 if denom_2 > floor else math.nan
    icc31 = (ms_rows - ms_err) / denom_3 if denom_3 > floor else math.nan
    return float(icc21), float(icc31)


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or _near_constant(a) or _near_constant(b):
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((da**2).sum() * (db**2).sum()))
    return float((da * db).sum() / denom) if denom > 0 else math.nan


def agreement(predicted, reference) -> Agreement:
    """Agreement statistics over the pairs where both values are known (None/NaN dropped)."""
    pairs = [(float(p), float(r)) for p, r in zip(predicted, reference)
             if p is not None and r is not None and not (math.isnan(float(p)) or math.isnan(float(r)))]
    if not pairs:
        nan = math.nan
        return Agreement(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    p, r = (np.array(v) for v in zip(*pairs))
    diff = p - r
    nonzero = r != 0
    mape = float(np.mean(np.abs(diff[nonzero]) / np.abs(r[nonzero])) * 100.0) if nonzero.any() else math.nan
    sd = float(diff.std(ddof=1)) if diff.size >= 2 else math.nan
    bias = float(diff.mean())
    icc21, icc31 = icc(np.column_stack([p, r]))
    return Agreement(
        n=int(diff.size),
        mae=float(np.abs(diff).mean()),
        mape_percent=mape,
        bias=bias,
        sd_diff=sd,
        loa_low=bias - Z_95 * sd,
        loa_high=bias + Z_95 * sd,
        icc_2_1=icc21,
        icc_3_1=icc31,
        pearson_r=pearson_r(p, r),
    )
