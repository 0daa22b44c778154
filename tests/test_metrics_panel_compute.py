"""The metrics panel's Qt-free core: rows, CSV text, error codes, stacks (no viewer needed)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_retsam.errors import RetsamInputError
from napari_retsam.metrics import evaluate, evaluate_set
from napari_retsam.metrics.panel import (
    EXPORT_HEADER,
    TABLE_HEADER,
    PanelRequest,
    PredictionInput,
    compute_panel,
    error_codes,
    rows_to_text,
    write_rows_csv,
)


def _arrays(shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    gold = rng.random(shape) < 0.2
    prob = np.clip(0.45 * gold + 0.55 * rng.random(shape), 0.0, 1.0)
    return gold, prob


def test_error_codes_by_hand():
    pred = np.array([[0.9, 0.2, 0.6], [0.1, 0.5, 0.0]])
    gold = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.uint8) * 255
    fov = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    codes = error_codes(pred, gold, fov, threshold=0.5)
    # (0,0) TP, (0,1) FN, (0,2) FP, (1,0) TN, (1,1) 0.5>=0.5 TP, (1,2) outside FOV
    np.testing.assert_array_equal(codes, [[1, 3, 2], [0, 1, 0]])
    assert codes.dtype == np.uint8


def test_two_d_rows_equal_engine_and_binary_auc_is_na():
    gold, prob = _arrays()
    fov = np.ones_like(gold)
    fov[:, :6] = False
    request = PanelRequest(
        predictions=(PredictionInput("prob", prob), PredictionInput("mask", prob >= 0.6, is_labels=True)),
        gold=gold,
        fov=fov,
        fov_name="fov",
        threshold=0.4,
    )
    result = compute_panel(request)
    assert [(r.prediction, r.image) for r in result.rows] == [("prob", ""), ("mask", "")]
    ref = evaluate(prob, gold, fov, 0.4)
    for attr in ("pa", "se", "sp", "auc", "f1", "iou", "mcc"):
        assert result.rows[0].values[attr] == getattr(ref, attr)
    ref_bin = evaluate(prob >= 0.6, gold, fov, 0.4)
    assert result.rows[1].values["auc"] is None
    assert result.rows[1].notes["auc"] == ref_bin.auc_note
    assert result.rows[1].values["se"] == ref_bin.se
    assert result.rows[0].counts == {"tp": ref.tp, "fp": ref.fp, "tn": ref.tn, "fn": ref.fn}
    assert len(result.curves) == 1 and result.curves[0].auc == ref.auc
    assert "inside FOV" in result.protocol and "0.4" in result.protocol


def test_stack_rows_pooled_mean_std_and_broadcast_fov():
    gold, prob = _arrays((3, 64, 64), seed=1)
    fov2d = np.zeros((64, 64), dtype=np.uint8)
    fov2d[8:56, 8:56] = 255
    request = PanelRequest(
        predictions=(PredictionInput("p", prob),), gold=gold, fov=fov2d, fov_name="fov", per_image=True
    )
    result = compute_panel(request)
    assert [r.image for r in result.rows] == ["0", "1", "2", "pooled", "mean", "std"]
    report = evaluate_set(list(prob), list(gold), [fov2d] * 3)
    pooled_3d = evaluate(prob, gold, np.broadcast_to(fov2d, prob.shape))
    assert result.rows[3].values["f1"] == pooled_3d.f1 == report.pooled.f1
    assert result.rows[3].values["auc"] == pytest.approx(pooled_3d.auc, abs=1e-12)
    for i in range(3):
        assert result.rows[i].values["mcc"] == evaluate(prob[i], gold[i], fov2d).mcc
    se = [evaluate(prob[i], gold[i], fov2d).se for i in range(3)]
    assert result.rows[4].values["se"] == pytest.approx(np.mean(se), abs=1e-15)
    assert result.rows[5].values["se"] == pytest.approx(np.std(se), abs=1e-15)
    # pooled mode: no mean/std rows
    pooled_only = compute_panel(PanelRequest(predictions=(PredictionInput("p", prob),), gold=gold))
    assert [r.image for r in pooled_only.rows] == ["0", "1", "2", "pooled"]


def test_uint8_image_prediction_is_probability_times_255():
    gold, prob = _arrays()
    as_u8 = np.round(prob * 255).astype(np.uint8)
    result = compute_panel(PanelRequest(predictions=(PredictionInput("u8", as_u8),), gold=gold))
    ref = evaluate(as_u8 / 255.0, gold)
    assert result.rows[0].values["auc"] == ref.auc
    assert result.rows[0].values["se"] == ref.se


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gold": np.zeros((32, 32), bool)}, "shape"),
        ({"gold": np.arange(64 * 64).reshape(64, 64) % 3}, "not binary"),
        ({"fov": np.zeros((64, 64), bool)}, "FOV mask is empty"),
        ({"gold": None}, "gold-standard"),
    ],
)
def test_bad_input_raises_one_line_error(change, message):
    gold, prob = _arrays()
    kwargs = {"predictions": (PredictionInput("p", prob),), "gold": gold, "fov": None, "fov_name": "fov"}
    kwargs.update(change)
    with pytest.raises(RetsamInputError, match=message) as info:
        compute_panel(PanelRequest(**kwargs))
    assert "\n" not in str(info.value)


def test_nan_probabilities_refused_naming_the_layer():
    gold, prob = _arrays()
    prob[3, 4] = np.nan
    with pytest.raises(RetsamInputError, match=r"'bad'.*NaN"):
        compute_panel(PanelRequest(predictions=(PredictionInput("bad", prob),), gold=gold))


def test_rows_to_text_and_csv_round_trip(tmp_path):
    gold, prob = _arrays()
    result = compute_panel(
        PanelRequest(
            predictions=(PredictionInput("p,1", prob), PredictionInput("m", prob > 0.5, True)), gold=gold
        )
    )
    path = write_rows_csv(result.rows, tmp_path / "metrics")
    assert path.name == "metrics.csv"
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    assert tuple(table[0]) == EXPORT_HEADER == TABLE_HEADER + ("TP", "FP", "TN", "FN")
    assert table[1][0] == "p,1"  # quoted, not split
    assert float(table[1][TABLE_HEADER.index("MCC")]) == result.rows[0].values["mcc"]  # repr: exact
    assert table[2][TABLE_HEADER.index("AUC")] == "n/a"
    ref = evaluate(prob, gold)
    assert [int(x) for x in table[1][-4:]] == [ref.tp, ref.fp, ref.tn, ref.fn]
    tsv = rows_to_text(result.rows, "\t").splitlines()
    assert tsv[0].split("\t") == list(EXPORT_HEADER)
    assert len(tsv) == 3
    with pytest.raises(RetsamInputError, match="does not exist"):
        write_rows_csv(result.rows, tmp_path / "missing" / "x.csv")


def test_undefined_sensitivity_shows_reason():
    gold = np.zeros((64, 64), bool)
    prob = np.full((64, 64), 0.2)
    result = compute_panel(PanelRequest(predictions=(PredictionInput("p", prob),), gold=gold))
    row = result.rows[0]
    assert row.values["se"] is None and "no vessel pixel" in row.notes["se"]
    assert row.values["auc"] is None and row.notes["auc"]
    assert row.values["sp"] == 1.0 and not math.isnan(row.values["pa"])
    assert result.curves == () and result.roc_notes


def test_logits_refused_unless_sigmoid_asked():
    gold, prob = _arrays()
    logits = (prob - 0.5) * 8.0  # values in [-4, 4]
    request = PanelRequest(predictions=(PredictionInput("logits", logits),), gold=gold, overlay="logits")
    with pytest.raises(RetsamInputError, match=r"\[0, 1\].*sigmoid"):
        compute_panel(request)
    result = compute_panel(PanelRequest(**{**request.__dict__, "sigmoid": True}))
    ref = evaluate(logits, gold, sigmoid=True)
    assert result.rows[0].values["se"] == ref.se and result.rows[0].values["auc"] == ref.auc
    assert int((result.overlay == 1).sum()) == ref.tp  # sigmoid(x) >= 0.5  <=>  x >= 0
    assert "sigmoid" in result.protocol
