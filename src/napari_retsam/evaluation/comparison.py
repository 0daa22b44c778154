"""The method-comparison table (the paper's Table 2): rows of methods, metric columns.

Pure numpy/stdlib, used by ``retsam demo`` and ``retsam benchmark``. Each row
is a method evaluated on the same images with :func:`napari_retsam.metrics.evaluate_set`
(FOV-masked; pooled figures plus per-image mean ± population std), or a method
that could not run, kept as a *skipped* row with its reason — never silently
dropped.

Columns: PA (pixel accuracy), Se (sensitivity), Sp (specificity), AUC (ROC
area, from probability maps only) and F1 (= Dice), as fractions in [0, 1].
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_retsam.io_utils import atomic_write_bytes
from napari_retsam.metrics import SetReport

#: (attribute of Metrics, column header) in table order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pa", "PA"),
    ("se", "Se"),
    ("sp", "Sp"),
    ("auc", "AUC"),
    ("f1", "F1"),
)


@dataclass
class MethodRow:
    """One method of the comparison: its report, or why it was skipped."""

    name: str
    report: SetReport | None = None
    skipped: str = ""
    notes: str = ""

    @property
    def ran(self) -> bool:
        return self.report is not None


@dataclass
class Comparison:
    """A comparison table plus the evaluation protocol shared by its rows."""

    rows: list[MethodRow] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, report: SetReport | None = None, *, skipped: str = "", notes: str = "") -> None:
        """Append a row; exactly one of ``report`` and ``skipped`` must be given."""
        if (report is None) == (not skipped):
            raise ValueError("give either a report or a skip reason")
        self.rows.append(MethodRow(name, report, skipped, notes))

    # -- rendering -------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """One flat dict per row: pooled values, per-image mean and std, status."""
        out: list[dict[str, Any]] = []
        for row in self.rows:
            rec: dict[str, Any] = {"method": row.name, "status": "ok" if row.ran else "skipped",
                                   "reason": row.skipped, "notes": row.notes}
            for attr, head in COLUMNS:
                if row.report is None:
                    rec[head] = rec[f"{head}_mean"] = rec[f"{head}_std"] = None
                    continue
                pooled = getattr(row.report.pooled, attr)
                rec[head] = _finite_or_none(pooled)
                rec[f"{head}_mean"] = _finite_or_none(row.report.mean.get(attr))
                rec[f"{head}_std"] = _finite_or_none(row.report.std.get(attr))
            if row.report is not None and row.report.pooled.auc is None:
                rec["AUC_note"] = row.report.pooled.auc_note
            out.append(rec)
        return out

    def to_markdown(self) -> str:
        """A Markdown table: pooled value, then per-image mean ± std, per column."""
        heads = [h for _, h in COLUMNS]
        lines = ["| Method | " + " | ".join(heads) + " |",
                 "|---|" + "---|" * len(heads)]
        for rec in self.records():
            if rec["status"] == "skipped":
                cells = ["skipped"] * len(heads)
                lines.append(f"| {rec['method']} | " + " | ".join(cells) + " |")
                continue
            cells = []
            for h in heads:
                if rec[h] is None:
                    cells.append("n/a")
                else:
                    cell = f"{rec[h]:.4f}"
                    if rec[f"{h}_mean"] is not None:
                        cell += f" ({rec[f'{h}_mean']:.4f} ± {rec[f'{h}_std']:.4f})"
                    cells.append(cell)
            lines.append(f"| {rec['method']} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Pooled over all FOV pixels of the set; in brackets the per-image mean ± "
                     "population std. n/a: no probability map (AUC needs scores).")
        skipped = [r for r in self.rows if not r.ran]
        for r in skipped:
            lines.append(f"- {r.name}: skipped — {r.skipped}")
        for r in self.rows:
            if r.notes:
                lines.append(f"- {r.name}: {r.notes}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV with one row per method (pooled, mean and std per metric, status, reason)."""
        records = self.records()
        fields = ["method", "status"]
        for _, h in COLUMNS:
            fields += [h, f"{h}_mean", f"{h}_std"]
        fields += ["reason", "notes"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
        return buf.getvalue()

    def write(self, out_dir: str | Path, stem: str = "table") -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.csv`` and ``protocol.json`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": atomic_write_bytes(out / f"{stem}.md", self.to_markdown().encode()),
            "csv": atomic_write_bytes(out / f"{stem}.csv", self.to_csv().encode()),
            "protocol": atomic_write_bytes(
                out / "protocol.json",
                (json.dumps({"protocol": self.protocol, "rows": self.records()}, indent=2) + "\n").encode(),
            ),
        }
        return paths


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
