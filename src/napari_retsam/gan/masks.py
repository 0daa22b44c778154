"""New vessel masks from real ones, for the conditional generator (numpy + scipy).

:func:`augment_masks` turns each real mask into a new, plausible one:

1. one of the 8 symmetries of the square (rotation by 0/90/180/270°, optional
   left–right flip), chosen at random;
2. an elastic warp (Simard et al. 2003): a displacement field
   (dx, dy) = α · G_σ * U(−1, 1), i.e. uniform noise smoothed by a Gaussian
   of standard deviation σ px and rescaled so its largest component is α px;
   the mask is resampled at (y + dy, x + dx) with linear interpolation and
   thresholded at 0.5. Defaults: α = 0.02·S, σ = 0.06·S for an S×S mask, a
   gentle bend that keeps the tree's topology.

Each mask i uses ``numpy.random.default_rng([seed, i])``, so the result depends
on (seed, i) only. :func:`augment_pairs` moves a mask and its field of view
with the same symmetry and displacement field (patches of a patch-trained
generator carry their own FOV).
"""

from __future__ import annotations

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.data import dihedral

__all__ = ["elastic_warp", "augment_masks", "augment_pairs"]


def _displacement(shape: tuple[int, int], rng: np.random.Generator, alpha: float, sigma: float) -> list[np.ndarray]:
    """Sampling coordinates (y + dy, x + dx) of a smooth random displacement of at most ``alpha`` px."""
    from scipy.ndimage import gaussian_filter

    h, w = shape
    fields = []
    for _ in range(2):
        f = gaussian_filter(rng.uniform(-1.0, 1.0, (h, w)), sigma, mode="reflect")
        peak = float(np.abs(f).max())
        fields.append(f * (alpha / peak) if peak > 0 else f)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return [yy + fields[0], xx + fields[1]]


def _resample(mask: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    return map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant") >= 0.5


def elastic_warp(mask: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Warp one H×W bool mask by a smooth random displacement of at most ``alpha`` px."""
    return _resample(mask, _displacement(mask.shape, rng, alpha, sigma))


def augment_masks(masks: np.ndarray, seed: int, *, elastic: bool = True, alpha: float | None = None,
                  sigma: float | None = None, fov: np.ndarray | None = None) -> np.ndarray:
    """A random symmetry + elastic warp of every N×S×S mask (see the module docstring);
    the result is cut to ``fov`` when given."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise RetsamInputError(f"expected N×S×S square masks, got shape {masks.shape}")
    size = masks.shape[1]
    alpha = 0.02 * size if alpha is None else float(alpha)
    sigma = 0.06 * size if sigma is None else float(sigma)
    out = np.empty_like(masks)
    for i, m in enumerate(masks):
        rng = np.random.default_rng([int(seed), i])
        m = dihedral(m, int(rng.integers(0, 8)))
        if elastic:
            m = elastic_warp(m, rng, alpha, sigma)
        out[i] = m
    if fov is not None:
        out &= np.asarray(fov, dtype=bool)
    return out


def augment_pairs(masks: np.ndarray, fovs: np.ndarray, seed: int, *, elastic: bool = True,
                  alpha: float | None = None, sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`augment_masks`, moving each mask and its FOV together (same symmetry,
    same displacement); the masks are cut to their warped FOV. Returns (masks, fovs)."""
    masks = np.asarray(masks, dtype=bool)
    fovs = np.broadcast_to(np.asarray(fovs, dtype=bool), masks.shape)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise RetsamInputError(f"expected N×S×S square masks, got shape {masks.shape}")
    size = masks.shape[1]
    alpha = 0.02 * size if alpha is None else float(alpha)
    sigma = 0.06 * size if sigma is None else float(sigma)
    out_m, out_f = np.empty_like(masks), np.empty_like(masks)
    for i in range(len(masks)):
        rng = np.random.default_rng([int(seed), i])
        k = int(rng.integers(0, 8))
        m, f = dihedral(masks[i], k), dihedral(fovs[i], k)
        if elastic:
            coords = _displacement(m.shape, rng, alpha, sigma)
            m, f = _resample(m, coords), _resample(f, coords)
        out_f[i] = f
        out_m[i] = m & f
    return out_m, out_f
