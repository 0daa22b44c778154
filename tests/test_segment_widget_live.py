"""SAM segmentation widget in a real viewer: live mode edits, refused runs, a removed
image layer and 3-D box layers over 2-D images (issue 10, part 2, bugs 3-5)."""

from __future__ import annotations

import numpy as np
import pytest

from segment_widget_setup import expected as _expected
from segment_widget_setup import fundus, setup  # noqa: F401 (fixtures)
from segment_widget_setup import rect as _rect
from segment_widget_setup import wait_idle as _wait

pytestmark = pytest.mark.napari


def test_live_deleting_every_box_clears_the_mask(setup, fundus, qtbot):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    shapes = widget.new_box_layer()
    widget.live_check.setChecked(True)
    shapes.add_rectangles([_rect(10, 10, 80, 80)])
    qtbot.waitUntil(lambda: "img SAM mask" in viewer.layers and not widget.busy, timeout=60_000)
    assert np.any(viewer.layers["img SAM prob"].data)
    # the user selects every box and deletes it
    shapes.selected_data = set(range(len(shapes.data)))
    shapes.remove_selected()
    qtbot.waitUntil(lambda: not np.any(viewer.layers["img SAM prob"].data), timeout=10_000)
    assert not np.any(viewer.layers["img SAM mask"].data)
    assert widget.status_label.text() == "no boxes: the mask was cleared"
    assert messages["error"] == []


def test_live_box_outside_the_image_does_not_block_the_others(setup, fundus, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    shapes = widget.new_box_layer()
    widget.live_check.setChecked(True)
    shapes.add_rectangles([_rect(10, 10, 60, 60)])
    qtbot.waitUntil(lambda: "img SAM prob" in viewer.layers and not widget.busy, timeout=60_000)
    shapes.add_rectangles([_rect(300, 300, 340, 340)])  # wholly outside the 96×96 image
    qtbot.wait(300)
    _wait(qtbot, widget)
    assert messages["error"] == []
    assert sum("wholly outside" in m for m in messages["warning"]) == 1
    assert widget.status_label.text().startswith("done")
    # moving the good box still re-segments, and the same warning is not repeated on every edit
    shapes.data = [_rect(30, 25, 85, 90), _rect(300, 300, 340, 340)]
    moved = _expected(tiny_sam_checkpoint, fundus, [[25, 30, 90, 85]])
    qtbot.waitUntil(lambda: not widget.busy and np.allclose(viewer.layers["img SAM prob"].data, moved.prob,
                                                            atol=1e-6), timeout=60_000)
    assert messages["error"] == [] and sum("wholly outside" in m for m in messages["warning"]) == 1
    # the Segment button leaves it out too, with the warning
    widget.segment_button.click()
    _wait(qtbot, widget)
    assert messages["error"] == [] and sum("wholly outside" in m for m in messages["warning"]) == 2


def test_live_mode_on_a_stack_shows_the_current_boxes_only(setup, fundus, qtbot):
    widget, viewer, messages = setup
    stack = np.stack([fundus[..., 1], fundus[::-1, :, 1]])
    viewer.add_image(stack, name="stack")
    shapes = widget.new_box_layer()
    widget.live_check.setChecked(True)
    shapes.add_rectangles([np.column_stack([np.full(4, 0.0), _rect(10, 10, 70, 70)]),
                           np.column_stack([np.full(4, 1.0), _rect(10, 10, 70, 70)])])
    qtbot.waitUntil(lambda: "stack SAM prob" in viewer.layers and not widget.busy, timeout=60_000)
    prob = viewer.layers["stack SAM prob"]
    assert np.any(prob.data[0]) and np.any(prob.data[1])
    shapes.data = [np.column_stack([np.full(4, 0.0), _rect(10, 10, 70, 70)])]  # slice 1's box deleted
    qtbot.waitUntil(lambda: not widget.busy and not np.any(prob.data[1]), timeout=60_000)
    assert np.any(prob.data[0]) and messages["error"] == []


def test_refused_run_replaces_the_done_status(setup, fundus, qtbot):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    viewer.add_shapes([_rect(5, 5, 60, 60)], shape_type="rectangle", name="b")
    widget.run(image_layer="img", shapes_layer="b")
    _wait(qtbot, widget)
    assert widget.status_label.text().startswith("done")
    viewer.add_shapes([_rect(200, 200, 300, 300)], shape_type="rectangle", name="outside")
    widget.run(image_layer="img", shapes_layer="outside")
    assert "wholly outside" in messages["error"][-1]
    assert widget.status_label.text().startswith("not run: ") and "wholly outside" in widget.status_label.text()


def test_removing_the_chosen_image_does_not_switch_images(setup, fundus, qtbot):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="first", rgb=True)
    second = viewer.add_image(fundus[::-1], name="second", rgb=True)
    viewer.add_shapes([_rect(5, 5, 60, 60)], shape_type="rectangle", name="b")
    widget.image_combo.setCurrentText("second")
    second.name = "second (renamed)"  # a rename keeps the choice
    assert widget.image_combo.currentText() == "second (renamed)"
    viewer.layers.remove(second)
    assert widget.image_combo.currentIndex() == -1 and widget.image_combo.currentText() == ""
    assert any("'second (renamed)' was removed" in m for m in messages["warning"])
    viewer.add_image(fundus, name="third", rgb=True)  # a new layer does not fill the empty choice
    assert widget.image_combo.currentText() == ""
    widget.segment_button.click()
    assert "choose an image layer" in messages["error"][-1]
    assert not widget.busy and "first SAM prob" not in viewer.layers and "third SAM prob" not in viewer.layers
    assert widget.status_label.text().startswith("not run: ")
    widget.image_combo.setCurrentText("first")  # the user picks one: it runs on that image
    widget.segment_button.click()
    _wait(qtbot, widget)
    assert "first SAM prob" in viewer.layers


