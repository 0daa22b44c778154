"""Tests of the procedural synthetic fundus generator (napari_retsam.data.synthetic)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from napari_retsam.data.synthetic import SyntheticFundus, synthetic_fundus, write_synthetic_folder
from napari_retsam.errors import RetsamInputError


@pytest.fixture(scope="module")
def fundus() -> SyntheticFundus:
    return synthetic_fundus(seed=3, size=256)


def test_same_seed_gives_identical_arrays() -> None:
    a = synthetic_fundus(seed=7, size=128)
    b = synthetic_fundus(seed=7, size=128)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.vessels, b.vessels)
    assert np.array_equal(a.fov, b.fov)
    assert a.od_center == b.od_center


def test_different_seeds_differ() -> None:
    a = synthetic_fundus(seed=1, size=128)
    b = synthetic_fundus(seed=2, size=128)
    assert not np.array_equal(a.vessels, b.vessels)
    assert not np.array_equal(a.image, b.image)


def test_shapes_and_dtypes(fundus: SyntheticFundus) -> None:
    assert fundus.image.shape == (256, 256, 3) and fundus.image.dtype == np.uint8
    assert fundus.vessels.shape == (256, 256) and fundus.vessels.dtype == bool
    assert fundus.fov.shape == (256, 256) and fundus.fov.dtype == bool
    assert fundus.vessel_coverage.shape == (256, 256)


def test_fov_is_the_centred_disc_and_black_outside(fundus: SyntheticFundus) -> None:
    yy, xx = np.mgrid[0:256, 0:256]
    r = np.hypot(yy - 127.5, xx - 127.5)
    expected = r <= 0.46 * 256
    assert np.array_equal(fundus.fov, expected)
    # The anti-aliased rim just outside the FOV is covered less than half.
    rim = fundus.image[~fundus.fov].max(axis=0).astype(float)
    assert np.all(rim <= 0.5 * fundus.image[fundus.fov].max(axis=0) + 2)
    assert fundus.image[r > 0.46 * 256 + 1].max() == 0


def test_vessels_inside_fov_and_plausible_fraction(fundus: SyntheticFundus) -> None:
    assert not (fundus.vessels & ~fundus.fov).any()
    fraction = fundus.vessels[fundus.fov].mean()
    assert 0.04 < fraction < 0.25  # DRIVE: 12.7 % of the FOV


def test_vessels_darker_than_background_mostly_in_green(fundus: SyntheticFundus) -> None:
    img = fundus.image.astype(float)
    # Background: FOV pixels at least 3 px from any vessel and outside the optic disc.
    far = ~ndimage.binary_dilation(fundus.vessels, iterations=3) & fundus.fov
    oy, ox = fundus.od_center
    yy, xx = np.mgrid[0:256, 0:256]
    far &= np.hypot(yy - oy, xx - ox) > 2 * fundus.od_radius
    # Compare each vessel pixel with the local background mean (radius-limited ring).
    ves = fundus.vessels & (np.hypot(yy - oy, xx - ox) > 2 * fundus.od_radius)
    contrast = []
    for c in range(3):
        bg_local = ndimage.uniform_filter(np.where(far, img[..., c], 0.0), 15)
        weight = ndimage.uniform_filter(far.astype(float), 15)
        ok = ves & (weight > 0.2)
        contrast.append(float(np.mean(1.0 - img[..., c][ok] / (bg_local[ok] / weight[ok]))))
    red, green, blue = contrast
    assert green > 0.12  # vessels clearly darker in green
    assert green > red and green > blue
    assert red > 0  # and somewhat darker in red too


def test_background_is_orange_red(fundus: SyntheticFundus) -> None:
    mean = fundus.image[fundus.fov & ~fundus.vessels].astype(float).mean(axis=0)
    assert mean[0] > mean[1] > mean[2]


def test_optic_disc_bright_and_fovea_dark() -> None:
    f = synthetic_fundus(seed=5, size=256)
    green = f.image[..., 1].astype(float)
    yy, xx = np.mgrid[0:256, 0:256]
    od = np.hypot(yy - f.od_center[0], xx - f.od_center[1]) < 0.5 * f.od_radius
    fov_bg = f.fov & ~f.vessels
    fovea = np.hypot(yy - f.fovea_center[0], xx - f.fovea_center[1]) < 5
    assert green[od & ~f.vessels].mean() > green[fov_bg].mean() + 40
    assert green[fovea & ~f.vessels].mean() < np.median(green[fov_bg])
    # The fovea lies on the opposite side of the image centre from the disc.
    assert (f.od_center[1] - 127.5) * (f.fovea_center[1] - 127.5) < 0


def test_vessel_tree_is_mostly_connected() -> None:
    f = synthetic_fundus(seed=0, size=512)
    labels, n = ndimage.label(f.vessels, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() / f.vessels.sum() > 0.95
    # The main component passes through the optic disc (the tree's root).
    oy, ox = (int(round(v)) for v in f.od_center)
    main = labels == (np.argmax(sizes) + 1)
    r = int(f.od_radius)
    assert main[oy - r: oy + r, ox - r: ox + r].any()


def test_widths_taper_from_thick_to_one_pixel() -> None:
    f = synthetic_fundus(seed=0, size=512)
    # Local width ~ 2 x distance to background on the medial axis.
    dist = ndimage.distance_transform_edt(f.vessels)
    assert dist.max() >= 3.0  # the thickest trunks are ~8 px wide
    thin = (dist > 0) & (dist <= 1.0)
    assert thin.sum() > 0.3 * f.vessels.sum()  # many thin capillary-like pixels


def test_mask_consistent_with_anti_aliased_coverage(fundus: SyntheticFundus) -> None:
    cov = fundus.vessel_coverage
    assert np.all(cov[fundus.vessels] >= 0.5 - 1e-6)
    assert np.all(cov[~fundus.vessels] < 0.5 + 1e-6)
    # Partial coverage exists on the edges (sub-pixel anti-aliasing).
    partial = (cov > 0.05) & (cov < 0.95)
    assert partial.sum() > 0.2 * fundus.vessels.sum()


def test_width_scales_with_size() -> None:
    small = synthetic_fundus(seed=4, size=128)
    big = synthetic_fundus(seed=4, size=512)
    frac_small = small.vessels[small.fov].mean()
    frac_big = big.vessels[big.fov].mean()
    # Widths scale with the size (floored at 1 px), so the fraction stays comparable.
    assert 0.5 < frac_small / frac_big < 3.0


@pytest.mark.parametrize("bad", [0, 10, 63, -5, 100.5, "256", True])
def test_bad_size_raises(bad: object) -> None:
    with pytest.raises(RetsamInputError):
        synthetic_fundus(seed=0, size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 1.5, "x", None])
def test_bad_seed_raises(bad: object) -> None:
    with pytest.raises(RetsamInputError):
        synthetic_fundus(seed=bad, size=128)  # type: ignore[arg-type]


def test_write_synthetic_folder_layout_and_content(tmp_path) -> None:
    from PIL import Image

    root = write_synthetic_folder(tmp_path / "synth", n=3, seed=10, size=96)
    assert root == tmp_path / "synth"
    for sub in ("images", "masks", "fov"):
        assert sorted(p.name for p in (root / sub).iterdir()) == ["synth_000.png", "synth_001.png", "synth_002.png"]
    for i in range(3):
        expected = synthetic_fundus(seed=10 + i, size=96)
        img = np.asarray(Image.open(root / "images" / f"synth_{i:03d}.png"))
        mask = np.asarray(Image.open(root / "masks" / f"synth_{i:03d}.png"))
        fov = np.asarray(Image.open(root / "fov" / f"synth_{i:03d}.png"))
        assert np.array_equal(img, expected.image)
        assert set(np.unique(mask).tolist()) == {0, 255}
        assert np.array_equal(mask == 255, expected.vessels)
        assert np.array_equal(fov == 255, expected.fov)


def test_write_synthetic_folder_read_back_by_folder_reader(tmp_path) -> None:
    from napari_retsam.data import open_dataset

    root = write_synthetic_folder(tmp_path, n=2, seed=0, size=96)
    ds = open_dataset("folder", root, split="all")
    assert len(ds) == 2
    sample = ds[0]
    expected = synthetic_fundus(seed=0, size=96)
    assert sample.id == "synth_000"
    assert np.array_equal(sample.image, expected.image)
    assert np.array_equal(sample.gold, expected.vessels)
    assert np.array_equal(sample.fov, expected.fov)


def test_write_synthetic_folder_bad_input(tmp_path) -> None:
    with pytest.raises(RetsamInputError):
        write_synthetic_folder(tmp_path, n=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RetsamInputError):
        write_synthetic_folder(blocker / "sub", n=1, size=64)


def test_import_pulls_no_torch_napari_or_qt() -> None:
    code = (
        "import sys, napari_retsam.data.synthetic as s; s.synthetic_fundus(0, 64); "
        "bad = [m for m in ('torch', 'napari', 'PyQt5', 'qtpy') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
