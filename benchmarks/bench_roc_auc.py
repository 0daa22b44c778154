"""Benchmark: ``napari_retsam.metrics.roc_auc`` vs ``sklearn.metrics.roc_auc_score``.

Pools the FOV pixels of the 20 DRIVE test images (4,538,143 pixels with
``1st_manual``), builds realistic vessel scores, and times both functions on
the *same* 1-D arrays in one run, alternating them, several repeats each. It
prints min / median seconds, the speed-up (sklearn / ours) and checks that the
two AUCs agree to 1e-9 (and the curves have the same points).

Scores (``--scores``):

* ``frangi`` (default when ``napari_retsam.baseline`` is importable): the
  project's Frangi baseline probability map, float32;
* ``synthetic``: gold standard blurred plus Gaussian noise, squashed to
  [0, 1] and stored as float32 -- a smooth, continuous map like a network's;
* also always timed: the same scores quantised to 8 bits (``uint8``, as a
  probability x 255 PNG stores them) and as float64, and the full ROC curve
  (``roc_curve`` vs ``sklearn.metrics.roc_curve``, float32, same points).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_roc_auc.py [--root /work/shared/data/DRIVE]
        [--repeats 5] [--scores frangi|synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _read_mask(path: Path) -> np.ndarray:
    try:
        from napari_retsam.data import read_binary_mask
    except ImportError:  # the data package is not there yet: plain Pillow
        from PIL import Image

        return np.asarray(Image.open(path)) > 0
    return read_binary_mask(path)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def load_drive_test(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(id, image, gold, fov) of the 20 DRIVE test images."""
    out = []
    for number in range(1, 21):
        sample_id = f"{number:02d}_test"
        image = _read_rgb(root / "test" / "images" / f"{sample_id}.tif")
        gold = _read_mask(root / "test" / "1st_manual" / f"{number:02d}_manual1.gif")
        fov = _read_mask(root / "test" / "mask" / f"{sample_id}_mask.gif")
        out.append((sample_id, image, gold, fov))
    return out


def synthetic_scores(gold: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth continuous map correlated with the gold standard, float32 in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    signal = gaussian_filter(gold.astype(np.float64), 1.0) * 3.0
    noise = gaussian_filter(rng.normal(size=gold.shape), 0.7) * 1.5
    return (1.0 / (1.0 + np.exp(-(signal + noise - 1.5)))).astype(np.float32)


def time_it(fn, repeats: int) -> tuple[list[float], float]:
    times, value = [], float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return times, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/data/DRIVE"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scores", choices=("frangi", "synthetic"), default=None)
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from napari_retsam.metrics import roc_auc

    samples = load_drive_test(args.root)
    kind = args.scores
    if kind is None:
        try:
            import napari_retsam.baseline  # noqa: F401

            kind = "frangi"
        except ImportError:
            kind = "synthetic"
    rng = np.random.default_rng(0)
    maps = []
    t0 = time.perf_counter()
    for _, image, gold, fov in samples:
        if kind == "frangi":
            from napari_retsam.baseline import frangi_probability

            maps.append(np.asarray(frangi_probability(image, fov), dtype=np.float32))
        else:
            maps.append(synthetic_scores(gold, rng))
    build_s = time.perf_counter() - t0
    gold = np.concatenate([g[f] for _, _, g, f in samples])
    scores32 = np.concatenate([m[f] for m, (_, _, _, f) in zip(maps, samples)])
    print(
        f"DRIVE test, 1st_manual, FOV pooled: {gold.size:,} pixels, {int(gold.sum()):,} vessel "
        f"({100 * gold.mean():.2f}%); scores: {kind} ({build_s:.1f} s to build), "
        f"{np.unique(scores32).size:,} distinct float32 values"
    )
    print(f"numpy {np.__version__}; repeats {args.repeats}; times in seconds\n")

    variants = {
        "float32": scores32,
        "float64": scores32.astype(np.float64),
        "uint8 (prob x 255)": np.round(scores32.astype(np.float64) * 255).astype(np.uint8),
    }
    header = f"{'scores':<20}{'ours min':>10}{'ours med':>10}{'sk min':>10}{'sk med':>10}{'speed-up':>10}  |AUC diff|"
    print(header)
    print("-" * len(header))
    worst = 0.0
    slowest_ratio = float("inf")
    for name, s in variants.items():
        ours_t, sk_t = [], []
        ours_v = sk_v = float("nan")
        for _ in range(args.repeats):  # alternate so both see the same machine load
            t, ours_v = time_it(lambda: roc_auc(s, gold), 1)
            ours_t += t
            t, sk_v = time_it(lambda: roc_auc_score(gold, s), 1)
            sk_t += t
        diff = abs(ours_v - sk_v)
        worst = max(worst, diff)
        ratio = statistics.median(sk_t) / statistics.median(ours_t)
        slowest_ratio = min(slowest_ratio, ratio)
        print(
            f"{name:<20}{min(ours_t):>10.3f}{statistics.median(ours_t):>10.3f}"
            f"{min(sk_t):>10.3f}{statistics.median(sk_t):>10.3f}{ratio:>9.1f}x  {diff:.1e}"
            f"   (AUC {ours_v:.6f})"
        )
    # the full ROC curve (what the metrics panel plots), float32 scores
    from sklearn.metrics import roc_curve as sk_roc_curve

    from napari_retsam.metrics import roc_curve

    ours_t, sk_t = [], []
    ours_c = sk_c = None
    for _ in range(max(1, args.repeats // 2)):
        t, ours_c = time_it(lambda: roc_curve(scores32, gold), 1)
        ours_t += t
        t, sk_c = time_it(lambda: sk_roc_curve(gold, scores32), 1)
        sk_t += t
    same = ours_c[0].shape == sk_c[0].shape and all(
        np.allclose(a[1:], b[1:], rtol=0, atol=1e-12) for a, b in zip(ours_c, sk_c)
    )
    ratio = statistics.median(sk_t) / statistics.median(ours_t)
    print(
        f"{'roc_curve float32':<20}{min(ours_t):>10.3f}{statistics.median(ours_t):>10.3f}"
        f"{min(sk_t):>10.3f}{statistics.median(sk_t):>10.3f}{ratio:>9.1f}x  "
        f"{'same points' if same else 'DIFFERENT POINTS'} ({ours_c[0].size:,} points)"
    )
    ok = worst < 1e-9 and same
    print(f"\nspeed-up (median sklearn / median ours), smallest: {slowest_ratio:.1f}x; "
          f"AUCs agree to 1e-9: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
