"""The metrics panel dock widget in a real napari viewer (Xvfb display)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_retsam.metrics import evaluate, evaluate_set
from napari_retsam.widgets import metrics_panel as panel_module
from napari_retsam.widgets.metrics_panel import ERROR_COLORS, MetricsPanel

pytestmark = pytest.mark.napari


def _arrays(shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    gold = rng.random(shape) < 0.2
    prob = np.clip(0.45 * gold + 0.55 * rng.random(shape), 0.0, 1.0).astype(np.float32)
    return gold, prob


@pytest.fixture
def errors(monkeypatch):
    """Capture the panel's error notifications."""
    shown: list[str] = []
    monkeypatch.setattr(panel_module, "show_error", shown.append)
    return shown


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    """A viewer with prob (Image), mask (Labels), gold (Labels), fov (Labels) and the docked panel."""
    viewer = make_napari_viewer()
    gold, prob = _arrays()
    fov = np.zeros((64, 64), dtype=np.uint8)
    fov[4:60, 4:60] = 1
    viewer.add_image(prob, name="prob")
    viewer.add_labels((prob >= 0.6).astype(np.uint8), name="mask")
    viewer.add_labels(gold.astype(np.uint8), name="gold")
    viewer.add_labels(fov, name="fov")
    panel = MetricsPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Metrics panel")
    return viewer, panel, gold, prob, fov


def _select(panel, qtbot, **kwargs):
    with qtbot.waitSignal(panel.computed, timeout=5000):
        panel.set_selection(**kwargs)
        panel.compute(explicit=True)


