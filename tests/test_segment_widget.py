"""The SAM segmentation dock widget with the tiny checkpoint (real viewer, worker threads)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from segment_widget_setup import expected as _expected
from segment_widget_setup import fundus, setup  # noqa: F401 (fixtures)
from segment_widget_setup import rect as _rect
from segment_widget_setup import wait_idle as _wait

pytestmark = pytest.mark.napari


def test_segment_boxes_then_rerun_in_place(setup, fundus, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="fundus", rgb=True)
    shapes = widget.new_box_layer()
    assert shapes.mode == "add_rectangle" and widget.shapes_combo.currentText() == shapes.name
    shapes.add_rectangles([_rect(10, 12, 70, 80)])
    widget.segment_button.click()
    _wait(qtbot, widget)
    assert messages["error"] == []
    prob_layer, mask_layer = viewer.layers["fundus SAM prob"], viewer.layers["fundus SAM mask"]
    expected = _expected(tiny_sam_checkpoint, fundus, [[12, 10, 80, 70]])
    np.testing.assert_allclose(prob_layer.data, expected.prob, atol=1e-6)
    assert np.array_equal(mask_layer.data, expected.mask.astype(np.uint8))
    assert "1 new embedding" in widget.status_label.text()
    # outputs are not offered as inputs; a re-run updates the same layers
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["fundus"]
    n_layers = len(viewer.layers)
    shapes.add_rectangles([_rect(50, 5, 90, 40)])
    widget.run()
    _wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["fundus SAM prob"] is prob_layer and viewer.layers["fundus SAM mask"] is mask_layer
    both = _expected(tiny_sam_checkpoint, fundus, [[12, 10, 80, 70], [5, 50, 40, 90]])
    np.testing.assert_allclose(prob_layer.data, both.prob, atol=1e-6)
    assert "cached, decoder only" in widget.status_label.text()


def test_world_coordinates_map_boxes_between_layers(setup, fundus, qtbot, tiny_sam_checkpoint):
    from napari_retsam.widgets._segment_boxes import boxes_from_shapes

    widget, viewer, messages = setup
    image = viewer.add_image(fundus, name="scaled", rgb=True, scale=(2.0, 2.0), translate=(10.0, 20.0))
    # world rectangle y 30..110, x 40..140 -> image pixels y (30-10)/2=10..50, x (40-20)/2=10..60
    shapes = viewer.add_shapes([_rect(30, 40, 110, 140)], shape_type="rectangle", name="world boxes")
    plan = boxes_from_shapes(shapes, image)
    assert plan.boxes == {None: [[10.0, 10.0, 60.0, 50.0]]} and plan.notes == []
    # the same box from a Shapes layer with its own scale/translate
    other = viewer.add_shapes([_rect(5, 10, 25, 35)], shape_type="rectangle", scale=(4.0, 4.0),
                              translate=(10.0, 0.0), name="scaled boxes")
    assert boxes_from_shapes(other, image).boxes == {None: [[10.0, 10.0, 60.0, 50.0]]}
    widget.run(image_layer="scaled", shapes_layer="scaled boxes")
    _wait(qtbot, widget)
    prob = viewer.layers["scaled SAM prob"]
    assert tuple(prob.scale) == (2.0, 2.0) and tuple(prob.translate) == (10.0, 20.0)
    np.testing.assert_allclose(prob.data, _expected(tiny_sam_checkpoint, fundus, [[10, 10, 60, 50]]).prob, atol=1e-6)


def test_live_mode_segments_drawn_and_moved_rectangles(setup, fundus, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="live", rgb=True)
    shapes = widget.new_box_layer()
    widget.live_check.setChecked(True)
    shapes.add_rectangles([_rect(10, 10, 60, 60)])
    qtbot.waitUntil(lambda: "live SAM prob" in viewer.layers and not widget.busy, timeout=60_000)
    first = _expected(tiny_sam_checkpoint, fundus, [[10, 10, 60, 60]])
    np.testing.assert_allclose(viewer.layers["live SAM prob"].data, first.prob, atol=1e-6)
    # move the rectangle: only the decoder runs (embedding cached)
    calls = widget.engine.cache.misses
    shapes.data = [_rect(30, 25, 85, 90)]
    moved = _expected(tiny_sam_checkpoint, fundus, [[25, 30, 90, 85]])
    qtbot.waitUntil(
        lambda: not widget.busy and np.allclose(viewer.layers["live SAM prob"].data, moved.prob, atol=1e-6),
        timeout=60_000,
    )
    assert widget.engine.cache.misses == calls
    widget.live_check.setChecked(False)
    shapes.add_rectangles([_rect(0, 0, 20, 20)])
    qtbot.wait(400)
    assert not widget.busy and np.allclose(viewer.layers["live SAM prob"].data, moved.prob, atol=1e-6)


def test_stack_with_boxes_on_some_slices(setup, fundus, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    stack = np.stack([fundus[..., 1], fundus[::-1, :, 1], fundus[:, ::-1, 1]]).astype(np.uint16) * 100
    viewer.add_image(stack, name="stack")
    shapes = widget.new_box_layer()
    assert shapes.ndim == 3
    box = _rect(10, 10, 70, 80)
    shapes.add_rectangles([np.column_stack([np.full(4, 1.0), box])])
    widget.run()
    _wait(qtbot, widget)
    prob = viewer.layers["stack SAM prob"].data
    assert prob.shape == (3, 96, 96)
    assert np.all(prob[0] == 0) and np.all(prob[2] == 0)
    np.testing.assert_allclose(prob[1], _expected(tiny_sam_checkpoint, stack[1], [[10, 10, 80, 70]]).prob, atol=1e-6)
    assert "slice(s) 1" in widget.status_label.text()


def test_rgba_and_auto_mode(setup, fundus, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    rgba = np.dstack([fundus, np.full(fundus.shape[:2], 128, np.uint8)])
    viewer.add_image(rgba, name="rgba", rgb=True)
    viewer.add_shapes([_rect(5, 5, 90, 90)], shape_type="rectangle", name="b")
    widget.run(image_layer="rgba", shapes_layer="b")
    _wait(qtbot, widget)
    np.testing.assert_allclose(viewer.layers["rgba SAM prob"].data,
                               _expected(tiny_sam_checkpoint, fundus, [[5, 5, 90, 90]]).prob, atol=1e-6)
    widget.run_auto(image_layer="rgba")
    _wait(qtbot, widget)
    auto = viewer.layers["rgba SAM auto prob"].data
    assert auto.shape == (96, 96) and auto.dtype == np.float32 and 0 <= auto.min() <= auto.max() <= 1
    assert "rgba SAM auto mask" in viewer.layers and messages["error"] == []


def test_bad_inputs_are_notifications(setup, fundus, qtbot):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    viewer.add_labels(np.zeros((96, 96), np.uint8), name="labels")
    empty = viewer.add_shapes(name="empty", ndim=2)
    widget.run(image_layer="labels", shapes_layer="empty")
    assert "Labels layer" in messages["error"][-1]
    widget.run(image_layer="img", shapes_layer="empty")
    assert "is empty" in messages["error"][-1]
    viewer.add_shapes([_rect(200, 200, 300, 300)], shape_type="rectangle", name="outside")
    widget.run(image_layer="img", shapes_layer="outside")
    assert "wholly outside" in messages["error"][-1]
    viewer.add_shapes([np.array([[10.0, 10.0], [60.0, 10.0]])], shape_type="line", name="flat")
    widget.run(image_layer="img", shapes_layer="flat")
    assert "zero area" in messages["error"][-1]
    widget.tile_spin.setValue(64)
    widget.overlap_spin.setValue(64)
    viewer.add_shapes([_rect(5, 5, 50, 50)], shape_type="rectangle", name="ok")
    widget.run(image_layer="img", shapes_layer="ok")
    assert "overlap" in messages["error"][-1]
    assert not widget.busy and "img SAM prob" not in viewer.layers
    # non-rectangles and partly outside boxes: warnings, then it runs
    widget.overlap_spin.setValue(16)
    viewer.add_shapes([np.array([[10.0, 10.0], [50.0, 70.0]])], shape_type="ellipse", name="ell")
    viewer.layers["ell"].add_rectangles([_rect(-20, 30, 40, 200)])
    n_errors = len(messages["error"])
    widget.run(image_layer="img", shapes_layer="ell")
    _wait(qtbot, widget)
    assert any("bounding boxes" in m for m in messages["warning"])
    assert any("clipped" in m for m in messages["warning"])
    assert len(messages["error"]) == n_errors and "img SAM prob" in viewer.layers


def test_missing_checkpoint_says_where_to_put_it(setup, fundus, qtbot, offline_sam):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    viewer.add_shapes([_rect(5, 5, 50, 50)], shape_type="rectangle", name="b")
    widget.model_combo.setCurrentText("vit_b")
    widget.checkpoint_edit.setText("")
    start = time.monotonic()
    widget.run(image_layer="img", shapes_layer="b")
    _wait(qtbot, widget)
    assert time.monotonic() - start < 30
    assert messages["error"] and "sam_vit_b_01ec64.pth" in messages["error"][-1]
    assert str(offline_sam) in messages["error"][-1] and "img SAM prob" not in viewer.layers
    widget.checkpoint_edit.setText(str(offline_sam / "nope.pth"))
    widget.run(image_layer="img", shapes_layer="b")
    _wait(qtbot, widget)
    assert "does not exist" in messages["error"][-1]


def test_cancel_stops_the_worker(setup, fundus, qtbot):
    from napari_retsam.progress import check_stop

    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    viewer.add_shapes([_rect(5, 5, 50, 50)], shape_type="rectangle", name="b")

    def slow_run(*args, progress=None, should_stop=None, **kwargs):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            check_stop(should_stop)
            time.sleep(0.01)
        return {}

    widget.engine.run = slow_run
    widget.run(image_layer="img", shapes_layer="b")
    assert widget.busy and widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    _wait(qtbot, widget)
    assert widget.status_label.text() == "cancelled" and messages["error"] == []
    assert "img SAM prob" not in viewer.layers and widget.segment_button.isEnabled()


def test_models_fine_tuned_in_the_session_are_offered(setup, fundus, qtbot, tiny_sam_checkpoint,
                                                      tiny_finetuned_checkpoint):
    from napari_retsam.widgets._models import RegisteredModel, clear_models, register_model

    widget, viewer, messages = setup
    clear_models()
    try:
        widget.checkpoint_edit.setText("")
        register_model(RegisteredModel("drive run 1", tiny_finetuned_checkpoint, "tiny", tiny_sam_checkpoint))
        assert widget.trained_combo.count() == 2 and widget.trained_combo.itemText(1) == "drive run 1"
        widget._use_trained_model(1)
        assert widget.checkpoint_edit.text() == str(tiny_sam_checkpoint)
        assert widget.finetuned_edit.text() == str(tiny_finetuned_checkpoint)
        viewer.add_image(fundus, name="img", rgb=True)
        viewer.add_shapes([_rect(5, 5, 80, 80)], shape_type="rectangle", name="b")
        widget.run(image_layer="img", shapes_layer="b")
        _wait(qtbot, widget)
        from napari_retsam.sam import Segmenter, load_sam

        tuned = load_sam(tiny_sam_checkpoint, finetuned=tiny_finetuned_checkpoint, device="cpu")
        expected = Segmenter(tuned).segment(fundus, [[5, 5, 80, 80]], tile=None).prob
        np.testing.assert_allclose(viewer.layers["img SAM prob"].data, expected, atol=1e-6)
    finally:
        clear_models()
