"""Tests of the Frangi baseline dock widget (napari_retsam.widgets.baseline_widget)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_retsam.baseline import frangi_segment
from napari_retsam.data.synthetic import synthetic_fundus

pytestmark = pytest.mark.napari


@pytest.fixture(scope="module")
def fundi():
    return synthetic_fundus(seed=21, size=96), synthetic_fundus(seed=22, size=96)


@pytest.fixture
def widget_and_viewer(make_napari_viewer):
    from napari_retsam.widgets.baseline_widget import BaselineWidget

    viewer = make_napari_viewer()
    widget = BaselineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget, viewer


def _wait_done(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)


def test_rgb_image_with_fov_layer_adds_then_updates_layers(widget_and_viewer, fundi, qtbot) -> None:
    widget, viewer = widget_and_viewer
    f = fundi[0]
    viewer.add_image(f.image, name="fundus", rgb=True)
    viewer.add_labels(f.fov.astype(np.uint8), name="fov")
    assert widget.image_combo.currentText() == "fundus"
    widget.fov_combo.setCurrentText("fov")
    widget.threshold_spin.setValue(0.4)
    widget.run_button.click()
    _wait_done(qtbot, widget)
    prob_layer = viewer.layers["fundus frangi prob"]
    mask_layer = viewer.layers["fundus frangi mask"]
    expected_prob, expected_mask = frangi_segment(f.image, f.fov, threshold=0.4)
    assert np.array_equal(prob_layer.data, expected_prob)
    assert np.array_equal(mask_layer.data, expected_mask.astype(np.uint8))
    assert tuple(prob_layer.contrast_limits) == (0.0, 1.0)
    assert prob_layer.colormap.name == "magma"
    # Outputs are not offered as inputs.
    names = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert names == ["fundus"]
    # A second run with another threshold updates the same layers in place.
    n_layers = len(viewer.layers)
    widget.threshold_spin.setValue(0.8)
    widget.run_button.click()
    _wait_done(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["fundus frangi mask"] is mask_layer
    assert viewer.layers["fundus frangi prob"] is prob_layer
    assert np.array_equal(mask_layer.data, (expected_prob >= 0.8).astype(np.uint8))
    assert "done" in widget.status_label.text()


def test_grayscale_stack_slice_by_slice_with_computed_fov(widget_and_viewer, fundi, qtbot) -> None:
    from napari_retsam.data import compute_fov

    widget, viewer = widget_and_viewer
    stack = np.stack([f.image[..., 1] for f in fundi])
    viewer.add_image(stack, name="stack")
    widget.run(image_layer="stack")
    _wait_done(qtbot, widget)
    prob = viewer.layers["stack frangi prob"].data
    mask = viewer.layers["stack frangi mask"].data
    assert prob.shape == (2, 96, 96) and mask.shape == (2, 96, 96)
    for i in range(2):
        p_i, m_i = frangi_segment(stack[i], compute_fov(stack[i]))
        assert np.array_equal(prob[i], p_i)
        assert np.array_equal(mask[i], m_i.astype(np.uint8))
    assert widget.progress_bar.value() == 2 and widget.progress_bar.maximum() == 2


def test_bad_inputs_notify_instead_of_raising(widget_and_viewer, fundi, monkeypatch) -> None:
    from napari_retsam.widgets import _common

    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    widget, viewer = widget_and_viewer
    widget.run()  # no layer at all
    assert messages and "choose an image layer" in messages[-1]
    labels = viewer.add_labels(fundi[0].vessels.astype(np.uint8), name="gold")
    widget.run(image_layer=labels)
    assert "Labels layer" in messages[-1] and "gold" in messages[-1]
    viewer.add_image(fundi[0].image, name="img", rgb=True)
    viewer.add_labels(np.ones((50, 50), np.uint8), name="small fov")
    widget.run(image_layer="img", fov_layer="small fov")
    assert "FOV" in messages[-1] and "(50, 50)" in messages[-1]
    widget.run(image_layer="img", fov_layer=viewer.layers["img"])
    assert "must be a Labels layer" in messages[-1]
    assert not widget.busy
    assert "img frangi prob" not in viewer.layers


def test_worker_error_is_notified(widget_and_viewer, fundi, qtbot, monkeypatch) -> None:
    from napari_retsam.widgets import _common

    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    widget, viewer = widget_and_viewer
    bad = np.full((2, 64, 64), 0.5, np.float32)
    bad[1, 3, 3] = np.nan  # only the second slice is bad: the error comes from the worker
    viewer.add_image(bad, name="nan stack")
    widget.run(image_layer="nan stack")
    _wait_done(qtbot, widget)
    qtbot.waitUntil(lambda: bool(messages), timeout=10_000)
    assert "NaN" in messages[-1]
    assert "nan stack frangi prob" not in viewer.layers
    assert widget.run_button.isEnabled()


def test_cancel_stops_a_stack(widget_and_viewer, qtbot) -> None:
    widget, viewer = widget_and_viewer
    viewer.add_image(np.random.default_rng(0).random((40, 64, 64)).astype(np.float32), name="noise")
    widget.run(image_layer="noise")
    widget.cancel()
    _wait_done(qtbot, widget)
    assert "noise frangi prob" not in viewer.layers
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
