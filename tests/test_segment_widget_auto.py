"""SAM (auto) in the segmentation widget reuses a cached embedding (issue 10, part 2, bug 8)."""

from __future__ import annotations

import numpy as np
import pytest

from segment_widget_setup import fundus, setup  # noqa: F401 (fixtures)
from segment_widget_setup import rect as _rect
from segment_widget_setup import wait_idle as _wait

pytestmark = pytest.mark.napari


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts forward passes of every ViT image encoder (the tiny model's; the inference copy
    and segment-anything's own predictor path both end up here)."""
    from segment_anything.modeling import ImageEncoderViT

    calls = {"n": 0}
    original = ImageEncoderViT.forward

    def counting(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(ImageEncoderViT, "forward", counting)
    return calls


def test_auto_mode_uses_the_cached_embedding(setup, fundus, qtbot, encoder_calls):
    widget, viewer, messages = setup  # whole-image mode (tile 0): one window = the auto embedding
    viewer.add_image(fundus, name="fundus", rgb=True)
    shapes = widget.new_box_layer()
    shapes.add_rectangles([_rect(10, 12, 70, 80)])
    widget.segment_button.click()
    _wait(qtbot, widget)
    assert encoder_calls["n"] == 1 and "1 new embedding" in widget.status_label.text()

    widget.auto_button.click()  # the image's embedding is cached: no encoder pass
    _wait(qtbot, widget)
    assert messages["error"] == []
    assert encoder_calls["n"] == 1, "SAM (auto) recomputed an embedding that was cached"
    assert "0 new embedding(s) (cached, decoder only)" in widget.status_label.text()
    first = np.array(viewer.layers["fundus SAM auto prob"].data)

    widget.auto_button.click()  # again: still no encoder pass, same result
    _wait(qtbot, widget)
    assert encoder_calls["n"] == 1
    np.testing.assert_array_equal(viewer.layers["fundus SAM auto prob"].data, first)


def test_auto_mode_first_embeds_once_and_shares_with_boxes(setup, fundus, qtbot, encoder_calls):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="fundus", rgb=True)
    widget.run_auto()
    _wait(qtbot, widget)
    assert encoder_calls["n"] == 1 and "1 new embedding" in widget.status_label.text()
    shapes = widget.new_box_layer()
    shapes.add_rectangles([_rect(10, 12, 70, 80)])
    widget.run()  # whole-image box prompt on the image SAM (auto) embedded: decoder only
    _wait(qtbot, widget)
    assert encoder_calls["n"] == 1 and messages["error"] == []
    assert "(cached, decoder only)" in widget.status_label.text()
