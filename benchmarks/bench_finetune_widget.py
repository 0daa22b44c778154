"""Fine-tuning throughput in the widget's napari worker thread vs headless (the CLI's call).

Run under a (virtual) X display, side by side in one process:

    OMP_NUM_THREADS=2 xvfb-run -a python benchmarks/bench_finetune_widget.py [--steps 300] [--model tiny]

1. headless: ``napari_retsam.training.runner.finetune`` in the main thread (what
   ``retsam finetune`` runs), no viewer work;
2. widget: ``FinetuneWidget.start()`` in a napari viewer — training in a worker
   thread, progress bar and live matplotlib plot throttled to ≤ 1 Hz, while the
   Qt event loop runs;
3. widget, un-throttled (for the investigation): progress and plot redraws
   after every step (``UI_INTERVAL_S = PLOT_INTERVAL_S = 0``), the pattern that
   makes worker training slow.

Each run trains the same model on the same synthetic images with the same seed
for the same number of steps; throughput = optimizer steps / time inside the
steps (``TrainResult.steps_per_second``), plus end-to-end wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model", default="tiny", help="tiny (default) or vit_b (slow on CPU)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each mode")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    from napari_retsam.data import write_synthetic_folder
    from napari_retsam.sam.checkpoints import save_official_style
    from napari_retsam.sam.models import build_sam
    from napari_retsam.training.config import FinetuneConfig
    from napari_retsam.training.runner import DataOptions, finetune
    from napari_retsam.widgets import finetune_widget as fw

    tmp = Path(tempfile.mkdtemp(prefix="bench_ft_widget_"))
    data = write_synthetic_folder(tmp / "data", args.images, seed=0, size=args.size)
    ckpt = save_official_style(build_sam(args.model, seed=0), tmp / f"sam_{args.model}.pth")
    threads = torch.get_num_threads()

    def config(out: str) -> FinetuneConfig:
        return FinetuneConfig(model_type=args.model, checkpoint=str(ckpt), epochs=10_000, max_steps=args.steps,
                              batch_size=2, lr=1e-4, n_views=1, tile=0, val_fraction=0.0, device="cpu")

    def headless(k: int):
        start = time.perf_counter()
        result = finetune(DataOptions(dataset="folder", root=data, split="all"), config(""), tmp / f"h{k}")
        return result, time.perf_counter() - start

    viewer = napari.Viewer(show=True)
    widget = fw.FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune SAM")
    app = QApplication.instance()

    default_interval = fw.UI_INTERVAL_S

    def in_widget(k: int, interval: float):
        fw.UI_INTERVAL_S = interval
        fw.PLOT_INTERVAL_S = 1.0 if interval else 0.0
        widget.dataset_combo.setCurrentText("folder")
        widget.dataset_root.setText(str(data))
        widget.split_combo.setCurrentText("all")
        widget.val_split_combo.setCurrentIndex(0)
        widget.val_fraction.setValue(0.0)
        widget.model_type_combo.setCurrentText(args.model)
        widget.checkpoint_edit.setText(str(ckpt))
        widget.out_edit.setText(str(tmp / f"w{k}_{interval}"))
        widget.device_combo.setCurrentText("cpu")
        widget.epochs_spin.setValue(10_000)
        widget.max_steps_spin.setValue(args.steps)
        widget.batch_spin.setValue(2)
        widget.lr_spin.setValue(1e-4)
        widget.views_spin.setValue(1)
        widget.tile_spin.setValue(0)
        widget.last_result = None
        loop = QEventLoop()
        start = time.perf_counter()
        worker = widget.start()
        assert worker is not None, "widget refused to start"
        worker.finished.connect(loop.quit)
        loop.exec_()  # the Qt event loop, as in a running napari session (idle waits release the GIL)
        app.processEvents()
        return widget.last_result, time.perf_counter() - start

    rows: dict[str, list[tuple[float, float]]] = {"headless (CLI call)": [], "widget worker, <=1 Hz UI": [],
                                                   "widget worker, UI every step": []}
    for k in range(args.repeats):
        r, wall = headless(k)
        rows["headless (CLI call)"].append((r.steps_per_second, wall))
        r, wall = in_widget(k, default_interval)
        rows["widget worker, <=1 Hz UI"].append((r.steps_per_second, wall))
        r, wall = in_widget(k, 0.0)
        rows["widget worker, UI every step"].append((r.steps_per_second, wall))
    fw.UI_INTERVAL_S, fw.PLOT_INTERVAL_S = default_interval, 1.0

    print(f"model {args.model}, CPU, torch threads {threads}, {args.steps} steps, batch 2, "
          f"{args.images} images {args.size}×{args.size}, {args.repeats} alternating repeats (median)")
    print(f"{'mode':<32}{'steps/s':>10}{'wall s':>9}{'ratio':>8}")
    med = {name: sorted(v)[len(v) // 2] for name, v in rows.items()}
    base = med["headless (CLI call)"][0]
    for name, (rate, wall) in med.items():
        print(f"{name:<32}{rate:>10.2f}{wall:>9.1f}{rate / base:>8.2f}")
    print(f"widget/headless throughput ratio: {med['widget worker, <=1 Hz UI'][0] / base:.2f}")
    viewer.close()


if __name__ == "__main__":
    main()
