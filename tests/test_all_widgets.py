"""Every dock widget of the napari manifest, docked into ONE viewer and run once on the sample data.

The widget list comes from the installed plugin manifest (npe2), so a widget
added to ``napari.yaml`` without a driver here fails this test instead of going
untested. Each driver works the widget through its buttons and fields the way a
user does (tiny settings: random tiny SAM from ``tests/fixtures_sam.py``, tiny
GAN checkpoint from ``tests/fixtures_gan.py``), waits for its worker with
``qtbot.waitUntil`` and checks the layers / table it produced against the core
functions. Any error notification in the viewer fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.napari

PLUGIN = "napari-retsam"
IMAGE = "synthetic fundus"
GOLD = "synthetic vessels (gold)"
FOV = "synthetic FOV"
WAIT_MS = 120_000


def manifest_widgets() -> list[tuple[str, str, str]]:
    """``(command id, display name, python_name)`` of every widget the installed manifest declares."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    python_names = {c.id: c.python_name for c in manifest.contributions.commands or []}
    return [(w.command, w.display_name, python_names[w.command]) for w in manifest.contributions.widgets or []]


@dataclass
class Context:
    """What the drivers share: the viewer, qtbot, fixture files and the outputs seen so far."""

    viewer: Any
    qtbot: Any
    sam_checkpoint: Path
    gan_checkpoint: Path
    tmp: Path
    docked: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, list[str]] = field(default_factory=dict)


