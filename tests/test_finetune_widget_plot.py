"""The fine-tuning widget's live plot in a real viewer: the x-axis follows the run (issue 10, bug 2)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.napari


def test_live_plot_x_axis_follows_steps_and_validation(make_napari_viewer, qtbot, monkeypatch) -> None:
    from napari_retsam.widgets import finetune_widget
    from napari_retsam.widgets.finetune_widget import FinetuneWidget

    monkeypatch.setattr(finetune_widget, "PLOT_INTERVAL_S", 0.0)  # redraw on every batch
    viewer = make_napari_viewer()
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    plot = widget.plot
    step = 0
    for epoch in range(1, 6):  # records as the worker's relay delivers them: steps, then a validation point
        batch = []
        for _ in range(8):
            step += 1
            batch.append({"kind": "step", "step": step, "loss": 1.0 / step})
        batch.append({"kind": "val", "step": step, "epoch": epoch, "train_loss": 0.5, "auc": 0.5 + 0.05 * epoch,
                      "f1": 0.3})
        widget._relay.records.emit(batch)
        qtbot.wait(10)
        lo, hi = plot.ax_loss.get_xlim()
        assert lo <= 1 and hi >= step, (epoch, (lo, hi), step)
        assert plot.ax_val.get_xlim() == (lo, hi)
        ylo, yhi = plot.ax_loss.get_ylim()
        assert ylo <= min(plot.losses) and yhi >= max(plot.losses)
    assert plot.steps[-1] == 40 and plot.val_steps == [8, 16, 24, 32, 40]
    assert "epoch 5" in widget.epoch_label.text()
