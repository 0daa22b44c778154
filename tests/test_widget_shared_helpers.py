"""The widgets share one worker / progress / browse-row helper set (issue 10 part 3, issue 14):
``make_worker``, ``ProgressRelay`` (+ ``throttled``), ``set_progress`` and ``browse_row`` of
``napari_retsam.widgets._common``."""

from __future__ import annotations

import inspect

import pytest

from segment_widget_setup import setup  # noqa: F401 (fixture)
from segment_widget_setup import wait_idle as _wait

MODULES = ("segment_widget", "finetune_widget", "metrics_panel", "baseline_widget", "gan_widget")


@pytest.mark.parametrize("name", MODULES)
def test_widget_uses_the_shared_helpers_only(name):
    import importlib

    source = inspect.getsource(importlib.import_module(f"napari_retsam.widgets.{name}"))
    assert "create_worker" not in source, "workers come from _common.make_worker"
    assert "(QObject)" not in source, "progress goes through _common.ProgressRelay"
    assert "getOpenFileName" not in source and "getExistingDirectory" not in source, "paths use _common.browse_row"
    assert "dock_as_tab(self)" in source


def test_throttled_progress_batches_records_and_flushes(qtbot):
    from napari_retsam.widgets._common import ProgressRelay

    relay = ProgressRelay()
    progressed, records = [], []
    relay.progressed.connect(lambda *args: progressed.append(args))
    relay.records.connect(records.append)
    updates = relay.throttled(3600.0, urgent=lambda rec: rec.get("kind") == "note")
    updates.progress(1, 10, "first")  # the first update is shown
    updates.progress(2, 10, "too soon")  # within the interval: dropped
    updates.record({"kind": "step", "n": 1})  # waits for the next emission
    assert progressed == [(1, 10, "first")] and records == []
    updates.record({"kind": "note"})  # urgent: now, with what was pending
    assert records == [[{"kind": "step", "n": 1}, {"kind": "note"}]]
    updates.record({"kind": "step", "n": 2})
    updates.progress(10, 10, "done")  # complete: always shown, with the pending records
    assert progressed[-1] == (10, 10, "done") and records[-1] == [{"kind": "step", "n": 2}]
    updates.record({"kind": "step", "n": 3})
    updates.flush()
    assert records[-1] == [{"kind": "step", "n": 3}]
    updates.flush()  # nothing pending: nothing sent
    assert len(records) == 3


def test_run_error_handler_shows_a_partial_result_or_reports_the_error(qtbot, monkeypatch):
    from qtpy.QtWidgets import QLabel

    from napari_retsam.errors import RetsamInputError
    from napari_retsam.progress import Cancelled
    from napari_retsam.widgets import _common

    shown, kept = [], []
    monkeypatch.setattr(_common, "show_error", shown.append)
    label = QLabel()
    handler = _common.run_error_handler(kept.append, label)
    handler(Cancelled("stopped by the user", partial="the run so far"))  # a stop: the partial result, no error
    assert kept == ["the run so far"] and shown == [] and label.text() == ""
    handler(RetsamInputError("bad folder"))
    assert label.text() == "stopped: bad folder" and shown == ["bad folder"]
    handler(Cancelled("cancelled by the user"))  # nothing kept: reported like an error
    assert kept == ["the run so far"] and len(shown) == 2


def test_set_progress():
    from qtpy.QtWidgets import QProgressBar

    from napari_retsam.widgets._common import set_progress

    bar = QProgressBar()
    set_progress(bar, 3, 8)
    assert (bar.minimum(), bar.maximum(), bar.value()) == (0, 8, 3)
    set_progress(bar, 12, 8)
    assert bar.value() == 8
    set_progress(bar, 0, 0)  # an unknown total still gives a valid range
    assert bar.maximum() == 1 and bar.value() == 0


@pytest.mark.napari
def test_browse_rows_of_the_segment_and_finetune_widgets(setup, make_napari_viewer, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    from napari_retsam.widgets.finetune_widget import FinetuneWidget

    widget, viewer, _ = setup
    chosen = str(tmp_path / "sam.pth")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (chosen, "")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path)))
    for edit in (widget.checkpoint_edit, widget.finetuned_edit):
        edit.parentWidget().browse_button.click()
        assert edit.text() == chosen
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    finetune.out_edit.parentWidget().browse_button.click()
    assert finetune.out_edit.text() == str(tmp_path)
    finetune.checkpoint_edit.parentWidget().browse_button.click()
    assert finetune.checkpoint_edit.text() == chosen


@pytest.mark.napari
def test_browse_rows_of_the_gan_widget(make_napari_viewer, monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    from napari_retsam.widgets.gan_widget import GanWidget

    chosen, filters = str(tmp_path / "last.pt"), []
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (filters.append(a[-1]), (chosen, ""))[1]))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path)))
    widget = GanWidget(make_napari_viewer())
    for edit in (widget.root_edit, widget.out_edit, widget.export_edit, widget.report_root_edit):
        edit.parentWidget().browse_button.click()
        assert edit.text() == str(tmp_path)
    for edit in (widget.resume_edit, widget.checkpoint_edit):
        edit.parentWidget().browse_button.click()
        assert edit.text() == chosen
    assert filters == ["Checkpoints (*.pt)"] * 2


@pytest.mark.napari
def test_segment_worker_error_is_reported_once(setup, qtbot, tmp_path):
    import numpy as np
    from napari.utils.notifications import notification_manager

    widget, viewer, messages = setup
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
        viewer.add_shapes([np.array([[2, 2], [2, 20], [20, 20], [20, 2]], float)], shape_type="rectangle", name="b")
        widget.checkpoint_edit.setText(str(tmp_path / "missing.pth"))
        widget.run(image_layer="img", shapes_layer="b")
        _wait(qtbot, widget)
        qtbot.wait(50)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert len(messages["error"]) == 1 and "does not exist" in messages["error"][0]
    assert not [n for n in seen if "Traceback" in str(getattr(n, "message", "")) or "does not exist" in str(n)]
    assert widget.status_label.text().startswith("failed:")
