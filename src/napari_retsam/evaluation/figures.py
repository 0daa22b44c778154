"""Figures for reports: error overlays and ROC plots as PNG files (no Qt).

matplotlib is imported inside the functions with the non-interactive ``Agg``
backend, so the CLI can draw figures on a headless server.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_retsam.io_utils import atomic_write_bytes
from napari_retsam.metrics.panel import ERROR_CODES, error_codes

#: RGB colours of the error overlay (also used in the README legend).
OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "TP": (0, 200, 0),     # vessel found
    "FP": (230, 0, 200),   # background called vessel
    "FN": (30, 120, 255),  # vessel missed
}


def error_overlay(image: np.ndarray, pred: np.ndarray, gold: np.ndarray,
                  fov: np.ndarray | None = None, alpha: float = 0.75) -> np.ndarray:
    """RGB uint8 overlay: TP green, FP magenta, FN blue over a dimmed image.

    ``pred`` and ``gold`` are binary H×W masks; pixels outside ``fov`` are not
    coloured. Which pixel is TP/FP/FN is :func:`napari_retsam.metrics.panel.error_codes`,
    the metrics panel's overlay rule. ``alpha`` is the opacity of the colours (0..1).
    """
    codes = error_codes(np.asarray(pred, dtype=bool), np.asarray(gold, dtype=bool), fov)  # the panel's rule
    base = np.asarray(image)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    base = base[..., :3].astype(np.float32)
    if base.max(initial=0) > 1.5:
        base = base / 255.0
    out = base * 0.6
    for name, code in ERROR_CODES.items():
        m = codes == code
        colour = np.array(OVERLAY_COLOURS[name], np.float32) / 255.0
        out[m] = (1 - alpha) * out[m] + alpha * colour
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or grey) uint8 array as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def save_roc_plot(path: str | Path, curves: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]],
                  title: str = "ROC (FOV pixels, pooled)") -> Path:
    """Plot ROC curves ``(label, fpr, tpr, auc)`` into a PNG file."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    for label, fpr, tpr, auc in curves:
        name = label if auc is None else f"{label} (AUC {auc:.3f})"
        ax.plot(np.asarray(fpr), np.asarray(tpr), lw=1.5, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 − specificity (FPR)")
    ax.set_ylabel("sensitivity (TPR)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())
