"""Confusion counts and the ratios derived from them (pure numpy / Python ints).

With TP, FP, TN, FN counted over the evaluated pixels (inside the FOV) and
``n = TP + FP + TN + FN``:

=========  ==========================================  =======================
metric     formula                                     when the denominator is 0
=========  ==========================================  =======================
PA         (TP + TN) / n                               never (n >= 1)
Se         TP / (TP + FN)       (sensitivity, recall)  NaN: no vessel in gold
Sp         TN / (TN + FP)       (specificity)          NaN: no background in gold
precision  TP / (TP + FP)                              NaN: nothing predicted
F1 / Dice  2 TP / (2 TP + FP + FN)                     1.0: gold and prediction
                                                       both empty (agree fully)
IoU        TP / (TP + FP + FN)  (Jaccard)              1.0: as for F1
MCC        (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)       0.0: a row or column of
           (TN+FP)(TN+FN))                             the confusion matrix is
                                                       empty (scikit-learn's rule)
=========  ==========================================  =======================

NaN means "undefined for this input" and becomes ``null`` in JSON; it is never
replaced by a made-up number. The F1/IoU convention equals scikit-learn's
``zero_division=1.0``. All counts are Python ints (exact for any size) and the
ratios are computed from them in float64; MCC's numerator is an exact integer.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ConfusionCounts", "confusion_counts", "ratios"]


class ConfusionCounts(tuple):
    """``(tp, fp, tn, fn)`` as exact Python ints."""

    __slots__ = ()

    def __new__(cls, tp: int, fp: int, tn: int, fn: int) -> "ConfusionCounts":
        return super().__new__(cls, (int(tp), int(fp), int(tn), int(fn)))

    tp = property(lambda self: self[0])
    fp = property(lambda self: self[1])
    tn = property(lambda self: self[2])
    fn = property(lambda self: self[3])

    @property
    def n(self) -> int:
        return sum(self)

    def __add__(self, other: object) -> "ConfusionCounts":  # type: ignore[override]
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(*(a + b for a, b in zip(self, other)))


def confusion_counts(pred: np.ndarray, gold: np.ndarray) -> ConfusionCounts:
    """TP, FP, TN, FN of two boolean arrays of the same shape (already FOV-selected)."""
    n = int(pred.size)
    n_pred = int(np.count_nonzero(pred))
    n_gold = int(np.count_nonzero(gold))
    tp = int(np.count_nonzero(pred & gold))
    fp = n_pred - tp
    fn = n_gold - tp
    tn = n - tp - fp - fn
    return ConfusionCounts(tp, fp, tn, fn)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def ratios(counts: ConfusionCounts) -> dict[str, float]:
    """PA, Se, Sp, precision, F1, IoU and MCC from exact counts (see module table)."""
    tp, fp, tn, fn = counts
    n = tp + fp + tn + fn
    f1_den = 2 * tp + fp + fn
    mcc_den_sq = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)  # exact Python int
    mcc = (tp * tn - fp * fn) / math.sqrt(mcc_den_sq) if mcc_den_sq else 0.0
    return {
        "pa": _ratio(tp + tn, n),
        "se": _ratio(tp, tp + fn),
        "sp": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": 2 * tp / f1_den if f1_den else 1.0,
        "iou": tp / (tp + fp + fn) if f1_den else 1.0,
        "mcc": max(-1.0, min(1.0, mcc)),
    }
