"""The GAN dock widget in a real viewer: generate, export, report, train with preview, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_gan import tiny_config

from napari_retsam.widgets.gan_widget import IMAGES_LAYER, MASKS_LAYER, PREVIEW_LAYER, GanWidget

pytestmark = pytest.mark.napari


def _run(qtbot, widget: GanWidget, start, timeout: int = 60_000):
    """Start a widget job and wait until its worker has finished (counted by the widget)."""
    before = widget.finished_jobs
    worker = start()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.finished_jobs > before, timeout=timeout)
    return worker


def test_generate_same_seed_same_layers_then_export(make_napari_viewer, qtbot, gan_checkpoint, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    w = GanWidget(viewer)
    w.checkpoint_edit.setText(str(gan_checkpoint))
    w.n_spin.setValue(3)
    w.seed_spin.setValue(11)
    _run(qtbot, w, w.generate)
    qtbot.waitUntil(lambda: IMAGES_LAYER in viewer.layers and MASKS_LAYER in viewer.layers, timeout=10_000)
    images = np.asarray(viewer.layers[IMAGES_LAYER].data).copy()
    masks = np.asarray(viewer.layers[MASKS_LAYER].data).copy()
    assert images.shape == (3, 32, 32, 3) and viewer.layers[IMAGES_LAYER].rgb
    assert masks.shape == (3, 32, 32)
    from napari_retsam.gan.sample import generate

    ref = generate(gan_checkpoint, 3, 11)
    assert np.array_equal(images, ref.images) and np.array_equal(masks > 0, ref.masks)
    # again with the same seed: same data, layers reused
    _run(qtbot, w, w.generate)
    qtbot.wait(50)
    assert np.array_equal(np.asarray(viewer.layers[IMAGES_LAYER].data), images)
    assert len([layer for layer in viewer.layers if layer.name == IMAGES_LAYER]) == 1

    w.export_edit.setText(str(tmp_path / "export"))
    manifest = w.export()
    assert json.loads(Path(manifest).read_text())["seed"] == 11
    assert len(list((tmp_path / "export" / "images").iterdir())) == 3


def test_bad_input_becomes_notifications(make_napari_viewer, qtbot, gan_checkpoint, gan_image_only_checkpoint,
                                         tmp_path: Path, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr("napari_retsam.widgets._common.show_error", shown.append)
    viewer = make_napari_viewer()
    w = GanWidget(viewer)
    assert w.generate() is None and "checkpoint" in shown[-1]
    assert w.export() is None and "generate samples first" in shown[-1]
    w.checkpoint_edit.setText(str(gan_checkpoint))
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="my mask")
    w.mask_layer_combo.setCurrentText("my mask")
    assert w.generate() is None and "not conditional" in shown[-1]
    w.mask_layer_combo.setCurrentIndex(0)
    # image-only generator: images shown, no mask layer, export refused
    w.checkpoint_edit.setText(str(gan_image_only_checkpoint))
    _run(qtbot, w, w.generate)
    qtbot.waitUntil(lambda: IMAGES_LAYER in viewer.layers, timeout=10_000)
    assert MASKS_LAYER not in viewer.layers
    w.export_edit.setText(str(tmp_path / "x"))
    assert w.export() is None and "without vessel masks" in shown[-1]
    assert w.start_training() is None and "dataset folder" in shown[-1]


def test_conditional_generation_from_a_labels_layer(make_napari_viewer, qtbot, gan_conditional_checkpoint) -> None:
    viewer = make_napari_viewer()
    w = GanWidget(viewer)
    mask = np.zeros((2, 32, 32), np.uint8)
    mask[:, 14:17, 4:28] = 1
    viewer.add_labels(mask, name="vessels")
    w.checkpoint_edit.setText(str(gan_conditional_checkpoint))
    w.mask_layer_combo.setCurrentText("vessels")
    w.n_spin.setValue(2)
    _run(qtbot, w, w.generate)
    qtbot.waitUntil(lambda: MASKS_LAYER in viewer.layers, timeout=10_000)
    from napari_retsam.gan.checkpoint import load_generator

    fov = load_generator(gan_conditional_checkpoint).fov_template
    assert np.array_equal(np.asarray(viewer.layers[MASKS_LAYER].data) > 0, (mask > 0) & fov)
    # warped: one mask → n different masks, same seed → same masks
    from napari_retsam.gan.masks import augment_masks

    w.warp_check.setChecked(True)
    _run(qtbot, w, w.generate)
    qtbot.wait(50)
    got = np.asarray(viewer.layers[MASKS_LAYER].data) > 0
    assert np.array_equal(got, augment_masks(mask > 0, w.seed_spin.value(), fov=fov))
    assert not np.array_equal(got[0], got[1])


def _train_tab_on_folder(viewer, gan_folder: Path, out: Path) -> GanWidget:
    """A GanWidget whose Train tab points at the generic ``gan_folder`` (all images) and ``out``."""
    w = GanWidget(viewer)
    w.dataset_combo.setCurrentText("folder")
    w.root_edit.setText(str(gan_folder))
    w.split_combo.setCurrentText("all")
    w.out_edit.setText(str(out))
    return w


def test_train_with_preview_then_report(make_napari_viewer, qtbot, gan_folder, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    w = _train_tab_on_folder(viewer, gan_folder, tmp_path / "run")
    _run(qtbot, w, lambda: w.start_training(tiny_config(iterations=2, sample_every=1)))
    qtbot.waitUntil(lambda: w.last_train_result is not None, timeout=10_000)
    assert w.last_train_result["iteration"] == 2 and w.progress.value() == 2
    assert PREVIEW_LAYER in viewer.layers and viewer.layers[PREVIEW_LAYER].rgb
    assert (tmp_path / "run" / "generator_last.pt").is_file()
    assert w.checkpoint_edit.text() == str(tmp_path / "run" / "generator_last.pt")
    assert w.train_button.isEnabled() and not w.cancel_button.isEnabled()

    w.report_dataset_combo.setCurrentText("folder")
    w.report_root_edit.setText(str(gan_folder))
    w.report_split_combo.setCurrentText("all")
    _run(qtbot, w, w.report, timeout=120_000)
    qtbot.waitUntil(lambda: w.last_report is not None, timeout=10_000)
    assert "pairing Dice" in w.report_text.text()
    assert len(w.report_figure.axes) == 3


def test_cancel_stops_and_saves_a_resumable_checkpoint(make_napari_viewer, qtbot, gan_folder, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    w = _train_tab_on_folder(viewer, gan_folder, tmp_path / "run")
    w.cancel_training()  # nothing running: no effect

    def start():
        worker = w.start_training(tiny_config(iterations=10_000, sample_every=0, checkpoint_every=10_000))
        w.train_relay.progressed.connect(lambda *_: w.cancel_training())  # cancel after the first iteration
        return worker

    _run(qtbot, w, start)
    qtbot.waitUntil(lambda: w.last_train_result is not None, timeout=10_000)
    done = w.last_train_result["iteration"]
    assert 1 <= done < 10_000
    import torch

    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == done
    assert w.resume_edit.text() == str(tmp_path / "run" / "last.pt")
    # the run ended with Cancelled: its partial result is shown, not an error
    assert w.last_train_result["status"] == "stopped"
    assert w.train_status.text().startswith(f"cancelled at iteration {done}; resume from")


def test_training_error_in_the_worker_becomes_a_notification(make_napari_viewer, qtbot, gan_folder, tmp_path: Path,
                                                             monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr("napari_retsam.widgets._common.show_error", shown.append)
    viewer = make_napari_viewer()
    w = GanWidget(viewer)
    w.dataset_combo.setCurrentText("drive")  # a generic folder is not a DRIVE layout
    w.root_edit.setText(str(gan_folder))
    w.out_edit.setText(str(tmp_path / "run"))
    _run(qtbot, w, lambda: w.start_training(tiny_config()))
    qtbot.waitUntil(lambda: len(shown) > 0, timeout=10_000)
    assert "\n" not in shown[-1] and not shown[-1].startswith("Traceback")
    assert w.train_button.isEnabled() and w.train_worker is None and w.last_train_result is None


def test_default_mode_is_conditional_patches_and_generate_cuts_patches_from_a_gold_layer(
        make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """The Train tab offers the default GAN (conditional, native-resolution patches); Generate with
    a patch generator takes a whole-image gold layer and shows patches whose masks are cut from it."""
    from types import SimpleNamespace

    from napari_retsam.data import synthetic_fundus
    from napari_retsam.gan.data import prepare_native
    from napari_retsam.gan.train import train_gan

    viewer = make_napari_viewer()
    w = GanWidget(viewer)
    cfg = w.training_config()
    assert (cfg.mode, cfg.unit, cfg.size) == ("conditional", "patch", 256)

    fundus = [synthetic_fundus(i, 64) for i in range(2)]
    native = prepare_native([SimpleNamespace(id=f"s{i}", image=f.image, gold=f.vessels, fov=f.fov)
                             for i, f in enumerate(fundus)], 32, require_masks=True)
    ckpt = train_gan(tiny_config(mode="conditional", unit="patch", iterations=1), native, tmp_path / "g")
    gold = fundus[0].vessels.astype(np.uint8)
    viewer.add_labels(gold, name="gold")
    w.checkpoint_edit.setText(str(ckpt.generator_checkpoint))
    w.mask_layer_combo.setCurrentText("gold")
    w.n_spin.setValue(4)
    _run(qtbot, w, w.generate)
    qtbot.waitUntil(lambda: MASKS_LAYER in viewer.layers, timeout=10_000)
    masks = np.asarray(viewer.layers[MASKS_LAYER].data) > 0
    assert np.asarray(viewer.layers[IMAGES_LAYER].data).shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32)
    # every generated mask is a window of the gold layer (no warp asked)
    windows = {np.asarray(gold[y:y + 32, x:x + 32] > 0).tobytes() for y in range(33) for x in range(33)}
    assert all(m.tobytes() in windows for m in masks)
