"""evaluate / evaluate_set: FOV masking, pooled vs per-image, protocol, JSON safety."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

from napari_retsam.errors import RetsamInputError
from napari_retsam.metrics import Metrics, evaluate, evaluate_set


def _images(n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    preds, golds, fovs = [], [], []
    for i in range(n):
        shape = (20 + 3 * i, 25)  # sizes differ between images
        gold = rng.random(shape) < 0.15 + 0.05 * i
        prob = np.clip(rng.random(shape) * 0.7 + 0.35 * gold, 0, 1).astype(np.float32)
        fov = np.ones(shape, bool)
        fov[:3] = False
        preds.append(prob)
        golds.append(gold)
        fovs.append(fov)
    return preds, golds, fovs


def test_fov_masks_pixels_outside() -> None:
    gold = np.zeros((4, 4), bool)
    gold[1:3, 1:3] = True
    pred = gold.copy()
    pred[0, 0] = True  # a false positive outside the FOV
    fov = np.ones((4, 4), bool)
    fov[0, 0] = False
    inside = evaluate(pred, gold, fov)
    assert inside.fp == 0 and inside.n_pixels == 15 and inside.fov_masked
    whole = evaluate(pred, gold)
    assert whole.fp == 1 and whole.n_pixels == 16 and not whole.fov_masked


def test_pooled_equals_concatenated_pixels() -> None:
    preds, golds, fovs = _images()
    report = evaluate_set(preds, golds, fovs, threshold=0.5, annotator=1, ids=["a", "b", "c", "d"])
    y = np.concatenate([g[f] for g, f in zip(golds, fovs)])
    s = np.concatenate([p[f] for p, f in zip(preds, fovs)])
    pooled = report.pooled
    assert pooled.n_pixels == y.size
    assert pooled.tp == int(np.sum((s >= 0.5) & y))
    assert abs(pooled.auc - roc_auc_score(y, s)) < 1e-9
    assert abs(pooled.f1 - f1_score(y, s >= 0.5)) < 1e-9
    assert abs(pooled.mcc - matthews_corrcoef(y, s >= 0.5)) < 1e-9
    # counts add up over images
    assert pooled.tp == sum(m.tp for m in report.per_image)
    assert pooled.fn == sum(m.fn for m in report.per_image)


def test_per_image_mean_and_population_std() -> None:
    preds, golds, fovs = _images()
    report = evaluate_set(preds, golds, fovs)
    for i, m in enumerate(report.per_image):
        single = evaluate(preds[i], golds[i], fovs[i])
        assert m == single
    for name in ("pa", "se", "sp", "precision", "f1", "iou", "mcc", "auc"):
        values = np.array([getattr(m, name) for m in report.per_image])
        assert report.mean[name] == pytest.approx(values.mean(), abs=1e-15)
        assert report.std[name] == pytest.approx(values.std(ddof=0), abs=1e-15)
        assert report.n_defined[name] == 4
    # pooled is not the mean of the per-image values
    assert report.pooled.se != pytest.approx(report.mean["se"], abs=1e-12)


def test_undefined_values_are_left_out_of_mean() -> None:
    preds, golds, fovs = _images(3)
    golds[1] = np.zeros_like(golds[1])  # no vessel: Se and AUC undefined for this image
    report = evaluate_set(preds, golds, fovs)
    assert report.per_image[1].auc is None and "no vessel" in report.per_image[1].auc_note
    assert math.isnan(report.per_image[1].se)
    assert report.n_defined["auc"] == 2 and report.n_defined["se"] == 2
    expected = np.mean([report.per_image[0].auc, report.per_image[2].auc])
    assert report.mean["auc"] == pytest.approx(expected)
    assert report.pooled.auc is not None  # the pooled set has both classes


def test_stack_input_and_whole_image_protocol() -> None:
    preds, golds, _ = _images(3)
    stack_p = np.stack([p[:20] for p in preds])
    stack_g = np.stack([g[:20] for g in golds])
    report = evaluate_set(stack_p, stack_g)
    assert len(report.per_image) == 3 and report.ids == ["0", "1", "2"]
    assert report.protocol.region == "whole image"
    whole = evaluate(stack_p, stack_g)  # a stack evaluated at once = pooled
    assert whole.auc == pytest.approx(report.pooled.auc, abs=1e-12)
    assert (whole.tp, whole.fp, whole.tn, whole.fn) == (
        report.pooled.tp, report.pooled.fp, report.pooled.tn, report.pooled.fn
    )


def test_mixed_binary_and_probability_set() -> None:
    preds, golds, fovs = _images(3)
    preds[2] = preds[2] >= 0.5
    report = evaluate_set(preds, golds, fovs, ids=["x", "y", "z"])
    assert report.pooled.auc is None and "z" in report.pooled.auc_note
    assert report.per_image[0].auc is not None and report.per_image[2].auc is None
    assert report.n_defined["auc"] == 2


def test_set_bad_input_names_the_image() -> None:
    preds, golds, fovs = _images(3)
    fovs[1] = np.zeros_like(fovs[1])
    with pytest.raises(RetsamInputError, match="image b: FOV mask is empty"):
        evaluate_set(preds, golds, fovs, ids=["a", "b", "c"])
    with pytest.raises(RetsamInputError, match="3 predictions but 2 gold"):
        evaluate_set(preds, golds[:2])
    with pytest.raises(RetsamInputError, match="empty set"):
        evaluate_set([], [])
    with pytest.raises(RetsamInputError, match="every image or for none"):
        evaluate_set(preds, golds, [fovs[0], None, fovs[2]])


def test_as_dict_is_json_safe_and_states_protocol() -> None:
    preds, golds, fovs = _images(2)
    golds[0] = np.zeros_like(golds[0])
    report = evaluate_set(preds, golds, fovs, threshold=0.4, annotator=2, dataset="drive", split="test")
    data = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert data["protocol"]["region"] == "fov"
    assert data["protocol"]["threshold"] == 0.4
    assert data["protocol"]["annotator"] == 2
    assert data["protocol"]["aggregation"] == "pooled + per-image"
    assert "population" in data["protocol"]["std"]
    assert data["per_image"][0]["se"] is None and data["per_image"][0]["auc"] is None
    assert data["per_image"][1]["id"] == "1"
    assert set(Metrics.__dataclass_fields__) <= set(data["pooled"])
    line = report.protocol.describe()
    assert "FOV" in line and "0.4" in line and "annotator 2" in line


def test_progress_callback() -> None:
    preds, golds, fovs = _images(3)
    calls = []
    evaluate_set(preds, golds, fovs, progress=lambda d, t, m: calls.append((d, t)))
    assert calls[-1] == (4, 4) and len(calls) == 4


def test_metrics_import_is_light() -> None:
    code = (
        "import sys, numpy as np; import napari_retsam.metrics as m; "
        "m.evaluate(np.array([0.2, 0.8]), np.array([0, 1])); "
        "bad = [k for k in sys.modules if k.split('.')[0] in ('torch', 'napari', 'PyQt5', 'qtpy', 'PySide2', 'PySide6', 'sklearn')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_adversarial_single_images() -> None:
    prob = np.array([[0.2, 0.7], [0.9, 0.4]])
    # all-negative gold: AUC undefined with the reason, Se undefined, counts exact
    m = evaluate(prob, np.zeros((2, 2), bool))
    assert m.auc is None and "no vessel" in m.auc_note and math.isnan(m.se)
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 2, 2, 0) and m.sp == 0.5
    # all-positive gold
    m = evaluate(prob, np.full((2, 2), 255, np.uint8))
    assert m.auc is None and "no background" in m.auc_note and math.isnan(m.sp)
    assert m.se == 0.5 and m.precision == 1.0
    # constant scores: one tie block, AUC exactly 0.5
    m = evaluate(np.full((2, 2), 0.5), np.array([[1, 0], [0, 1]]))
    assert m.auc == 0.5 and (m.tp, m.fp) == (2, 2)
    # a single pixel inside the FOV
    fov = np.zeros((2, 2), bool)
    fov[1, 0] = True
    m = evaluate(prob, np.array([[0, 0], [1, 0]]), fov)
    assert m.n_pixels == 1 and (m.tp, m.fp, m.tn, m.fn) == (1, 0, 0, 0)
    assert m.pa == 1.0 and m.f1 == 1.0 and m.mcc == 0.0 and m.auc is None
    json.dumps(m.as_dict(), allow_nan=False)


def test_heavy_ties_against_sklearn() -> None:
    rng = np.random.default_rng(11)
    gold = rng.random((60, 70)) < 0.3
    prob = rng.integers(0, 3, size=(60, 70)) / 2.0 * 0.5 + 0.25 * gold  # 5 values, many ties
    m = evaluate(prob, gold)
    assert abs(m.auc - roc_auc_score(gold.ravel(), prob.ravel())) < 1e-12
    assert abs(m.mcc - matthews_corrcoef(gold.ravel(), prob.ravel() >= 0.5)) < 1e-12
