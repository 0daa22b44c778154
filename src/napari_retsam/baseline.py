"""Classical, prompt-free baseline: multi-scale Frangi vesselness on the green channel.

Pipeline of :func:`frangi_probability` for an image ``I`` and a field of view
(FOV) ``F``:

1. ``g`` = green channel of an RGB image (the channel with the highest vessel
   contrast in fundus photographs), or the image itself when grayscale, scaled
   to ``[0, 1]`` (uint8 / 255, uint16 / 65535, floats taken as they are when in
   ``[0, 1]``, otherwise min-max scaled).
2. Outside the FOV, ``g`` takes the value of the nearest FOV pixel (Euclidean
   distance transform), so the dark rim of the camera aperture does not show up
   as a huge "vessel" along the FOV border.
3. Optional contrast-limited adaptive histogram equalisation (CLAHE,
   ``skimage.exposure.equalize_adapthist``), a standard fundus pre-processing.
4. Multi-scale Frangi vesselness with dark ridges (``black_ridges=True``):
   for each scale ``s`` Frangi's 2-D vesselness is
   ``exp(-Rb**2 / (2 beta**2)) * (1 - exp(-S**2 / (2 gamma**2)))`` with
   ``Rb = |l1| / |l2|`` and ``S = sqrt(l1**2 + l2**2)`` from the eigenvalues
   ``|l1| <= |l2|`` of the *scale-normalised* Hessian ``s**2 H_s`` (zero where
   ``l2 < 0``, i.e. bright ridges); ``v`` is the maximum over the scales.
   ``skimage.filters.frangi`` does not scale-normalise the Hessian (wide
   vessels then score far below thin ones), so it is called once per scale
   with ``gamma / s**2``, which is the same formula: ``S(s**2 H) / gamma =
   S(H) / (gamma / s**2)``. ``gamma=None`` instead lets scikit-image use half
   the largest Hessian norm of each scale.
5. Normalisation to a probability-like map:
   ``p = clip(v / P_q(v | F), 0, 1) ** k`` where ``P_q`` is the ``q``-th
   percentile of ``v`` inside the FOV of the same image and ``k`` an exponent
   chosen so that the F1-optimal threshold on the DRIVE training set maps to
   ``0.5``; ``p = 0`` outside the FOV.

:func:`frangi_segment` thresholds ``p >= threshold`` (default
:data:`DEFAULT_THRESHOLD`) inside the FOV.

All parameters below were chosen on the 20 DRIVE *training* images
(``benchmarks/tune_frangi.py``: grid search maximising the pooled FOV ROC AUC
against ``1st_manual``, then the threshold maximising pooled F1); the DRIVE test
set was never used for tuning. Note that the sigmas are in pixels for DRIVE's
resolution (FOV diameter about 540 px); for much larger images, pass a
:class:`FrangiParams` with scaled ``sigmas``.

This module imports numpy, scipy and scikit-image only (no torch, napari, Qt).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import ProgressFn, StopFn, check_stop, report

__all__ = [
    "FrangiParams",
    "DEFAULT_PARAMS",
    "DEFAULT_THRESHOLD",
    "green_channel",
    "frangi_vesselness",
    "normalise_vesselness",
    "frangi_probability",
    "frangi_segment",
    "frangi_segment_stack",
]

#: Frangi scales (Gaussian sigma, px). Chosen on DRIVE training (``benchmarks/tune_frangi.py``).
FRANGI_SIGMAS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
#: Frangi blob-suppression parameter ``beta``. Chosen on DRIVE training.
FRANGI_BETA: float = 1.0
#: Frangi structure parameter ``gamma`` for the scale-normalised Hessian
#: (``None``: scikit-image's per-scale default). Chosen on DRIVE training.
FRANGI_GAMMA: float | None = 0.04
#: Apply CLAHE to the green channel before filtering. Chosen on DRIVE training.
USE_CLAHE: bool = True
#: CLAHE clip limit (scikit-image's default, 0.01).
CLAHE_CLIP_LIMIT: float = 0.01
#: Percentile ``q`` of the vesselness inside the FOV that maps to 1. Chosen on DRIVE training.
NORM_PERCENTILE: float = 95.0
#: Exponent ``k`` of ``p = clip(v / P_q, 0, 1) ** k``: ``log(0.5) / log(t*)`` with
#: ``t* = 0.35`` the pooled-F1-optimal threshold of ``clip(v / P_95, 0, 1)`` on DRIVE
#: training (F1 0.687 there), so that ``p >= 0.5`` is that optimal segmentation.
PROB_EXPONENT: float = 0.6603
#: Default threshold on the probability map (``p >= 0.5``; see :data:`PROB_EXPONENT`).
DEFAULT_THRESHOLD: float = 0.5


@dataclass(frozen=True)
class FrangiParams:
    """Parameters of the Frangi baseline (defaults: the DRIVE-training choice)."""

    sigmas: tuple[float, ...] = FRANGI_SIGMAS
    beta: float = FRANGI_BETA
    gamma: float | None = FRANGI_GAMMA
    clahe: bool = USE_CLAHE
    clahe_clip_limit: float = CLAHE_CLIP_LIMIT
    norm_percentile: float = NORM_PERCENTILE
    exponent: float = PROB_EXPONENT

    def __post_init__(self) -> None:
        if not self.sigmas or any(not np.isfinite(s) or s <= 0 for s in self.sigmas):
            raise RetsamInputError(f"Frangi sigmas must be positive numbers, got {self.sigmas!r}")
        if not self.beta > 0:
            raise RetsamInputError(f"Frangi beta must be > 0, got {self.beta!r}")
        if self.gamma is not None and not self.gamma > 0:
            raise RetsamInputError(f"Frangi gamma must be > 0 or None, got {self.gamma!r}")
        if not 0 < self.norm_percentile <= 100:
            raise RetsamInputError(f"normalisation percentile must be in (0, 100], got {self.norm_percentile!r}")
        if not self.exponent > 0:
            raise RetsamInputError(f"probability exponent must be > 0, got {self.exponent!r}")

    def with_(self, **changes: object) -> FrangiParams:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_PARAMS = FrangiParams()


def green_channel(image: np.ndarray) -> np.ndarray:
    """The green channel (RGB/RGBA) or the grayscale image, as float32 in ``[0, 1]``.

    uint8 is divided by 255, uint16 by 65535, other integers and floats outside
    ``[0, 1]`` are min-max scaled; booleans are refused (a mask, not an image).

    Raises:
        RetsamInputError: not a 2-D or H×W×3/4 array, empty, bool, or NaN/inf.
    """
    arr = np.asarray(image)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise RetsamInputError(f"the image must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., 1]
    elif arr.ndim != 2:
        raise RetsamInputError(
            f"the image must be 2-D grayscale or H×W×3 RGB, got shape {tuple(np.shape(image))}"
        )
    if arr.shape[0] < 3 or arr.shape[1] < 3:
        raise RetsamInputError(f"the image is too small for the Frangi filter: {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise RetsamInputError("the image contains NaN or infinite values")
    lo, hi = float(out.min()), float(out.max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return out.astype(np.float32)
    if hi == lo:
        return np.zeros(out.shape, np.float32)
    return ((out - lo) / (hi - lo)).astype(np.float32)


def _check_fov(fov: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A bool FOV of ``shape`` (``None``: all True); accepts bool, {0,1}, {0,255}."""
    if fov is None:
        return np.ones(shape, bool)
    arr = np.asarray(fov)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., 0]
    if arr.shape != shape:
        raise RetsamInputError(f"the FOV mask has shape {arr.shape} but the image is {shape}")
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise RetsamInputError(f"the FOV mask must be boolean or 0/1 or 0/255, got dtype {arr.dtype}")
        values = np.unique(arr)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            raise RetsamInputError(
                f"the FOV mask must be boolean or 0/1 or 0/255, got values {values[:6].tolist()}"
            )
        arr = arr > 0
    if not arr.any():
        raise RetsamInputError("the FOV mask is empty (no pixel inside the field of view)")
    return arr


