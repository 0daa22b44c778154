"""GAN widget, Generate tab: busy state while Generate or Report runs (issue 10, bug 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_retsam.widgets.gan_widget import IMAGES_LAYER, GanWidget

pytestmark = pytest.mark.napari


def _busy(w: GanWidget) -> bool:
    return (w.generate_tab_busy and w.generate_progress.maximum() == 0
            and not any(b.isEnabled() for b in (w.generate_button, w.export_button, w.report_button)))


def _idle(w: GanWidget) -> bool:
    return (not w.generate_tab_busy and w.generate_progress.maximum() == 1
            and all(b.isEnabled() for b in (w.generate_button, w.export_button, w.report_button)))


def test_generate_and_report_show_busy_and_refuse_a_second_start(make_napari_viewer, qtbot, gan_checkpoint,
                                                                 gan_folder: Path, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr("napari_retsam.widgets._common.show_error", shown.append)
    viewer = make_napari_viewer()
    w = GanWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.checkpoint_edit.setText(str(gan_checkpoint))
    w.report_dataset_combo.setCurrentText("folder")
    w.report_root_edit.setText(str(gan_folder))
    w.report_split_combo.setCurrentText("all")
    assert _idle(w)

    w.generate_button.click()
    assert _busy(w) and w.generate_status.text().startswith("generating")
    assert w.generate() is None and "being generated" in shown[-1]
    assert w.report() is None and "being generated" in shown[-1]
    qtbot.waitUntil(lambda: _idle(w), timeout=60_000)
    assert IMAGES_LAYER in viewer.layers and "generated" in w.generate_status.text()

    w.report_button.click()
    assert _busy(w) and "quality report" in w.generate_status.text()
    assert w.generate() is None and "quality report is being computed" in shown[-1]
    qtbot.waitUntil(lambda: _idle(w), timeout=120_000)
    assert w.last_report is not None and w.generate_status.text() == "quality report ready"
    assert len(shown) == 3

    # a failing job leaves the tab usable and says why
    w.checkpoint_edit.setText(str(gan_folder / "missing.pt"))
    w.report_button.click()
    qtbot.waitUntil(lambda: _idle(w), timeout=60_000)
    assert w.generate_status.text().startswith("failed: ") and len(shown) == 4
