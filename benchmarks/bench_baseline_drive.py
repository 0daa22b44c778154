"""Frangi baseline figures on the DRIVE test set (and, for context, on training and synthetic fundi).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_baseline_drive.py [--root /work/shared/data/DRIVE]

Rows, all FOV-masked (DRIVE's shipped masks), pooled over the images, threshold
``p >= 0.5`` (the DRIVE-training choice), gold standard ``1st_manual``:

* tuned baseline on the 20 test images (the reported figures), and on the 20
  training images it was tuned on;
* untuned ``skimage.filters.frangi`` defaults (sigmas 1, 3, 5, 7, 9, beta 0.5,
  gamma automatic, green channel, no CLAHE, min-max scaled in the FOV) on the
  test images: AUC only, as there is no tuned threshold; the ratio shows what
  the tuning buys;
* the second human observer (``2nd_manual``) against ``1st_manual`` on the test
  set, the usual reference for what a method can reach;
* the tuned baseline on 20 synthetic fundi (``synthetic_fundus(seed, 512)``,
  seeds 0-19) with their exact masks.

Metrics come from ``napari_retsam.metrics.evaluate_set``; per-image mean ± std
is printed beside the pooled value.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from napari_retsam.baseline import DEFAULT_PARAMS, frangi_probability, green_channel
from napari_retsam.metrics import evaluate_set

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_frangi import DEFAULT_ROOT, load_drive  # noqa: E402

COLUMNS = ("pa", "se", "sp", "auc", "f1")


def skimage_default_frangi(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Untuned reference: scikit-image's defaults on the green channel, min-max scaled in the FOV."""
    from skimage.filters import frangi

    v = frangi(green_channel(image), black_ridges=True).astype(np.float64)
    v[~fov] = 0.0
    lo, hi = v[fov].min(), v[fov].max()
    return np.clip((v - lo) / (hi - lo), 0, 1).astype(np.float32) * fov if hi > lo else np.zeros_like(v)


def row(name: str, report) -> str:
    cells = []
    for key in COLUMNS:
        pooled = getattr(report.pooled, key)
        mean, std = report.mean.get(key), report.std.get(key)
        if pooled is None:
            cells.append("n/a")
        else:
            cells.append(f"{pooled:.4f} ({mean:.4f} ± {std:.4f})")
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--synthetic", type=int, default=20, help="number of synthetic fundi (0: skip)")
    args = parser.parse_args(argv)

    test = load_drive(args.root, "test")
    train = load_drive(args.root, "train")
    print(f"DRIVE: {len(test)} test, {len(train)} training images; params {DEFAULT_PARAMS}", flush=True)

    t0 = time.perf_counter()
    test_probs = [frangi_probability(img, fov) for _, img, _, fov in test]
    seconds_per_image = (time.perf_counter() - t0) / len(test)
    golds = [g for _, _, g, _ in test]
    fovs = [f for _, _, _, f in test]
    ids = [i for i, _, _, _ in test]
    rep_test = evaluate_set(test_probs, golds, fovs, threshold=0.5, ids=ids, dataset="drive", split="test",
                            annotator=1)
    rep_train = evaluate_set([frangi_probability(img, fov) for _, img, _, fov in train],
                             [g for _, _, g, _ in train], [f for _, _, _, f in train], threshold=0.5,
                             ids=[i for i, _, _, _ in train], dataset="drive", split="train", annotator=1)
    t1 = time.perf_counter()
    default_probs = [skimage_default_frangi(img, fov) for _, img, _, fov in test]
    seconds_default = (time.perf_counter() - t1) / len(test)
    rep_default = evaluate_set(default_probs, golds, fovs, threshold=0.5, ids=ids)

    rows = [row("Frangi baseline (tuned), DRIVE test", rep_test),
            row("Frangi baseline (tuned), DRIVE training", rep_train)]
    try:
        from napari_retsam.data import open_dataset

        second = open_dataset("drive", args.root, split="test", annotator=2)
        rep_human = evaluate_set([s.gold for s in second], golds, fovs, ids=ids)
        rows.append(row("2nd observer vs 1st, DRIVE test", rep_human))
    except Exception as exc:  # the reader may not ship annotator 2 yet
        print(f"(2nd observer row skipped: {exc})")
    default_auc = rep_default.pooled.auc
    rows.append(f"| skimage frangi defaults (untuned), DRIVE test | | | | {default_auc:.4f} | |")

    if args.synthetic:
        from napari_retsam.data.synthetic import synthetic_fundus

        synth = [synthetic_fundus(seed=s, size=512) for s in range(args.synthetic)]
        rep_synth = evaluate_set([frangi_probability(f.image, f.fov) for f in synth], [f.vessels for f in synth],
                                 [f.fov for f in synth], threshold=0.5)
        rows.append(row(f"Frangi baseline (tuned), {args.synthetic} synthetic fundi 512 px", rep_synth))

    print("\nFOV-masked, pooled (per-image mean ± std), threshold p >= 0.5, gold 1st_manual\n")
    print("| rows | PA | Se | Sp | AUC | F1 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nDRIVE test pixels in FOV: {rep_test.pooled.n_pixels}; "
          f"vessel fraction predicted {(rep_test.pooled.tp + rep_test.pooled.fp) / rep_test.pooled.n_pixels:.4f}, "
          f"gold {(rep_test.pooled.tp + rep_test.pooled.fn) / rep_test.pooled.n_pixels:.4f}")
    print(f"AUC ratio tuned / skimage defaults (test): {rep_test.pooled.auc / default_auc:.4f}")
    print(f"time per 565x584 image: tuned {seconds_per_image:.2f} s, skimage defaults {seconds_default:.2f} s "
          f"(ratio {seconds_per_image / seconds_default:.2f}); OMP_NUM_THREADS=1, shared 2-core machine")
    print(f"protocol: {rep_test.protocol.as_dict()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
