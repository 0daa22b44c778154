"""Dock widget: fine-tune SAM (fusion block + mask decoder, BSD loss) from the viewer.

Choose data (a dataset folder and its kind, a synthetic/GAN folder mixed in at a
ratio, and/or image + Labels layer pairs, single images or stacks), the
hyper-parameters, the base model (type + checkpoint file) and an output folder;
"Train" runs :func:`napari_retsam.training.runner.finetune` in a napari worker
thread with a progress bar (steps and epochs), a live plot of the training loss
and the validation AUC/F1, and "Cancel", which stops after the current step and
keeps ``last.pt``. When a run ends its ``best.pt`` is offered to the
segmentation widget through :mod:`napari_retsam.widgets._models`.

Throughput in the worker thread. Training in a Qt worker thread can run far
slower than headless for three reasons, each handled here:

1. *intra-op threads*: torch's CPU thread pool size is per calling thread
   (OpenMP's ``nthreads-var`` is a thread-local setting); a fresh worker thread
   can start with a different count than the main thread — too many threads
   compete with Qt's and vispy's threads (over-subscription), too few waste
   cores. The worker calls ``torch.set_num_threads(n)`` first, with ``n`` the
   main thread's setting (or the user's choice);
2. *UI updates on every step*: redrawing a progress bar and a matplotlib figure
   per step costs milliseconds each on the GUI thread, and every cross-thread
   signal wakes the event loop; progress is throttled to at most one update per
   second (step records are buffered and delivered in batches), the plot updates
   its lines' data and re-renders at most once per second. Measured causes, in
   a napari window under Xvfb (software OpenGL): the *busy* progress bar
   (range 0–0) animates ~30 repaints/s and alone cost ~25 % of the worker's
   throughput; a repaint of any widget in the window composites the whole
   window with the vispy canvas, ~30 ms each, so 5 updates/s still cost ~15 %
   and per-step updates ~80 %; text changes in labels that change their size
   hint re-lay out the window. Here: no busy indicator, fixed-size labels,
   ≤ 1 Hz updates;
3. *GIL contention from frequent yields*: a generator worker that yields per
   step hands the GIL to the GUI thread each time; here the worker is a plain
   function and talks to the GUI only through the throttled relay.

``benchmarks/bench_finetune_widget.py`` measures the worker's throughput against
the headless call, side by side.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_retsam._torch_runtime import prepare_torch_runtime
from napari_retsam.errors import RetsamInputError
from napari_retsam.options import DEVICE_CHOICES, USER_MODEL_TYPES
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.widgets._common import (
    ProgressRelay,
    browse_row,
    dock_as_tab,
    make_worker,
    notify_user_errors,
    run_error_handler,
    set_progress,
    show_info,
)
from napari_retsam.widgets._models import RegisteredModel, register_model

_DEFAULTS = FinetuneConfig()  # the recipe's defaults (training.config imports no torch)

__all__ = ["FinetuneWidget", "NO_DATASET", "PLOT_INTERVAL_S", "UI_INTERVAL_S"]

NO_DATASET = "(none)"
#: Minimum seconds between two progress updates from the worker (≤ 1 Hz; see the module docstring).
UI_INTERVAL_S = 1.0
#: Minimum seconds between two re-renderings of the live plot.
PLOT_INTERVAL_S = 1.0


class _LivePlot(QWidget):
    """Matplotlib figure: training loss per step (left axis), validation AUC and F1 per epoch (right).

    The lines are created once and only their data change; the canvas is
    re-rendered at most once per :data:`PLOT_INTERVAL_S` (a redraw of the figure
    costs tens of milliseconds of GUI-thread time holding the GIL, which a
    training worker thread would otherwise lose).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.ax_loss = self.figure.add_subplot(111)
        self.ax_val = self.ax_loss.twinx()
        (self.loss_line,) = self.ax_loss.plot([], [], color="tab:blue", lw=1, label="train loss")
        (self.auc_line,) = self.ax_val.plot([], [], "o-", color="tab:red", ms=3, label="val AUC")
        (self.f1_line,) = self.ax_val.plot([], [], "s--", color="tab:green", ms=3, label="val F1")
        self.ax_loss.set_xlabel("step")
        self.ax_loss.set_ylabel("loss", color="tab:blue")
        self.ax_val.set_ylabel("validation")
        self.ax_val.yaxis.set_label_position("right")
        self.ax_val.set_ylim(0, 1)
        self.ax_val.legend(handles=[self.loss_line, self.auc_line, self.f1_line], loc="lower left",
                           fontsize="x-small")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.redraw)
        self._last_draw = 0.0
        self.clear()

    def clear(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.aucs: list[float] = []
        self.f1s: list[float] = []
        self.redraw()

    def add(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            if rec.get("kind") == "step":
                self.steps.append(int(rec["step"]))
                self.losses.append(float(rec["loss"]))
            elif rec.get("kind") == "val":
                auc, f1 = rec.get("auc"), rec.get("f1")
                self.val_steps.append(int(rec["step"]))
                self.aucs.append(float("nan") if auc is None else float(auc))
                self.f1s.append(float("nan") if f1 is None else float(f1))
        wait = PLOT_INTERVAL_S - (time.monotonic() - self._last_draw)
        if wait <= 0:
            self.redraw()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def redraw(self) -> None:
        self._last_draw = time.monotonic()
        self.loss_line.set_data(self.steps, self.losses)
        self.auc_line.set_data(self.val_steps, self.aucs)
        self.f1_line.set_data(self.val_steps, self.f1s)
        # The x range is set explicitly on every redraw, from the training steps and the
        # validation points together: the two axes share x (twinx), and an explicit
        # set_xlim on either switches x autoscaling off for both, which froze the axis
        # after the first draw.
        xs = self.steps + self.val_steps
        if xs:
            lo, hi = float(min(xs)), float(max(xs))
            pad = max(0.5, 0.03 * (hi - lo))
            self.ax_loss.set_xlim(lo - pad, hi + pad)
        self.ax_loss.relim()
        self.ax_loss.autoscale_view(scalex=False, scaley=True)
        self.canvas.draw_idle()


class FinetuneWidget(QWidget):
    """Fine-tune SAM's fusion block and mask decoder on vessel annotations."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        dock_as_tab(self)  # all the plugin's widgets share one tabbed dock (see _common.dock_as_tab)
        prepare_torch_runtime()  # torch may load triton from any later call (see napari_retsam._torch_runtime)
        self.viewer = napari_viewer
        self._worker: Any = None
        self._stop = threading.Event()
        self._pairs: list[tuple[str, str]] = []
        self.last_result: Any = None
        self._last_label = 0.0
        self.torch_threads: int | None = None  # None: the main thread's torch setting
        self._relay = ProgressRelay()
        self._relay.progressed.connect(self._on_progress)
        self._relay.records.connect(self._on_records)

        # data
        self.dataset_combo = QComboBox()
        self.dataset_combo.addItems([NO_DATASET, "drive", "stare", "chase", "folder"])
        self.dataset_root = QLineEdit()
        self.split_combo = QComboBox()
        self.split_combo.addItems(["train", "test", "all"])
        self.val_split_combo = QComboBox()
        self.val_split_combo.addItems(["(hold out)", "test", "train", "all"])
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 100000)
        self.limit_spin.setSpecialValueText("all")
        self.synthetic_root = QLineEdit()
        self.synthetic_ratio = QDoubleSpinBox()
        self.synthetic_ratio.setRange(0.0, 0.95)
        self.synthetic_ratio.setSingleStep(0.05)
        self.synthetic_ratio.setValue(0.5)
        self.synthetic_ratio.setToolTip("share of the training pixels taken from the synthetic folder "
                                         "(a 256-px GAN patch weighs one tile, a whole fundus several)")
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.add_pair_button = QPushButton("Add pair")
        self.clear_pairs_button = QPushButton("Clear")
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(60)

        # hyper-parameters
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10000)
        self.epochs_spin.setValue(_DEFAULTS.epochs)
        self.max_steps_spin = QSpinBox()
        self.max_steps_spin.setRange(0, 10_000_000)
        self.max_steps_spin.setSpecialValueText("no limit")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(_DEFAULTS.batch_size)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-5)
        self.lr_spin.setValue(_DEFAULTS.lr)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(["bsd", "bsd+bce"])
        self.loss_combo.setCurrentText(_DEFAULTS.loss)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("whole image")
        self.tile_spin.setValue(_DEFAULTS.tile)
        self.views_spin = QSpinBox()
        self.views_spin.setRange(1, 64)
        self.views_spin.setValue(_DEFAULTS.n_views)
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.9)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(_DEFAULTS.val_fraction)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.full_check = QCheckBox("full fine-tuning (encoder too)")

        # model and output
        self.model_type_combo = QComboBox()
        self.model_type_combo.addItems(list(USER_MODEL_TYPES))
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("bundled LiteMedSAM weights / official vit_* file when empty")
        self.out_edit = QLineEdit()
        self.resume_check = QCheckBox("resume from last.pt in the output folder")

        # run
        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.epoch_label = QLabel("")
        self.status_label = QLabel("")
        # Labels whose text changes during training must not change their size hint:
        # a new hint re-lays out the main window (and resizes/redraws the canvas)
        for label in (self.epoch_label, self.status_label):
            label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.plot = _LivePlot()

        data_box = QGroupBox("data")
        data_form = QFormLayout(data_box)
        data_form.addRow("dataset", self.dataset_combo)
        data_form.addRow("dataset folder", browse_row(self.dataset_root, directory=True,
                                                      caption="Choose the dataset folder"))
        data_form.addRow("training split", self.split_combo)
        data_form.addRow("validation split", self.val_split_combo)
        data_form.addRow("limit", self.limit_spin)
        data_form.addRow("synthetic folder", browse_row(self.synthetic_root, directory=True,
                                                        caption="Choose the synthetic pairs folder"))
        data_form.addRow("synthetic ratio", self.synthetic_ratio)
        data_form.addRow("image layer", self.image_combo)
        data_form.addRow("labels layer", self.labels_combo)
        pair_row = QHBoxLayout()
        pair_row.addWidget(self.add_pair_button)
        pair_row.addWidget(self.clear_pairs_button)
        data_form.addRow("layer pairs", pair_row)
        data_form.addRow(self.pairs_list)
        hyper_box = QGroupBox("training")
        hyper = QFormLayout(hyper_box)
        hyper.addRow("epochs", self.epochs_spin)
        hyper.addRow("max steps", self.max_steps_spin)
        hyper.addRow("batch size", self.batch_spin)
        hyper.addRow("learning rate", self.lr_spin)
        hyper.addRow("loss", self.loss_combo)
        hyper.addRow("tile (px)", self.tile_spin)
        hyper.addRow("augmented views", self.views_spin)
        hyper.addRow("validation fraction", self.val_fraction)
        hyper.addRow("device", self.device_combo)
        hyper.addRow(self.full_check)
        model_box = QGroupBox("base model and output")
        model_form = QFormLayout(model_box)
        model_form.addRow("model type", self.model_type_combo)
        model_form.addRow("checkpoint", browse_row(self.checkpoint_edit, caption="Choose a SAM checkpoint",
                                                   file_filter="PyTorch checkpoints (*.pth *.pt);;All files (*)"))
        model_form.addRow("output folder", browse_row(self.out_edit, directory=True,
                                                      caption="Choose the output folder"))
        model_form.addRow(self.resume_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        # The settings scroll (they need ~1000 px), so the buttons, progress and the
        # live plot stay visible in a dock of any height.
        settings = QWidget()
        settings_layout = QVBoxLayout(settings)
        settings_layout.setContentsMargins(0, 0, 0, 0)
        for box in (data_box, hyper_box, model_box):
            settings_layout.addWidget(box)
        settings_layout.addStretch(1)
        self.settings_scroll = QScrollArea()
        self.settings_scroll.setWidgetResizable(True)
        self.settings_scroll.setFrameShape(QFrame.NoFrame)
        self.settings_scroll.setWidget(settings)
        self.settings_scroll.setMinimumHeight(200)
        self.plot.setMinimumHeight(220)
        layout = QVBoxLayout(self)
        layout.addWidget(self.settings_scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.epoch_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot)

        self.train_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.add_pair_button.clicked.connect(lambda: self.add_pair())
        self.clear_pairs_button.clicked.connect(self.clear_pairs)
        layers = self.viewer.layers
        for emitter in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            emitter.connect(self.refresh_choices)
        self.refresh_choices()

    # -- layers ---------------------------------------------------------------
    def refresh_choices(self, *_: Any) -> None:
        """Re-list the Image and Labels layers."""
        images = [ly.name for ly in self.viewer.layers if isinstance(ly, Image)]
        labels = [ly.name for ly in self.viewer.layers if isinstance(ly, Labels)]
        for combo, names in ((self.image_combo, images), (self.labels_combo, labels)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)

    @notify_user_errors
    def add_pair(self, image: str | None = None, labels: str | None = None) -> None:
        """Add an (image layer, Labels layer) pair to the training data."""
        image = image or self.image_combo.currentText()
        labels = labels or self.labels_combo.currentText()
        if not image or not labels:
            raise RetsamInputError("choose an image layer and a Labels layer to pair")
        for name in (image, labels):
            if name not in self.viewer.layers:
                raise RetsamInputError(f"no layer named {name!r}")
        self._pairs.append((image, labels))
        self.pairs_list.addItem(f"{image}  +  {labels}")

    def clear_pairs(self) -> None:
        self._pairs.clear()
        self.pairs_list.clear()

    # -- options --------------------------------------------------------------
    def _options_and_config(self) -> tuple[Any, Any, Path, Path | None]:
        from napari_retsam.training.config import FinetuneConfig
        from napari_retsam.training.runner import DataOptions, layer_pairs

        dataset = self.dataset_combo.currentText()
        dataset = None if dataset == NO_DATASET else dataset
        val_split = self.val_split_combo.currentText()
        val_split = None if val_split.startswith("(") else val_split
        images, labels = [], []
        for image_name, labels_name in self._pairs:
            if image_name not in self.viewer.layers or labels_name not in self.viewer.layers:
                raise RetsamInputError(f"layer pair {image_name!r} + {labels_name!r}: a layer was removed")
            images.append(np.asarray(self.viewer.layers[image_name].data))
            labels.append(np.asarray(self.viewer.layers[labels_name].data))
        synthetic = self.synthetic_root.text().strip()
        options = DataOptions(
            dataset=dataset, root=self.dataset_root.text().strip() or None, split=self.split_combo.currentText(),
            limit=self.limit_spin.value(), val_split=val_split if dataset else None,
            synthetic=[synthetic] if synthetic else [], synthetic_ratio=self.synthetic_ratio.value(),
            pairs=layer_pairs(images, labels),
        )
        if not (options.dataset or options.synthetic or options.pairs):
            raise RetsamInputError("no training data: choose a dataset folder, a synthetic folder or layer pairs")
        if options.dataset and not options.root:
            raise RetsamInputError("choose the dataset folder")
        from napari_retsam.training.data import items_from_arrays

        for k, (image, mask) in enumerate(options.pairs):  # shape checks now, in the GUI thread
            items_from_arrays(image, mask, prefix=f"{self._pairs[k][0]}+{self._pairs[k][1]}")
        out_text = self.out_edit.text().strip()
        if not out_text:
            raise RetsamInputError("choose an output folder for the checkpoints")
        out = Path(out_text).expanduser()
        checkpoint = self.checkpoint_edit.text().strip() or None
        from napari_retsam.sam.device import select_device

        device = str(select_device(self.device_combo.currentText()))
        config = FinetuneConfig(
            model_type=self.model_type_combo.currentText(), checkpoint=checkpoint,
            full_finetune=self.full_check.isChecked(), epochs=self.epochs_spin.value(),
            max_steps=self.max_steps_spin.value(), batch_size=self.batch_spin.value(), lr=self.lr_spin.value(),
            loss=self.loss_combo.currentText(), tile=self.tile_spin.value(), n_views=self.views_spin.value(),
            val_fraction=0.0 if (dataset and val_split) else self.val_fraction.value(), device=device,
        )
        resume = out / "last.pt" if self.resume_check.isChecked() else None
        if resume is not None and not resume.is_file():
            raise RetsamInputError(f"nothing to resume: {resume} does not exist")
        return options, config, out, resume

    # -- running --------------------------------------------------------------
    def _job(self, options: Any, config: Any, out: Path, resume: Path | None, threads: int) -> Any:
        """Runs in the worker thread: set torch's thread count, train, relay throttled updates."""
        prepare_torch_runtime()  # before the optimizer imports torch._dynamo -> triton (see _torch_runtime)
        import torch

        from napari_retsam.training.runner import finetune

        torch.set_num_threads(threads)
        # at most one update per UI_INTERVAL_S; notes and divergence warnings at once
        updates = self._relay.throttled(UI_INTERVAL_S, urgent=lambda rec: rec.get("kind") in ("note", "diverged"))
        try:
            return finetune(options, config, out, resume=resume, progress=updates.progress,
                            on_event=updates.record, should_stop=self._stop.is_set)
        finally:  # also when Stop ends the run with Cancelled
            updates.flush()

    @notify_user_errors
    def start(self) -> Any:
        """Read the choices (main thread) and start training in a worker thread; returns the worker."""
        if self._worker is not None:
            raise RetsamInputError("a training run is already going; cancel it first")
        prepare_torch_runtime()  # first thing before any torch work (see napari_retsam._torch_runtime)
        options, config, out, resume = self._options_and_config()
        import torch

        threads = self.torch_threads or torch.get_num_threads()
        self._stop.clear()
        self.plot.clear()
        # not the busy indicator (range 0, 0): its animation repaints ~30 times a second on
        # the GUI thread and cost a quarter of the worker's throughput in the benchmark
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label.setText("preparing data and embeddings…")
        self.epoch_label.setText("")
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._config = config
        worker = make_worker(self._job, options, config, out, resume, threads)
        worker.returned.connect(self._on_returned)
        # Stop ends the run with Cancelled: its partial result is shown like a finished one
        worker.errored.connect(run_error_handler(self._on_returned, self.status_label))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the run to stop after the current step (``last.pt`` keeps the progress).

        Cooperative only (the loop polls the flag after every micro-batch): the
        worker is not ``quit()``; the run raises
        :class:`~napari_retsam.progress.Cancelled`, whose ``partial`` result is
        shown like a finished one.
        """
        self._stop.set()
        self.status_label.setText("stopping after the current step…")

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            set_progress(self.progress_bar, done, total)
        now = time.monotonic()
        if now - self._last_label >= PLOT_INTERVAL_S or (total and done >= total):
            self._last_label = now
            self.status_label.setText(message)

    def _on_records(self, records: list) -> None:
        self.plot.add(records)
        vals = [rec for rec in records if rec.get("kind") == "val"]
        if vals:
            rec = vals[-1]
            auc = rec.get("auc")
            text = f"epoch {rec['epoch']}: train loss {rec['train_loss']:.4f}"
            if auc is not None:
                text += f", val AUC {auc:.4f}, F1 {rec.get('f1', float('nan')):.4f}"
            self.epoch_label.setText(text)

    def _on_returned(self, result: Any) -> None:
        self.last_result = result
        self.status_label.setText(f"{result.message}; checkpoints in {result.out_dir}")
        self.status_label.setToolTip(self.status_label.text())
        best = result.best_path
        if best.is_file():
            config = self._config
            base = Path(config.checkpoint) if config.checkpoint else None
            entry = RegisteredModel(
                name=f"{result.out_dir.name} ({config.model_type}, fine-tuned)", checkpoint=best,
                model_type=config.model_type, base_checkpoint=base, metrics=dict(result.metrics),
            )
            register_model(entry)
            show_info(f"fine-tuned model {entry.name} is now offered in the segmentation widget")

    def _on_finished(self) -> None:
        self._worker = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
