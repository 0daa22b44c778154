"""The table of the metrics panel: one row per prediction (per slice, pooled, mean, std).

Numbers are shown with 4 decimals; an undefined value (AUC of a binary
prediction, AUC when the gold standard has one class only) shows ``n/a`` with
the reason as the cell's tooltip. The copy / CSV text comes from the same rows
(:func:`napari_retsam.metrics.panel.rows_to_text`) with full
precision, so what is exported never differs from what the engine computed.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QFontMetrics
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_retsam.metrics.panel import METRIC_COLUMNS, TABLE_HEADER, TableRow

__all__ = ["MetricsTable"]

_NUMBER_FORMAT = "{:.4f}"
_FONT_PX = 11  # a compact font so that the seven metric columns fit a dock widget


class MetricsTable(QTableWidget):
    """Read-only table of :class:`TableRow` values.

    The table asks for the room its rows and columns need (:meth:`fit_to_rows`, called
    on every :meth:`set_rows`): its minimum height holds every row up to
    :attr:`MAX_VISIBLE_ROWS` (more rows scroll) and its minimum width every visible
    column, so a typical table is read without scrollbars.
    """

    #: Rows shown without scrolling: e.g. three predictions on a four-image stack with
    #: their pooled/mean/std rows would need 21, one prediction on five images 8.
    MAX_VISIBLE_ROWS = 12

    def __init__(self, parent=None) -> None:  # noqa: ANN001 - a QWidget or None
        super().__init__(0, len(TABLE_HEADER), parent)
        self.setHorizontalHeaderLabels(list(TABLE_HEADER))
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        self.setStyleSheet(
            f"QTableView {{ font-size: {_FONT_PX}px; }} QTableView::item {{ padding: 0px 2px; }}"
            f" QHeaderView::section {{ font-size: {_FONT_PX}px; padding: 1px 2px; }}"
        )
        self.setWordWrap(False)
        # numbers are never elided: below this width the table scrolls sideways instead
        font = QFont(self.font())
        font.setPixelSize(_FONT_PX)
        font.setBold(True)  # summary rows are bold
        header.setMinimumSectionSize(QFontMetrics(font).horizontalAdvance("0.0000") + 10)
        header.setSectionResizeMode(QHeaderView.Stretch)  # metric columns share the width
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        tips = {
            "PA": "pixel accuracy (TP+TN)/(TP+FP+TN+FN)",
            "Se": "sensitivity TP/(TP+FN)",
            "Sp": "specificity TN/(TN+FP)",
            "AUC": "area under the ROC curve (probability predictions only)",
            "F1": "F1 = Dice = 2TP/(2TP+FP+FN)",
            "IoU": "Jaccard index TP/(TP+FP+FN)",
            "MCC": "Matthews correlation coefficient",
        }
        for column, name in enumerate(TABLE_HEADER):
            item = self.horizontalHeaderItem(column)
            if item is not None and name in tips:
                item.setToolTip(tips[name])
        self._rows: list[TableRow] = []
        self.fit_to_rows()

    @property
    def rows(self) -> list[TableRow]:
        """The rows shown, in display order."""
        return list(self._rows)

    def set_rows(self, rows: Sequence[TableRow]) -> None:
        """Show ``rows`` (replacing what was there)."""
        self._rows = list(rows)
        self.setRowCount(len(self._rows))
        for r, row in enumerate(self._rows):
            self._set_text(r, 0, row.prediction, align_left=True)
            self._set_text(r, 1, row.image, align_left=True)
            for c, (_, attr) in enumerate(METRIC_COLUMNS, start=2):
                value = row.values.get(attr)
                if value is None:
                    item = self._set_text(r, c, "n/a")
                    item.setToolTip(row.notes.get(attr, "undefined"))
                else:
                    self._set_text(r, c, _NUMBER_FORMAT.format(value))
            if row.image in ("pooled", "mean", "std"):  # summary rows in bold
                for c in range(self.columnCount()):
                    cell = self.item(r, c)
                    font = cell.font()
                    font.setBold(True)
                    cell.setFont(font)
        self._hide_empty_image_column()
        self.fit_to_rows()

    def fit_to_rows(self) -> None:
        """Minimum height for every row (up to :attr:`MAX_VISIBLE_ROWS`), minimum width for every
        visible column (the name columns at their contents' width, the metric columns at
        ``0.0000``), with no scrollbar."""
        header = self.horizontalHeader()
        frame = 2 * self.frameWidth()
        shown = min(max(self.rowCount(), 1), self.MAX_VISIBLE_ROWS)
        row_height = self.rowHeight(0) if self.rowCount() else self.verticalHeader().defaultSectionSize()
        self.setMinimumHeight(header.sizeHint().height() + shown * row_height + frame + 2)
        width = 0
        for column in range(self.columnCount()):
            if not self.isColumnHidden(column):
                width += max(self.sizeHintForColumn(column), header.sectionSizeHint(column),
                             header.minimumSectionSize())
        self.setMinimumWidth(width + frame + 2)
        self.updateGeometry()

    def _hide_empty_image_column(self) -> None:
        """2-D predictions only: the Image column would be empty, so it is hidden."""
        self.setColumnHidden(1, all(not row.image for row in self._rows))

    def cell_text(self, row: int, header: str) -> str:
        """Displayed text of the cell in ``row`` under column ``header`` (e.g. ``"AUC"``)."""
        item = self.item(row, TABLE_HEADER.index(header))
        return "" if item is None else item.text()

    def cell_tooltip(self, row: int, header: str) -> str:
        """Tooltip of the cell in ``row`` under column ``header``."""
        item = self.item(row, TABLE_HEADER.index(header))
        return "" if item is None else item.toolTip()

    def _set_text(self, row: int, column: int, text: str, align_left: bool = False) -> QTableWidgetItem:
        item = QTableWidgetItem(text)
        alignment = Qt.AlignLeft if align_left else Qt.AlignRight
        item.setTextAlignment(int(alignment | Qt.AlignVCenter))
        self.setItem(row, column, item)
        return item
