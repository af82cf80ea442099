"""Threshold-free and thresholded scores for a sarcopenia classifier.

AUROC comes from scikit-learn (already installed with nnU-Net): the exact Mann-Whitney area, ties
counting one half. The thresholded numbers (accuracy, sensitivity, ... with Wilson intervals) come from
`sarco_nn.evaluation.classification`, the same code segmentation is judged with.
"""

from __future__ import annotations

import math

from sarco_nn.evaluation.classification import Confusion

__all__ = ["auroc", "flag_summary"]


def auroc(scores, labels) -> float:
    """Area under the ROC curve; NaN when either class is absent. Higher score = more sarcopenic."""
    from sklearn.metrics import roc_auc_score

    pairs = [(float(s), bool(t)) for s, t in zip(scores, labels) if s is not None and t is not None
             and not math.isnan(float(s))]
    if len({t for _, t in pairs}) < 2:  # sklearn would raise: AUROC is undefined with one class
        return math.nan
    return float(roc_auc_score([t for _, t in pairs], [s for s, _ in pairs]))


def flag_summary(predicted, truth, scores=None) -> dict:
    """Confusion summary (Wilson CIs, balanced accuracy) plus AUROC when scores are given."""
    out = Confusion.from_flags(predicted, truth).summary()
    out["auroc"] = auroc(scores, truth) if scores is not None else math.nan
    return out
