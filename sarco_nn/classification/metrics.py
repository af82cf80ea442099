"""Threshold-free and thresholded scores for a sarcopenia classifier.

AUROC is computed as the Mann-Whitney probability that a random sarcopenic case scores above a
random non-sarcopenic one (ties count one half): exact, no curve interpolation, no sklearn.
The thresholded numbers (accuracy, sensitivity, ... with Wilson intervals) come from
`sarco_nn.evaluation.classification`, the same code segmentation is judged with.
"""

from __future__ import annotations

import math

from sarco_nn.evaluation.classification import Confusion


def auroc(scores, labels) -> float:
    """Area under the ROC curve; NaN when either class is absent. Higher score = more sarcopenic."""
    pairs = [(float(s), bool(t)) for s, t in zip(scores, labels) if s is not None and t is not None
             and not math.isnan(float(s))]
    positives = [s for s, t in pairs if t]
    negatives = [s for s, t in pairs if not t]
    if not positives or not negatives:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def flag_summary(predicted, truth, scores=None) -> dict:
    """Confusion summary (Wilson CIs, balanced accuracy) plus AUROC when scores are given."""
    out = Confusion.from_flags(predicted, truth).summary()
    out["auroc"] = auroc(scores, truth) if scores is not None else math.nan
    return out
