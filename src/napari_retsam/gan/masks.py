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
on (seed, i) only.
"""

from __future__ import annotations

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.data import dihedral

__all__ = ["elastic_warp", "augment_masks"]


def elastic_warp(mask: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Warp one H×W bool mask by a smooth random displacement of at most ``alpha`` px."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    h, w = mask.shape
    fields = []
    for _ in range(2):
        f = gaussian_filter(rng.uniform(-1.0, 1.0, (h, w)), sigma, mode="reflect")
        peak = float(np.abs(f).max())
        fields.append(f * (alpha / peak) if peak > 0 else f)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    warped = map_coordinates(mask.astype(np.float32), [yy + fields[0], xx + fields[1]], order=1, mode="constant")
    return warped >= 0.5


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
