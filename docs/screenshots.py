"""Drive every RetSAM dock widget in a real napari window and save the user-guide screenshots.

Run it under a virtual X display (no monitor needed)::

    xvfb-run -a python docs/screenshots.py --out docs/images

What it does, the way a user would, through the widgets' own buttons and fields:

1. File ▸ Open Sample ▸ RetSAM vessels ▸ Synthetic fundus (``viewer.open_sample``);
2. SAM segmentation: "New box layer", two rectangles in that Shapes layer, "Segment";
3. GAN synthesis: Train tab on a small procedural fundus folder (a few dozen
   iterations, preview grid), then Generate tab ("Generate", "Export");
4. Fine-tune SAM: the procedural folder as the dataset, the GAN export as the
   synthetic folder, a few epochs with the live loss / validation plot;
   then segmentation again with the fine-tuned checkpoint;
5. Frangi baseline: "Run" on the sample image with its FOV;
6. Metrics panel: the SAM and Frangi probabilities against the gold standard in
   the FOV: table, ROC plot and the error overlay.

No pretrained SAM weights are used or downloaded: the script builds SAM's
"tiny" architecture with random weights (``napari_retsam.sam.build_sam("tiny")``)
and saves it as an official-style checkpoint file, so the screenshots show the
mechanics of each widget, not real segmentation quality.

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
    "02_segment_boxes.png": "SAM segmentation from two drawn boxes (random tiny SAM)",
    "03_gan_training.png": "GAN training with its preview grid",
    "04_gan_samples.png": "generated fundus images with their vessel masks",
    "05_finetune_live_plot.png": "fine-tuning with the live loss / validation plot",
    "06_frangi_baseline.png": "the Frangi baseline probability and mask",
    "07_metrics_panel.png": "metrics table, ROC plot and error overlay",
}

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


def choose(combo: Any, text: str) -> None:
    """Select ``text`` in a combo box, adding it first when the widget does not list it
    (the random ``tiny`` test model is not a user choice)."""
    if combo.findText(text) < 0:
        combo.addItem(text)
    combo.setCurrentText(text)


def rectangle(y0: float, x0: float, y1: float, x1: float) -> Any:
    """A napari rectangle (four corners, (row, column)) as drawn with the rectangle tool."""
    import numpy as np

    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


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


def stage_segment(d: Driver, sam_checkpoint: Path) -> Any:
    print("SAM segmentation", flush=True)
    w = d.dock("SAM segmentation")
    w.image_combo.setCurrentText("synthetic fundus")
    choose(w.model_combo, "tiny")
    w.checkpoint_edit.setText(str(sam_checkpoint))
    w.device_combo.setCurrentText("cpu")
    w.tile_spin.setValue(0)  # whole image: one encoder pass
    boxes = w.new_box_layer()
    if boxes is None:
        raise ScriptError("'New box layer' did not make a Shapes layer")
    boxes.add_rectangles([rectangle(150, 290, 330, 470), rectangle(60, 110, 220, 300)])
    boxes.mode = "pan_zoom"
    w.segment_button.click()
    d.wait_until(lambda: not w.busy and "synthetic fundus SAM mask" in d.viewer.layers, "SAM segmentation")
    # the probability layer (magma, additive) stays in the layer list; the mask over the image reads better,
    # recoloured cyan (layer controls ▸ colour) so it stands out from the red-orange fundus
    recolour_labels(d.viewer.layers["synthetic fundus SAM mask"], (0.0, 0.9, 1.0), 0.45)
    d.only_visible(boxes.name, "synthetic fundus SAM mask", "synthetic fundus")
    d.shot("02_segment_boxes.png")
    return w


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
    d.shot("03_gan_training.png")

    w.tabs.setCurrentIndex(1)  # Generate: the checkpoint field was filled in by the training run
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
    d.shot("04_gan_samples.png")
    # the export is on disk (fine-tuning reads it); the stacks would add a slider to the later screenshots
    for name in (MASKS_LAYER, IMAGES_LAYER, PREVIEW_LAYER):
        d.viewer.layers.remove(name)
    return export


def stage_finetune(d: Driver, sam_checkpoint: Path, folder: Path, synthetic: Path, epochs: int) -> Path:
    print("fine-tuning", flush=True)
    w = d.dock("Fine-tune SAM")
    w.dataset_combo.setCurrentText("folder")
    w.dataset_root.setText(str(folder))
    w.split_combo.setCurrentText("all")
    w.synthetic_root.setText(str(synthetic))
    w.synthetic_ratio.setValue(0.5)
    w.epochs_spin.setValue(epochs)
    w.batch_spin.setValue(2)
    w.lr_spin.setValue(1e-3)
    w.views_spin.setValue(2)
    w.val_fraction.setValue(0.25)
    w.device_combo.setCurrentText("cpu")
    choose(w.model_type_combo, "tiny")
    w.checkpoint_edit.setText(str(sam_checkpoint))
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
    # the dock is tall (three groups of fields above the plot): a taller window gives the plot room
    d.viewer.window.resize(d.size[0], d.size[1] + 250)
    d.only_visible("synthetic vessels (gold)", "synthetic fundus")
    d.shot("05_finetune_live_plot.png")
    d.viewer.window.resize(*d.size)
    return best


def stage_segment_finetuned(d: Driver, best: Path) -> None:
    print("SAM segmentation with the fine-tuned checkpoint", flush=True)
    w = d.dock("SAM segmentation")
    # "trained here" lists the models the fine-tuning widget registered; choosing one fills the fields
    index = next((i for i in range(w.trained_combo.count()) if "finetune_run" in w.trained_combo.itemText(i)), -1)
    if index < 1:
        raise ScriptError("the fine-tuned model is not offered under 'trained here' in the segmentation widget")
    w.trained_combo.setCurrentIndex(index)
    w.trained_combo.activated.emit(index)  # what a click on the item sends
    if Path(w.finetuned_edit.text()) != best:
        raise ScriptError(f"choosing the fine-tuned model set {w.finetuned_edit.text()!r}, not {best}")
    w.segment_button.click()
    d.wait_until(lambda: not w.busy and "done" in w.status_label.text(), "segmentation with the fine-tuned model")


def stage_baseline(d: Driver) -> None:
    print("Frangi baseline", flush=True)
    w = d.dock("Frangi baseline")
    w.image_combo.setCurrentText("synthetic fundus")
    w.fov_combo.setCurrentText("synthetic FOV")
    w.run_button.click()
    d.wait_until(lambda: not w.busy and "synthetic fundus frangi prob" in d.viewer.layers, "Frangi baseline")
    d.viewer.layers["synthetic fundus frangi mask"].opacity = 0.35
    d.only_visible("synthetic fundus frangi mask", "synthetic fundus frangi prob")
    d.shot("06_frangi_baseline.png")


def stage_metrics(d: Driver) -> None:
    print("metrics panel", flush=True)
    w = d.dock("Metrics panel")
    sam, frangi = "synthetic fundus SAM prob", "synthetic fundus frangi prob"
    w.set_selection(predictions=[sam, frangi], gold="synthetic vessels (gold)", fov="synthetic FOV", overlay=frangi)
    w.compute_button.click()
    d.wait_until(lambda: not w.busy and w.result is not None and w.overlay_layer(frangi) is not None,
                 "metrics panel")
    rows = {row.prediction for row in w.result.rows}
    if not {sam, frangi} <= rows:
        raise ScriptError(f"the metrics table lacks a row: {sorted(rows)}")
    d.only_visible(w.overlay_layer(frangi).name, "synthetic fundus")
    d.shot("07_metrics_panel.png")


# ---------------------------------------------------------------------------- main
def timed(stage: Callable[..., Any], *args: Any) -> Any:
    """Run one stage and print its wall-clock time."""
    start = time.monotonic()
    result = stage(*args)
    print(f"  ({stage.__name__}: {time.monotonic() - start:.1f} s)", flush=True)
    return result


def _write_inputs(work: Path) -> None:
    from napari_retsam.data import write_synthetic_folder
    from napari_retsam.sam import build_sam
    from napari_retsam.sam.checkpoints import save_official_style

    save_official_style(build_sam("tiny", seed=0), work / "sam_tiny_random.pth")
    write_synthetic_folder(work / "fundus_folder", 6, seed=1, size=128)


def make_inputs(work: Path) -> tuple[Path, Path]:
    """A random tiny SAM saved like an official checkpoint, and a small procedural fundus folder.

    Made in a child process: in this one, as for a user, torch is first used by
    the widgets' buttons after the viewer exists (the order that once crashed
    napari on Mesa, see ``napari_retsam._torch_runtime``).
    """
    subprocess.run([sys.executable, __file__, "--make-inputs-only", "--work", str(work)], check=True)
    return work / "sam_tiny_random.pth", work / "fundus_folder"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images",
                        help="folder for the PNGs (default: docs/images)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the checkpoints and data the run makes (default: a temporary folder)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1250,
                        help="window height (the fine-tuning dock needs about 1,100 px to show its plot)")
    parser.add_argument("--max-kb", type=int, default=380, help="re-encode PNGs larger than this (KB)")
    parser.add_argument("--gan-iterations", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one worker")
    parser.add_argument("--make-inputs-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


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
        sam_checkpoint, folder = make_inputs(work)
        start = time.monotonic()
        try:
            timed(stage_sample, d)
            timed(stage_segment, d, sam_checkpoint)
            synthetic = timed(stage_gan, d, folder, args.gan_iterations)
            best = timed(stage_finetune, d, sam_checkpoint, folder, synthetic, args.epochs)
            timed(stage_segment_finetuned, d, best)
            timed(stage_baseline, d)
            timed(stage_metrics, d)
        except ScriptError as exc:
            print(f"screenshots: error: {exc}", file=sys.stderr)
            return 1
        finally:
            d.viewer.close()
        print(f"{len(SHOTS)} screenshots in {args.out} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
