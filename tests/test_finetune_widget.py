"""The fine-tuning dock widget: layer pairs, worker thread, live plot, cancel, model registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.napari


@pytest.fixture
def widget(make_napari_viewer, tiny_sam_checkpoint, tmp_path):
    from napari_retsam.data import synthetic_fundus
    from napari_retsam.widgets._models import clear_models
    from napari_retsam.widgets.finetune_widget import FinetuneWidget

    clear_models()
    viewer = make_napari_viewer()
    stack = [synthetic_fundus(seed=k, size=64) for k in range(4)]
    viewer.add_image(np.stack([f.image for f in stack]), name="fundus", rgb=True)
    viewer.add_labels(np.stack([f.vessels for f in stack]).astype(np.uint8), name="vessels")
    w = FinetuneWidget(viewer)
    w.model_type_combo.addItem("tiny")  # the test-only random model
    w.model_type_combo.setCurrentText("tiny")
    w.checkpoint_edit.setText(str(tiny_sam_checkpoint))
    w.out_edit.setText(str(tmp_path / "run"))
    w.device_combo.setCurrentText("cpu")
    w.batch_spin.setValue(2)
    w.lr_spin.setValue(1e-3)
    w.views_spin.setValue(2)
    w.val_fraction.setValue(0.25)
    w.torch_threads = 1
    yield w
    clear_models()


def test_train_in_worker_registers_model_and_plots(widget, qtbot, tmp_path) -> None:
    from napari_retsam.widgets._models import registered_models, subscribe

    heard = []
    unsubscribe = subscribe(heard.append)
    widget.add_pair("fundus", "vessels")
    assert widget.pairs_list.count() == 1
    widget.epochs_spin.setValue(2)
    worker = widget.start()
    assert worker is not None and not widget.train_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.train_button.isEnabled(), timeout=5000)
    unsubscribe()
    result = widget.last_result
    assert result.status == "finished" and result.step == 4  # 3 training images of 4 (one held out), batch 2
    assert (tmp_path / "run" / "best.pt").is_file()
    models = registered_models()
    assert len(models) == 1 and heard == models
    assert models[0].checkpoint == tmp_path / "run" / "best.pt" and models[0].model_type == "tiny"
    loaded = models[0].load(device="cpu")  # through the SAM engine's loader, base + decoder-only file
    state = torch.load(models[0].checkpoint, map_location="cpu", weights_only=True)
    for k, v in state["fusion"].items():
        assert torch.equal(loaded.fusion.state_dict()[k], v)
    qtbot.waitUntil(lambda: len(widget.plot.val_steps) == 2, timeout=5000)
    assert widget.plot.steps == [1, 2, 3, 4]
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == 4
    assert "val AUC" in widget.epoch_label.text()


def test_cancel_stops_within_a_step_and_keeps_last(widget, qtbot, tmp_path) -> None:
    widget.add_pair("fundus", "vessels")
    widget.epochs_spin.setValue(500)
    widget.views_spin.setValue(1)
    worker = widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.steps) >= 2, timeout=120_000)
    widget.cancel()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    result = widget.last_result
    assert result.status == "stopped" and result.step < 500 * 2
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["training"]["step"] == result.step


def test_bad_choices_notify_instead_of_raising(widget, qtbot, monkeypatch) -> None:
    import napari_retsam.widgets._common as common

    shown = []
    monkeypatch.setattr(common, "show_error", shown.append)
    assert widget.start() is None  # no data at all
    assert shown and "no training data" in shown[-1]
    widget.add_pair("fundus", "vessels")
    widget.out_edit.setText("")
    assert widget.start() is None
    assert "output folder" in shown[-1]
    widget.add_pair("fundus", "nonexistent")
    assert "no layer named" in shown[-1]


def test_mismatched_pair_reports_in_viewer(widget, qtbot, monkeypatch) -> None:
    import napari_retsam.widgets._common as common

    shown = []
    monkeypatch.setattr(common, "show_error", shown.append)
    widget.viewer.add_labels(np.zeros((4, 32, 32), np.uint8), name="small")
    widget.add_pair("fundus", "small")
    assert widget.start() is None
    assert "mask shape" in shown[-1]
