"""Check the computed field of view (FOV) on the real DRIVE and STARE images.

Not collected by pytest. Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/data_fov_check.py --drive ../shared/data/DRIVE --stare ../shared/data/STARE

Prints, side by side for the same images:

* STARE (no FOV ships): the share of each annotator's vessel pixels inside
  ``compute_fov(image)`` *before* the union with the gold standard that the
  dataset reader adds, and the FOV's share of the image;
* DRIVE (FOV masks ship): IoU of ``compute_fov(image)`` with the shipped mask,
  its share of vessel pixels inside, and pixels it adds outside the shipped mask;
* time per image for decoding (image + masks) and for ``compute_fov``, and their ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_retsam.data import compute_fov, open_dataset


def _stare(root: Path) -> None:
    print(f"STARE ({root}): computed FOV alone, before the union with the gold standard")
    print(f"{'annotator':<10} {'images':>6} {'vessel px':>10} {'inside':>10} {'share':>9} {'FOV/image':>10}")
    for annotator, tag in ((1, "ah"), (2, "vk")):
        ds = open_dataset("stare", root, split="all", annotator=annotator)
        total = inside = 0
        fov_share = []
        for s in ds:
            fov = compute_fov(s.image)
            total += int(s.gold.sum())
            inside += int((s.gold & fov).sum())
            fov_share.append(fov.mean())
        print(
            f"{annotator} ({tag}){'':<4} {len(ds):>6} {total:>10,} {inside:>10,} {inside / total:>9.4%} "
            f"{np.mean(fov_share):>10.3f}"
        )


def _drive(root: Path) -> None:
    ds = open_dataset("drive", root, split="test")
    ious, extra, total, inside = [], 0, 0, 0
    t_read = t_fov = 0.0
    for i in range(len(ds)):
        t0 = time.perf_counter()
        s = ds[i]
        t1 = time.perf_counter()
        fov = compute_fov(s.image)
        t2 = time.perf_counter()
        t_read += t1 - t0
        t_fov += t2 - t1
        ious.append((fov & s.fov).sum() / (fov | s.fov).sum())
        extra += int((fov & ~s.fov).sum())
        total += int(s.gold.sum())
        inside += int((s.gold & fov).sum())
    n = len(ds)
    print(f"\nDRIVE test ({root}): computed FOV vs the shipped masks, {n} images")
    print(f"IoU mean {np.mean(ious):.4f}, min {np.min(ious):.4f}; vessel px inside {inside / total:.4%}; "
          f"px outside the shipped mask {extra:,} ({extra / n:,.0f} per image)")
    print(f"time per image: decode {1000 * t_read / n:.1f} ms, compute_fov {1000 * t_fov / n:.1f} ms "
          f"(ratio compute_fov/decode {t_fov / t_read:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, default=Path("../shared/data/DRIVE"))
    parser.add_argument("--stare", type=Path, default=Path("../shared/data/STARE"))
    args = parser.parse_args()
    _stare(args.stare)
    _drive(args.drive)


if __name__ == "__main__":
    main()
