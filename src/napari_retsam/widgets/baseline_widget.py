"""Dock widget: the Frangi vesselness baseline on an image layer.

Layers in (an Image layer, RGB or grayscale, 2-D or an ``N×H×W`` stack, and an
optional FOV Labels layer), one core call
(:func:`napari_retsam.baseline.frangi_segment_stack`, in a napari worker
thread), layers out: an Image layer ``"<name> frangi prob"`` (magma, contrast
0-1) and a Labels layer ``"<name> frangi mask"`` (1 = vessel), both updated in
place when they already exist. Without a FOV layer the FOV of every slice is
computed from the image (dark camera border), as ``retsam baseline`` does.

Choices: the image list leaves out the plugin's own maps (SAM/Frangi
probabilities, the GAN training preview). A Labels layer named like a field of
view ("FOV", "field of view") whose shape fits the chosen image is chosen as
the FOV automatically, until the user picks an FOV choice themselves.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_retsam.baseline import DEFAULT_THRESHOLD, frangi_segment_stack
from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import Cancelled
from napari_retsam.widgets._common import (
    FOV_HINTS,
    ProgressRelay,
    add_or_update_layer,
    dock_as_tab,
    fov_fits,
    is_derived_image,
    make_worker,
    notify_user_errors,
    set_combo_items,
    set_progress,
    show_info,
    watch_layer_list,
    worker_error_handler,
)

__all__ = ["BaselineWidget", "NO_FOV"]

#: Text of the FOV choice meaning "compute the FOV from the image".
NO_FOV = "(computed from the image)"
#: Colour of the vessel label (cyan stands out on the orange-red fundus).
MASK_COLOR = (0.0, 0.9, 1.0, 1.0)


def mask_colormap() -> DirectLabelColormap:
    """Label 1 (vessel) cyan; 0 and anything else transparent."""
    transparent = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict={None: transparent, 0: transparent, 1: MASK_COLOR})


class BaselineWidget(QWidget):
    """Frangi vesselness baseline: probability map and vessel mask of an image layer."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # all the plugin's widgets share one tabbed dock (see _common.dock_as_tab)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._stop_requested = False
        self._fov_user_pick: str | None = None  # FOV choice the user made (kept while it exists)
        self._relay = ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

        self.image_combo = QComboBox()
        self.fov_combo = QComboBox()
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setValue(DEFAULT_THRESHOLD)
        self.threshold_spin.setToolTip("vessel where the probability >= threshold "
                                       f"(default {DEFAULT_THRESHOLD}: tuned on DRIVE training)")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("FOV", self.fov_combo)
        form.addRow("threshold", self.threshold_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.fov_combo.activated.connect(self._on_fov_picked)
        self.image_combo.currentTextChanged.connect(self._guess_fov)
        watch_layer_list(self.viewer, self.refresh_choices)
        self.refresh_choices()

    # -- layer choices -------------------------------------------------------
    @staticmethod
    def _is_output(layer: Layer) -> bool:
        return layer.name.endswith(" frangi prob") or layer.name.endswith(" frangi mask")

    def refresh_choices(self, *_: Any) -> None:
        """Re-list the Image layers (not the plugin's maps) and the Labels layers; guess the FOV."""
        images = [ly.name for ly in self.viewer.layers
                  if isinstance(ly, Image) and not self._is_output(ly) and not is_derived_image(ly)]
        fovs = [NO_FOV] + [ly.name for ly in self.viewer.layers
                           if isinstance(ly, Labels) and not self._is_output(ly)]
        set_combo_items(self.image_combo, images)
        set_combo_items(self.fov_combo, fovs)
        self._guess_fov()

    def _on_fov_picked(self, *_: Any) -> None:
        self._fov_user_pick = self.fov_combo.currentText()

    _fov_fits = staticmethod(fov_fits)  # the shared rule (widgets._common), also the segment widget's

    def _guess_fov(self, *_: Any) -> None:
        """Choose an FOV-named Labels layer that fits the image, unless the user chose the FOV."""
        names = [self.fov_combo.itemText(i) for i in range(self.fov_combo.count())]
        if self._fov_user_pick is not None and self._fov_user_pick in names:
            return
        self._fov_user_pick = None
        image = self._layer(self.image_combo.currentText())
        current = self._layer(self.fov_combo.currentText())
        if image is None or (isinstance(current, Labels) and self._fov_fits(current, image)):
            return
        choice = next((name for name in names[1:] if any(h in name.lower() for h in FOV_HINTS)
                       and self._fov_fits(self.viewer.layers[name], image)), NO_FOV)
        self.fov_combo.blockSignals(True)
        self.fov_combo.setCurrentText(choice)
        self.fov_combo.blockSignals(False)

    def _layer(self, name: str) -> Layer | None:
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # -- running ------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a worker is running."""
        return self._worker is not None

    def _inputs(self, image_layer: Layer | str | None, fov_layer: Layer | str | None
                ) -> tuple[Image, np.ndarray, np.ndarray | None]:
        """Validate the chosen layers; returns (image layer, data, FOV data or None)."""
        if isinstance(image_layer, str):
            image_layer = self._layer(image_layer)
        if image_layer is None:
            raise RetsamInputError("choose an image layer to run the Frangi baseline on")
        if not isinstance(image_layer, Image):
            raise RetsamInputError(
                f"layer '{image_layer.name}' is a {type(image_layer).__name__} layer; "
                "the Frangi baseline needs an Image layer"
            )
        if getattr(image_layer, "multiscale", False):
            raise RetsamInputError(
                f"layer '{image_layer.name}' is multiscale; open a single-resolution copy for the baseline"
            )
        data = np.asarray(image_layer.data)
        spatial = data.ndim - (1 if image_layer.rgb else 0)
        if spatial not in (2, 3):
            raise RetsamInputError(
                f"layer '{image_layer.name}' has shape {data.shape}; expected a 2-D image or an N×H×W stack"
            )
        fov = None
        if isinstance(fov_layer, str):
            fov_layer = None if fov_layer == NO_FOV else self._layer(fov_layer)
        if fov_layer is not None:
            if not isinstance(fov_layer, Labels):
                raise RetsamInputError(f"FOV layer '{fov_layer.name}' must be a Labels layer")
            fov = np.asarray(fov_layer.data) > 0
            spatial_shape = data.shape[: spatial]
            if fov.shape not in (spatial_shape[-2:], spatial_shape):
                raise RetsamInputError(
                    f"FOV layer '{fov_layer.name}' has shape {fov.shape}; the image is {spatial_shape}"
                )
        return image_layer, data, fov

    @notify_user_errors
    def run(self, image_layer: Layer | str | None = None, fov_layer: Layer | str | None = None,
            threshold: float | None = None) -> None:
        """Start the baseline on the chosen (or given) layers in a worker thread."""
        if self.busy:
            raise RetsamInputError("the Frangi baseline is already running; wait or press Cancel")
        if image_layer is None:
            image_layer = self.image_combo.currentText() or None
        if fov_layer is None:
            fov_layer = self.fov_combo.currentText() or None
        layer, data, fov = self._inputs(image_layer, fov_layer)
        t = float(self.threshold_spin.value() if threshold is None else threshold)
        self._stop_requested = False
        # One notification per error: ours (one line for user errors, napari's
        # traceback view for bugs) instead of napari's default relay as well.
        worker = make_worker(
            frangi_segment_stack, data, fov, t, rgb=bool(layer.rgb),
            progress=self._relay.progressed.emit, should_stop=lambda: self._stop_requested,
        )
        worker.returned.connect(lambda result: self._on_result(layer, t, result))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        n = data.shape[0] if data.ndim - (1 if layer.rgb else 0) == 3 else 1
        self.progress_bar.setRange(0, n)
        self.progress_bar.setValue(0)
        self._set_status(f"running on '{layer.name}' ...")
        worker.start()

    def cancel(self) -> None:
        """Ask the running worker to stop before its next slice."""
        self._stop_requested = True
        if self._worker is not None:
            self._worker.quit()
            self._set_status("cancelling ...")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):  # the package's one way to stop (napari_retsam.progress)
            self._set_status("cancelled")
            return
        self._set_status(f"failed: {exc}")
        if isinstance(exc, RetsamInputError):
            worker_error_handler(exc)
        else:
            from napari.utils.notifications import notification_manager

            notification_manager.receive_error(type(exc), exc, exc.__traceback__)

    def _on_progress(self, done: int, total: int, message: str) -> None:
        set_progress(self.progress_bar, done, total)
        self._set_status(message)

    def _on_finished(self) -> None:
        self._worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _on_result(self, layer: Image, threshold: float, result: tuple[np.ndarray, np.ndarray]) -> None:
        prob, mask = result
        common = {"scale": layer.scale[: prob.ndim], "translate": layer.translate[: prob.ndim]}
        prob_name, mask_name = f"{layer.name} frangi prob", f"{layer.name} frangi mask"
        labels = mask.astype(np.uint8)
        prob_layer = add_or_update_layer(self.viewer, Image, prob_name, prob, colormap="magma",
                                         contrast_limits=(0.0, 1.0), **common)
        prob_layer.contrast_limits = (0.0, 1.0)  # also when updated in place
        add_or_update_layer(self.viewer, Labels, mask_name, labels, opacity=0.6, colormap=mask_colormap(), **common)
        fraction = float(mask.mean()) if mask.size else 0.0
        message = (f"done: {int(mask.sum())} vessel pixels ({100 * fraction:.1f}% of the image) "
                   f"at threshold {threshold:g}")
        self._set_status(message)
        show_info(f"Frangi baseline on '{layer.name}': {message}")
