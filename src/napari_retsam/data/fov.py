"""Field-of-view (FOV) masks computed from a fundus image.

DRIVE ships FOV masks; STARE and CHASE_DB1 do not. A fundus photograph shows
the retina as a bright disc (possibly clipped by the frame) on a near-black
border, so the FOV is found by a dark-border threshold followed by morphology.

Algorithm of :func:`compute_fov` (``s = min(H, W)``):

1. Brightness ``v = max(R, G, B)`` per pixel (the red channel dominates inside
   the retina, but the maximum also works for unusual colour balances), smoothed
   with a Gaussian of ``sigma = max(1, s / 300)`` pixels to suppress noise and
   JPEG artefacts.
2. Two classes by Otsu's threshold ``t_o`` on ``v``; ``b`` = median of the dark
   class (the border), ``f`` = median of the bright class (the retina). If
   ``b > 0.4 f`` there is no dark border (the retina fills the frame) and the
   whole image is returned.
3. Foreground ``v > t`` with the low threshold ``t = b + 0.15 (f - b)``: well
   below Otsu's, so the darker rim of the retina (vignetting) stays inside.
4. Morphology: opening with a Euclidean disc of radius ``max(1, round(s / 150))``
   (drops noise specks and thin bridges to frame artefacts such as burnt-in
   labels), then keep the largest connected component.
5. Convex hull (pixel centres inside the hull of the component's pixel
   squares): a camera's field of view is a disc, possibly clipped by the frame,
   hence convex. The hull fills holes (dark macula, lesions, dark vessels that
   reach the rim) and restores parts of the rim darker than ``t`` (e.g. beside
   the dark optic-disc margin of STARE's ``im0240``) without reaching into the
   border, which lies outside every chord of the disc. It also contains the
   component's closing, so no separate closing/hole filling is needed.

Dataset readers additionally take the union with the gold standard (and fill
holes once more) so that every annotated vessel pixel lies inside the FOV; see
:mod:`napari_retsam.data.datasets`.
"""