def _rect(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


# ---------------------------------------------------------------------------- drivers
def drive_baseline(ctx: Context, w: Any) -> list[str]:
    w.image_combo.setCurrentText(IMAGE)
    w.fov_combo.setCurrentText(FOV)
    w.run_button.click()
    ctx.qtbot.waitUntil(lambda: not w.busy and f"{IMAGE} frangi mask" in ctx.viewer.layers, timeout=WAIT_MS)
    prob = np.asarray(ctx.viewer.layers[f"{IMAGE} frangi prob"].data)
    mask = np.asarray(ctx.viewer.layers[f"{IMAGE} frangi mask"].data)
    fov = np.asarray(ctx.viewer.layers[FOV].data) > 0
    assert prob.shape == mask.shape == fov.shape == (512, 512)
    assert prob.dtype == np.float32 and 0.0 <= prob.min() and prob.max() <= 1.0
    # the mask is the probability thresholded inside the FOV, with the widget's threshold
    t = w.threshold_spin.value()
    assert np.array_equal(mask > 0, (prob >= t) & fov)
    assert 0 < mask.sum() < fov.sum()
    return [f"{IMAGE} frangi prob", f"{IMAGE} frangi mask"]


def drive_segment(ctx: Context, w: Any) -> list[str]:
    from napari_retsam.sam import Segmenter, load_sam

    w.image_combo.setCurrentText(IMAGE)
    w.model_combo.addItem("tiny")  # the test-only random model
    w.model_combo.setCurrentText("tiny")
    w.checkpoint_edit.setText(str(ctx.sam_checkpoint))
    w.device_combo.setCurrentText("cpu")
    w.tile_spin.setValue(0)
    w.new_box_button.click()
    boxes = ctx.viewer.layers[w.shapes_combo.currentText()]
    boxes.add_rectangles([_rect(150, 290, 330, 470)])  # rows 150..330, columns 290..470
    w.segment_button.click()
    ctx.qtbot.waitUntil(lambda: not w.busy and f"{IMAGE} SAM mask" in ctx.viewer.layers, timeout=WAIT_MS)
    prob = np.asarray(ctx.viewer.layers[f"{IMAGE} SAM prob"].data)
    mask = np.asarray(ctx.viewer.layers[f"{IMAGE} SAM mask"].data)
    # the same box (x0, y0, x1, y1) through the core segmenter gives the same probabilities
    image = np.asarray(ctx.viewer.layers[IMAGE].data)
    expected = Segmenter(load_sam(ctx.sam_checkpoint, device="cpu")).segment(image, [[290, 150, 470, 330]], tile=None)
    fov = np.asarray(ctx.viewer.layers[FOV].data) > 0  # the sample's FOV layer keeps the outputs inside it
    np.testing.assert_allclose(prob, np.where(fov, expected.prob, 0), atol=1e-6)
    assert np.array_equal(mask > 0, expected.mask & fov)
    return [f"{IMAGE} SAM prob", f"{IMAGE} SAM mask"]


def drive_metrics(ctx: Context, w: Any) -> list[str]:
    from napari_retsam.metrics import evaluate

    preds = [name for name in (f"{IMAGE} SAM prob", f"{IMAGE} frangi prob") if name in ctx.viewer.layers]
    assert preds, "the metrics panel runs after a widget that makes a probability layer"
    w.set_selection(predictions=preds, gold=GOLD, fov=FOV, overlay=preds[-1])
    w.compute_button.click()
    ctx.qtbot.waitUntil(lambda: not w.busy and w.result is not None and w.overlay_layer(preds[-1]) is not None,
                        timeout=WAIT_MS)
    gold = np.asarray(ctx.viewer.layers[GOLD].data) > 0
    fov = np.asarray(ctx.viewer.layers[FOV].data) > 0
    rows = {row.prediction: row for row in w.result.rows}
    assert set(preds) <= set(rows)
    for name in preds:
        ref = evaluate(np.asarray(ctx.viewer.layers[name].data), gold, fov)
        for key in ("pa", "se", "sp", "f1", "auc"):
            assert rows[name].values[key] == pytest.approx(getattr(ref, key), abs=1e-9), (name, key)
    assert {curve.name for curve in w.result.curves} == set(preds)  # one ROC curve per probability layer
    assert w.table.rowCount() >= len(preds)
    # error overlay: TP = 1, FP = 2, FN = 3 inside the FOV, 0 elsewhere
    pred = np.asarray(ctx.viewer.layers[preds[-1]].data) >= 0.5
    codes = np.asarray(w.overlay_layer(preds[-1]).data)
    assert np.array_equal(codes == 1, pred & gold & fov)
    assert np.array_equal(codes == 2, pred & ~gold & fov)
    assert np.array_equal(codes == 3, ~pred & gold & fov)
    return [w.overlay_layer(preds[-1]).name]


def drive_finetune(ctx: Context, w: Any) -> list[str]:
    import torch

    from napari_retsam.widgets._models import registered_models

    w.image_combo.setCurrentText(IMAGE)
    w.labels_combo.setCurrentText(GOLD)
    w.add_pair_button.click()
    w.model_type_combo.addItem("tiny")  # the test-only random model
    w.model_type_combo.setCurrentText("tiny")
    w.checkpoint_edit.setText(str(ctx.sam_checkpoint))
    w.device_combo.setCurrentText("cpu")
    w.out_edit.setText(str(ctx.tmp / "finetune"))
    w.epochs_spin.setValue(2)
    w.batch_spin.setValue(1)
    w.views_spin.setValue(1)
    w.tile_spin.setValue(0)  # whole image: one unit per pair (the recipe's default tiles the sample into 9)
    w.torch_threads = 1
    w.train_button.click()
    ctx.qtbot.waitUntil(lambda: w.last_result is not None and w.train_button.isEnabled(), timeout=WAIT_MS)
    result = w.last_result
    assert result.status == "finished" and result.step == 2  # one image pair, one view, batch 1, two epochs
    ctx.qtbot.waitUntil(lambda: w.plot.steps == [1, 2], timeout=10_000)  # the live plot got every step
    best = ctx.tmp / "finetune" / "best.pt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state["format"] == "napari-retsam/finetuned-v1" and state["model_type"] == "tiny"
    models = registered_models()
    assert [m.checkpoint for m in models] == [best]
    segment = ctx.docked.get("napari-retsam.segment_widget")
    if segment is not None:  # offered in the segmentation widget docked in the same viewer
        index = segment.trained_combo.findText(models[0].name)
        assert index >= 1
        segment.trained_combo.setCurrentIndex(index)
        segment.trained_combo.activated.emit(index)
        assert Path(segment.finetuned_edit.text()) == best
        assert Path(segment.checkpoint_edit.text()) == ctx.sam_checkpoint
    return []


def drive_gan(ctx: Context, w: Any) -> list[str]:
    from napari_retsam.gan.sample import generate
    from napari_retsam.widgets.gan_widget import IMAGES_LAYER, MASKS_LAYER

    w.tabs.setCurrentIndex(1)
    w.checkpoint_edit.setText(str(ctx.gan_checkpoint))
    w.n_spin.setValue(2)
    w.seed_spin.setValue(5)
    done = w.finished_jobs
    w.generate_button.click()
    ctx.qtbot.waitUntil(lambda: w.finished_jobs > done and MASKS_LAYER in ctx.viewer.layers, timeout=WAIT_MS)
    ref = generate(ctx.gan_checkpoint, 2, 5)
    assert np.array_equal(np.asarray(ctx.viewer.layers[IMAGES_LAYER].data), ref.images)
    assert np.array_equal(np.asarray(ctx.viewer.layers[MASKS_LAYER].data) > 0, ref.masks)
    return [IMAGES_LAYER, MASKS_LAYER]


#: command id -> driver, in the order they run (the metrics panel needs the predictions made before it).
DRIVERS: dict[str, Callable[[Context, Any], list[str]]] = {
    "napari-retsam.baseline_widget": drive_baseline,
    "napari-retsam.segment_widget": drive_segment,
    "napari-retsam.metrics_panel": drive_metrics,
    "napari-retsam.finetune_widget": drive_finetune,
    "napari-retsam.gan_widget": drive_gan,
}


# ---------------------------------------------------------------------------- tests
def test_manifest_declares_the_widgets_and_each_has_a_driver() -> None:
    widgets = manifest_widgets()
    assert len(widgets) >= 5
    missing = [display for command, display, _ in widgets if command not in DRIVERS]
    assert not missing, f"no driver in tests/test_all_widgets.py for manifest widget(s) {missing}: add one"


@pytest.fixture
def error_notifications():
    """Every error-level napari notification raised while the test runs."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen: list[str] = []

    def record(notification: Any) -> None:
        if notification.severity >= NotificationSeverity.ERROR:
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def test_every_widget_docks_in_one_viewer_and_runs_on_the_sample(
    make_napari_viewer, qtbot, tiny_sam_checkpoint, gan_checkpoint, tmp_path, monkeypatch, error_notifications
) -> None:
    import importlib

    from napari_retsam.widgets._models import clear_models

    monkeypatch.setenv("RETSAM_CACHE", str(tmp_path / "cache"))  # never the user's cache
    clear_models()
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_fundus")
    assert {IMAGE, GOLD, FOV} <= {layer.name for layer in viewer.layers}

    widgets = manifest_widgets()
    docked: dict[str, Any] = {}
    for command, display, python_name in widgets:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, display)
        module, _, cls = python_name.partition(":")
        assert isinstance(widget, getattr(importlib.import_module(module), cls)), display
        docked[command] = widget
    in_window = list(viewer.window.dock_widgets.values())
    for command, widget in docked.items():  # all docked at once, in the one window
        assert any(widget is w for w in in_window), command

    ctx = Context(viewer, qtbot, tiny_sam_checkpoint, gan_checkpoint, tmp_path, docked)
    try:
        for command, driver in DRIVERS.items():
            if command not in docked:
                continue  # a driver for a widget the manifest no longer declares
            outputs = driver(ctx, docked[command])
            for name in outputs:
                assert name in viewer.layers, f"{command}: output layer {name!r} missing"
            ctx.outputs[command] = outputs
            assert error_notifications == [], f"{command}: the viewer reported {error_notifications}"
    finally:
        clear_models()
    assert set(ctx.outputs) == set(docked)  # every docked widget ran
