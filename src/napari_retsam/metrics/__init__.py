"""Vessel segmentation metrics: pure numpy, exact, no torch/napari/Qt.

Public API (see ``docs/dev/CONTRACTS.md``)::

    evaluate(pred, gold, fov=None, threshold=0.5, *, gold_class=None, sigmoid=False) -> Metrics
    roc_auc(scores, gold, fov=None) -> float            # UndefinedMetricError if one class only
    roc_curve(scores, gold, fov=None) -> (fpr, tpr, thresholds)
    evaluate_set(preds, golds, fovs=None, threshold=0.5, ...) -> SetReport

Formulas and conventions for undefined ratios: :mod:`.confusion`; ROC/AUC
definition and algorithm: :mod:`.roc`; accepted inputs: :mod:`.validation`;
pooled vs per-image protocol: :mod:`.report`.
"""

from __future__ import annotations

from napari_retsam.errors import UndefinedMetricError
from napari_retsam.metrics.confusion import ConfusionCounts, confusion_counts, ratios
from napari_retsam.metrics.report import (
    METRIC_NAMES,
    Metrics,
    Protocol,
    SetReport,
    evaluate,
    evaluate_set,
)
from napari_retsam.metrics.roc import roc_auc, roc_curve
from napari_retsam.metrics.validation import decode_8bit_prediction, logistic

__all__ = [
    "METRIC_NAMES",
    "ConfusionCounts",
    "Metrics",
    "Protocol",
    "SetReport",
    "UndefinedMetricError",
    "confusion_counts",
    "decode_8bit_prediction",
    "evaluate",
    "evaluate_set",
    "logistic",
    "ratios",
    "roc_auc",
    "roc_curve",
]
