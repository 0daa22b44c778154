"""Metrics panel pre-selection and stale output in a real viewer (issue 10, bug 6): a dataset
stack and a single image open together, gold/FOV layers not offered as predictions, the
protocol line of a removed gold standard."""

from __future__ import annotations

import numpy as np
import pytest

from napari_retsam.widgets import metrics_panel as panel_module

pytestmark = pytest.mark.napari


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(panel_module, "show_error", shown.append)
    return shown


@pytest.fixture
def viewer_with_stack_and_sample(make_napari_viewer, tmp_path):
    from napari_retsam.data import write_synthetic_folder

    viewer = make_napari_viewer()
    viewer.open(str(write_synthetic_folder(tmp_path / "ds", 3, size=64)), plugin="napari-retsam")
    viewer.open_sample("napari-retsam", "synthetic_fundus")
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((512, 512)).astype(np.float32), name="synthetic fundus frangi prob")
    return viewer


def _listed(panel):
    return [panel.pred_list.item(i).text() for i in range(panel.pred_list.count())]


def test_stack_and_single_image_preselect_fitting_layers(viewer_with_stack_and_sample, qtbot, errors):
    viewer = viewer_with_stack_and_sample
    assert "folder all gold (annotator 1)" in viewer.layers and "folder all FOV" in viewer.layers
    _, panel = viewer.window.add_plugin_dock_widget("napari-retsam", "Metrics panel")
    assert panel.gold_layer() is viewer.layers["synthetic vessels (gold)"]
    assert panel.fov_layer() is viewer.layers["synthetic FOV"]
    assert [layer.name for layer in panel.selected_predictions()] == ["synthetic fundus frangi prob"]
    listed = _listed(panel)
    assert "synthetic vessels (gold)" not in listed and "synthetic FOV" not in listed
    assert "folder all FOV" not in listed
    qtbot.waitUntil(lambda: panel.result is not None, timeout=10_000)
    assert errors == [] and not panel.status_label.styleSheet()
    assert "synthetic vessels (gold)" in panel.protocol_label.text()
    # choosing the stack's gold: it leaves the prediction list, the old gold comes back to it
    panel.gold_combo.setCurrentText("folder all gold (annotator 1)")
    listed = _listed(panel)
    assert "folder all gold (annotator 1)" not in listed and "synthetic vessels (gold)" in listed


def test_removed_gold_leaves_no_stale_protocol(viewer_with_stack_and_sample, qtbot, errors):
    viewer = viewer_with_stack_and_sample
    _, panel = viewer.window.add_plugin_dock_widget("napari-retsam", "Metrics panel")
    qtbot.waitUntil(lambda: panel.result is not None, timeout=10_000)
    viewer.layers.remove("synthetic vessels (gold)")  # automatic recompute: nothing to compare with
    qtbot.waitUntil(lambda: panel.result is None, timeout=10_000)
    qtbot.wait(400)
    assert "synthetic vessels (gold)" not in panel.protocol_label.text()
    assert panel.table.rowCount() == 0 and errors == []
    # without automatic recomputes the shown result is dropped too
    viewer.add_labels(np.zeros((512, 512), np.uint8), name="my gold")
    panel.auto_check.setChecked(False)
    panel.set_selection(predictions=["synthetic fundus frangi prob"], gold="my gold", fov="synthetic FOV")
    with qtbot.waitSignal(panel.computed, timeout=10_000):
        panel.compute(explicit=True)
    assert "my gold" in panel.protocol_label.text()
    viewer.layers.remove("my gold")
    assert panel.protocol_label.text() == "" and panel.table.rowCount() == 0
    assert "was removed" in panel.status_label.text()
