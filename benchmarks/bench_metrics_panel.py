"""Benchmark of the metrics panel on the DRIVE test set (not collected by pytest).

Prediction: the Frangi baseline probability of each of the 20 DRIVE test images,
stacked as a 20×584×565 layer; gold standard: 1st_manual; FOV: the shipped masks.

Measured side by side in one run (best of ``--repeat``):

1. core cost, no Qt: ``evaluate_set`` alone (per-slice + pooled metrics) versus
   the panel's full ``compute_panel`` (table rows + pooled ROC curve + error
   overlay), for the stack and for one image;
2. with ``--viewer`` (needs a display: run under ``xvfb-run -a``): the panel in a
   napari viewer, computing the stack on the UI thread versus in a worker
   thread; reported are the time to result and the longest stall of the Qt
   event loop meanwhile (a 5 ms heartbeat timer records the largest gap between
   its ticks), i.e. how long the viewer freezes.

Usage::

    OMP_NUM_THREADS=1 xvfb-run -a python benchmarks/bench_metrics_panel.py \\
        --root ../shared/data/DRIVE --viewer
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_retsam.baseline import frangi_probability
from napari_retsam.data import open_dataset
from napari_retsam.metrics import evaluate_set
from napari_retsam.metrics.panel import PanelRequest, PredictionInput, compute_panel


def best_of(repeat: int, func) -> float:  # noqa: ANN001 - a zero-argument callable
    """Smallest wall-clock time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def load_drive(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Frangi probability stack float32, gold bool stack, FOV bool stack) of DRIVE test."""
    dataset = open_dataset("drive", root, split="test", annotator=1)
    probs, golds, fovs = [], [], []
    for sample in dataset:
        probs.append(frangi_probability(sample.image, sample.fov).astype(np.float32))
        golds.append(sample.gold)
        fovs.append(sample.fov)
    return np.stack(probs), np.stack(golds), np.stack(fovs)


def core_benchmark(prob: np.ndarray, gold: np.ndarray, fov: np.ndarray, repeat: int) -> None:
    n = prob.shape[0]
    stack_request = PanelRequest(
        predictions=(PredictionInput("frangi", prob),), gold=gold, fov=fov, fov_name="mask",
        per_image=True, overlay="frangi",
    )
    one_request = PanelRequest(
        predictions=(PredictionInput("frangi", prob[0]),), gold=gold[0], fov=fov[0], fov_name="mask",
        overlay="frangi",
    )
    t_engine = best_of(repeat, lambda: evaluate_set(list(prob), list(gold), list(fov)))
    t_panel = best_of(repeat, lambda: compute_panel(stack_request))
    t_engine1 = best_of(repeat, lambda: evaluate_set([prob[0]], [gold[0]], [fov[0]]))
    t_panel1 = best_of(repeat, lambda: compute_panel(one_request))
    result = compute_panel(stack_request)
    pooled = result.rows[n]
    print(f"DRIVE test: {n} images, {int(fov.sum()):,} FOV pixels; Frangi baseline, pooled: "
          f"AUC {pooled.values['auc']:.4f}, Se {pooled.values['se']:.4f}, Sp {pooled.values['sp']:.4f}, "
          f"F1 {pooled.values['f1']:.4f}")
    print("| input | evaluate_set alone (s) | panel compute_panel (s) | ratio panel/engine |")
    print("|---|---|---|---|")
    print(f"| stack {prob.shape[0]}×{prob.shape[1]}×{prob.shape[2]} | {t_engine:.3f} | {t_panel:.3f} | "
          f"{t_panel / t_engine:.2f} |")
    print(f"| one image {prob.shape[1]}×{prob.shape[2]} | {t_engine1:.3f} | {t_panel1:.3f} | "
          f"{t_panel1 / t_engine1:.2f} |")


def viewer_benchmark(prob: np.ndarray, gold: np.ndarray, fov: np.ndarray, repeat: int) -> None:
    import napari
    from qtpy.QtCore import QElapsedTimer, QEventLoop, QTimer

    from napari_retsam.widgets.metrics_panel import MetricsPanel

    viewer = napari.Viewer(show=False)
    viewer.add_image(prob, name="frangi prob")
    viewer.add_labels(gold.astype(np.uint8), name="gold")
    viewer.add_labels(fov.astype(np.uint8), name="fov")
    panel = MetricsPanel(viewer)
    panel.auto_check.setChecked(False)
    panel.set_selection(predictions=["frangi prob"], gold="gold", fov="fov", overlay="frangi prob")

    def run_once(use_worker: bool) -> tuple[float, float]:
        panel.worker_min_pixels = 0 if use_worker else 10**12
        loop = QEventLoop()
        clock = QElapsedTimer()
        last = [0.0]
        stall = [0.0]

        def tick() -> None:
            now = clock.nsecsElapsed() / 1e9
            stall[0] = max(stall[0], now - last[0])
            last[0] = now

        heartbeat = QTimer()
        heartbeat.setInterval(5)
        heartbeat.timeout.connect(tick)
        panel.computed.connect(loop.quit)
        heartbeat.start()
        clock.start()
        QTimer.singleShot(0, panel.compute)
        loop.exec_()
        elapsed = clock.nsecsElapsed() / 1e9
        heartbeat.stop()
        panel.computed.disconnect(loop.quit)
        return elapsed, stall[0]

    rows = []
    for use_worker in (False, True):
        runs = [run_once(use_worker) for _ in range(repeat)]
        rows.append((use_worker, min(r[0] for r in runs), max(r[1] for r in runs)))
    print()
    print("| panel in napari, stack | time to result (s) | longest UI freeze (s) |")
    print("|---|---|---|")
    for use_worker, elapsed, stall in rows:
        where = "worker thread" if use_worker else "UI thread"
        print(f"| {where} | {elapsed:.3f} | {stall:.3f} |")
    print(f"freeze ratio UI thread / worker thread: {rows[0][2] / max(rows[1][2], 1e-9):.1f}×")
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/DRIVE"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--viewer", action="store_true", help="also time the panel in a napari viewer")
    args = parser.parse_args()
    prob, gold, fov = load_drive(args.root)
    core_benchmark(prob, gold, fov, args.repeat)
    if args.viewer:
        viewer_benchmark(prob, gold, fov, args.repeat)


if __name__ == "__main__":
    main()
