"""Metric reports for one image (:func:`evaluate`) and for a set (:func:`evaluate_set`).

Protocol
--------
* Pixels are evaluated inside the field of view (FOV) when a FOV mask is
  given, otherwise over the whole image; :class:`Protocol` records which.
* A probability map is binarised as ``prob >= threshold`` (default 0.5).
* **Pooled** figures concatenate the evaluated pixels of all images and compute
  every metric once over them (counts add up; AUC ranks all pixels together).
* **Per-image** figures compute every metric per image and report the mean and
  the *population* standard deviation (``ddof=0``) over the images where the
  metric is defined (not NaN / not None); ``n_defined`` says over how many.

Every report carries its :class:`Protocol` (``as_dict()["protocol"]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError, UndefinedMetricError
from napari_retsam.metrics.confusion import ConfusionCounts, confusion_counts, ratios
from napari_retsam.metrics.roc import auc_from_flat
from napari_retsam.metrics.validation import (
    as_fov,
    as_gold,
    as_prediction,
    check_same_shape,
    check_threshold,
)

__all__ = ["Metrics", "Protocol", "SetReport", "evaluate", "evaluate_set", "METRIC_NAMES"]

#: The ratio metrics, in the order tables show them.
METRIC_NAMES: tuple[str, ...] = ("pa", "se", "sp", "precision", "f1", "iou", "mcc", "auc")

BINARY_AUC_NOTE = (
    "binary prediction: no probability map, so no ROC curve and no AUC "
    "(AUC of a single operating point would only restate Se and Sp)"
)


def _json_float(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Metrics:
    """Segmentation metrics of one prediction (or one pooled set).

    Counts ``tp fp tn fn`` and ``n_pixels`` (= their sum: the evaluated pixels)
    are exact ints. Ratios are float64; NaN marks an undefined ratio (see
    :mod:`napari_retsam.metrics.confusion` for every formula and convention).
    ``auc`` is ``None`` when it does not exist, and ``auc_note`` then says why
    (binary prediction, or one class only in the gold standard).
    """

    tp: int
    fp: int
    tn: int
    fn: int
    pa: float
    se: float
    sp: float
    precision: float
    f1: float
    iou: float
    mcc: float
    auc: float | None
    auc_note: str
    n_pixels: int
    threshold: float
    is_probability: bool
    fov_masked: bool = True

    @property
    def dice(self) -> float:
        """Dice coefficient; identical to F1 for binary masks."""
        return self.f1

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict: NaN ratios become ``None``."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key] = _json_float(value) if isinstance(value, float) or value is None else value
        out["threshold"] = float(self.threshold)
        return out


@dataclass(frozen=True)
class Protocol:
    """How a report was computed; shown next to every figure."""

    region: str = "fov"  # "fov" or "whole image"
    aggregation: str = "pooled"  # "pooled", "per-image" or "pooled + per-image"
    threshold: float = 0.5
    threshold_rule: str = "prob >= threshold"
    annotator: int | str | None = None
    dataset: str | None = None
    split: str | None = None
    n_images: int = 1
    std: str = "population (ddof=0) over the images where the metric is defined"
    sigmoid: bool = False
    gold_class: int | None = None
    fov_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for table headers and CLI output."""
        parts = [
            "inside the FOV" if self.region == "fov" else "whole image",
            self.aggregation,
            f"threshold: prob >= {self.threshold:g}",
        ]
        if self.dataset:
            parts.append(f"dataset {self.dataset}" + (f"/{self.split}" if self.split else ""))
        if self.annotator is not None:
            parts.append(f"annotator {self.annotator}")
        parts.append(f"{self.n_images} image{'s' if self.n_images != 1 else ''}")
        if self.fov_note:
            parts.append(self.fov_note)
        return "; ".join(parts)


