"""Confusion counts and derived ratios against scikit-learn and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    jaccard_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

from napari_retsam.metrics import ConfusionCounts, evaluate, ratios


@pytest.mark.parametrize("seed", range(8))
def test_counts_and_ratios_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (29, 33)
    gold = rng.random(shape) < rng.uniform(0.05, 0.5)
    prob = np.clip(rng.random(shape) * 0.8 + 0.3 * gold, 0, 1)
    fov = rng.random(shape) < 0.9
    t = float(rng.uniform(0.2, 0.8))
    m = evaluate(prob, gold, fov, threshold=t)
    y, p = gold[fov], prob[fov] >= t
    tn, fp, fn, tp = confusion_matrix(y, p, labels=[False, True]).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert m.n_pixels == fov.sum()
    assert abs(m.pa - (tp + tn) / fov.sum()) < 1e-12
    assert abs(m.se - recall_score(y, p)) < 1e-9
    assert abs(m.sp - recall_score(~y, ~p)) < 1e-9
    assert abs(m.precision - precision_score(y, p)) < 1e-9
    assert abs(m.f1 - f1_score(y, p)) < 1e-9
    assert abs(m.iou - jaccard_score(y, p)) < 1e-9
    assert abs(m.mcc - matthews_corrcoef(y, p)) < 1e-9


def test_hand_computed_example() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=np.uint8) * 255
    gold = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    m = evaluate(pred, gold)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 4, 1)
    assert m.pa == 6 / 8
    assert m.se == 2 / 3
    assert m.sp == 4 / 5
    assert m.precision == 2 / 3
    assert m.f1 == pytest.approx(4 / 6)
    assert m.iou == pytest.approx(2 / 4)
    assert m.mcc == pytest.approx((2 * 4 - 1 * 1) / math.sqrt(3 * 3 * 5 * 5))
    assert m.auc is None and "binary" in m.auc_note
    assert m.is_probability is False and m.fov_masked is False


def test_threshold_is_inclusive() -> None:
    prob = np.array([0.49, 0.5, 0.51, 0.2])
    gold = np.array([0, 1, 1, 0])
    m = evaluate(prob, gold)  # default 0.5, prob >= t
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 0, 2, 0)
    m = evaluate(prob, gold, threshold=0.51)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 0, 2, 1)


def test_degenerate_conventions() -> None:
    # gold and prediction both empty: Se and precision undefined (NaN), F1 = IoU = 1, MCC = 0
    r = ratios(ConfusionCounts(0, 0, 10, 0))
    assert math.isnan(r["se"]) and math.isnan(r["precision"])
    assert r["sp"] == 1.0 and r["pa"] == 1.0
    assert r["f1"] == 1.0 and r["iou"] == 1.0
    assert r["mcc"] == 0.0
    assert f1_score([0, 0], [0, 0], zero_division=1.0) == 1.0  # the same convention
    assert matthews_corrcoef([0, 0, 0], [0, 0, 0]) == 0.0
    # everything predicted, everything vessel: Sp undefined, MCC 0
    r = ratios(ConfusionCounts(5, 0, 0, 0))
    assert math.isnan(r["sp"]) and r["se"] == 1.0 and r["mcc"] == 0.0
    # gold empty, prediction not: F1 = IoU = 0, precision 0
    r = ratios(ConfusionCounts(0, 3, 7, 0))
    assert r["f1"] == 0.0 and r["iou"] == 0.0 and r["precision"] == 0.0
    # perfect and perfectly wrong
    assert ratios(ConfusionCounts(3, 0, 4, 0))["mcc"] == 1.0
    assert ratios(ConfusionCounts(0, 4, 0, 3))["mcc"] == -1.0


def test_large_counts_do_not_overflow() -> None:
    # products of counts far beyond int64 (~1e38): MCC still exact to float precision
    tp, fp, tn, fn = 10**10, 2 * 10**9, 9 * 10**10, 3 * 10**9
    r = ratios(ConfusionCounts(tp, fp, tn, fn))
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert r["mcc"] == pytest.approx(expected, rel=1e-14)
    assert ConfusionCounts(1, 2, 3, 4) + ConfusionCounts(10, 20, 30, 40) == (11, 22, 33, 44)
