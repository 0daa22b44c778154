"""What the metrics panel computes, without Qt: request in, table rows / ROC curves / overlay out.

The panel copies the chosen layers' arrays into a :class:`PanelRequest` on the
main thread; :func:`compute_panel` (run directly, or in a napari worker thread
for large stacks) turns it into a :class:`PanelResult` using only the metrics
engine (:mod:`napari_retsam.metrics`); the panel applies the result on the main
thread. Nothing here touches a layer, so the function is safe off the UI thread.

Conventions
-----------
* A 2-D prediction (H×W) gives one row. A stack (N×H×W) gives one row per slice
  (``image`` = ``"0"``, ``"1"``, ...) and a ``"pooled"`` row computed over all
  pixels of all slices at once; in per-image mode two more rows give the mean
  and the (population, ddof=0, as the engine reports it) standard deviation of
  the per-slice values.
* A Labels prediction is binary (non-zero = vessel). An Image prediction is
  handed to the engine as it is: floats are probabilities (``prob >= threshold``
  is vessel), binary images are binary predictions.
* The FOV may be H×W for an N×H×W stack: the same FOV is used for every slice.
* Error overlay codes: 0 = true negative or outside the FOV, 1 = TP, 2 = FP, 3 = FN.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.io_utils import atomic_write_bytes
from napari_retsam.metrics import Metrics, evaluate, evaluate_set, roc_curve
from napari_retsam.metrics.roc import thin_curve
from napari_retsam.metrics.validation import (
    as_fov,
    as_gold,
    as_prediction,
    check_same_shape,
    decode_8bit_prediction,
)

__all__ = [
    "ERROR_CODES",
    "EXPORT_HEADER",
    "METRIC_COLUMNS",
    "TABLE_HEADER",
    "PanelRequest",
    "PanelResult",
    "PredictionInput",
    "RocCurve",
    "TableRow",
    "compute_panel",
    "error_codes",
    "protocol_text",
    "rows_to_text",
    "write_rows_csv",
]

#: (column header, attribute of :class:`napari_retsam.metrics.Metrics`)
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("PA", "pa"),
    ("Se", "se"),
    ("Sp", "sp"),
    ("AUC", "auc"),
    ("F1", "f1"),
    ("IoU", "iou"),
    ("MCC", "mcc"),
)
TABLE_HEADER: tuple[str, ...] = ("Prediction", "Image") + tuple(h for h, _ in METRIC_COLUMNS)
#: Exported text (clipboard, CSV): the table's columns plus the exact confusion counts.
EXPORT_HEADER: tuple[str, ...] = TABLE_HEADER + ("TP", "FP", "TN", "FN")

#: Error overlay label values.
ERROR_CODES: dict[str, int] = {"TP": 1, "FP": 2, "FN": 3}

#: Above this many prediction pixels in total the panel computes in a worker thread.
DEFAULT_WORKER_MIN_PIXELS = 2_000_000


@dataclass(frozen=True)
class PredictionInput:
    """One prediction layer's data: ``name`` (the layer name) and its array."""

    name: str
    data: np.ndarray
    is_labels: bool = False


@dataclass(frozen=True)
class PanelRequest:
    """Everything one computation needs (arrays already copied off the layers)."""

    predictions: tuple[PredictionInput, ...]
    gold: np.ndarray | None
    gold_name: str = "gold"
    fov: np.ndarray | None = None
    fov_name: str | None = None
    threshold: float = 0.5
    gold_class: int | None = None
    sigmoid: bool = False
    per_image: bool = False
    overlay: str | None = None  # name of the prediction whose error overlay is wanted

    @property
    def n_pixels(self) -> int:
        """Total number of prediction pixels (decides worker thread or not)."""
        return int(sum(p.data.size for p in self.predictions))


@dataclass(frozen=True)
class TableRow:
    """One table row: ``values`` by Metrics attribute (None = n/a), ``notes`` the n/a reasons."""

    prediction: str
    image: str
    values: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # tp fp tn fn (empty for mean/std rows)


