"""Docking all five widgets (issue 10, part 3): one tabbed dock, a window that stays within the
screen, and a metrics table that shows all its rows and columns without scrolling."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.napari

PLUGIN = "napari-retsam"
#: The Plugins menu's order (napari.yaml).
MENU_ORDER = ["SAM segmentation", "Fine-tune SAM", "GAN synthesis", "Metrics panel", "Frangi baseline"]
MAX_WINDOW_HEIGHT = 1200


def _open(viewer, qtbot, names):
    """Open widgets as the Plugins menu does (napari docks each one as '<name> (napari-retsam)')."""
    docks = {}
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        docks[name] = (dock, widget)
        qtbot.wait(20)  # the event loop runs between two menu clicks
    qtbot.wait(50)
    return docks


def _window(viewer):
    return viewer.window._qt_window


def _assert_one_tab_group(viewer, docks):
    window = _window(viewer)
    first = next(iter(docks.values()))[0]
    group = {id(d) for d in window.tabifiedDockWidgets(first)} | {id(first)}
    assert group == {id(d) for d, _ in docks.values()}, "every plugin widget is a tab of one dock"


@pytest.mark.parametrize("order", [MENU_ORDER, ["GAN synthesis", *[n for n in MENU_ORDER if n != "GAN synthesis"]]],
                         ids=["menu order", "GAN first"])
def test_five_widgets_share_one_tabbed_dock(make_napari_viewer, qtbot, order):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "synthetic_fundus")
    docks = _open(viewer, qtbot, order)
    window = _window(viewer)
    assert window.height() <= MAX_WINDOW_HEIGHT, f"the main window is {window.height()} px tall"
    assert window.minimumSizeHint().height() <= MAX_WINDOW_HEIGHT
    _assert_one_tab_group(viewer, docks)
    last_dock, last_widget = docks[order[-1]]
    assert last_widget.isVisible()  # the widget just opened is the tab shown


def test_a_floating_dock_is_left_alone(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    docks = _open(viewer, qtbot, ["Frangi baseline"])
    dock = docks["Frangi baseline"][0]
    dock.setFloating(True)
    more = _open(viewer, qtbot, ["Metrics panel"])
    assert dock.isFloating() and not _window(viewer).tabifiedDockWidgets(more["Metrics panel"][0])


def test_metrics_table_needs_no_scrollbars_with_all_widgets_docked(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "synthetic_fundus")
    gold = np.asarray(viewer.layers["synthetic vessels (gold)"].data) > 0
    rng = np.random.default_rng(0)
    names = []
    for k, noise in enumerate((0.1, 0.25, 0.4)):  # three probability predictions of the sample
        prob = np.clip(gold * 0.8 + rng.normal(0.1, noise, gold.shape), 0, 1).astype(np.float32)
        names.append(f"prediction {k + 1} SAM prob")
        viewer.add_image(prob, name=names[-1], visible=False)
    docks = _open(viewer, qtbot, MENU_ORDER)
    dock, panel = docks["Metrics panel"]
    panel.set_selection(predictions=names, gold="synthetic vessels (gold)", fov="synthetic FOV")
    panel.compute_button.click()
    qtbot.waitUntil(lambda: not panel.busy and panel.result is not None, timeout=60_000)
    dock.raise_()
    qtbot.wait(100)
    table = panel.table
    assert table.rowCount() == 3 and table.isVisible()
    assert not table.verticalScrollBar().isVisible() and not table.horizontalScrollBar().isVisible()
    viewport = table.viewport()
    assert viewport.height() >= table.verticalHeader().length()  # every row
    assert viewport.width() >= table.horizontalHeader().length()  # every column
    assert _window(viewer).height() <= MAX_WINDOW_HEIGHT
