"""The layer/worker helpers every dock widget shares (widgets/_common.py)."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
from napari.layers import Image, Labels
from qtpy.QtWidgets import QComboBox

from napari_retsam.errors import RetsamInputError
from napari_retsam.widgets import _common
from napari_retsam.widgets._common import (
    ProgressRelay,
    add_or_update_layer,
    make_worker,
    set_combo_items,
    watch_layer_list,
)


def test_set_combo_items_keeps_the_choice_without_signals(qtbot) -> None:
    combo = QComboBox()
    qtbot.addWidget(combo)
    seen: list[str] = []
    combo.currentTextChanged.connect(seen.append)
    set_combo_items(combo, ["a", "b", "c"])
    combo.setCurrentText("b")
    seen.clear()
    set_combo_items(combo, ["x", "b"])
    assert combo.currentText() == "b" and [combo.itemText(i) for i in range(combo.count())] == ["x", "b"]
    set_combo_items(combo, ["p", "q"])  # choice gone: first item
    assert combo.currentText() == "p"
    set_combo_items(combo, ["r", "s", "t"], select_last_if_lost=True)
    assert combo.currentText() == "t"
    set_combo_items(combo, [])
    assert combo.count() == 0
    assert seen == []  # refilling is never reported as a user choice


def test_add_or_update_layer_updates_in_place_or_replaces(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    first = add_or_update_layer(viewer, Image, "out", np.zeros((4, 5), np.float32), colormap="magma")
    assert isinstance(first, Image) and first.colormap.name == "magma"
    first.opacity = 0.3  # a user setting that an in-place update keeps
    same = add_or_update_layer(viewer, Image, "out", np.ones((4, 5), np.float32), colormap="gray")
    assert same is first and same.opacity == 0.3 and float(same.data.sum()) == 20.0
    bigger = add_or_update_layer(viewer, Image, "out", np.ones((6, 5), np.float32))
    assert bigger is not first and bigger.data.shape == (6, 5) and len(viewer.layers) == 1
    labels = add_or_update_layer(viewer, Labels, "out", np.ones((6, 5), np.uint8), opacity=0.6)
    assert isinstance(labels, Labels) and labels.opacity == pytest.approx(0.6)
    assert [ly.name for ly in viewer.layers] == ["out"]


class _Watcher:
    def __init__(self) -> None:
        self.calls = 0

    def refresh(self, *_: Any) -> None:
        self.calls += 1


def test_watch_layer_list_sees_insert_remove_reorder_and_rename(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    old = viewer.add_image(np.zeros((3, 3)), name="old")
    watcher = _Watcher()
    watch_layer_list(viewer, watcher.refresh)
    new = viewer.add_image(np.zeros((3, 3)), name="new")
    assert watcher.calls >= 1
    for action in (lambda: setattr(old, "name", "old2"), lambda: setattr(new, "name", "new2"),
                   lambda: viewer.layers.move(0, 2), lambda: viewer.layers.remove(new)):
        before = watcher.calls
        action()
        assert watcher.calls > before
    # the watcher is held weakly: once gone, events still flow without errors
    del watcher
    gc.collect()
    viewer.add_image(np.zeros((3, 3)), name="later").name = "later2"


def test_make_worker_reports_each_error_once(qtbot, monkeypatch) -> None:
    relayed: list[Any] = []
    from napari.utils.notifications import notification_manager

    monkeypatch.setattr(notification_manager, "receive_error", lambda *a, **k: relayed.append(a))

    def fail() -> None:
        raise RetsamInputError("bad input")

    worker = make_worker(fail)
    errors: list[BaseException] = []
    worker.errored.connect(errors.append)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert [str(e) for e in errors] == ["bad input"]
    assert relayed == []  # napari's own traceback relay is disconnected


def test_progress_relay_delivers_on_the_main_thread(qtbot) -> None:
    relay = ProgressRelay()
    got: list[tuple[int, int, str]] = []
    relay.progressed.connect(lambda *args: got.append(args))

    def job() -> None:
        relay.progressed.emit(1, 2, "half")

    worker = make_worker(job)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    qtbot.waitUntil(lambda: got == [(1, 2, "half")], timeout=5_000)
    assert "ProgressRelay" in _common.__all__
