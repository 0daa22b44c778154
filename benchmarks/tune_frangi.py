"""Choose the Frangi baseline's parameters on the DRIVE *training* set.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/tune_frangi.py [--root /work/shared/data/DRIVE]

Stage 1 searches pre-processing (CLAHE on/off) x Frangi scales; stage 2 searches
beta x gamma (per-scale default or fixed) around the best stage-1 setting; each candidate is scored by the
pooled ROC AUC inside the FOV over the 20 training images against
``1st_manual``, for several normalisation percentiles ``q``. Then the pooled-F1
optimal threshold ``t*`` of ``clip(v / P_q, 0, 1)`` is found and turned into the
exponent ``k = log(0.5) / log(t*)`` so that ``p >= 0.5`` reproduces it. The
chosen values are printed as the module constants of ``napari_retsam.baseline``.
The DRIVE test set is not read here.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from napari_retsam.baseline import FrangiParams, frangi_vesselness, normalise_vesselness

DEFAULT_ROOT = Path("/work/shared/data/DRIVE")


def load_drive(root: Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(id, RGB uint8, gold bool, fov bool) for every DRIVE image of ``split`` ("train"/"test")."""
    try:
        from napari_retsam.data import open_dataset
    except ImportError:
        open_dataset = None
    if open_dataset is not None:
        ds = open_dataset("drive", root, split=split, annotator=1)
        return [(s.id, s.image, s.gold, s.fov) for s in ds]
    from PIL import Image  # fallback until the dataset reader lands

    folder = root / ("training" if split == "train" else "test")
    out = []
    for img_path in sorted((folder / "images").glob("*.tif")):
        num, kind = img_path.stem.split("_")
        image = np.asarray(Image.open(img_path).convert("RGB"))
        gold = np.asarray(Image.open(folder / "1st_manual" / f"{num}_manual1.gif")) > 0
        fov = np.asarray(Image.open(folder / "mask" / f"{num}_{kind}_mask.gif").convert("L")) > 0
        out.append((img_path.stem, image, gold, fov))
    return out


def pooled_auc(probs: list[np.ndarray], golds: list[np.ndarray], fovs: list[np.ndarray]) -> float:
    """Pooled FOV ROC AUC (napari_retsam.metrics.roc_auc, or sklearn until it lands)."""
    scores = np.concatenate([p[f] for p, f in zip(probs, fovs)])
    labels = np.concatenate([g[f] for g, f in zip(golds, fovs)])
    try:
        from napari_retsam.metrics import roc_auc

        return float(roc_auc(scores, labels))
    except ImportError:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(labels, scores))


def best_f1_threshold(probs, golds, fovs, grid=np.linspace(0.02, 0.98, 97)) -> tuple[float, float]:
    """Threshold on the pooled FOV pixels maximising F1 = 2TP / (2TP + FP + FN); returns (t, F1)."""
    scores = np.concatenate([p[f] for p, f in zip(probs, fovs)])
    labels = np.concatenate([g[f] for g, f in zip(golds, fovs)])
    pos = scores[labels]
    neg = scores[~labels]
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    best = (0.5, -1.0)
    for t in grid:
        tp = pos.size - np.searchsorted(pos_sorted, t, side="left")
        fp = neg.size - np.searchsorted(neg_sorted, t, side="left")
        fn = pos.size - tp
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best[1]:
            best = (float(t), float(f1))
    return best


def score(data, params: FrangiParams, percentiles) -> dict[float, float]:
    """Pooled AUC per normalisation percentile for one Frangi setting."""
    vs = [frangi_vesselness(img, fov, params) for _, img, _, fov in data]
    golds = [g for _, _, g, _ in data]
    fovs = [f for _, _, _, f in data]
    return {q: pooled_auc([normalise_vesselness(v, f, params.with_(norm_percentile=q, exponent=1.0))
                           for v, f in zip(vs, fovs)], golds, fovs) for q in percentiles}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = load_drive(args.root, "train")
    print(f"DRIVE training: {len(data)} images", flush=True)
    percentiles = (85.0, 90.0, 95.0, 98.0, 99.0)
    sigma_sets = [(1.0, 2.0, 3.0), (1.0, 1.5, 2.0, 2.5, 3.0, 4.0), (1.0, 2.0, 3.0, 4.0, 5.0),
                  (1.5, 2.0, 3.0, 4.0, 5.0, 6.0), (0.7, 1.0, 1.5, 2.0, 3.0, 4.0)]
    results = []
    print("stage 1: CLAHE x sigmas (beta 0.5, gamma 0.04)", flush=True)
    for clahe in (False, True):
        for sigmas in sigma_sets:
            p = FrangiParams(sigmas=sigmas, beta=0.5, gamma=0.04, clahe=clahe)
            aucs = score(data, p, percentiles)
            q, auc = max(aucs.items(), key=lambda kv: kv[1])
            results.append((auc, q, p))
            print(f"  clahe={clahe!s:5} sigmas={sigmas}: AUC {auc:.4f} (q={q})", flush=True)
    best_auc, best_q, best = max(results, key=lambda r: r[0])
    print("stage 2: beta x gamma (per-scale default or fixed) around the best", flush=True)
    for beta in (0.5, 1.0):
        for gamma in (None, 0.02, 0.04, 0.08, 0.15):
            if beta == 0.5 and gamma == 0.04:
                continue
            p = best.with_(beta=beta, gamma=gamma)
            aucs = score(data, p, percentiles)
            q, auc = max(aucs.items(), key=lambda kv: kv[1])
            results.append((auc, q, p))
            print(f"  beta={beta} gamma={gamma}: AUC {auc:.4f} (q={q})", flush=True)
    best_auc, best_q, best = max(results, key=lambda r: r[0])
    best = best.with_(norm_percentile=best_q, exponent=1.0)
    vs = [normalise_vesselness(frangi_vesselness(img, fov, best), fov, best) for _, img, _, fov in data]
    t_star, f1 = best_f1_threshold(vs, [g for _, _, g, _ in data], [f for _, _, _, f in data])
    exponent = math.log(0.5) / math.log(t_star)
    print(f"best F1 threshold on clip(v/P{best_q:g}, 0, 1): t* = {t_star:.2f} (pooled F1 {f1:.4f})")
    print(f"-> exponent k = log(0.5)/log(t*) = {exponent:.4f}")
    print("\nchosen constants for napari_retsam/baseline.py (DRIVE training, pooled FOV):")
    print(f"FRANGI_SIGMAS = {best.sigmas}")
    print(f"FRANGI_BETA = {best.beta}")
    print(f"FRANGI_GAMMA = {best.gamma}")
    print(f"USE_CLAHE = {best.clahe}")
    print(f"NORM_PERCENTILE = {best_q}")
    print(f"PROB_EXPONENT = {exponent:.4f}")
    print(f"training pooled AUC = {best_auc:.4f}, F1 at t* = {f1:.4f}")
    print(f"elapsed {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
