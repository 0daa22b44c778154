"""The vessel metrics panel: compare prediction layers with a gold standard, in the viewer.

Layers in: one or more predictions (a Labels layer = binary prediction, non-zero
is vessel; an Image layer = probabilities in [0, 1], or a binary image; an 8-bit
Image is read as probability × 255 unless it only holds 0/255), a gold standard
(Labels or binary Image; a multi-class label image needs the vessel class) and
an optional field-of-view (FOV) layer. One engine call
(:func:`napari_retsam.metrics.panel.compute_panel`, which uses
:mod:`napari_retsam.metrics` only). Out: a table (PA, Se, Sp, AUC, F1, IoU,
MCC per prediction; stacks give per-slice rows plus a pooled row), a ROC plot
(one pooled curve per probability prediction, AUC in the legend), and an error
overlay Labels layer ``"<prediction> errors"`` with TP = 1 (green), FP = 2
(magenta), FN = 3 (blue); true negatives and pixels outside the FOV are 0
(transparent).

The panel recomputes itself (debounced) when the chosen layers' data change,
and refreshes its layer choices when layers are added, removed or renamed.
Pre-selection from layer names fits shapes together: with a dataset stack and
a single image both open, the gold standard chosen is one with the shape of a
prediction-named layer, the FOV one with the gold's shape, and only
predictions of the gold's shape are ticked. The chosen gold standard, the
chosen FOV and FOV-named layers are never offered as predictions. When the
result shown no longer matches the layers (an input was removed, or a
recompute failed) the table, plot and protocol line are cleared.
Inputs of more than :attr:`MetricsPanel.worker_min_pixels` pixels are computed
in a napari worker thread; a newer request supersedes an older one (the older
result is dropped when it arrives). Bad input gives one napari notification and
a red status line, never a traceback.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from napari_retsam.errors import RetsamInputError
from napari_retsam.widgets._common import dock_as_tab, make_worker, show_error, show_info
from napari_retsam.metrics.panel import (
    DEFAULT_WORKER_MIN_PIXELS,
    ERROR_CODES,
    PanelRequest,
    PanelResult,
    PredictionInput,
    compute_panel,
    protocol_text,
    rows_to_text,
    write_rows_csv,
)
from napari_retsam.widgets._metrics_table import MetricsTable
from napari_retsam.widgets._roc_canvas import RocCanvas

if TYPE_CHECKING:
    import napari

__all__ = ["ERROR_COLORS", "MetricsPanel", "error_colormap"]

_LOG = logging.getLogger(__name__)

#: Layer metadata key marking the panel's own error overlays (never offered as inputs).
OVERLAY_METADATA_KEY = "retsam_error_overlay"

#: RGBA colours of the error overlay labels.
ERROR_COLORS: dict[int, tuple[float, float, float, float]] = {
    ERROR_CODES["TP"]: (0.0, 0.85, 0.0, 1.0),  # green
    ERROR_CODES["FP"]: (1.0, 0.0, 1.0, 1.0),  # magenta
    ERROR_CODES["FN"]: (0.15, 0.45, 1.0, 1.0),  # blue
}
_NONE = "(none)"
_DEBOUNCE_MS = 250
_GOLD_HINTS = ("gold", "manual", "truth", "ground", "gt", "1stho", "annot", "vessel mask", "label")
_FOV_HINTS = ("fov", "field of view")
_PRED_HINTS = ("prob", "pred", "seg", "frangi", "sam", "baseline", "output")


def _shape(layer: Layer) -> tuple[int, ...]:
    return tuple(np.shape(layer.data))


def error_colormap() -> DirectLabelColormap:
    """TP green, FP magenta, FN blue; 0 (TN / outside FOV) and anything else transparent."""
    transparent = (0.0, 0.0, 0.0, 0.0)
    colors: dict[int | None, tuple[float, float, float, float]] = {None: transparent, 0: transparent}
    colors.update(ERROR_COLORS)
    return DirectLabelColormap(color_dict=colors)


def _legend_html() -> str:
    def swatch(code: int) -> str:
        r, g, b, _ = ERROR_COLORS[code]
        return f"<span style='color: rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})'>■</span>"

    return (
        f"{swatch(1)} TP = 1 &nbsp; {swatch(2)} FP = 2 &nbsp; {swatch(3)} FN = 3"
        " &nbsp; (TN and outside FOV = 0, transparent)"
    )


class _EventLinks:
    """The panel's connections to napari events, grouped by key, undone in one call."""

    def __init__(self) -> None:
        self._links: dict[Any, list[tuple[Any, Any]]] = {}

    def has(self, key: Any) -> bool:
        return key in self._links

    def connect(self, key: Any, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._links.setdefault(key, []).append((emitter, callback))

    def disconnect(self, key: Any) -> None:
        for emitter, callback in self._links.pop(key, []):
            emitter.disconnect(callback)

    def disconnect_all(self, *_: Any) -> None:
        for key in list(self._links):
            self.disconnect(key)


class MetricsPanel(QWidget):
    """Dock widget: vessel segmentation metrics of prediction layers against a gold standard."""

    #: Emitted on the main thread after a result has been applied (argument: PanelResult).
    computed = Signal(object)
    #: Emitted when a computation ended with an error (argument: the one-line message).
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # all the plugin's widgets share one tabbed dock (see _common.dock_as_tab)
        self.viewer = napari_viewer
        #: Inputs with more pixels than this are computed in a worker thread.
        self.worker_min_pixels: int = DEFAULT_WORKER_MIN_PIXELS
        self.result: PanelResult | None = None
        self._request_id = 0
        self._worker: Any = None
        self._busy_ids: set[int] = set()
        self._links = _EventLinks()
        self._seen: weakref.WeakSet[Layer] = weakref.WeakSet()  # layers already offered
        self._last_auto_error: str | None = None
        self._updating_choices = False
        self._result_inputs: set[int] = set()  # ids of the layers the shown result came from
        self._request_inputs: dict[int, set[int]] = {}  # the same, per pending request

        self._build_ui()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(_DEBOUNCE_MS)
        self._debounce.timeout.connect(partial(self.compute, explicit=False))

        layers = self.viewer.layers
        for emitter in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            self._links.connect("layer list", emitter, self._on_layers_changed)
        for layer in layers:
            self._connect_layer(layer)
        # a closed panel must not keep reacting to the viewer's events
        self.destroyed.connect(self._links.disconnect_all)
        self.refresh_choices(guess=True)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.pred_list = QListWidget()
        self.pred_list.setToolTip(
            "Prediction layers to evaluate (tick one or more). Labels: binary, non-zero = vessel. "
            "Image: probabilities in [0, 1] (8-bit: probability × 255) or a binary image."
        )
        self.pred_list.setMaximumHeight(90)
        self.gold_combo = QComboBox()
        self.gold_combo.setToolTip("Gold-standard vessel annotation (Labels or binary Image).")
        self.fov_combo = QComboBox()
        self.fov_combo.setToolTip("Field of view: metrics count pixels inside it only (none = whole image).")
        self.gold_class_spin = QSpinBox()
        self.gold_class_spin.setRange(0, 65535)
        self.gold_class_spin.setSpecialValueText("binary")
        self.gold_class_spin.setToolTip(
            "'binary': the gold standard holds 0/1 or 0/255. For a multi-class label image, "
            "the label value of the vessel class."
        )
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("A probability pixel is vessel where prob ≥ threshold.")
        self.sigmoid_check = QCheckBox("inputs are logits (apply sigmoid)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["pooled", "per image (mean ± std)"])
        self.mode_combo.setToolTip(
            "pooled: one confusion matrix over all pixels of a stack; "
            "per image: adds the mean and std of the per-slice values."
        )
        self.overlay_combo = QComboBox()
        self.overlay_combo.setToolTip("Prediction whose TP/FP/FN overlay layer is shown and kept up to date.")
        self.auto_check = QCheckBox("recompute when layers change")
        self.auto_check.setChecked(True)
        self.compute_button = QPushButton("Compute")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("Predictions", self.pred_list)
        form.addRow("Gold standard", self.gold_combo)
        form.addRow("Gold class", self.gold_class_spin)
        form.addRow("FOV", self.fov_combo)
        form.addRow("Threshold", self.threshold_spin)
        form.addRow("", self.sigmoid_check)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Error overlay", self.overlay_combo)
        legend = QLabel(_legend_html())
        legend.setTextFormat(Qt.RichText)
        legend.setWordWrap(True)
        form.addRow("", legend)
        row = QHBoxLayout()
        row.addWidget(self.auto_check)
        row.addStretch(1)
        row.addWidget(self.compute_button)
        form.addRow(row)

        self.protocol_label = QLabel("")
        self.protocol_label.setWordWrap(True)
        self.protocol_label.setStyleSheet("font-size: 11px;")
        self.table = MetricsTable()
        self.copy_button = QPushButton("Copy table")
        self.copy_button.setToolTip(
            "Copy the table to the clipboard as tab-separated text with a header line"
            " (plus the exact TP, FP, TN, FN counts)."
        )
        self.csv_button = QPushButton("Export CSV…")
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.csv_button)
        buttons.addStretch(1)

        table_box = QWidget()
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.protocol_label)
        table_layout.addWidget(self.table)
        table_layout.addLayout(buttons)

        self.roc_canvas = RocCanvas()
        self.roc_canvas.setMinimumHeight(180)
        self.roc_canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(table_box)
        splitter.addWidget(self.roc_canvas)
        splitter.setChildrenCollapsible(False)

        self.status_label = QLabel("Choose prediction(s) and a gold standard.")
        self.status_label.setWordWrap(True)

        self.setMinimumWidth(470)  # room for the seven metric columns without scrolling
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status_label)

        self.pred_list.itemChanged.connect(self._on_selection_changed)
        for combo in (self.gold_combo, self.fov_combo):
            combo.currentIndexChanged.connect(self._on_role_changed)
        for combo in (self.overlay_combo, self.mode_combo):
            combo.currentIndexChanged.connect(self._on_selection_changed)
        self.gold_class_spin.valueChanged.connect(self._on_selection_changed)
        self.threshold_spin.valueChanged.connect(self._on_selection_changed)
        self.sigmoid_check.toggled.connect(self._on_selection_changed)
        self.compute_button.clicked.connect(partial(self.compute, explicit=True))
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        self.csv_button.clicked.connect(self._export_csv_dialog)

    # ------------------------------------------------------ layer choices
    @staticmethod
    def _is_candidate(layer: Layer) -> bool:
        if layer.metadata.get(OVERLAY_METADATA_KEY):
            return False
        if isinstance(layer, Labels):
            return not layer.multiscale
        if isinstance(layer, Image):
            return not layer.rgb and not layer.multiscale
        return False

    def _candidates(self) -> list[Layer]:
        return [layer for layer in self.viewer.layers if self._is_candidate(layer)]

    def selected_predictions(self) -> list[Layer]:
        """The ticked prediction layers, in list order."""
        out = []
        for i in range(self.pred_list.count()):
            item = self.pred_list.item(i)
            if item.checkState() == Qt.Checked:
                out.append(item.data(Qt.UserRole))
        return out

    def gold_layer(self) -> Layer | None:
        """The chosen gold-standard layer (None if none)."""
        return self.gold_combo.currentData()

    def fov_layer(self) -> Layer | None:
        """The chosen FOV layer (None = whole image)."""
        return self.fov_combo.currentData()

    def set_selection(
        self,
        predictions: Sequence[Layer | str] = (),
        gold: Layer | str | None = None,
        fov: Layer | str | None = None,
        overlay: Layer | str | None = None,
    ) -> None:
        """Choose layers programmatically (layers or layer names); recomputes once."""
        def name(x: Layer | str | None) -> str | None:
            return None if x is None else (x if isinstance(x, str) else x.name)

        wanted = {name(p) for p in predictions}
        self._updating_choices = True
        try:
            for i in range(self.pred_list.count()):
                item = self.pred_list.item(i)
                item.setCheckState(Qt.Checked if item.text() in wanted else Qt.Unchecked)
            self._set_combo(self.gold_combo, name(gold))
            self._set_combo(self.fov_combo, name(fov))
            self._refresh_overlay_choices()
            self._set_combo(self.overlay_combo, name(overlay))
        finally:
            self._updating_choices = False
        self._on_selection_changed()

    @staticmethod
    def _set_combo(combo: QComboBox, text: str | None) -> None:
        index = combo.findText(text if text is not None else _NONE)
        if index < 0:
            raise RetsamInputError(f"no layer named {text!r} to choose")
        combo.setCurrentIndex(index)

    def refresh_choices(self, guess: bool = False) -> None:
        """Rebuild the layer choices from the viewer, keeping what is still there.

        Layers the panel has not seen before are pre-selected from their names,
        with shapes that fit together: if no gold standard is chosen yet, a new
        "gold"/"manual"/... layer becomes it (one with the shape of a
        "prob"/"pred"/"frangi"/... layer first), and a new "fov" layer of the
        gold's shape (or its slices' shape) the FOV; new prediction-named layers
        of the gold's shape are ticked. The chosen gold, the chosen FOV and
        FOV-named layers are not listed as predictions. ``guess=True`` (first
        time) also picks the first prediction for the error overlay.
        """
        candidates = self._candidates()
        before = self._selection_key()
        checked = {id(layer) for layer in self.selected_predictions()}
        gold, fov = self.gold_layer(), self.fov_layer()
        new = [layer for layer in candidates if layer not in self._seen]
        pred_like = [layer for layer in candidates if self._is_prediction_named(layer)]
        gold = gold or self._guess_gold(new, pred_like)
        fov = fov or self._guess_fov(new, gold)
        self._seen.update(candidates)
        self._updating_choices = True
        try:
            self.pred_list.clear()
            for layer in candidates:
                if layer is gold or layer is fov or self._has_hint(layer, _FOV_HINTS):
                    continue
                item = QListWidgetItem(layer.name)
                item.setData(Qt.UserRole, layer)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                ticked = id(layer) in checked
                if layer in new:
                    ticked = layer in pred_like and (gold is None or _shape(layer) == _shape(gold))
                item.setCheckState(Qt.Checked if ticked else Qt.Unchecked)
                self.pred_list.addItem(item)
            for combo, keep in ((self.gold_combo, gold), (self.fov_combo, fov)):
                combo.clear()
                combo.addItem(_NONE, None)
                for layer in candidates:
                    combo.addItem(layer.name, layer)
                index = next((i for i in range(combo.count()) if combo.itemData(i) is keep), 0)
                combo.setCurrentIndex(index)
            self._refresh_overlay_choices(first=guess)
        finally:
            self._updating_choices = False
        if self._selection_key() != before:
            self._on_selection_changed()

    def _refresh_overlay_choices(self, first: bool = False) -> None:
        current = self.overlay_combo.currentText()
        names = [layer.name for layer in self.selected_predictions()]
        blocked = self.overlay_combo.blockSignals(True)
        try:
            self.overlay_combo.clear()
            self.overlay_combo.addItem(_NONE)
            self.overlay_combo.addItems(names)
            if current in names:
                self.overlay_combo.setCurrentText(current)
            elif first and names:
                self.overlay_combo.setCurrentText(names[0])
        finally:
            self.overlay_combo.blockSignals(blocked)

    @staticmethod
    def _has_hint(layer: Layer, hints: Sequence[str]) -> bool:
        return any(h in layer.name.lower() for h in hints)

    @classmethod
    def _is_prediction_named(cls, layer: Layer) -> bool:
        return (cls._has_hint(layer, _PRED_HINTS) and not cls._has_hint(layer, _GOLD_HINTS)
                and not cls._has_hint(layer, _FOV_HINTS))

    @classmethod
    def _guess_gold(cls, new: list[Layer], pred_like: list[Layer]) -> Layer | None:
        """A new gold-named layer, preferring one with the shape of a prediction-named layer."""
        golds = [layer for layer in new if cls._has_hint(layer, _GOLD_HINTS) and layer not in pred_like]
        shapes = {_shape(layer) for layer in pred_like}
        return next((g for g in golds if _shape(g) in shapes), golds[0] if golds else None)

    @classmethod
    def _guess_fov(cls, new: list[Layer], gold: Layer | None) -> Layer | None:
        """A new FOV-named layer that fits the gold standard (any when there is none)."""
        fovs = [layer for layer in new if cls._has_hint(layer, _FOV_HINTS) and layer is not gold]
        if gold is None:
            return fovs[0] if fovs else None
        shape = _shape(gold)
        fitting = [f for f in fovs if _shape(f) in (shape, shape[1:])]
        if not fitting:
            return None
        # the one sharing the longest name prefix with the gold ("synthetic FOV" for "synthetic vessels (gold)")
        return max(fitting, key=lambda f: len(os.path.commonprefix([f.name.lower(), gold.name.lower()])))

    def _selection_key(self) -> tuple:
        overlay = self.overlay_combo.currentText() if self.overlay_combo.count() else _NONE
        return (
            tuple(id(layer) for layer in self.selected_predictions()),
            id(self.gold_layer()),
            id(self.fov_layer()),
            overlay,
        )

    # ------------------------------------------------------------ events
    def _connect_layer(self, layer: Layer) -> None:
        key = id(layer)
        if self._links.has(key):
            return
        self._links.connect(key, layer.events.data, self._on_layer_data)
        self._links.connect(key, layer.events.name, self._on_layer_renamed)
        if isinstance(layer, Labels):  # brush strokes
            self._links.connect(key, layer.events.paint, self._on_layer_data)

    def _disconnect_layer(self, layer: Layer) -> None:
        self._links.disconnect(id(layer))

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            self._connect_layer(event.value)
        if event is not None and getattr(event, "type", "") == "removed":
            self._disconnect_layer(event.value)
            if id(event.value) in self._result_inputs:
                self._clear_result()
                self._set_status(f"layer {event.value.name!r} was removed: choose the layers again "
                                 "(the table was cleared)", error=False)
        self.refresh_choices()

    def _on_layer_renamed(self, event: Any = None) -> None:
        # names shown in the choices (and, after a recompute, in the table) follow the layer
        self.refresh_choices()
        if getattr(event, "source", None) in self._input_layers():
            self._schedule()

    def _on_layer_data(self, event: Any = None) -> None:
        source = getattr(event, "source", None)
        if source is None or source in self._input_layers():
            self._schedule()

    def _input_layers(self) -> list[Layer]:
        layers = list(self.selected_predictions())
        layers += [x for x in (self.gold_layer(), self.fov_layer()) if x is not None]
        return layers

    def _on_role_changed(self, *_: Any) -> None:
        """The gold standard or FOV choice changed: it leaves (or returns to) the prediction list."""
        if self._updating_choices:
            return
        self.refresh_choices()
        self._on_selection_changed()

    def _on_selection_changed(self, *_: Any) -> None:
        if self._updating_choices:
            return
        self._refresh_overlay_choices()
        self._schedule()

    def _schedule(self) -> None:
        """Recompute after a short quiet period (restarts on every new change)."""
        if self.auto_check.isChecked():
            self._debounce.start()

    # ---------------------------------------------------------- computing
    def build_request(self) -> PanelRequest:
        """Copy the chosen layers' data into a :class:`PanelRequest` (main thread)."""
        gold = self.gold_layer()
        if gold is None:
            raise RetsamInputError("choose a gold-standard layer")
        preds = self.selected_predictions()
        if not preds:
            raise RetsamInputError("choose at least one prediction layer")
        fov = self.fov_layer()
        inputs = []
        for layer in preds:
            if layer is gold:
                raise RetsamInputError(f"layer {layer.name!r} is both a prediction and the gold standard")
            data = np.array(layer.data)  # a copy: the worker thread never sees later edits
            inputs.append(PredictionInput(name=layer.name, data=data, is_labels=isinstance(layer, Labels)))
        overlay = self.overlay_combo.currentText()
        return PanelRequest(
            predictions=tuple(inputs),
            gold=np.array(gold.data),
            gold_name=gold.name,
            fov=None if fov is None else np.array(fov.data),
            fov_name=None if fov is None else fov.name,
            threshold=float(self.threshold_spin.value()),
            gold_class=self.gold_class_spin.value() or None,
            sigmoid=self.sigmoid_check.isChecked(),
            per_image=self.mode_combo.currentIndex() == 1,
            overlay=None if overlay in ("", _NONE) else overlay,
        )

    def compute(self, explicit: bool = True) -> None:
        """Compute now (synchronously for small inputs, else in a worker thread).

        ``explicit`` (the Compute button) always notifies errors; automatic
        recomputes notify an error only when it differs from the previous one,
        and a missing choice (no gold, no prediction) only updates the status line.
        """
        self._debounce.stop()
        self._request_id += 1
        request_id = self._request_id
        try:
            request = self.build_request()
        except RetsamInputError as exc:
            missing = str(exc).startswith("choose ")
            self._on_error(request_id, explicit, exc, quiet=not explicit and missing)
            return
        self._request_inputs = {request_id: {id(layer) for layer in self._input_layers()}}
        self.protocol_label.setText("Protocol: " + protocol_text(request))
        if request.n_pixels < self.worker_min_pixels:
            try:
                result = compute_panel(request)
            except RetsamInputError as exc:
                self._on_error(request_id, explicit, exc)
                return
            self._on_result(request_id, result)
            return
        if self._worker is not None:
            self._worker.quit()  # its result, if it still comes, is dropped (older id)
        # errors reach _on_error only (napari would otherwise re-raise them in the main
        # thread and relay a traceback notification for a plain user mistake)
        worker = make_worker(compute_panel, request)
        worker.returned.connect(partial(self._on_result, request_id))
        worker.errored.connect(partial(self._on_error, request_id, explicit))
        worker.finished.connect(partial(self._on_worker_finished, request_id))
        self._worker = worker
        self._busy_ids.add(request_id)
        self._set_status(f"Computing {request.n_pixels:,} pixels in the background…", error=False)
        worker.start()

    @property
    def busy(self) -> bool:
        """True while a worker computation is running."""
        return bool(self._busy_ids)

    def _on_worker_finished(self, request_id: int) -> None:
        self._busy_ids.discard(request_id)

    def _on_result(self, request_id: int, result: PanelResult) -> None:
        if request_id != self._request_id:
            return  # superseded by a newer request
        self.result = result
        self._result_inputs = self._request_inputs.pop(request_id, set())
        self.protocol_label.setText("Protocol: " + result.protocol)
        self._last_auto_error = None
        self.table.set_rows(result.rows)
        note = "; ".join(result.roc_notes)
        self.roc_canvas.plot(result.curves, message=note)
        if result.overlay is not None and result.overlay_for is not None:
            self._apply_overlay(result.overlay_for, result.overlay)
        n_pred = len({row.prediction for row in result.rows})
        self._set_status(f"{n_pred} prediction(s), {len(result.rows)} row(s).", error=False)
        self.computed.emit(result)

    def _on_error(self, request_id: int, notify: bool, exc: BaseException, quiet: bool = False) -> None:
        if request_id != self._request_id:
            return
        if isinstance(exc, RetsamInputError):
            message = str(exc)
        else:  # a bug, not a user mistake: no traceback in the viewer, but say what it was and log it
            message = f"{type(exc).__name__}: {exc}"
            _LOG.error("metrics panel computation failed", exc_info=exc)
        self._clear_result()
        self._set_status(message, error=True)
        if not quiet and (notify or message != self._last_auto_error):
            show_error(message)
        self._last_auto_error = message
        self.failed.emit(message)

    def _clear_result(self) -> None:
        """No result shown: empty table and plot, no protocol line."""
        self.result = None
        self._result_inputs = set()
        self.table.set_rows([])
        self.roc_canvas.plot([], message="no result")
        self.protocol_label.setText("")

    def _set_status(self, text: str, error: bool) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #e04040;" if error else "")

    # ------------------------------------------------------------ outputs
    def overlay_layer(self, prediction: str) -> Labels | None:
        """The error overlay layer of ``prediction`` (None if there is none yet)."""
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and layer.metadata.get(OVERLAY_METADATA_KEY) == prediction:
                return layer
        return None

    def _apply_overlay(self, prediction: str, codes: np.ndarray) -> None:
        layer = self.overlay_layer(prediction)
        name = f"{prediction} errors"
        if layer is not None and layer.data.shape == codes.shape:
            layer.data = codes  # updated in place: same layer, new values
            if layer.name != name:
                layer.name = name
            return
        if layer is not None:
            self.viewer.layers.remove(layer)
        self.viewer.add_labels(
            codes,
            name=name,
            colormap=error_colormap(),
            opacity=0.8,
            metadata={OVERLAY_METADATA_KEY: prediction},
        )

    def table_text(self, delimiter: str = "\t") -> str:
        """The current table as delimited text with a header line."""
        return rows_to_text(self.table.rows, delimiter=delimiter)

    def copy_to_clipboard(self) -> None:
        """Copy the table (tab-separated, header line first) to the clipboard."""
        if not self.table.rows:
            show_info("The metrics table is empty: nothing copied.")
            return
        QApplication.clipboard().setText(self.table_text("\t"))
        self._set_status("Table copied to the clipboard (tab-separated).", error=False)

    def export_csv(self, path: str | Path) -> Path | None:
        """Write the table to ``path`` as CSV; returns the path written (None on error)."""
        if not self.table.rows:
            show_error("The metrics table is empty: compute first.")
            return None
        try:
            written = write_rows_csv(self.table.rows, path)
        except (RetsamInputError, OSError) as exc:
            message = str(exc) if isinstance(exc, RetsamInputError) else f"cannot write {path}: {exc}"
            show_error(message)
            self._set_status(message, error=True)
            return None
        self._set_status(f"Table written to {written}.", error=False)
        return written

    def _export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics as CSV", "metrics.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)
