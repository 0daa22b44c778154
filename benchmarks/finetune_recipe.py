"""The fine-tuning recipe, end to end, with its time and its numbers (README "Fine-tuning recipe").

1. ``retsam finetune`` with its DEFAULTS on DRIVE's 20 training images (the
   bundled LiteMedSAM; embeddings of every tile and view computed once), timed as
   a whole process;
2. ``retsam benchmark`` of the resulting ``best.pt`` on DRIVE test (20 images,
   FOV, pooled, 1st annotator) and, unchanged, on STARE (all 20 images,
   labels-ah, FOV computed): Frangi, SAM (auto), LiteMedSAM zero-shot (box) and
   the fine-tuned model with the fusion block, each table written as Markdown,
   CSV and an ROC figure.

Everything goes to ``--out`` (``summary.json`` has the times and the pooled
numbers). ``--run-dir DIR`` skips step 1 and evaluates ``DIR/best.pt`` of an
earlier run (its ``time.txt``, if present, gives the training time).

    python benchmarks/finetune_recipe.py --drive ../shared/data/DRIVE --stare ../shared/data/STARE --out bench-recipe
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def _run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def _table(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "table.csv") as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", required=True)
    parser.add_argument("--stare", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-dir", default=None, help="evaluate this earlier run instead of training")
    parser.add_argument("--auto-points", type=int, default=8, help="SAM (auto) points per side (default 8)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    retsam = [sys.executable, "-m", "napari_retsam"]
    summary: dict[str, object] = {}

    if args.run_dir:
        run = Path(args.run_dir)
        timing = run.parent / f"{run.name}.log"
        if timing.is_file():
            match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", timing.read_text())
            if match:
                summary["train_wall"] = match.group(1)
    else:
        run = out / "run"
        summary["train_seconds"] = round(_run(
            [*retsam, "finetune", "--dataset", "drive", "--root", args.drive, "--out", str(run)], out / "finetune.log"), 1)
    best = run / "best.pt"
    history = [json.loads(line) for line in open(run / "metrics.jsonl")]
    summary["validation"] = [{k: r.get(k) for k in ("epoch", "step", "auc", "f1")} for r in history if r["kind"] == "val"]

    cache = out / "embedding_cache"
    for name, dataset, root, split in (("drive", "drive", args.drive, "test"), ("stare", "stare", args.stare, "all")):
        if not root:
            continue
        folder = out / name
        seconds = _run([*retsam, "benchmark", "--dataset", dataset, "--root", root, "--split", split,
                        "--out", str(folder), "--fusion", str(best), "--auto-points", str(args.auto_points),
                        "--cache-dir", str(cache)], out / f"benchmark_{name}.log")
        rows = _table(folder)
        summary[name] = {"seconds": round(seconds, 1), "rows": {
            method: {k: row.get(k) for k in ("status", "PA", "Se", "Sp", "AUC", "F1")} for method, row in rows.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