@dataclass(frozen=True)
class SetReport:
    """Pooled and per-image metrics of a set of predictions."""

    pooled: Metrics
    per_image: list[Metrics]
    mean: dict[str, float]
    std: dict[str, float]
    n_defined: dict[str, int]
    protocol: Protocol
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        per_image = []
        for sample_id, metrics in zip(self.ids, self.per_image):
            per_image.append({"id": sample_id, **metrics.as_dict()})
        return {
            "protocol": self.protocol.as_dict(),
            "pooled": self.pooled.as_dict(),
            "per_image": per_image,
            "mean": {k: _json_float(v) for k, v in self.mean.items()},
            "std": {k: _json_float(v) for k, v in self.std.items()},
            "n_defined": dict(self.n_defined),
        }


@dataclass(frozen=True)
class _Flat:
    """Validated pixels of one image inside its FOV."""

    binary: np.ndarray
    scores: np.ndarray | None
    gold: np.ndarray
    fov_masked: bool


def _prepare(
    pred: object,
    gold: object,
    fov: object | None,
    threshold: float,
    gold_class: int | None,
    sigmoid: bool,
    label: str = "",
) -> _Flat:
    where = f" ({label})" if label else ""
    try:
        pred_shape, gold_shape = np.shape(pred), np.shape(gold)
    except ValueError as exc:  # ragged nested lists
        raise RetsamInputError(f"prediction or gold standard is not a regular array{where}") from exc
    check_same_shape(pred_shape, gold_shape, f"prediction{where}", "gold standard")
    try:
        p = as_prediction(pred, threshold, sigmoid=sigmoid)
        g = as_gold(gold, gold_class=gold_class)
        f = as_fov(fov, p.binary.shape)
    except RetsamInputError as exc:
        if not label:
            raise
        raise RetsamInputError(f"{label}: {exc}") from exc
    if f is None:
        return _Flat(p.binary.ravel(), None if p.scores is None else p.scores.ravel(), g.ravel(), False)
    return _Flat(p.binary[f], None if p.scores is None else p.scores[f], g[f], True)


def _auc_and_note(scores: np.ndarray | None, gold: np.ndarray) -> tuple[float | None, str]:
    if scores is None:
        return None, BINARY_AUC_NOTE
    try:
        return auc_from_flat(scores, gold), ""
    except UndefinedMetricError as exc:
        return None, str(exc)


def _metrics(
    counts: ConfusionCounts,
    auc: float | None,
    auc_note: str,
    threshold: float,
    is_probability: bool,
    fov_masked: bool,
) -> Metrics:
    return Metrics(
        tp=counts.tp,
        fp=counts.fp,
        tn=counts.tn,
        fn=counts.fn,
        **ratios(counts),
        auc=auc,
        auc_note=auc_note,
        n_pixels=counts.n,
        threshold=threshold,
        is_probability=is_probability,
        fov_masked=fov_masked,
    )


def _metrics_of_flat(flat: _Flat, threshold: float) -> Metrics:
    counts = confusion_counts(flat.binary, flat.gold)
    auc, note = _auc_and_note(flat.scores, flat.gold)
    return _metrics(counts, auc, note, threshold, flat.scores is not None, flat.fov_masked)


def evaluate(
    pred: object,
    gold: object,
    fov: object | None = None,
    threshold: float = 0.5,
    *,
    gold_class: int | None = None,
    sigmoid: bool = False,
) -> Metrics:
    """Metrics of one prediction against a gold standard, inside ``fov``.

    ``pred``: probability map (float in [0, 1]; logits with ``sigmoid=True``)
    or binary mask (bool, {0,1}, {0,255}); ``gold``: binary mask, or a label
    image with ``gold_class``; ``fov``: optional binary mask (default: whole
    image). Arrays of any matching shape (2-D images, 3-D stacks pooled).
    Probabilities are binarised as ``prob >= threshold``. Bad input raises
    :class:`~napari_retsam.errors.RetsamInputError`.
    """
    threshold = check_threshold(threshold)
    flat = _prepare(pred, gold, fov, threshold, gold_class, sigmoid)
    return _metrics_of_flat(flat, threshold)


