"""Exact ROC analysis: the ROC curve and the area under it (pure numpy).

Definitions
-----------
For scores ``s`` and a binary gold standard with ``P`` positive (vessel) and
``N`` negative pixels, a pixel is called positive at threshold ``t`` when
``s >= t``. Sweeping ``t`` over the distinct score values, from the largest to
the smallest, gives the points

    TPR(t) = #{positives with s >= t} / P,    FPR(t) = #{negatives with s >= t} / N,

preceded by ``(0, 0)`` at ``t = +inf``. The ROC AUC is the trapezoidal area
under these points, which equals the Mann-Whitney statistic

    AUC = (#{(p, n): s_p > s_n} + 0.5 #{(p, n): s_p = s_n}) / (P N)

over all (positive, negative) pixel pairs; tied scores count one half, exactly
as :func:`sklearn.metrics.roc_auc_score` handles them (a tie block is one
diagonal trapezoid segment).

Algorithm
---------
No ``argsort`` of the whole image: the positive and the negative scores are
sorted separately with ``np.sort`` (SIMD sort in numpy >= 2), and for every
distinct positive score the number of negatives below and equal to it is found
with ``np.searchsorted``. The curve merges the two sorted runs with one stable
(adaptive) argsort and reads the counts per distinct value off cumulative sums. Boolean and small-range integer scores (e.g. uint8
maps) skip sorting altogether and use two histograms (``np.bincount``). The
pair count ``2 U`` is accumulated exactly in int64 (exact while ``P N < 4.6e18``,
i.e. well beyond billions of pixels) and divided once in float64, so the only
rounding is that final division.

AUC is undefined when the gold standard holds one class only inside the FOV;
then :class:`~napari_retsam.errors.UndefinedMetricError` is raised, never a
number.
"""

from __future__ import annotations

import numpy as np

from napari_retsam.errors import RetsamInputError, UndefinedMetricError
from napari_retsam.metrics.validation import (
    _as_array,
    as_fov,
    as_gold,
    check_same_shape,
)

__all__ = ["roc_auc", "roc_curve", "auc_from_flat", "curve_from_flat", "flat_scores_and_gold", "thin_curve"]

#: Integer score ranges up to this many distinct values use histograms, not sorting.
_BINCOUNT_MAX_RANGE = 1 << 16


