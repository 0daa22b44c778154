"""Dock widget "GAN synthesis": train a fundus/vessel GAN and generate paired samples.

Train tab
    dataset type + folder + split, output folder, mode (conditional by
    default), training unit (patches at native resolution by default), size,
    iterations, batch size, β, scales, seed, sample-grid interval, optional resume
    file. "Train" loads the data and trains in a napari worker thread
    (:meth:`napari_retsam.gan.train.GanTrainer.run`, a plain function talking to the
    GUI through the shared throttled relay, like the fine-tune widget): the
    progress bar and status follow the iterations (at most one update per
    :data:`UI_INTERVAL_S`), each sample grid replaces the Image layer
    ``"GAN training preview"`` at once. "Cancel" asks the loop to stop at the
    next iteration; it writes its checkpoint and raises
    :class:`~napari_retsam.progress.Cancelled`, whose partial result the tab
    shows ("cancelled at iteration N; resume from …", "Resume from" filled in).

Generate tab
    generator checkpoint, number of samples, seed and, for a conditional
    generator, a Labels layer holding the vessel mask(s) (H×W or N×H×W at the
    generator's size; a patch generator also takes a larger mask, e.g. a whole
    gold standard, and cuts seeded patches from it), optionally warped (random
    flip/rotation + elastic warp, seeded). "Generate" makes the Image layer ``"GAN images"``
    (N×H×W×3) and the Labels layer ``"GAN vessel masks"`` (N×H×W); the same
    seed gives the same samples. "Export" writes the last generated set as a
    dataset folder (``images/``, ``masks/``, ``fov/``, ``manifest.json``).
    "Report" compares the generator with a real dataset
    (:mod:`napari_retsam.gan.report`) and shows the figures and figures' numbers.
    Generate and Report run in a worker thread, one at a time: while one runs
    the tab's progress bar is busy, its buttons are disabled and the status
    line says what is running.

Bad input becomes a napari notification (never a traceback in the viewer).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_retsam._torch_runtime import prepare_torch_runtime
from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import STOPPED
from napari_retsam.widgets._common import (
    ProgressRelay,
    browse_row,
    dock_as_tab,
    make_worker,
    notify_user_errors,
    run_error_handler,
    set_combo_items,
    set_progress,
    show_info,
    worker_error_handler,
)

if TYPE_CHECKING:
    import napari

__all__ = ["GanWidget", "UI_INTERVAL_S"]

PREVIEW_LAYER = "GAN training preview"
IMAGES_LAYER = "GAN images"
MASKS_LAYER = "GAN vessel masks"
NO_LAYER = "(none: paired generator)"
DATASET_CHOICES = ("drive", "stare", "chase", "folder")
#: Minimum seconds between two progress updates from the training worker (sample grids come at once).
UI_INTERVAL_S = 1.0
CHECKPOINT_FILTER = "Checkpoints (*.pt)"


def _summary(result: Any, total: int) -> dict[str, Any]:
    """What the Train tab keeps of a :class:`napari_retsam.gan.train.TrainResult` (finished or partial)."""
    return {"iteration": result.iteration, "total": total, "status": result.status,
            "generator": str(result.generator_checkpoint), "state": str(result.state_checkpoint)}


class GanWidget(QWidget):
    """Train / Generate tabs for the fundus–vessel GAN (see the module docstring)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # all the plugin's widgets share one tabbed dock (see _common.dock_as_tab)
        prepare_torch_runtime()  # torch may load triton from any later call (see napari_retsam._torch_runtime)
        self.viewer = napari_viewer
        self.train_worker: Any = None
        self.generate_worker: Any = None
        self.report_worker: Any = None
        self._stop_event = threading.Event()
        self._train_total = 0
        #: worker thread -> UI thread: training progress and sample-grid records (throttled in the worker)
        self.train_relay = ProgressRelay()
        self.train_relay.progressed.connect(self._on_train_progress)
        self.train_relay.records.connect(self._on_train_records)
        self._generated: Any = None  # napari_retsam.gan.sample.GeneratedSet
        self._generated_checkpoint: str | None = None
        self.last_train_result: Any = None
        self.last_report: dict[str, Any] | None = None
        #: workers finished so far (train, generate, report), counted on the main thread
        self.finished_jobs = 0

        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._build_train_tab(), "Train")
        self.tabs.addTab(self._build_generate_tab(), "Generate")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------ Train tab
    def _build_train_tab(self) -> QWidget:
        tab = QWidget(self)
        form = QFormLayout(tab)
        self.dataset_combo = QComboBox(tab)
        self.dataset_combo.addItems(list(DATASET_CHOICES))
        self.root_edit = QLineEdit(tab)
        self.split_combo = QComboBox(tab)
        self.split_combo.addItems(["train", "test", "all"])
        self.out_edit = QLineEdit(tab)
        from napari_retsam.gan.config import MODES, UNITS, GanConfig

        defaults = GanConfig()
        self.size_combo = QComboBox(tab)
        self.size_combo.addItems(["32", "64", "128", "256", "512"])
        self.size_combo.setCurrentText(str(defaults.size))
        self.unit_combo = QComboBox(tab)
        self.unit_combo.addItems(list(UNITS))
        self.unit_combo.setCurrentText(defaults.unit)
        self.unit_combo.setToolTip("patch: crops at native resolution (the segmentation tile; fits a CPU hour); "
                                   "image: whole images fitted to the size (a GPU job)")
        self.iterations_spin = QSpinBox(tab)
        self.iterations_spin.setRange(1, 10_000_000)
        self.iterations_spin.setValue(defaults.iterations)
        self.batch_spin = QSpinBox(tab)
        self.batch_spin.setRange(1, 256)
        self.beta_spin = QDoubleSpinBox(tab)
        self.beta_spin.setRange(0.0, 1000.0)
        self.beta_spin.setValue(10.0)
        self.scales_spin = QSpinBox(tab)
        self.scales_spin.setRange(1, 6)
        self.scales_spin.setValue(3)
        self.mode_combo = QComboBox(tab)
        self.mode_combo.addItems(list(MODES))
        self.mode_combo.setCurrentText(defaults.mode)
        self.mode_combo.setToolTip("conditional: vessel mask + FOV + noise -> image, pairs right by construction; "
                                   "paired: noise -> image + mask (whole images only)")
        self.train_seed_spin = QSpinBox(tab)
        self.train_seed_spin.setRange(0, 2**31 - 1)
        self.sample_every_spin = QSpinBox(tab)
        self.sample_every_spin.setRange(0, 1_000_000)
        self.sample_every_spin.setValue(500)
        self.resume_edit = QLineEdit(tab)
        self.resume_edit.setPlaceholderText("optional: last.pt of an earlier run")
        self.train_button = QPushButton("Train", tab)
        self.cancel_button = QPushButton("Cancel", tab)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar(tab)
        self.train_status = QLabel("", tab)
        self.train_status.setWordWrap(True)

        form.addRow("Dataset", self.dataset_combo)
        form.addRow("Folder", browse_row(self.root_edit, directory=True, caption="Choose the dataset folder"))
        form.addRow("Split", self.split_combo)
        form.addRow("Output folder", browse_row(self.out_edit, directory=True, caption="Choose the output folder"))
        form.addRow("Mode", self.mode_combo)
        form.addRow("Training unit", self.unit_combo)
        form.addRow("Size (px)", self.size_combo)
        form.addRow("Iterations", self.iterations_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("β (feature matching)", self.beta_spin)
        form.addRow("Discriminator scales", self.scales_spin)
        form.addRow("Seed", self.train_seed_spin)
        form.addRow("Sample grid every", self.sample_every_spin)
        form.addRow("Resume from", browse_row(self.resume_edit, caption="Choose the last.pt of an earlier run",
                                              file_filter=CHECKPOINT_FILTER))
        buttons = QWidget(tab)
        row = QHBoxLayout(buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.train_button)
        row.addWidget(self.cancel_button)
        form.addRow(buttons)
        form.addRow(self.progress)
        form.addRow(self.train_status)
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        return tab

    def training_config(self) -> Any:
        """The :class:`GanConfig` the Train tab describes."""
        from napari_retsam.gan.config import GanConfig

        every = self.sample_every_spin.value()
        iterations = self.iterations_spin.value()
        return GanConfig(size=int(self.size_combo.currentText()), mode=self.mode_combo.currentText(),
                         unit=self.unit_combo.currentText(), iterations=iterations, batch_size=self.batch_spin.value(),
                         beta=float(self.beta_spin.value()), scales=self.scales_spin.value(),
                         seed=self.train_seed_spin.value(), sample_every=every,
                         checkpoint_every=min(500, iterations))

    @notify_user_errors
    def start_training(self, config: Any = None) -> Any:
        """Start the training worker; returns it (or None on bad input).

        ``config`` overrides the tab's settings (a :class:`GanConfig`, used by tests
        to train tiny networks)."""
        if self.train_worker is not None:
            raise RetsamInputError("training is already running; cancel it first")
        config = config if config is not None and not isinstance(config, bool) else self.training_config()
        root = self.root_edit.text().strip()
        out = self.out_edit.text().strip()
        if not root:
            raise RetsamInputError("choose the dataset folder to train on")
        if not out:
            raise RetsamInputError("choose an output folder for the checkpoints")
        resume = self.resume_edit.text().strip() or None
        dataset, split = self.dataset_combo.currentText(), self.split_combo.currentText()
        self._stop_event = threading.Event()
        stop = self._stop_event
        relay = self.train_relay

        def job():  # runs in the worker thread: no layer access here, the GUI hears it through the relay
            prepare_torch_runtime()  # before the optimizers import torch._dynamo -> triton
            from napari_retsam.data import open_dataset
            from napari_retsam.gan.data import training_pairs
            from napari_retsam.gan.train import GanTrainer

            ds = open_dataset(dataset, root, split=split)
            pairs = training_pairs(ds, config)
            info = {"name": ds.name, "split": ds.split, "annotator": 1, "n_images": len(pairs)}
            trainer = GanTrainer(config, pairs, out, resume=resume, dataset_info=info)
            # at most one progress update per UI_INTERVAL_S; a sample grid at once
            updates = relay.throttled(UI_INTERVAL_S, urgent=lambda rec: rec.get("kind") == "grid")
            try:
                return trainer.run(progress=updates.progress, should_stop=stop.is_set,
                                   preview=lambda it, grid: updates.record({"kind": "grid", "iteration": it,
                                                                            "grid": grid}))
            finally:  # also when Cancel ends the run with Cancelled
                updates.flush()

        # Cancel ends the run with Cancelled: its partial result is shown like a finished one
        worker = self._make_worker(job, on_error=run_error_handler(self._on_train_done, self.train_status))
        worker.returned.connect(self._on_train_done)
        worker.finished.connect(self._on_train_finished)
        self.train_worker = worker
        self._train_total = config.iterations
        set_progress(self.progress, 0, config.iterations)
        self.train_status.setText("loading the dataset…")
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def _make_worker(self, job: Any, on_error: Any = worker_error_handler) -> Any:
        """A napari worker for ``job`` (not started) whose errors are reported once, by ``on_error``
        (one line for user errors) instead of napari's traceback relay as well."""
        worker = make_worker(job)
        worker.errored.connect(on_error)
        worker.finished.connect(self._job_finished)
        return worker

    def _job_finished(self) -> None:
        self.finished_jobs += 1

    def cancel_training(self) -> None:
        """Ask the training loop to stop after the current iteration (it saves its checkpoint and
        raises :class:`~napari_retsam.progress.Cancelled`, whose partial result is shown)."""
        if self.train_worker is not None:
            self._stop_event.set()
            self.train_status.setText("cancelling: writing the checkpoint…")

    def _on_train_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            set_progress(self.progress, done, total)
        if not self._stop_event.is_set():  # "cancelling…" stays until the run has stopped
            self.train_status.setText(message)

    def _on_train_records(self, records: list) -> None:
        grids = [rec["grid"] for rec in records if rec.get("kind") == "grid"]
        if not grids:
            return
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = grids[-1]
        else:
            self.viewer.add_image(grids[-1], name=PREVIEW_LAYER, rgb=True)

    def _on_train_done(self, result: Any) -> None:
        """A finished run's :class:`~napari_retsam.gan.train.TrainResult` (``returned``), or a
        cancelled run's partial one (``Cancelled.partial``, via :func:`run_error_handler`)."""
        summary = _summary(result, self._train_total)
        self.last_train_result = summary
        self.checkpoint_edit.setText(summary["generator"])
        self.resume_edit.setText(summary["state"])
        if result.status == STOPPED:
            self.train_status.setText(f"cancelled at iteration {result.iteration}; resume from {summary['state']} "
                                      f"(filled in above); generator: {summary['generator']}")
            show_info(f"GAN training cancelled at iteration {result.iteration}; resume from {summary['state']}")
        else:
            self.train_status.setText(f"finished at iteration {result.iteration}; generator: {summary['generator']}")
            show_info(f"GAN training finished at iteration {result.iteration}")

    def _on_train_finished(self) -> None:
        self.train_worker = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    # --------------------------------------------------------- Generate tab
    def _build_generate_tab(self) -> QWidget:
        tab = QWidget(self)
        form = QFormLayout(tab)
        self.checkpoint_edit = QLineEdit(tab)
        self.n_spin = QSpinBox(tab)
        self.n_spin.setRange(1, 100_000)
        self.n_spin.setValue(8)
        self.seed_spin = QSpinBox(tab)
        self.seed_spin.setRange(0, 2**31 - 1)
        self.mask_layer_combo = QComboBox(tab)
        self.warp_check = QCheckBox("warp the masks (random flip/rotation + elastic)", tab)
        self.generate_button = QPushButton("Generate", tab)
        self.export_edit = QLineEdit(tab)
        self.overwrite_check = QCheckBox("overwrite an earlier export", tab)
        self.export_button = QPushButton("Export", tab)
        self.report_dataset_combo = QComboBox(tab)
        self.report_dataset_combo.addItems(list(DATASET_CHOICES))
        self.report_root_edit = QLineEdit(tab)
        self.report_split_combo = QComboBox(tab)
        self.report_split_combo.addItems(["train", "test", "all"])
        self.report_button = QPushButton("Report", tab)
        self.generate_progress = QProgressBar(tab)
        set_progress(self.generate_progress, 0, 1)
        self.generate_status = QLabel("", tab)
        self.generate_status.setWordWrap(True)
        self.report_text = QLabel("", tab)
        self.report_text.setWordWrap(True)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.report_figure = Figure(figsize=(6, 2.4), dpi=72)
        self.report_canvas = FigureCanvasQTAgg(self.report_figure)
        self.report_canvas.setMinimumHeight(180)

        form.addRow("Generator checkpoint", browse_row(self.checkpoint_edit, caption="Choose a generator checkpoint",
                                                       file_filter=CHECKPOINT_FILTER))
        form.addRow("Number of samples", self.n_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Conditional mask layer", self.mask_layer_combo)
        form.addRow(self.warp_check)
        form.addRow(self.generate_button)
        form.addRow("Export folder", browse_row(self.export_edit, directory=True, caption="Choose the export folder"))
        form.addRow(self.overwrite_check)
        form.addRow(self.export_button)
        form.addRow("Report: real dataset", self.report_dataset_combo)
        form.addRow("Folder", browse_row(self.report_root_edit, directory=True,
                                         caption="Choose the real dataset folder"))
        form.addRow("Split", self.report_split_combo)
        form.addRow(self.report_button)
        form.addRow(self.generate_progress)
        form.addRow(self.generate_status)
        form.addRow(self.report_text)
        form.addRow(self.report_canvas)
        self.generate_button.clicked.connect(self.generate)
        self.export_button.clicked.connect(self.export)
        self.report_button.clicked.connect(self.report)
        return tab

    def _refresh_layers(self, event: Any = None) -> None:
        names = [NO_LAYER] + [layer.name for layer in self.viewer.layers
                              if isinstance(layer, Labels) and layer.name != MASKS_LAYER]
        set_combo_items(self.mask_layer_combo, names)

    def _conditional_masks(self) -> np.ndarray | None:
        name = self.mask_layer_combo.currentText()
        if not name or name == NO_LAYER:
            return None
        if name not in self.viewer.layers:
            raise RetsamInputError(f"layer {name!r} no longer exists")
        data = np.asarray(self.viewer.layers[name].data)
        if data.ndim not in (2, 3):
            raise RetsamInputError(f"the mask layer must be H×W or N×H×W, got shape {data.shape}")
        return data > 0

    def _checkpoint_path(self) -> str:
        path = self.checkpoint_edit.text().strip()
        if not path:
            raise RetsamInputError("choose a generator checkpoint (generator_last.pt)")
        return path

    @property
    def generate_tab_busy(self) -> bool:
        """True while Generate or Report runs."""
        return self.generate_worker is not None or self.report_worker is not None

    def _check_generate_tab_idle(self) -> None:
        if self.generate_worker is not None:
            raise RetsamInputError("samples are being generated; wait for them")
        if self.report_worker is not None:
            raise RetsamInputError("the quality report is being computed; wait for it")

    def _start_generate_tab_job(self, worker: Any, message: str) -> None:
        """Busy state of the Generate tab while ``worker`` runs (main thread)."""
        worker.errored.connect(lambda exc: self.generate_status.setText(f"failed: {exc}"))
        worker.finished.connect(self._generate_tab_finished)
        for button in (self.generate_button, self.export_button, self.report_button):
            button.setEnabled(False)
        self.generate_progress.setRange(0, 0)  # busy indicator: neither job reports steps
        self.generate_status.setText(message)
        worker.start()

    def _generate_tab_finished(self) -> None:
        self.generate_worker = None
        self.report_worker = None
        for button in (self.generate_button, self.export_button, self.report_button):
            button.setEnabled(True)
        set_progress(self.generate_progress, 0, 1)

    @notify_user_errors
    def generate(self, *_: Any) -> Any:
        """Generate in a worker thread; the layers are written when it returns. Returns the worker."""
        prepare_torch_runtime()
        self._check_generate_tab_idle()
        from napari_retsam.gan.sample import check_count, check_seed

        from napari_retsam.gan.checkpoint import load_generator

        path = self._checkpoint_path()
        n = check_count(self.n_spin.value())
        seed = check_seed(self.seed_spin.value())
        masks = self._conditional_masks()
        ckpt = load_generator(path)  # checked here, so a wrong file or mode is reported at once
        if ckpt.mode == "conditional" and masks is None:
            raise RetsamInputError("this generator is conditional: choose a Labels layer with the vessel mask(s)")
        if ckpt.mode != "conditional" and masks is not None:
            raise RetsamInputError("this generator is not conditional (it makes its own masks); "
                                   f"set the mask layer to {NO_LAYER!r}")
        fovs = None
        if masks is not None:
            from napari_retsam.gan.sample import conditioning_masks

            stack = masks if masks.ndim == 3 else masks[None]
            whole = stack.shape[1:] == (ckpt.size, ckpt.size)
            if not whole and ckpt.config.unit != "patch":
                raise RetsamInputError(f"the mask layer is {masks.shape[-2]}×{masks.shape[-1]} but the generator "
                                       f"makes {ckpt.size}×{ckpt.size} images")
            if whole and stack.shape[0] not in (1, n):
                raise RetsamInputError(f"the mask layer holds {stack.shape[0]} masks; set the number of samples "
                                       f"to {stack.shape[0]} or use a single mask")
            # A patch generator takes patches cut from a larger mask (one rule: conditioning_masks).
            name = self.mask_layer_combo.currentText()
            masks, fovs, _ = conditioning_masks(ckpt, ("folder", [name] * len(stack), stack), n, seed,
                                                warp=self.warp_check.isChecked())

        def job():
            from napari_retsam.gan.sample import generate

            return generate(ckpt, n, seed, masks=masks, fovs=fovs)

        worker = self._make_worker(job)
        worker.returned.connect(lambda result: self._on_generated(result, path))
        self.generate_worker = worker
        self._start_generate_tab_job(worker, f"generating {n} samples…")
        return worker

    def _on_generated(self, generated: Any, path: str) -> None:
        self._generated = generated
        self._generated_checkpoint = path
        meta = {"gan_checkpoint": path, "gan_seed": generated.seed}
        if IMAGES_LAYER in self.viewer.layers:
            layer = self.viewer.layers[IMAGES_LAYER]
            layer.data = generated.images
            layer.metadata.update(meta)
        else:
            self.viewer.add_image(generated.images, name=IMAGES_LAYER, rgb=True, metadata=meta)
        labels = generated.masks.astype(np.uint8)
        if generated.masks_trained:
            if MASKS_LAYER in self.viewer.layers:
                self.viewer.layers[MASKS_LAYER].data = labels
            else:
                self.viewer.add_labels(labels, name=MASKS_LAYER, metadata=meta)
            self.generate_status.setText(f"{len(generated)} pairs generated with seed {generated.seed}")
        else:
            self.generate_status.setText("images generated; this generator was trained without vessel masks, "
                                         "so no mask layer was made and export is refused")
            from napari_retsam.widgets._common import show_warning

            show_warning("this generator was trained without vessel masks: its masks are untrained")

    @notify_user_errors
    def export(self, *_: Any) -> Path | None:
        """Export the last generated set; returns the manifest path."""
        prepare_torch_runtime()
        self._check_generate_tab_idle()
        from napari_retsam.gan.checkpoint import load_generator
        from napari_retsam.gan.sample import export_samples

        if self._generated is None or self._generated_checkpoint is None:
            raise RetsamInputError("generate samples first, then export them")
        out = self.export_edit.text().strip()
        if not out:
            raise RetsamInputError("choose an export folder")
        ckpt = load_generator(self._generated_checkpoint)
        settings = {"mode": ckpt.mode, "iteration": ckpt.iteration, "dataset": ckpt.dataset,
                    "config": ckpt.config.to_dict()}
        manifest = export_samples(self._generated, out, overwrite=self.overwrite_check.isChecked(),
                                  checkpoint_path=self._generated_checkpoint, settings=settings)
        self.generate_status.setText(f"exported {len(self._generated)} pairs to {out}")
        show_info(f"exported {len(self._generated)} pairs to {out}")
        return manifest

    @notify_user_errors
    def report(self, *_: Any) -> Any:
        """Compute the quality report in a worker thread; returns the worker."""
        self._check_generate_tab_idle()
        path = self._checkpoint_path()
        root = self.report_root_edit.text().strip()
        if not root:
            raise RetsamInputError("choose the real dataset folder to compare with")
        dataset, split = self.report_dataset_combo.currentText(), self.report_split_combo.currentText()
        seed = self.seed_spin.value()

        def job():
            prepare_torch_runtime()
            from napari_retsam.data import open_dataset
            from napari_retsam.gan.checkpoint import load_generator
            from napari_retsam.gan.report import quality_report, real_reference

            ckpt = load_generator(path)
            real = real_reference(open_dataset(dataset, root, split=split), ckpt, seed=seed)
            return quality_report(ckpt, real, seed=seed)

        worker = self._make_worker(job)
        worker.returned.connect(self._on_report)
        self.report_worker = worker
        self._start_generate_tab_job(worker, "computing the quality report…")
        return worker

    def _on_report(self, report: dict[str, Any]) -> None:
        from napari_retsam.gan.report import report_figure, report_summary_lines

        self.last_report = report
        self.report_text.setText("\n".join(report_summary_lines(report)))
        report_figure(report, self.report_figure)
        self.report_canvas.draw_idle()
        self.generate_status.setText("quality report ready")