def test_3d_box_layer_over_a_2d_image_uses_the_shown_slice(setup, fundus, qtbot, tiny_sam_checkpoint):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    shapes = viewer.add_shapes(ndim=3, name="boxes 3d")
    shapes.add_rectangles([np.column_stack([np.full(4, 0.0), _rect(10, 10, 50, 50)]),
                           np.column_stack([np.full(4, 2.0), _rect(40, 30, 90, 90)])])
    viewer.dims.set_current_step(0, 2)
    widget.run(image_layer="img", shapes_layer="boxes 3d")
    _wait(qtbot, widget)
    expected = _expected(tiny_sam_checkpoint, fundus, [[30, 40, 90, 90]])
    np.testing.assert_allclose(viewer.layers["img SAM prob"].data, expected.prob, atol=1e-6)
    assert any("other slices" in m and "left out" in m for m in messages["warning"])
    viewer.dims.set_current_step(0, 1)  # no box on the shown slice: refused with a reason
    widget.run(image_layer="img", shapes_layer="boxes 3d")
    assert "no box on the shown slice" in messages["error"][-1]


def test_box_layer_keeps_focus_and_mask_stands_out(setup, fundus, qtbot):
    widget, viewer, messages = setup
    viewer.add_image(fundus, name="img", rgb=True)
    viewer.add_image(np.zeros(fundus.shape[:2], np.float32), name="img frangi prob")  # a map, not an input
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="GAN training preview", rgb=True)
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["img"]
    shapes = widget.new_box_layer()
    shapes.add_rectangles([_rect(10, 10, 80, 80)])
    widget.segment_button.click()
    _wait(qtbot, widget)
    assert "img SAM mask" in viewer.layers
    # the next drag draws a box: the box layer is active again, still in rectangle mode
    assert viewer.layers.selection.active is shapes and shapes.mode == "add_rectangle"
    color = viewer.layers["img SAM mask"].colormap.map(np.array([1]))[0]
    np.testing.assert_allclose(color[:3], (0.0, 0.9, 1.0), atol=0.02)  # cyan on the red fundus


def test_keyboard_shortcuts_clear_boxes_and_edit_mask(setup, fundus, qtbot):
    from napari_retsam.widgets.segment_widget import SHORTCUTS

    widget, viewer, messages = setup
    assert all(key.replace("-", "+") in widget.shortcuts_label.text() for key in SHORTCUTS)
    handler = viewer.window._qt_viewer._key_map_handler  # napari's own key dispatch (active layer first)
    viewer.add_image(fundus, name="img", rgb=True)
    shapes = widget.new_box_layer()
    shapes.add_rectangles([_rect(10, 10, 80, 80)])
    assert handler.press_key("Alt-S")  # segment
    _wait(qtbot, widget)
    assert "img SAM mask" in viewer.layers and np.any(viewer.layers["img SAM mask"].data)
    handler.release_key("Alt-S")
    assert handler.press_key("Alt-A")  # edit mask
    handler.release_key("Alt-A")
    edited = viewer.layers["img SAM mask (edited)"]
    assert np.array_equal(edited.data, viewer.layers["img SAM mask"].data)
    assert viewer.layers.selection.active is edited and edited.mode == "paint" and edited.selected_label == 1
    edited.data[0, 0] = 1  # the user's edit survives a second press
    widget.edit_mask_button.click()
    assert viewer.layers["img SAM mask (edited)"].data[0, 0] == 1
    assert handler.press_key("Alt-T")  # live on
    handler.release_key("Alt-T")
    assert widget.live_check.isChecked()
    assert handler.press_key("Alt-X")  # clear boxes: live mode clears the mask too
    handler.release_key("Alt-X")
    assert len(shapes.data) == 0
    qtbot.waitUntil(lambda: not np.any(viewer.layers["img SAM mask"].data), timeout=10_000)
    assert messages["error"] == []
    # a closed widget leaves no shortcut behind
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    viewer.window.remove_dock_widget(widget)
    widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert not handler.press_key("Alt-T")