def _summary(per_image: list[Metrics]) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    n_defined: dict[str, int] = {}
    for name in METRIC_NAMES:
        values = np.array(
            [getattr(m, name) for m in per_image if getattr(m, name) is not None], dtype=np.float64
        )
        values = values[np.isfinite(values)]
        n_defined[name] = int(values.size)
        mean[name] = float(values.mean()) if values.size else math.nan
        std[name] = float(values.std(ddof=0)) if values.size else math.nan
    return mean, std, n_defined


def evaluate_set(
    preds: Sequence[object] | np.ndarray,
    golds: Sequence[object] | np.ndarray,
    fovs: Sequence[object] | np.ndarray | None = None,
    threshold: float = 0.5,
    *,
    gold_class: int | None = None,
    sigmoid: bool = False,
    ids: Sequence[str] | None = None,
    annotator: int | str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    fov_note: str = "",
    progress: Callable[[int, int, str], None] | None = None,
) -> SetReport:
    """Pooled and per-image metrics of a set (a list of images or an N x H x W stack).

    Images may differ in size between items, but each prediction, gold
    standard and FOV must match in shape. ``fovs`` is ``None`` (whole images)
    or one FOV per image. Pooled AUC exists only when every prediction is a
    probability map. ``ids`` name the images in the report (default ``"0"``,
    ``"1"``, ...). ``progress(done, total, message)`` is called after each image.
    """
    threshold = check_threshold(threshold)
    n = len(preds)
    if n == 0:
        raise RetsamInputError("no predictions to evaluate (empty set)")
    if len(golds) != n:
        raise RetsamInputError(f"{n} predictions but {len(golds)} gold standards")
    if fovs is not None and len(fovs) != n:
        raise RetsamInputError(f"{n} predictions but {len(fovs)} FOV masks")
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise RetsamInputError(f"{n} predictions but {len(ids)} ids")
    if fovs is not None and any(f is None for f in fovs):
        raise RetsamInputError("give a FOV mask for every image or for none")

    flats: list[_Flat] = []
    per_image: list[Metrics] = []
    for i in range(n):
        flat = _prepare(
            preds[i], golds[i], None if fovs is None else fovs[i], threshold, gold_class, sigmoid,
            label=f"image {ids[i]}",
        )
        flats.append(flat)
        per_image.append(_metrics_of_flat(flat, threshold))
        if progress is not None:
            progress(i + 1, n + 1, f"evaluated {ids[i]}")

    counts = ConfusionCounts(0, 0, 0, 0)
    for m in per_image:
        counts = counts + ConfusionCounts(m.tp, m.fp, m.tn, m.fn)
    all_probability = all(f.scores is not None for f in flats)
    if all_probability:
        gold_all = np.concatenate([f.gold for f in flats])
        scores_all = np.concatenate([f.scores for f in flats])  # type: ignore[misc]
        auc, note = _auc_and_note(scores_all, gold_all)
    else:
        binary_ids = [ids[i] for i, f in enumerate(flats) if f.scores is None]
        shown = ", ".join(binary_ids[:5]) + (", ..." if len(binary_ids) > 5 else "")
        auc, note = None, f"pooled AUC needs a probability map for every image; binary: {shown}"
    pooled = _metrics(counts, auc, note, threshold, all_probability, fovs is not None)
    if progress is not None:
        progress(n + 1, n + 1, "pooled")
    mean, std, n_defined = _summary(per_image)
    protocol = Protocol(
        region="fov" if fovs is not None else "whole image",
        aggregation="pooled + per-image",
        threshold=threshold,
        annotator=annotator,
        dataset=dataset,
        split=split,
        n_images=n,
        sigmoid=sigmoid,
        gold_class=gold_class,
        fov_note=fov_note,
    )
    return SetReport(pooled, per_image, mean, std, n_defined, protocol, ids)
