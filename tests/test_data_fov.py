"""FOV computation on synthetic fundus-like images: coverage of the disc, no leak."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_retsam.data.fov import compute_fov, fov_with_gold, otsu_threshold
from napari_retsam.errors import RetsamInputError


def _disc_image(
    h: int = 200,
    w: int = 220,
    radius: float = 90.0,
    rim_level: float = 0.35,
    seed: int = 0,
    background: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Orange disc with vignetting down to ``rim_level`` at the rim, dark macula and vessels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r = np.hypot(yy - cy, xx - cx)
    disc = r <= radius
    shade = 1.0 - (1.0 - rim_level) * (r / radius) ** 2
    img = shade[..., None] * np.array([200.0, 90.0, 40.0])
    macula = np.hypot(yy - cy, xx - (cx - 0.3 * radius)) < 0.15 * radius
    img[macula] *= 0.3
    for k in range(6):  # dark vessels running to the rim
        angle = k * np.pi / 3 + 0.2
        d = np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle))
        img[(d < 2.0) & disc] *= 0.4
    img += rng.normal(0, 3, img.shape)
    img[~disc] = rng.uniform(0, background, size=(int((~disc).sum()), 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), disc


def _coverage_and_leak(fov: np.ndarray, disc: np.ndarray) -> tuple[float, int]:
    """Fraction of the disc (eroded by 2 px) inside the FOV; FOV pixels farther than 2 px outside the disc."""
    core = ndi.binary_erosion(disc, iterations=2)
    grown = ndi.binary_dilation(disc, iterations=2)
    return float(fov[core].mean()), int((fov & ~grown).sum())


def test_centred_disc_is_covered_without_leak() -> None:
    image, disc = _disc_image()
    fov = compute_fov(image)
    assert fov.dtype == bool and fov.shape == disc.shape
    coverage, leak = _coverage_and_leak(fov, disc)
    assert coverage == 1.0
    assert leak == 0
    # the FOV area is the disc area within a thin rim
    assert abs(int(fov.sum()) - int(disc.sum())) < 0.03 * disc.sum()


def test_dark_rim_macula_and_vessels_stay_inside() -> None:
    image, disc = _disc_image(rim_level=0.12, seed=3)  # rim only ~12 % as bright as the centre
    coverage, leak = _coverage_and_leak(compute_fov(image), disc)
    assert coverage == 1.0 and leak == 0


def test_disc_clipped_by_the_frame() -> None:
    image, disc = _disc_image(h=160, w=200, radius=95.0, seed=1)  # cut at top and bottom (CHASE_DB1-like)
    fov = compute_fov(image)
    coverage, leak = _coverage_and_leak(fov, disc)
    assert coverage == 1.0 and leak == 0
    assert fov[0, 100] and fov[-1, 100]  # touches the frame where the disc does


def test_background_specks_and_corner_label_are_excluded() -> None:
    image, disc = _disc_image(seed=2)
    image[3:12, 3:40] = 230  # a bright burnt-in label in the corner
    rng = np.random.default_rng(5)
    ys, xs = np.nonzero(~ndi.binary_dilation(disc, iterations=4))
    pick = rng.choice(len(ys), 40, replace=False)
    image[ys[pick], xs[pick]] = 255  # isolated hot pixels
    fov = compute_fov(image)
    coverage, leak = _coverage_and_leak(fov, disc)
    assert coverage == 1.0 and leak == 0
    assert not fov[3:12, 3:40].any()


def test_noisy_brighter_background() -> None:
    image, disc = _disc_image(background=30.0, seed=4)
    coverage, leak = _coverage_and_leak(compute_fov(image), disc)
    assert coverage == 1.0 and leak == 0


def test_no_dark_border_gives_whole_image() -> None:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal([180, 90, 40], 10, size=(50, 60, 3)), 0, 255).astype(np.uint8)
    assert compute_fov(image).all()


def test_grey_input_and_bad_input() -> None:
    image, disc = _disc_image()
    fov_grey = compute_fov(image.max(axis=2))
    np.testing.assert_array_equal(fov_grey, compute_fov(image))
    with pytest.raises(RetsamInputError, match="uniformly black"):
        compute_fov(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(RetsamInputError, match="shape"):
        compute_fov(np.zeros((4, 4, 2)))
    with pytest.raises(RetsamInputError, match="NaN"):
        compute_fov(np.full((4, 4), np.nan))


def test_matches_the_synthetic_generators_fov() -> None:
    from napari_retsam.data import synthetic_fundus

    s = synthetic_fundus(seed=0, size=256)
    fov = compute_fov(s.image)
    iou = (fov & s.fov).sum() / (fov | s.fov).sum()
    assert iou > 0.97
    assert (s.vessels & ~fov).sum() <= 0.001 * s.vessels.sum()


def test_otsu_threshold_separates_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 2, 5000), rng.normal(150, 10, 5000)])
    t = otsu_threshold(values)
    assert (values[:5000] > t).sum() == 0 and (values[5000:] <= t).sum() == 0
    from skimage.filters import threshold_otsu

    # skimage returns the bin centre, we return its upper edge: half a bin apart.
    bin_width = (values.max() - values.min()) / 256
    assert abs(t - threshold_otsu(values, nbins=256)) <= bin_width
    overlapping = np.concatenate([rng.normal(60, 20, 4000), rng.normal(140, 25, 6000)])
    assert abs(otsu_threshold(overlapping) - threshold_otsu(overlapping, nbins=256)) <= bin_width * 2
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def test_fov_with_gold_includes_every_vessel_pixel() -> None:
    fov = np.zeros((10, 10), bool)
    fov[2:8, 2:8] = True
    gold = np.zeros((10, 10), bool)
    gold[5, 7:10] = True  # a vessel annotated beyond the computed rim
    out = fov_with_gold(fov, gold)
    assert out[gold].all() and out[fov].all()
    assert out.sum() == fov.sum() + 2
    assert fov_with_gold(fov, None) is fov


def test_mask_bounding_box_uses_inclusive_pixel_corners() -> None:
    from napari_retsam.data import mask_bounding_box

    mask = np.zeros((10, 12), bool)
    assert mask_bounding_box(mask) is None
    mask[2, 3] = True
    np.testing.assert_array_equal(mask_bounding_box(mask), [3, 2, 3, 2])
    mask[7, 9] = True
    box = mask_bounding_box(mask)
    np.testing.assert_array_equal(box, [3, 2, 9, 7])  # x0, y0, x1 = last column, y1 = last row
    assert box.dtype == np.float64