def flat_scores_and_gold(
    scores: object, gold: object, fov: object | None = None, *, gold_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return the 1-D scores and boolean gold inside the FOV.

    ``scores`` may be any finite real array (probabilities, logits, integer
    ranks, booleans); NaN/inf are refused. Shapes must agree.
    """
    s = _as_array(scores, "scores")
    if np.issubdtype(s.dtype, np.floating) and not np.all(np.isfinite(s)):
        raise RetsamInputError("scores contain NaN or infinite values")
    g = as_gold(gold, gold_class=gold_class)
    check_same_shape(s.shape, g.shape, "scores", "gold standard")
    f = as_fov(fov, s.shape)
    if f is None:
        return s.ravel(), g.ravel()
    return s[f], g[f]


def _class_counts(g: np.ndarray) -> tuple[int, int]:
    n_pos = int(np.count_nonzero(g))
    n_neg = int(g.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        which = "no vessel (positive)" if n_pos == 0 else "no background (negative)"
        raise UndefinedMetricError(
            f"ROC AUC is undefined: the gold standard has {which} pixels"
            f" among the {g.size} evaluated pixels"
        )
    return n_pos, n_neg


def _small_int_offset(s: np.ndarray) -> int | None:
    """Offset making integer scores non-negative for bincount, or None if unsuitable."""
    if s.dtype == np.bool_:
        return 0
    if not np.issubdtype(s.dtype, np.integer):
        return None
    lo, hi = int(s.min()), int(s.max())
    limit = np.iinfo(np.intp).max // 2  # values and offset must fit intp (e.g. huge uint64)
    if hi - lo >= _BINCOUNT_MAX_RANGE or hi > limit or lo < -limit:
        return None
    return -lo


def _histograms(s: np.ndarray, g: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of positives and negatives per integer score value (ascending)."""
    values = s.astype(np.intp)
    if offset:
        values += offset
    length = int(values.max()) + 1
    pos = np.bincount(values[g], minlength=length)
    neg = np.bincount(values[~g], minlength=length)
    return pos, neg


def auc_from_flat(s: np.ndarray, g: np.ndarray) -> float:
    """ROC AUC of 1-D scores ``s`` against the 1-D boolean gold ``g`` (validated).

    Raises :class:`UndefinedMetricError` when ``g`` has one class only.
    """
    n_pos, n_neg = _class_counts(g)
    offset = _small_int_offset(s)
    if offset is not None:
        pos, neg = _histograms(s, g, offset)
        neg_below = np.cumsum(neg) - neg  # negatives strictly below each value
        twice_u = int(np.sum(pos * (2 * neg_below + neg), dtype=np.int64))
    else:
        pos_sorted = np.sort(s[g])
        neg_sorted = np.sort(s[~g])
        # run-length encode the sorted positives: distinct values and counts
        starts = np.flatnonzero(np.concatenate(([True], pos_sorted[1:] != pos_sorted[:-1])))
        values = pos_sorted[starts]
        counts = np.diff(np.append(starts, pos_sorted.size))
        below = np.searchsorted(neg_sorted, values, side="left")
        below_or_equal = np.searchsorted(neg_sorted, values, side="right")
        twice_u = int(np.sum(counts * (below + below_or_equal), dtype=np.int64))
    return twice_u / (2.0 * n_pos * n_neg)


def curve_from_flat(
    s: np.ndarray, g: np.ndarray, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` of validated 1-D inputs.

    ``thresholds`` are the distinct score values in decreasing order,
    preceded by ``+inf`` (the point (0, 0)). With ``drop_intermediate`` an
    interior point is left out when the steps before and after it are equal in
    both FPR and TPR counts (it lies on a straight segment, so the area and the
    plot do not change) -- the same rule as scikit-learn's ``roc_curve``.
    """
    n_pos, n_neg = _class_counts(g)
    offset = _small_int_offset(s)
    if offset is not None:
        pos, neg = _histograms(s, g, offset)
        present = np.flatnonzero(pos + neg)[::-1]
        thresholds = (present - offset).astype(np.float64)
        tps = np.cumsum(pos[present], dtype=np.int64)
        fps = np.cumsum(neg[present], dtype=np.int64)
    else:
        # two sorted runs -> one stable (adaptive, linear-time merge) argsort
        merged = np.concatenate((np.sort(s[g]), np.sort(s[~g])))
        order = np.argsort(merged, kind="stable")
        ordered = merged[order]
        last = np.flatnonzero(np.concatenate((ordered[1:] != ordered[:-1], [True])))
        pos_at_or_below = np.cumsum(order < n_pos, dtype=np.int64)[last]
        neg_at_or_below = last + 1 - pos_at_or_below
        # descending thresholds t: #(score >= t) = total - #(score < t)
        tps = (n_pos - np.concatenate(([0], pos_at_or_below[:-1])))[::-1]
        fps = (n_neg - np.concatenate(([0], neg_at_or_below[:-1])))[::-1]
        thresholds = ordered[last][::-1].astype(np.float64)
    if drop_intermediate and tps.size > 2:
        keep = np.concatenate(
            ([True], (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), [True])
        )
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tpr = np.concatenate(([0.0], tps / n_pos))
    fpr = np.concatenate(([0.0], fps / n_neg))
    return fpr, tpr, np.concatenate(([np.inf], thresholds))


def roc_auc(
    scores: object, gold: object, fov: object | None = None, *, gold_class: int | None = None
) -> float:
    """Area under the ROC curve of ``scores`` against ``gold`` inside ``fov``.

    ``scores``: any finite real array (probabilities, logits, ranks); ``gold``:
    binary mask (see :mod:`napari_retsam.metrics.validation`); ``fov``: optional
    binary mask, default the whole array. Equal to
    ``sklearn.metrics.roc_auc_score(gold[fov], scores[fov])`` (ties count one
    half). Raises :class:`UndefinedMetricError` when the gold standard has one
    class only inside the FOV, :class:`RetsamInputError` for bad input.
    """
    s, g = flat_scores_and_gold(scores, gold, fov, gold_class=gold_class)
    return auc_from_flat(s, g)


def roc_curve(
    scores: object,
    gold: object,
    fov: object | None = None,
    *,
    gold_class: int | None = None,
    drop_intermediate: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` as float64 arrays.

    Point ``i`` is (FPR, TPR) of the rule ``score >= thresholds[i]``;
    ``thresholds[0] = +inf`` gives (0, 0) and the last point is (1, 1). Matches
    ``sklearn.metrics.roc_curve`` (same ``drop_intermediate`` rule). Raises
    :class:`UndefinedMetricError` when the gold standard has one class only.
    """
    s, g = flat_scores_and_gold(scores, gold, fov, gold_class=gold_class)
    return curve_from_flat(s, g, drop_intermediate=drop_intermediate)


def thin_curve(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Subsample a long ROC curve for drawing: at most ``max_points`` evenly spaced points,
    both end points kept (the metrics panel and the report figures)."""
    n = len(fpr)
    if n <= max_points:
        return np.asarray(fpr), np.asarray(tpr)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return np.asarray(fpr)[idx], np.asarray(tpr)[idx]