def test_guessed_choices_and_table_equals_engine(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    # name hints: gold standard and FOV pre-chosen, "prob" pre-ticked
    assert panel.gold_layer() is viewer.layers["gold"]
    assert panel.fov_layer() is viewer.layers["fov"]
    assert [layer.name for layer in panel.selected_predictions()] == ["prob"]
    panel.threshold_spin.setValue(0.45)
    _select(panel, qtbot, predictions=["prob", "mask"], gold="gold", fov="fov")
    ref = evaluate(prob, gold, fov, 0.45)
    ref_mask = evaluate(prob >= 0.6, gold, fov, 0.45)
    table = panel.table
    assert table.rowCount() == 2
    assert [table.cell_text(r, "Prediction") for r in range(2)] == ["prob", "mask"]
    for header, attr in (("PA", "pa"), ("Se", "se"), ("Sp", "sp"), ("AUC", "auc"), ("F1", "f1"),
                         ("IoU", "iou"), ("MCC", "mcc")):
        assert table.rows[0].values[attr] == getattr(ref, attr)
        assert table.cell_text(0, header) == f"{getattr(ref, attr):.4f}"
    assert table.rows[1].values["mcc"] == ref_mask.mcc
    assert table.cell_text(1, "AUC") == "n/a"
    assert table.cell_tooltip(1, "AUC") == ref_mask.auc_note
    assert "binary prediction" in table.cell_tooltip(1, "AUC")
    assert "FOV “fov”" in panel.protocol_label.text() and "0.45" in panel.protocol_label.text()
    assert errors == []


def test_stack_gives_slice_rows_and_pooled_row(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    gold, prob = _arrays((3, 64, 64), seed=2)
    viewer.add_image(prob, name="stack prob")
    viewer.add_labels(gold.astype(np.uint8), name="stack gold")
    panel = MetricsPanel(viewer)
    panel.mode_combo.setCurrentIndex(1)  # per image
    _select(panel, qtbot, predictions=["stack prob"], gold="stack gold")
    images = [panel.table.cell_text(r, "Image") for r in range(panel.table.rowCount())]
    assert images == ["0", "1", "2", "pooled", "mean", "std"]
    report = evaluate_set(list(prob), list(gold))
    assert panel.table.rows[3].values["f1"] == report.pooled.f1
    assert panel.table.rows[3].values["auc"] == report.pooled.auc
    assert panel.table.rows[1].values["se"] == report.per_image[1].se
    assert panel.table.rows[4].values["iou"] == report.mean["iou"]
    assert "per image" in panel.protocol_label.text()


def test_csv_export_and_clipboard(setup, qtbot, tmp_path, errors):
    viewer, panel, gold, prob, fov = setup
    _select(panel, qtbot, predictions=["prob", "mask"], gold="gold", fov="fov")
    written = panel.export_csv(tmp_path / "table.csv")
    with open(written, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Prediction", "Image", "PA", "Se", "Sp", "AUC", "F1", "IoU", "MCC",
                       "TP", "FP", "TN", "FN"]
    assert rows[1][0] == "prob" and float(rows[1][3]) == evaluate(prob, gold, fov).se
    assert rows[2][5] == "n/a"
    panel.copy_to_clipboard()
    from qtpy.QtWidgets import QApplication

    text = QApplication.clipboard().text()
    lines = text.splitlines()
    assert lines[0].split("\t") == rows[0]
    assert [line.split("\t") for line in lines[1:]] == rows[1:]
    assert errors == []


def test_roc_one_curve_per_probability_prediction(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    viewer.add_image(np.sqrt(prob), name="prob2")
    _select(panel, qtbot, predictions=["prob", "mask", "prob2"], gold="gold", fov="fov")
    assert panel.roc_canvas.n_curves == 2  # the binary "mask" has no curve
    auc = evaluate(prob, gold, fov).auc
    assert panel.roc_canvas.legend_labels[0] == f"prob (AUC {auc:.3f})"
    assert panel.roc_canvas.legend_labels[1].startswith("prob2 (AUC")


def test_error_overlay_counts_colours_and_in_place_update(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    _select(panel, qtbot, predictions=["prob", "mask"], gold="gold", fov="fov", overlay="prob")
    layer = viewer.layers["prob errors"]
    ref = evaluate(prob, gold, fov)
    counts = np.bincount(np.asarray(layer.data).ravel(), minlength=4)
    assert counts[1] == ref.tp and counts[2] == ref.fp and counts[3] == ref.fn
    assert counts[0] == ref.tn + int((fov == 0).sum())
    for code, rgba in ERROR_COLORS.items():
        np.testing.assert_allclose(layer.colormap.map(np.array([code]))[0], rgba, atol=1e-6)
    assert layer.colormap.map(np.array([0]))[0][3] == 0  # transparent background
    # overlay layers are never offered as inputs
    assert "prob errors" not in [panel.gold_combo.itemText(i) for i in range(panel.gold_combo.count())]
    # a new threshold updates the same layer
    with qtbot.waitSignal(panel.computed, timeout=5000):
        panel.threshold_spin.setValue(0.7)
    assert viewer.layers["prob errors"] is layer
    ref7 = evaluate(prob, gold, fov, 0.7)
    assert int((np.asarray(layer.data) == 1).sum()) == ref7.tp
    assert len([x for x in viewer.layers if x.name.endswith("errors")]) == 1


def test_recompute_after_layer_data_change(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    _select(panel, qtbot, predictions=["prob"], gold="gold", fov="fov")
    new_prob = np.clip(prob[::-1] * 0.9, 0, 1)
    with qtbot.waitSignal(panel.computed, timeout=5000):
        viewer.layers["prob"].data = new_prob
    assert panel.table.rows[0].values["mcc"] == evaluate(new_prob, gold, fov).mcc
    new_gold = np.zeros((64, 64), dtype=np.uint8)
    new_gold[20:40, 10:50] = 1
    with qtbot.waitSignal(panel.computed, timeout=5000):
        viewer.layers["gold"].data = new_gold
    assert panel.table.rows[0].values["se"] == evaluate(new_prob, new_gold, fov).se


def test_layer_list_changes_refresh_choices(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    viewer.add_image(prob * 0.5, name="late prediction")
    names = [panel.pred_list.item(i).text() for i in range(panel.pred_list.count())]
    assert "late prediction" in names
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb fundus", rgb=True)
    assert "rgb fundus" not in [panel.pred_list.item(i).text() for i in range(panel.pred_list.count())]
    viewer.layers.remove("fov")
    assert panel.fov_layer() is None
    viewer.layers["gold"].name = "manual"
    assert panel.gold_combo.currentText() == "manual"
    assert errors == []


def test_worker_thread_and_newer_request_supersedes(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    panel.worker_min_pixels = 0  # force the worker path on small data
    panel.auto_check.setChecked(False)
    panel.set_selection(predictions=["prob"], gold="gold", fov="fov", overlay="prob")
    received = []
    panel.computed.connect(received.append)
    panel.threshold_spin.setValue(0.3)
    panel.compute()
    assert panel.busy
    panel.threshold_spin.setValue(0.7)
    panel.compute()
    qtbot.waitUntil(lambda: not panel.busy and bool(received), timeout=10000)
    qtbot.wait(50)
    assert len(received) == 1  # the first (superseded) result was dropped
    assert panel.table.rows[0].values["se"] == evaluate(prob, gold, fov, 0.7).se
    overlay = np.asarray(viewer.layers["prob errors"].data)
    assert int((overlay == 1).sum()) == evaluate(prob, gold, fov, 0.7).tp


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("shape", "shape"),
        ("multiclass", "not binary"),
        ("nan", "NaN"),
        ("empty_fov", "FOV mask is empty"),
        ("no_gold", "choose a gold-standard layer"),
    ],
)
def test_bad_input_notifies_once_without_exception(setup, qtbot, errors, case, message):
    viewer, panel, gold, prob, fov = setup
    _select(panel, qtbot, predictions=["prob"], gold="gold", fov="fov")
    assert errors == []
    gold_name, fov_name = "gold", "fov"
    if case == "shape":
        viewer.add_labels(np.zeros((32, 48), np.uint8), name="small gold")
        gold_name = "small gold"
    elif case == "multiclass":
        viewer.add_labels((np.arange(64 * 64).reshape(64, 64) % 3).astype(np.uint8), name="classes")
        gold_name = "classes"
    elif case == "nan":
        bad = prob.copy()
        bad[5, 5] = np.nan
        viewer.layers["prob"].data = bad
    elif case == "empty_fov":
        viewer.add_labels(np.zeros((64, 64), np.uint8), name="empty fov")
        fov_name = "empty fov"
    elif case == "no_gold":
        gold_name = None
    with qtbot.waitSignal(panel.failed, timeout=5000):
        panel.set_selection(predictions=["prob"], gold=gold_name, fov=fov_name)
        panel.compute(explicit=True)
    assert len(errors) == 1 and message in errors[0]
    assert message in panel.status_label.text()
    assert panel.table.rowCount() == 0
    if case == "multiclass":  # choosing the class makes it valid
        with qtbot.waitSignal(panel.computed, timeout=5000):
            panel.gold_class_spin.setValue(2)
        classes = viewer.layers["classes"].data
        assert panel.table.rows[0].values["f1"] == evaluate(prob, classes, fov, gold_class=2).f1


def test_closed_panel_stops_listening(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    _select(panel, qtbot, predictions=["prob"], gold="gold", fov="fov")
    from qtpy import sip
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    links = panel._links
    assert links.has("layer list")
    viewer.window.remove_dock_widget(panel)
    panel.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert sip.isdeleted(panel)
    assert not links.has("layer list") and not links.has(id(viewer.layers["prob"]))
    # neither a data change nor a layer-list change may reach the deleted widget
    viewer.layers["prob"].data = prob * 0.5
    viewer.add_image(prob, name="after close")
    viewer.layers.remove("after close")
    qtbot.wait(400)
    assert errors == []


def test_opens_from_the_plugin_menu_entry(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="gold")
    _, widget = viewer.window.add_plugin_dock_widget("napari-retsam", "Metrics panel")
    assert isinstance(widget, MetricsPanel)
    assert widget.gold_layer() is viewer.layers["gold"]


def test_repeated_automatic_error_notifies_once_then_recovers(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    _select(panel, qtbot, predictions=["prob"], gold="gold", fov="fov")
    for i in range(2):  # the same bad input twice, each time through the debounced auto-recompute
        bad = prob.copy()
        bad[i, i] = np.nan
        with qtbot.waitSignal(panel.failed, timeout=5000):
            viewer.layers["prob"].data = bad
    assert len(errors) == 1 and "NaN" in errors[0]
    with qtbot.waitSignal(panel.computed, timeout=5000):
        viewer.layers["prob"].data = prob
    assert panel.status_label.text().startswith("1 prediction")
    assert panel.table.rows[0].values["auc"] == evaluate(prob, gold, fov).auc


def test_bad_input_in_worker_thread_notifies_without_exception(setup, qtbot, errors):
    viewer, panel, gold, prob, fov = setup
    panel.worker_min_pixels = 0
    panel.auto_check.setChecked(False)
    bad = prob.copy()
    bad[7, 7] = np.inf
    viewer.layers["prob"].data = bad
    panel.set_selection(predictions=["prob"], gold="gold", fov="fov")
    with qtbot.waitSignal(panel.failed, timeout=10000):
        panel.compute()
    qtbot.waitUntil(lambda: not panel.busy, timeout=10000)
    assert len(errors) == 1 and "infinite" in errors[0]
    assert "infinite" in panel.status_label.text()


def test_layers_added_after_opening_are_chosen_by_name_and_computed(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    panel = MetricsPanel(viewer)
    gold, prob = _arrays(seed=5)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="fundus image")
    viewer.add_labels(gold.astype(np.uint8), name="DRIVE gold (annotator 1)")
    with qtbot.waitSignal(panel.computed, timeout=5000):
        viewer.add_image(prob, name="fundus image frangi prob")  # e.g. from the baseline widget
    assert panel.gold_layer() is viewer.layers["DRIVE gold (annotator 1)"]
    assert [layer.name for layer in panel.selected_predictions()] == ["fundus image frangi prob"]
    assert panel.table.rows[0].values["auc"] == evaluate(prob, gold).auc
    # a later layer with no telling name is offered but not ticked
    viewer.add_image(prob * 0.5, name="other")
    assert [layer.name for layer in panel.selected_predictions()] == ["fundus image frangi prob"]
    assert errors == []
