"""Readable outputs of the SAM segmentation widget (issue 10, part 3): a probability layer that
does not paint a box as a solid block, and masks without straight box-border lines when the box
covers the whole fundus."""

from __future__ import annotations

import numpy as np
import pytest

from segment_widget_setup import expected as _expected
from segment_widget_setup import setup  # noqa: F401 (fixture)
from segment_widget_setup import rect as _rect
from segment_widget_setup import wait_idle as _wait

pytestmark = pytest.mark.napari


@pytest.fixture(scope="module")
def sample():
    from napari_retsam.data.synthetic import synthetic_fundus

    return synthetic_fundus(seed=11, size=96)


def _border_and_interior(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Mask density on the box's two outer rows/columns on each side, and strictly inside."""
    x0, y0, x1, y1 = box
    ring = np.concatenate([mask[y0:y0 + 2, x0:x1 + 1].ravel(), mask[y1 - 1:y1 + 1, x0:x1 + 1].ravel(),
                           mask[y0:y1 + 1, x0:x0 + 2].ravel(), mask[y0:y1 + 1, x1 - 1:x1 + 1].ravel()])
    return float(ring.mean()), float(mask[y0 + 4:y1 - 3, x0 + 4:x1 - 3].mean())


def test_probability_layer_is_transparent_where_sam_is_unsure(setup, sample, qtbot):
    widget, viewer, messages = setup
    viewer.add_image(sample.image, name="fundus", rgb=True)
    shapes = widget.new_box_layer()
    shapes.add_rectangles([_rect(10, 12, 70, 80)])
    widget.run()
    _wait(qtbot, widget)
    assert messages["error"] == []
    layer = viewer.layers["fundus SAM prob"]
    assert layer.blending == "translucent" and tuple(layer.contrast_limits) == (0.0, 1.0)
    prob = np.asarray(layer.data)
    alpha = layer.colormap.map(prob.ravel().astype(np.float32))[:, 3].reshape(prob.shape)
    # nothing is drawn where the probability is low: outside the box, and inside it where SAM is unsure
    assert np.all(alpha[prob < 0.2] == 0)
    assert np.all(alpha[:, :12] == 0) and np.all(alpha[:9, :] == 0)
    # what is drawn follows the probability (opaque at 1, 70 % at the 0.5 threshold)
    np.testing.assert_allclose(layer.colormap.map(np.array([0.5, 1.0], np.float32))[:, 3], [0.7, 1.0], atol=0.02)
    low = (prob[10:71, 12:81] > 0) & (prob[10:71, 12:81] < 0.2)
    if low.any():  # the random test model leaves unsure pixels inside the box: they stay see-through
        assert np.all(alpha[10:71, 12:81][low] == 0)


def test_fov_layer_keeps_the_outputs_inside_the_fundus(setup, sample, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    image = sample.image
    viewer.add_image(image, name="fundus", rgb=True)
    box = (0, 0, 95, 95)  # a box over the whole image: it covers the whole vessel tree
    shapes = widget.new_box_layer()
    shapes.add_rectangles([_rect(box[1], box[0], box[3], box[2])])

    widget.run()  # no FOV layer yet: the model's raw result
    _wait(qtbot, widget)
    raw = _expected(tiny_sam_checkpoint, image, [list(box)]).mask
    assert np.array_equal(viewer.layers["fundus SAM mask"].data > 0, raw)
    ring, interior = _border_and_interior(raw, box)
    assert ring > interior + 0.1  # the random model's response along the frame, over the black surround

    viewer.add_labels(sample.fov.astype(np.uint8), name="fundus FOV")
    widget.run()
    _wait(qtbot, widget)
    assert messages["error"] == []
    mask = np.asarray(viewer.layers["fundus SAM mask"].data) > 0
    prob = np.asarray(viewer.layers["fundus SAM prob"].data)
    assert np.array_equal(mask, raw & sample.fov)
    assert np.all(prob[~sample.fov] == 0)
    ring, interior = _border_and_interior(mask, box)
    assert ring <= interior + 0.02, (ring, interior)  # no straight line along the box's border
    assert "kept inside the FOV 'fundus FOV'" in widget.status_label.text()