@dataclass(frozen=True)
class RocCurve:
    """A pooled ROC curve of one probability prediction (``fpr``, ``tpr`` in [0, 1])."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float

    @property
    def label(self) -> str:
        """Legend text: the layer name and its AUC."""
        return f"{self.name} (AUC {self.auc:.3f})"


@dataclass(frozen=True)
class PanelResult:
    """The outcome of :func:`compute_panel`."""

    rows: tuple[TableRow, ...]
    curves: tuple[RocCurve, ...]
    protocol: str
    overlay: np.ndarray | None = None  # uint8 codes, see ERROR_CODES
    overlay_for: str | None = None
    roc_notes: tuple[str, ...] = ()  # why a probability prediction has no curve


def protocol_text(request: PanelRequest) -> str:
    """One line stating how the numbers were computed (region, pooling, threshold, gold)."""
    region = f"inside FOV “{request.fov_name}”" if request.fov is not None else "whole image (no FOV)"
    mode = (
        "per image: slice rows + mean ± std + pooled"
        if request.per_image
        else "pooled over all pixels (stacks: slice rows + pooled)"
    )
    gold = f"gold “{request.gold_name}”"
    gold += f" class {request.gold_class}" if request.gold_class is not None else " (binary)"
    sigmoid = " · sigmoid applied" if request.sigmoid else ""
    return f"{region} · {mode} · vessel where prob ≥ {request.threshold:.3g}{sigmoid} · {gold}"


def compute_panel(request: PanelRequest) -> PanelResult:
    """Compute the table rows, ROC curves and error overlay of ``request``.

    Every number comes from :func:`napari_retsam.metrics.evaluate` (2-D) or
    :func:`napari_retsam.metrics.evaluate_set` (stacks: per-slice + pooled +
    mean/std), every curve from :func:`napari_retsam.metrics.roc_curve`.
    Raises :class:`RetsamInputError` for bad input (no gold standard, shape
    mismatch, non-binary gold without a class, NaN probabilities, empty FOV, ...),
    naming the layer at fault.
    """
    if request.gold is None:
        raise RetsamInputError("choose a gold-standard layer")
    if not request.predictions:
        raise RetsamInputError("choose at least one prediction layer")
    rows: list[TableRow] = []
    curves: list[RocCurve] = []
    roc_notes: list[str] = []
    overlay: np.ndarray | None = None
    overlay_for: str | None = None
    for pred in request.predictions:
        data = _prediction_array(pred)
        fov = _fov_for(request, pred.name, data.shape)
        _check_gold_shape(request, pred.name, data.shape)
        try:
            pooled, pred_rows = _rows_for(request, pred.name, data, fov)
            rows.extend(pred_rows)
            if pooled.is_probability:
                if pooled.auc is None:
                    roc_notes.append(f"{pred.name}: {pooled.auc_note}")
                else:
                    curves.append(_curve_for(request, pred.name, data, fov, pooled.auc))
            if request.overlay == pred.name:
                overlay = error_codes(data, request.gold, fov, request.threshold,
                                      gold_class=request.gold_class, sigmoid=request.sigmoid)
                overlay_for = pred.name
        except RetsamInputError as exc:
            raise RetsamInputError(f"prediction {pred.name!r}: {exc}") from exc
    return PanelResult(
        rows=tuple(rows),
        curves=tuple(curves),
        protocol=protocol_text(request),
        overlay=overlay,
        overlay_for=overlay_for,
        roc_notes=tuple(roc_notes),
    )


def error_codes(
    pred: np.ndarray,
    gold: np.ndarray,
    fov: np.ndarray | None,
    threshold: float = 0.5,
    *,
    gold_class: int | None = None,
    sigmoid: bool = False,
) -> np.ndarray:
    """Error overlay: uint8 array, 1 = TP, 2 = FP, 3 = FN, 0 = TN or outside the FOV.

    The prediction, gold standard and FOV are read by the metrics engine's own
    validators (:mod:`napari_retsam.metrics.validation`), so the overlay's pixel
    counts are exactly the ``tp``, ``fp`` and ``fn`` of the table.
    """
    p = as_prediction(pred, threshold, sigmoid=sigmoid).binary
    check_same_shape(p.shape, np.shape(gold), "prediction", "gold standard")
    g = as_gold(gold, gold_class=gold_class)
    f = as_fov(fov, p.shape)
    codes = np.zeros(p.shape, dtype=np.uint8)
    codes[p & g] = ERROR_CODES["TP"]
    codes[p & ~g] = ERROR_CODES["FP"]
    codes[~p & g] = ERROR_CODES["FN"]
    if f is not None:
        codes[~f] = 0
    return codes


#: Why a ratio can be undefined (shown as the n/a tooltip).
_NAN_NOTES = {
    "pa": "undefined: no pixel evaluated",
    "se": "undefined: no vessel pixel in the gold standard (TP + FN = 0)",
    "sp": "undefined: no background pixel in the gold standard (TN + FP = 0)",
    "f1": "undefined",
    "iou": "undefined",
    "mcc": "undefined",
}
_MAX_CURVE_POINTS = 4000


def _prediction_array(pred: PredictionInput) -> np.ndarray:
    """A layer's data as the engine should read it (see the module docstring)."""
    data = np.asarray(pred.data)
    if data.ndim not in (2, 3):
        raise RetsamInputError(
            f"prediction {pred.name!r} has shape {data.shape}; expected an H×W image or an N×H×W stack"
        )
    if pred.is_labels:
        return data != 0
    if data.dtype == np.uint8:
        return decode_8bit_prediction(data)
    return data


