"""Shared pieces of the segmentation-widget tests: a widget docked in a real viewer with
the random tiny SAM (``segment_widget_setup``), a small fundus, and helpers."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fundus():
    from napari_retsam.data.synthetic import synthetic_fundus

    return synthetic_fundus(seed=11, size=96).image


@pytest.fixture
def setup(make_napari_viewer, tiny_sam_checkpoint, monkeypatch):
    """(widget, viewer, messages): the SAM segmentation widget with the tiny checkpoint, whole-image mode."""
    from napari_retsam.widgets import _common, segment_widget
    from napari_retsam.widgets.segment_widget import SegmentWidget

    messages: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(_common, "show_error", messages["error"].append)
    monkeypatch.setattr(segment_widget, "show_warning", messages["warning"].append)
    monkeypatch.setattr(segment_widget, "show_info", messages["info"].append)
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    if widget.model_combo.findText("tiny") < 0:  # the random test model is not a user choice
        widget.model_combo.addItem("tiny")
    widget.model_combo.setCurrentText("tiny")
    widget.checkpoint_edit.setText(str(tiny_sam_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    widget.tile_spin.setValue(0)
    return widget, viewer, messages


def wait_idle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)


def rect(y0, x0, y1, x1):
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def expected(checkpoint, image, boxes, tile=None, overlap=0):
    from napari_retsam.sam import Segmenter, load_sam

    return Segmenter(load_sam(checkpoint, device="cpu")).segment(image, boxes, tile=tile, overlap=overlap)
