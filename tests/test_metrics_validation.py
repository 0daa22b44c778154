"""Bad input to the metrics engine: one-line RetsamInputError, never a silent number."""

from __future__ import annotations

import numpy as np
import pytest

from napari_retsam.errors import RetsamInputError
from napari_retsam.metrics import decode_8bit_prediction, evaluate, logistic

GOLD = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
PROB = np.array([[0.1, 0.9, 0.6], [0.4, 0.2, 0.7]])


def _error(*args, **kwargs) -> str:
    with pytest.raises(RetsamInputError) as info:
        evaluate(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_shape_mismatch_names_both_shapes() -> None:
    message = _error(np.zeros((4, 5)), np.zeros((5, 4), bool))
    assert "(4, 5)" in message and "(5, 4)" in message
    message = _error(PROB, GOLD, np.ones((3, 3), bool))
    assert "(2, 3)" in message and "(3, 3)" in message


def test_empty_fov_refused() -> None:
    assert "empty" in _error(PROB, GOLD, np.zeros((2, 3), bool))
    assert "empty" in _error(PROB, GOLD, np.zeros((2, 3), np.uint8))


def test_non_binary_fov_refused() -> None:
    assert "FOV" in _error(PROB, GOLD, np.array([[0, 1, 2], [1, 1, 1]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_refused(bad: float) -> None:
    prob = PROB.copy()
    prob[0, 0] = bad
    assert "NaN" in _error(prob, GOLD) or "infinite" in _error(prob, GOLD)
    # even with a sigmoid
    with pytest.raises(RetsamInputError):
        evaluate(prob, GOLD, sigmoid=True)


def test_out_of_range_probabilities_refused_unless_sigmoid() -> None:
    logits = np.array([[-3.0, 2.0, 0.5], [-0.1, -2.0, 1.5]])
    message = _error(logits, GOLD)
    assert "[0, 1]" in message and "sigmoid" in message
    m = evaluate(logits, GOLD, sigmoid=True)
    expected = evaluate(logistic(logits), GOLD)
    assert (m.tp, m.fp, m.tn, m.fn) == (expected.tp, expected.fp, expected.tn, expected.fn)
    assert m.auc == expected.auc == 1.0


def test_gold_not_binary_refused_unless_class_given() -> None:
    labels = np.array([[0, 2, 2], [1, 0, 2]])
    assert "not binary" in _error(PROB, labels)
    m = evaluate(PROB, labels, gold_class=2)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 0, 3, 0)
    assert "does not occur" in _error(PROB, labels, gold_class=5)
    # {0, 1, 255} mixed is not binary either
    assert "not binary" in _error(PROB, np.array([[0, 1, 255], [0, 0, 1]]))


@pytest.mark.parametrize(
    "gold", [GOLD.astype(bool), GOLD, GOLD * 255, GOLD.astype(np.float32), GOLD.astype(np.int64) * 255]
)
def test_binary_gold_spellings_agree(gold) -> None:
    m = evaluate(PROB, gold)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 0, 3, 0)


def test_integer_prediction_must_be_binary() -> None:
    m255 = evaluate(GOLD * 255, GOLD)
    m1 = evaluate(GOLD, GOLD)
    assert m255 == m1 and m1.auc is None and not m1.is_probability
    message = _error(np.array([[0, 3, 7], [1, 0, 200]], np.uint8), GOLD)
    assert "binary" in message and "probability" in message


def test_bad_threshold_and_dtypes() -> None:
    assert "threshold" in _error(PROB, GOLD, threshold=1.5)
    assert "threshold" in _error(PROB, GOLD, threshold=float("nan"))
    assert "dtype" in _error(np.array([["a", "b"]]), np.array([[0, 1]]))
    assert "empty" in _error(np.zeros((0, 3)), np.zeros((0, 3)))
    assert "regular" in _error([[0.1, 0.2], [0.3]], [[0, 1], [1]])


def test_decode_8bit_prediction() -> None:
    binary = decode_8bit_prediction(np.array([[0, 255], [255, 0]], np.uint8))
    assert binary.dtype == bool and binary.tolist() == [[False, True], [True, False]]
    prob = decode_8bit_prediction(np.array([[0, 128], [255, 3]], np.uint8))
    assert prob.dtype == np.float64 and prob[0, 1] == 128 / 255
    with pytest.raises(RetsamInputError, match="8-bit"):
        decode_8bit_prediction(np.array([[0, 1000]], np.uint16))


def test_logistic_is_stable() -> None:
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    y = logistic(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1.0])