def _fov_for(request: PanelRequest, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    fov = request.fov
    if fov is None:
        return None
    fov = np.asarray(fov)
    if len(shape) == 3 and fov.shape == shape[1:]:
        return np.broadcast_to(fov, shape)  # one FOV for every slice of the stack
    if fov.shape != shape:
        raise RetsamInputError(
            f"prediction {name!r} has shape {shape} but FOV {request.fov_name!r} has shape {fov.shape}"
        )
    return fov


def _check_gold_shape(request: PanelRequest, name: str, shape: tuple[int, ...]) -> None:
    gold_shape = np.shape(request.gold)
    if gold_shape != shape:
        raise RetsamInputError(
            f"prediction {name!r} has shape {shape} but gold standard {request.gold_name!r} "
            f"has shape {gold_shape}"
        )


def _rows_for(
    request: PanelRequest, name: str, data: np.ndarray, fov: np.ndarray | None
) -> tuple[Metrics, list[TableRow]]:
    """(metrics of the whole prediction, its table rows)."""
    kwargs = {"gold_class": request.gold_class, "sigmoid": request.sigmoid}
    if data.ndim == 2:
        m = evaluate(data, request.gold, fov, request.threshold, **kwargs)
        return m, [_metrics_row(name, "", m)]
    n = data.shape[0]
    report = evaluate_set(
        [data[i] for i in range(n)],
        [request.gold[i] for i in range(n)],
        None if fov is None else [fov[i] for i in range(n)],
        request.threshold,
        **kwargs,
    )
    rows = [_metrics_row(name, image_id, m) for image_id, m in zip(report.ids, report.per_image)]
    rows.append(_metrics_row(name, "pooled", report.pooled))
    if request.per_image:
        auc_note = report.per_image[0].auc_note if report.n_defined.get("auc", 0) == 0 else ""
        for label, summary in (("mean", report.mean), ("std", report.std)):
            values: dict[str, float | None] = {}
            notes: dict[str, str] = {}
            for _, attr in METRIC_COLUMNS:
                value = summary.get(attr)
                if value is None or not math.isfinite(value):
                    values[attr] = None
                    notes[attr] = auc_note if attr == "auc" and auc_note else "undefined on every slice"
                else:
                    values[attr] = float(value)
                    defined = report.n_defined.get(attr, n)
                    notes[attr] = f"over the {defined} of {n} slices where it is defined"
            rows.append(TableRow(name, label, values, notes))
    return report.pooled, rows


def _metrics_row(name: str, image: str, m: Metrics) -> TableRow:
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for _, attr in METRIC_COLUMNS:
        value = getattr(m, attr)
        if attr == "auc" and value is None:
            values[attr] = None
            notes[attr] = m.auc_note
        elif value is None or not math.isfinite(value):
            values[attr] = None
            notes[attr] = _NAN_NOTES.get(attr, "undefined")
        else:
            values[attr] = float(value)
    counts = {"tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn}
    return TableRow(name, image, values, notes, counts)


def _curve_for(
    request: PanelRequest, name: str, data: np.ndarray, fov: np.ndarray | None, auc: float
) -> RocCurve:
    """Pooled ROC curve; thinned to at most ``_MAX_CURVE_POINTS`` points for drawing."""
    # with sigmoid=True the data are logits: they rank pixels exactly as the probabilities do
    fpr, tpr, _ = roc_curve(data, request.gold, fov, gold_class=request.gold_class)
    fpr, tpr = thin_curve(fpr, tpr, _MAX_CURVE_POINTS)
    return RocCurve(name=name, fpr=fpr, tpr=tpr, auc=float(auc))


def rows_to_text(rows: Sequence[TableRow], delimiter: str = "\t") -> str:
    """The rows as delimited text with a header line (``EXPORT_HEADER``).

    The table's columns, then the exact pixel counts TP, FP, TN, FN (empty on the
    mean/std rows, which have no counts). Ratios are written with ``repr``
    precision (round-trip exact); undefined values as ``n/a``. Tab-separated for
    the clipboard, comma-separated for CSV.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    for row in rows:
        cells: list[str] = [row.prediction, row.image]
        for _, attr in METRIC_COLUMNS:
            value = row.values.get(attr)
            cells.append("n/a" if value is None else repr(float(value)))
        cells.extend(str(row.counts[k]) if k in row.counts else "" for k in ("tp", "fp", "tn", "fn"))
        writer.writerow(cells)
    return buffer.getvalue()


def write_rows_csv(rows: Sequence[TableRow], path: str | Path) -> Path:
    """Write the rows as CSV (header + one line per row) atomically to ``path``."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".csv")
    if not path.parent.is_dir():
        raise RetsamInputError(f"cannot write {path}: folder {path.parent} does not exist")
    atomic_write_bytes(path, rows_to_text(rows, delimiter=",").encode("utf-8"))
    return path