def _fill_outside(g: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """``g`` with every pixel outside ``fov`` set to its nearest FOV pixel's value."""
    if fov.all():
        return g
    from scipy import ndimage

    idx = ndimage.distance_transform_edt(~fov, return_distances=False, return_indices=True)
    return g[idx[0], idx[1]]


def frangi_vesselness(image: np.ndarray, fov: np.ndarray | None = None,
                      params: FrangiParams = DEFAULT_PARAMS) -> np.ndarray:
    """Raw Frangi vesselness (steps 1-4 of the module docstring), float32 H×W, 0 outside the FOV.

    ``fov=None`` uses the whole image.
    """
    from skimage.exposure import equalize_adapthist
    from skimage.filters import frangi

    g = green_channel(image)
    fov_b = _check_fov(fov, g.shape)
    g = _fill_outside(g, fov_b)
    if params.clahe and float(g.max() - g.min()) > 1e-6:  # CLAHE is undefined on a flat image
        g = equalize_adapthist(g, clip_limit=params.clahe_clip_limit).astype(np.float32)
    v = np.zeros(g.shape, np.float32)
    for sigma in params.sigmas:
        gamma = None if params.gamma is None else params.gamma / sigma**2
        v_s = frangi(g, sigmas=[sigma], alpha=0.5, beta=params.beta, gamma=gamma,
                     black_ridges=True, mode="reflect")
        np.maximum(v, np.nan_to_num(v_s.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0), out=v)
    v[~fov_b] = 0.0
    return v


def normalise_vesselness(v: np.ndarray, fov: np.ndarray | None = None,
                         params: FrangiParams = DEFAULT_PARAMS) -> np.ndarray:
    """Step 5: ``p = clip(v / P_q(v | fov), 0, 1) ** k``, 0 outside the FOV, float32.

    Where ``P_q == 0`` (responses on fewer than ``100 - q`` % of the FOV) the
    maximum inside the FOV replaces it; no vesselness at all gives all zeros.
    """
    v = np.asarray(v, dtype=np.float32)
    fov_b = _check_fov(fov, v.shape)
    inside = v[fov_b]
    ref = float(np.percentile(inside, params.norm_percentile))
    if not ref > 0:  # responses on fewer than (100 - q) % of the pixels: scale by the maximum
        ref = float(inside.max())
    if not ref > 0:
        return np.zeros(v.shape, np.float32)
    p = np.clip(v / ref, 0.0, 1.0)
    if params.exponent != 1.0:
        p = p ** params.exponent
    p[~fov_b] = 0.0
    return p.astype(np.float32)


def frangi_probability(image: np.ndarray, fov: np.ndarray | None = None,
                       params: FrangiParams | None = None) -> np.ndarray:
    """Probability-like vessel map from the Frangi filter, float32 H×W in ``[0, 1]``.

    Args:
        image: H×W×3 (or ×4) RGB or H×W grayscale; uint8, uint16 or float.
        fov: optional field-of-view mask (bool, 0/1 or 0/255), same H×W;
            ``None`` treats the whole image as the FOV. Outside it the map is 0.
        params: Frangi and normalisation parameters (default: tuned on DRIVE training).

    Raises:
        RetsamInputError: bad image shape/dtype/values, FOV of another shape, empty FOV.
    """
    params = DEFAULT_PARAMS if params is None else params
    v = frangi_vesselness(image, fov, params)
    return normalise_vesselness(v, fov, params)


def frangi_segment(image: np.ndarray, fov: np.ndarray | None = None, threshold: float | None = None,
                   params: FrangiParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frangi probability map and its binary vessel mask ``prob >= threshold``.

    ``threshold=None`` uses :data:`DEFAULT_THRESHOLD` (the DRIVE-training F1
    optimum). Returns ``(prob float32, mask bool)``; the mask is False outside the FOV.

    Raises:
        RetsamInputError: as :func:`frangi_probability`, or a threshold outside ``[0, 1]``.
    """
    t = DEFAULT_THRESHOLD if threshold is None else threshold
    try:
        t = float(t)
    except (TypeError, ValueError) as exc:
        raise RetsamInputError(f"the threshold must be a number in [0, 1], got {threshold!r}") from exc
    if not 0.0 <= t <= 1.0:
        raise RetsamInputError(f"the threshold must be in [0, 1], got {t}")
    prob = frangi_probability(image, fov, params)
    mask = prob >= t
    if t == 0.0:
        mask &= _check_fov(fov, prob.shape)
    return prob, mask


def frangi_segment_stack(
    images: np.ndarray,
    fov: np.ndarray | None = None,
    threshold: float | None = None,
    *,
    rgb: bool | None = None,
    compute_missing_fov: bool = True,
    params: FrangiParams | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`frangi_segment` on one image or slice by slice on a stack.

    Args:
        images: ``H×W`` or ``H×W×3`` (one image) or ``N×H×W`` / ``N×H×W×3`` (a stack).
        fov: ``None``, one ``H×W`` mask for every slice, or ``N×H×W``.
        threshold: as :func:`frangi_segment`.
        rgb: whether the last axis holds colour channels; ``None`` infers it
            (last axis of length 3 or 4 on a 3-D or 4-D array).
        compute_missing_fov: with ``fov=None``, compute each slice's FOV with
            :func:`napari_retsam.data.compute_fov` (dark camera border removed);
            otherwise the whole image is the FOV.
        params: Frangi parameters (default: tuned on DRIVE training).
        progress: called as ``progress(done, total, message)`` after each slice.
        should_stop: polled before each slice; when it returns True the work
            stops with :class:`napari_retsam.progress.Cancelled` (the package's one
            way to stop).

    Returns:
        ``(prob, mask)`` with the input's spatial shape (``N×H×W`` for a stack,
        ``H×W`` for one image), float32 and bool.

    Raises:
        RetsamInputError: unsupported shape, FOV of another shape, bad threshold.
        Cancelled: ``should_stop()`` returned True.
    """
    arr = np.asarray(images)
    if rgb is None:
        rgb = arr.ndim in (3, 4) and arr.shape[-1] in (3, 4)
    spatial_ndim = arr.ndim - (1 if rgb else 0)
    if spatial_ndim == 2:
        stack, single = arr[None], True
    elif spatial_ndim == 3:
        stack, single = arr, False
    else:
        kind = "RGB " if rgb else ""
        raise RetsamInputError(
            f"expected a 2-D {kind}image or a stack of them, got shape {arr.shape}"
        )
    n, h, w = stack.shape[:3]
    if fov is not None:
        fov_arr = np.asarray(fov)
        if fov_arr.shape == (h, w):
            fovs = [fov_arr] * n
        elif fov_arr.shape == (n, h, w):
            fovs = list(fov_arr)
        else:
            raise RetsamInputError(
                f"the FOV mask has shape {fov_arr.shape}; expected {(h, w)} or {(n, h, w)}"
            )
    else:
        fovs = [None] * n
    probs = np.zeros((n, h, w), np.float32)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        check_stop(should_stop)
        image = np.asarray(stack[i])
        fov_i = fovs[i]
        if fov_i is None and compute_missing_fov:
            from napari_retsam.data import compute_fov

            fov_i = compute_fov(image)
        probs[i], masks[i] = frangi_segment(image, fov_i, threshold=threshold, params=params)
        report(progress, i + 1, n, f"Frangi baseline: slice {i + 1}/{n}")
    if single:
        return probs[0], masks[0]
    return probs, masks
