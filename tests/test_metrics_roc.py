"""ROC AUC and ROC curve against scikit-learn, on random and adversarial inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from napari_retsam.errors import RetsamInputError, UndefinedMetricError
from napari_retsam.metrics import roc_auc, roc_curve


def _random_case(seed: int, shape=(37, 41), kind: str = "float64"):
    rng = np.random.default_rng(seed)
    gold = rng.random(shape) < rng.uniform(0.05, 0.6)
    noise = rng.normal(size=shape)
    scores = 1.0 / (1.0 + np.exp(-(noise + 1.2 * gold)))
    if kind == "float32":
        scores = scores.astype(np.float32)
    elif kind == "quantised":  # probability x 255 rounded, as 8-bit PNGs store it
        scores = np.round(scores * 255) / 255
    elif kind == "uint8":
        scores = np.round(scores * 255).astype(np.uint8)
    elif kind == "coarse":  # heavy ties: 5 distinct values
        scores = np.round(scores * 4) / 4
    elif kind == "int16":
        scores = (np.round(scores * 1000) - 500).astype(np.int16)
    elif kind == "int64_wide":  # integer range too wide for the histogram path
        scores = (np.round(scores * 1e9)).astype(np.int64) * 1000
    fov = rng.random(shape) < 0.85
    return scores, gold, fov


@pytest.mark.parametrize("kind", ["float64", "float32", "quantised", "uint8", "coarse", "int16", "int64_wide"])
@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_sklearn(kind: str, seed: int) -> None:
    scores, gold, fov = _random_case(seed, kind=kind)
    expected = roc_auc_score(gold[fov], scores[fov])
    assert abs(roc_auc(scores, gold, fov) - expected) < 1e-9
    assert abs(roc_auc(scores, gold) - roc_auc_score(gold.ravel(), scores.ravel())) < 1e-9


def test_auc_hand_computed_with_ties() -> None:
    # positives 0.8, 0.5 ; negatives 0.5, 0.2, 0.2
    # pairs: (0.8 > all 3) = 3 ; (0.5 vs 0.5 tie) = 0.5 ; (0.5 > 0.2, 0.2) = 2 -> 5.5 / 6
    scores = np.array([0.8, 0.5, 0.5, 0.2, 0.2])
    gold = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert roc_auc(scores, gold) == pytest.approx(5.5 / 6, abs=1e-15)
    assert roc_auc(scores, gold.astype(np.uint8) * 255) == pytest.approx(5.5 / 6, abs=1e-15)


def test_auc_perfect_inverse_and_constant() -> None:
    gold = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    assert roc_auc(gold.astype(float), gold) == 1.0
    assert roc_auc(1.0 - gold.astype(float), gold) == 0.0
    assert roc_auc(np.full(6, 0.3), gold) == 0.5  # constant scores: one tie block
    assert roc_auc_score(gold, np.full(6, 0.3)) == 0.5


def test_auc_one_class_is_undefined_not_a_number() -> None:
    scores = np.linspace(0, 1, 12).reshape(3, 4)
    with pytest.raises(UndefinedMetricError, match="no vessel"):
        roc_auc(scores, np.zeros((3, 4), bool))
    with pytest.raises(UndefinedMetricError, match="no background"):
        roc_auc(scores, np.ones((3, 4), np.uint8))
    # both classes in the image but only one inside the FOV
    gold = np.zeros((3, 4), bool)
    gold[0, 0] = True
    fov = np.ones((3, 4), bool)
    fov[0, 0] = False
    with pytest.raises(UndefinedMetricError):
        roc_auc(scores, gold, fov)
    with pytest.raises(UndefinedMetricError):  # a single pixel
        roc_auc(np.array([0.4]), np.array([1]))
    with pytest.raises(UndefinedMetricError):
        roc_curve(scores, np.zeros((3, 4), bool))
    assert issubclass(UndefinedMetricError, RetsamInputError)


def test_auc_bad_input() -> None:
    gold = np.array([0, 1, 0, 1])
    with pytest.raises(RetsamInputError, match="NaN"):
        roc_auc(np.array([0.1, np.nan, 0.3, 0.4]), gold)
    with pytest.raises(RetsamInputError, match=r"\(4,\) vs \(5,\)"):
        roc_auc(np.zeros(4), np.zeros(5))
    with pytest.raises(RetsamInputError, match="not binary"):
        roc_auc(np.zeros(4), np.array([0, 1, 2, 1]))
    with pytest.raises(RetsamInputError, match="empty"):
        roc_auc(np.zeros(4), gold, np.zeros(4, bool))
    # a class picked from a label image
    assert roc_auc(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 2, 1, 2]), gold_class=2) == 1.0


def test_logits_and_large_inputs_rank_exactly() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    gold = rng.random(n) < 0.13
    logits = rng.normal(size=n) * 30 + 5 * gold  # saturates a float sigmoid: rank on logits
    assert abs(roc_auc(logits, gold) - roc_auc_score(gold, logits)) < 1e-9


@pytest.mark.parametrize("kind", ["float64", "float32", "quantised", "uint8", "coarse", "int16"])
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(kind: str, drop: bool) -> None:
    scores, gold, fov = _random_case(3, kind=kind)
    fpr, tpr, thr = roc_curve(scores, gold, fov, drop_intermediate=drop)
    s_fpr, s_tpr, s_thr = sk_roc_curve(gold[fov], scores[fov], drop_intermediate=drop)
    assert fpr.shape == s_fpr.shape
    np.testing.assert_allclose(fpr, s_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, s_tpr, rtol=0, atol=1e-12)
    assert thr[0] == np.inf and s_thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], s_thr[1:].astype(np.float64), rtol=0, atol=0)
    # the trapezoid area under the curve is the AUC
    assert abs(np.trapezoid(tpr, fpr) - roc_auc(scores, gold, fov)) < 1e-12


def test_roc_curve_hand_computed() -> None:
    scores = np.array([0.8, 0.5, 0.5, 0.2, 0.2])
    gold = np.array([1, 1, 0, 0, 0], dtype=bool)
    fpr, tpr, thr = roc_curve(scores, gold, drop_intermediate=False)
    np.testing.assert_array_equal(thr, [np.inf, 0.8, 0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1.0])


def test_huge_unsigned_integer_scores_rank_exactly() -> None:
    # beyond float64 precision: 2**64 - 1 and 2**64 - 2 are distinct ranks here
    scores = np.array([2**64 - 1, 2**64 - 2, 2**64 - 2, 5], dtype=np.uint64)
    gold = np.array([1, 0, 1, 0])
    assert roc_auc(scores, gold) == (2 + 1.5) / 4
