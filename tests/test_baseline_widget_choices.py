"""Frangi widget choices in a real viewer: an FOV layer is used, the plugin's maps are not
offered as images (issue 10, bug 9)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.napari


def test_fov_layer_is_used_and_maps_are_not_inputs(make_napari_viewer, qtbot) -> None:
    from napari_retsam.baseline import frangi_segment
    from napari_retsam.widgets.baseline_widget import NO_FOV, BaselineWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-retsam", "synthetic_fundus")  # image, gold, FOV
    image = viewer.layers["synthetic fundus"].data
    fov = viewer.layers["synthetic FOV"].data > 0
    viewer.add_image(np.random.default_rng(0).random((32, 32)), name="small")  # another image, FOV does not fit
    viewer.add_image(np.zeros(image.shape[:2], np.float32), name="synthetic fundus SAM prob")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="GAN training preview", rgb=True)
    widget = BaselineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    images = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert images == ["synthetic fundus", "small"]
    assert widget.image_combo.currentText() == "synthetic fundus"
    assert widget.fov_combo.currentText() == "synthetic FOV"
    widget.image_combo.setCurrentText("small")  # the FOV does not fit: computed instead
    assert widget.fov_combo.currentText() == NO_FOV
    widget.image_combo.setCurrentText("synthetic fundus")
    assert widget.fov_combo.currentText() == "synthetic FOV"
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    prob, mask = frangi_segment(image, fov)
    np.testing.assert_array_equal(viewer.layers["synthetic fundus frangi prob"].data, prob)
    np.testing.assert_array_equal(viewer.layers["synthetic fundus frangi mask"].data, mask.astype(np.uint8))
    assert "synthetic fundus frangi prob" not in [widget.image_combo.itemText(i)
                                                  for i in range(widget.image_combo.count())]
    # the user's own choice of "computed" is kept when layers change
    widget.fov_combo.setCurrentText(NO_FOV)
    widget.fov_combo.activated.emit(0)
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="other")
    assert widget.fov_combo.currentText() == NO_FOV
