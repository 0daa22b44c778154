"""The ROC plot of the metrics panel: a matplotlib figure inside a Qt canvas.

One curve per probability prediction (false-positive rate on x, true-positive
rate = sensitivity on y, both in [0, 1]), the AUC of each curve in the legend,
and the chance diagonal as a dotted grey reference that is not counted as a curve.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from napari_retsam.metrics.panel import RocCurve

__all__ = ["RocCanvas"]


class RocCanvas(FigureCanvasQTAgg):
    """A small ROC plot; call :meth:`plot` with the curves to show."""

    def __init__(self, parent=None) -> None:  # noqa: ANN001 - a QWidget or None
        figure = Figure(figsize=(3.2, 2.6), dpi=90, layout="constrained")
        super().__init__(figure)
        if parent is not None:
            self.setParent(parent)
        self.axes = figure.add_subplot(1, 1, 1)
        self._curve_lines: list = []
        self.plot([])

    @property
    def n_curves(self) -> int:
        """Number of ROC curves drawn (the chance diagonal not counted)."""
        return len(self._curve_lines)

    @property
    def legend_labels(self) -> list[str]:
        """Legend text of each drawn curve, e.g. ``"prob (AUC 0.912)"``."""
        return [line.get_label() for line in self._curve_lines]

    def plot(self, curves: Sequence[RocCurve], message: str = "") -> None:
        """Replace the plot by ``curves``; ``message`` is shown when there are none."""
        ax = self.axes
        ax.clear()
        ax.plot([0.0, 1.0], [0.0, 1.0], linestyle=":", color="0.6", linewidth=1.0)
        self._curve_lines = []
        for curve in curves:
            (line,) = ax.plot(curve.fpr, curve.tpr, linewidth=1.5, label=curve.label)
            self._curve_lines.append(line)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("false-positive rate (1 − Sp)", fontsize=8)
        ax.set_ylabel("true-positive rate (Se)", fontsize=8)
        ax.tick_params(labelsize=7)
        if self._curve_lines:
            ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
        else:
            text = message or "no probability prediction: no ROC curve"
            ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="0.4", wrap=True)
        # synchronous draw: a deferred draw_idle() could fire after the dock widget was closed
        self.draw()
