"""Tests of the Frangi vesselness baseline core (napari_retsam.baseline)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from napari_retsam.baseline import (
    DEFAULT_PARAMS,
    DEFAULT_THRESHOLD,
    FrangiParams,
    frangi_probability,
    frangi_segment,
    frangi_segment_stack,
    frangi_vesselness,
    green_channel,
    normalise_vesselness,
)
from napari_retsam.data.synthetic import synthetic_fundus
from napari_retsam.errors import RetsamInputError
from napari_retsam.progress import Cancelled


@pytest.fixture(scope="module")
def fundus():
    return synthetic_fundus(seed=2, size=256)


@pytest.fixture(scope="module")
def fundus_prob(fundus):
    return frangi_probability(fundus.image, fundus.fov)


def _line_image(size: int = 64, dark: bool = True, width: float = 2.0) -> np.ndarray:
    """Grey background 0.5 with a horizontal Gaussian-profile line through the middle.

    Slight noise keeps the along-line curvature from being exactly zero (an exactly
    zero small eigenvalue is a degenerate case of scikit-image's Frangi).
    """
    yy = np.arange(size, dtype=float)[:, None]
    profile = np.exp(-((yy - size / 2) ** 2) / (2 * width**2)) * np.ones((1, size))
    noise = np.random.default_rng(1).normal(0.0, 0.003, (size, size))
    return (0.5 + noise + (-0.3 if dark else 0.3) * profile).astype(np.float32)


def test_probability_range_dtype_and_zero_outside_fov(fundus, fundus_prob) -> None:
    assert fundus_prob.shape == fundus.fov.shape
    assert fundus_prob.dtype == np.float32
    assert fundus_prob.min() >= 0.0 and fundus_prob.max() <= 1.0
    assert np.all(fundus_prob[~fundus.fov] == 0.0)
    assert fundus_prob[fundus.fov].max() == 1.0  # percentile scaling saturates the strongest vessels


def test_auc_on_synthetic_fundus_well_above_chance(fundus, fundus_prob) -> None:
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(fundus.vessels[fundus.fov], fundus_prob[fundus.fov])
    assert auc > 0.92  # measured 0.955 at size 256 (seed 2)


def test_segment_mask_is_thresholded_probability(fundus, fundus_prob) -> None:
    prob, mask = frangi_segment(fundus.image, fundus.fov)
    assert np.array_equal(prob, fundus_prob)
    assert np.array_equal(mask, fundus_prob >= DEFAULT_THRESHOLD)
    assert mask.dtype == bool and not (mask & ~fundus.fov).any()
    # Most detected pixels are real vessels (precision), and many vessels are found.
    tp = (mask & fundus.vessels).sum()
    assert tp / mask.sum() > 0.45  # measured 0.575 (seed 2, size 256)
    assert tp / fundus.vessels.sum() > 0.7  # measured 0.871
    _, mask_low = frangi_segment(fundus.image, fundus.fov, threshold=0.2)
    assert mask_low.sum() > mask.sum()
    _, mask_zero = frangi_segment(fundus.image, fundus.fov, threshold=0.0)
    assert np.array_equal(mask_zero, fundus.fov)


def test_dark_ridge_detected_bright_ridge_not() -> None:
    params = DEFAULT_PARAMS.with_(clahe=False)
    dark = frangi_vesselness(_line_image(dark=True), None, params)
    bright = frangi_vesselness(_line_image(dark=False), None, params)
    centre = dark[32, 10:54]
    assert centre.min() > 0.5
    # On a bright ridge's axis the Hessian's large eigenvalue is negative: no response
    # (its concave-up flanks may still respond, as in any Hessian filter).
    assert bright[30:35, 10:54].max() < 1e-3 * centre.min()
    # Vesselness peaks on the line and falls off away from it.
    assert dark[32, 32] > 5 * dark[44, 32]


def test_vesselness_matches_scale_normalised_frangi_formula() -> None:
    """One scale, no CLAHE: compare with the formula on a hand-built Hessian."""
    rng = np.random.default_rng(0)
    img = _line_image(width=1.5) + rng.normal(0, 0.01, (64, 64)).astype(np.float32)
    sigma, beta, gamma = 2.0, 0.5, 0.04
    got = frangi_vesselness(img, None, FrangiParams(sigmas=(sigma,), beta=beta, gamma=gamma, clahe=False))
    g = img.astype(np.float64)
    h_rr = ndimage.gaussian_filter(g, sigma, order=(2, 0), mode="reflect", truncate=8)
    h_cc = ndimage.gaussian_filter(g, sigma, order=(0, 2), mode="reflect", truncate=8)
    h_rc = ndimage.gaussian_filter(g, sigma, order=(1, 1), mode="reflect", truncate=8)
    h_rr, h_cc, h_rc = (sigma**2 * h for h in (h_rr, h_cc, h_rc))  # scale normalisation
    half_trace, root = (h_rr + h_cc) / 2, np.sqrt(((h_rr - h_cc) / 2) ** 2 + h_rc**2)
    e1, e2 = half_trace - root, half_trace + root
    swap = np.abs(e1) > np.abs(e2)
    l1, l2 = np.where(swap, e2, e1), np.where(swap, e1, e2)  # |l1| <= |l2|
    rb = np.abs(l1) / np.maximum(l2, 1e-10)
    s = np.sqrt(l1**2 + l2**2)
    expected = np.exp(-(rb**2) / (2 * beta**2)) * (1 - np.exp(-(s**2) / (2 * gamma**2)))
    expected[l2 <= 0] = 0.0  # bright ridges / blobs
    inner = (slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(got[inner], expected[inner], atol=2e-3)
    assert expected[inner].max() > 0.5


def test_wide_vessels_respond_with_scale_normalisation() -> None:
    """A wide dark vessel (sigma 4) must score as high as a thin one at the right scales."""
    params = FrangiParams(sigmas=(1.0, 2.0, 4.0), gamma=0.04, clahe=False)
    thin = frangi_vesselness(_line_image(width=1.0), None, params)[32, 32]
    wide = frangi_vesselness(_line_image(width=4.0), None, params)[32, 32]
    assert wide > 0.5 * thin


def test_normalisation_by_percentile_by_hand() -> None:
    v = np.arange(100, dtype=np.float32).reshape(10, 10) / 100.0
    fov = np.zeros((10, 10), bool)
    fov[:5] = True  # values 0.00 .. 0.49 inside
    params = DEFAULT_PARAMS.with_(norm_percentile=50.0, exponent=2.0)
    p = normalise_vesselness(v, fov, params)
    ref = np.percentile(v[fov], 50.0)  # 0.245
    expected = np.clip(v / ref, 0, 1) ** 2
    expected[~fov] = 0
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    assert p[0, 0] == 0.0 and p[4, 9] == 1.0 and p[9, 9] == 0.0
    np.testing.assert_allclose(p[1, 2], (0.12 / 0.245) ** 2, rtol=1e-5)


def test_constant_image_gives_zero_and_no_fov_border_ring() -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    fov = np.hypot(yy - 47.5, xx - 47.5) < 40
    img = np.zeros((96, 96, 3), np.uint8)
    img[fov] = (200, 100, 40)  # flat retina on a black border
    prob = frangi_probability(img, fov)
    assert prob.max() == 0.0  # the black border does not show up as a vessel ring
    prob_no_fov = frangi_probability(img, None)
    band = ndimage.binary_dilation(fov, iterations=4) & ~ndimage.binary_erosion(fov, iterations=4)
    assert prob_no_fov[band].max() > 0.5  # without the FOV the border shows up as a "vessel"


def test_dtype_and_channel_handling(fundus) -> None:
    p_uint8 = frangi_probability(fundus.image, fundus.fov)
    p_float = frangi_probability(fundus.image.astype(np.float32) / 255.0, fundus.fov)
    p_gray = frangi_probability(fundus.image[..., 1], fundus.fov)
    p_rgba = frangi_probability(np.dstack([fundus.image, np.full((256, 256), 255, np.uint8)]), fundus.fov)
    np.testing.assert_allclose(p_float, p_uint8, atol=1e-4)
    assert np.array_equal(p_gray, p_uint8) and np.array_equal(p_rgba, p_uint8)
    p_u16 = frangi_probability(fundus.image.astype(np.uint16) * 257, fundus.fov)
    np.testing.assert_allclose(p_u16, p_uint8, atol=1e-4)
    fov255 = fundus.fov.astype(np.uint8) * 255
    assert np.array_equal(frangi_probability(fundus.image, fov255), p_uint8)


def test_green_channel_scaling() -> None:
    assert green_channel(np.array([[0, 255, 51]] * 3, np.uint8))[0].tolist() == pytest.approx([0, 1, 0.2])
    floats = np.array([[2.0, 4.0, 6.0]] * 3)
    assert green_channel(floats)[0].tolist() == pytest.approx([0, 0.5, 1])
    assert np.all(green_channel(np.full((4, 4), 7.0)) == 0)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 5, 6, 7)), "2-D grayscale"),
        (np.zeros((8, 8), bool), "numeric"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros((2, 2)), "too small"),
        (np.array([["a"] * 4] * 4), "numeric"),
    ],
)
def test_bad_image_raises(image, message) -> None:
    with pytest.raises(RetsamInputError, match=message):
        frangi_probability(image)


def test_bad_fov_and_threshold_raise(fundus) -> None:
    img = fundus.image[:64, :64]
    with pytest.raises(RetsamInputError, match="shape"):
        frangi_probability(img, np.ones((10, 10), bool))
    with pytest.raises(RetsamInputError, match="empty"):
        frangi_probability(img, np.zeros((64, 64), bool))
    with pytest.raises(RetsamInputError, match="0/1 or 0/255"):
        frangi_probability(img, np.full((64, 64), 2, np.uint8))
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(RetsamInputError, match="threshold"):
            frangi_segment(img, None, threshold=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"sigmas": ()}, {"sigmas": (0.0,)}, {"beta": 0}, {"gamma": -1.0},
               {"norm_percentile": 0}, {"exponent": 0}]
)
def test_bad_params_raise(kwargs) -> None:
    with pytest.raises(RetsamInputError):
        FrangiParams(**kwargs)


def test_stack_equals_slice_by_slice_with_progress() -> None:
    a = synthetic_fundus(seed=0, size=96)
    b = synthetic_fundus(seed=1, size=96)
    stack = np.stack([a.image, b.image])
    fovs = np.stack([a.fov, b.fov])
    calls = []
    result = frangi_segment_stack(stack, fovs, 0.4, progress=lambda d, t, m: calls.append((d, t)))
    assert result is not None
    prob, mask = result
    assert prob.shape == (2, 96, 96) and mask.shape == (2, 96, 96)
    for i, f in enumerate((a, b)):
        p_i, m_i = frangi_segment(f.image, f.fov, threshold=0.4)
        assert np.array_equal(prob[i], p_i) and np.array_equal(mask[i], m_i)
    assert calls == [(1, 2), (2, 2)]
    # One H×W FOV applies to every slice; a grayscale N×H×W stack works too.
    prob_g, _ = frangi_segment_stack(stack[..., 1], a.fov)
    assert prob_g.shape == (2, 96, 96)
    assert np.array_equal(prob_g[0], frangi_probability(a.image, a.fov))


def test_stack_single_image_and_computed_fov() -> None:
    from napari_retsam.data import compute_fov

    f = synthetic_fundus(seed=3, size=96)
    prob, mask = frangi_segment_stack(f.image)
    expected = frangi_probability(f.image, compute_fov(f.image))
    assert prob.shape == (96, 96) and np.array_equal(prob, expected)
    prob_whole, _ = frangi_segment_stack(f.image, compute_missing_fov=False)
    assert np.array_equal(prob_whole, frangi_probability(f.image, None))


def test_stack_stops_when_asked_and_rejects_bad_shapes() -> None:
    stack = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(Cancelled):  # the package's one way to stop (napari_retsam.progress)
        frangi_segment_stack(stack, should_stop=lambda: True)
    with pytest.raises(RetsamInputError, match="stack"):
        frangi_segment_stack(np.zeros((2, 2, 8, 8)))
    with pytest.raises(RetsamInputError, match="FOV"):
        frangi_segment_stack(stack, np.ones((2, 32, 32), bool))


def test_import_pulls_no_torch_napari_or_qt() -> None:
    code = (
        "import sys, numpy as np, napari_retsam.baseline as b; "
        "b.frangi_segment(np.random.default_rng(0).random((32, 32))); "
        "bad = [m for m in ('torch', 'napari', 'PyQt5', 'qtpy') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