from __future__ import annotations

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = ["compute_fov", "otsu_threshold", "fov_with_gold", "mask_bounding_box"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance).

    For histogram bin centres ``c_i`` with probabilities ``p_i``, returns the
    upper edge of the bin ``k`` maximising ``w0(k) w1(k) (mu0(k) - mu1(k))^2``
    where ``w0 = sum_{i<=k} p_i`` and ``mu0``/``mu1`` are the class means. A
    constant array returns its value.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    p = hist.astype(np.float64) / hist.sum()
    w0 = np.cumsum(p)
    w1 = 1.0 - w0
    m0 = np.cumsum(p * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    k = int(np.argmax(between))
    return float(edges[k + 1])


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a Euclidean disc of ``radius`` px: pixels within ``radius`` of the mask."""
    from scipy import ndimage as ndi

    if mask.all():
        return mask.copy()
    return ndi.distance_transform_edt(~mask) <= radius


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion by a Euclidean disc: pixels farther than ``radius`` from the background.

    Pixels beyond the frame count as foreground (no erosion from the image edge), so
    a disc clipped by the frame keeps its straight edges.
    """
    from scipy import ndimage as ndi

    if not mask.any():
        return mask.copy()
    padded = np.pad(mask, 1, mode="edge")
    return (ndi.distance_transform_edt(padded) > radius)[1:-1, 1:-1]


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of the True pixels (pixel squares' corners as hull points)."""
    from scipy.spatial import ConvexHull, QhullError

    from scipy import ndimage as ndi

    ys, xs = np.nonzero(mask & ~ndi.binary_erosion(mask))  # boundary pixels suffice
    if ys.size < 3:
        return mask.copy()
    corners = np.concatenate(
        [np.stack([ys + dy, xs + dx], axis=1) for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)]
    ).astype(np.float64)
    try:
        hull = ConvexHull(corners)
    except QhullError:  # all points on a line
        return mask.copy()
    return _fill_convex_polygon(corners[hull.vertices], mask.shape) | mask


def _fill_convex_polygon(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside a convex polygon (``vertices``: K×2 (y, x) in order).

    Row by row: the polygon's edges crossing the row centre ``y`` bound an interval
    ``[x_min, x_max]`` (convexity: one interval per row), filled by broadcasting.
    """
    h, w = shape
    p0 = vertices
    p1 = np.roll(vertices, -1, axis=0)
    ys = np.arange(h, dtype=np.float64)[:, None]  # H×1 row centres
    y0, y1 = p0[None, :, 0], p1[None, :, 0]
    x0, x1 = p0[None, :, 1], p1[None, :, 1]
    crosses = (np.minimum(y0, y1) <= ys) & (ys <= np.maximum(y0, y1)) & (y0 != y1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
    x_min = np.where(crosses, xs, np.inf).min(axis=1)
    x_max = np.where(crosses, xs, -np.inf).max(axis=1)
    cols = np.arange(w, dtype=np.float64)[None, :]
    return (cols >= x_min[:, None]) & (cols <= x_max[:, None])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def compute_fov(image: np.ndarray) -> np.ndarray:
    """Field-of-view mask of a fundus image (``H×W×3`` or ``H×W``, any numeric dtype).

    Returns an ``H×W`` ``bool`` array, True on the retinal disc; the algorithm
    is described in the module docstring. Raises :class:`RetsamInputError` for
    an image of the wrong shape or one without any bright region (uniformly
    dark), where no FOV can be found.
    """
    from scipy import ndimage as ndi

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        v = img[..., :3].astype(np.float32).max(axis=2)
    elif img.ndim == 2:
        v = img.astype(np.float32)
    else:
        raise RetsamInputError(f"compute_fov expects an H×W×3 or H×W image, got shape {img.shape}")
    if not np.all(np.isfinite(v)):
        raise RetsamInputError("compute_fov: the image contains NaN or infinite values")
    h, w = v.shape
    s = min(h, w)
    v = ndi.gaussian_filter(v, sigma=max(1.0, s / 300.0))

    t_otsu = otsu_threshold(v)
    dark = v[v <= t_otsu]
    bright = v[v > t_otsu]
    if bright.size == 0:
        if float(v.max()) > 0:  # constant, non-black image: all retina
            return np.ones((h, w), dtype=bool)
        raise RetsamInputError("cannot compute a field of view: the image is uniformly black")
    b = float(np.median(dark)) if dark.size else 0.0
    f = float(np.median(bright))
    if f <= 0 or b > 0.4 * f:
        return np.ones((h, w), dtype=bool)
    t = b + 0.15 * (f - b)
    mask = v > t

    r_open = max(1, round(s / 150))
    opened = _dilate(_erode(mask, r_open), r_open) & mask
    mask = _largest_component(opened if opened.any() else mask)
    # The hull contains the component's closing and its filled holes, so those steps are implied.
    mask = _convex_hull(mask)
    return np.ascontiguousarray(mask, dtype=bool)


def fov_with_gold(fov: np.ndarray, gold: np.ndarray | None) -> np.ndarray:
    """``fill_holes(fov | gold)``: a computed FOV widened to hold every annotated vessel pixel."""
    if gold is None:
        return fov
    from scipy import ndimage as ndi

    return np.ascontiguousarray(ndi.binary_fill_holes(fov | gold.astype(bool)), dtype=bool)


def mask_bounding_box(mask: np.ndarray) -> np.ndarray | None:
    """Bounding box ``(x0, y0, x1, y1)`` of the True pixels of a 2-D mask, or None if empty.

    Pixel-index coordinates with ``x1``/``y1`` the last column/row (inclusive),
    the box convention of the SAM engine
    (:func:`napari_retsam.sam.boxes.validate_boxes`); float64. Used for the
    default box prompt (the FOV's bounding box) and the training prompts.
    """
    region = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)
