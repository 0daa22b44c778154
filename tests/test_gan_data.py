"""FOV-aware GAN training pairs: cropping, resizing, augmentation, refusal of mixed datasets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_retsam.data import open_dataset
from napari_retsam.errors import RetsamInputError
from napari_retsam.gan.data import crop_to_fov, dihedral, fov_template, prepare_pairs, prepare_sample


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def test_crop_to_fov_uses_the_bounding_box_and_pads_to_a_centred_square() -> None:
    fov = np.zeros((20, 30), bool)
    fov[5:11, 10:14] = True  # 6 rows × 4 cols
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:11, 10:14] = 200
    img, mask, fv = crop_to_fov(image, fov.copy(), fov)
    assert img.shape == (6, 6, 3) and fv.shape == (6, 6) and mask is not None
    # 2 columns of padding, one on each side
    assert not fv[:, 0].any() and not fv[:, 5].any() and fv[:, 1:5].all()
    assert (img[:, 1:5] == 200).all() and (img[:, 0] == 0).all()
    with pytest.raises(RetsamInputError, match="field of view is empty"):
        crop_to_fov(image, None, np.zeros_like(fov))


def test_prepare_sample_resizes_blacks_out_outside_fov() -> None:
    h, w = 60, 80
    fov = _disc(h, w, 30, 40, 25)
    image = np.full((h, w, 3), 150, np.uint8)
    vessels = np.zeros((h, w), bool)
    vessels[28:32, :] = True  # a horizontal band across the FOV (and outside it)
    img, msk, fv = prepare_sample(image, vessels, fov, 32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert msk.shape == fv.shape == (32, 32) and msk.dtype == bool
    assert (img[~fv] == 0).all() and (img[fv] > 100).all()
    assert not (msk & ~fv).any()
    # the band sits in the middle rows of the cropped disc
    rows = np.flatnonzero(msk.any(axis=1))
    assert rows.min() >= 13 and rows.max() <= 18
    # the FOV disc fills the square: about π/4 of it
    assert fv.mean() == pytest.approx(np.pi / 4, abs=0.05)


def test_prepare_pairs_on_a_dataset_and_mixed_masks_refused(gan_folder) -> None:
    ds = open_dataset("folder", gan_folder, "all")
    pairs = prepare_pairs(ds, 32)
    assert pairs.images.shape == (4, 32, 32, 3) and pairs.masks.shape == (4, 32, 32)
    assert pairs.ids == list(ds.ids) and pairs.size == 32
    assert 0.02 < pairs.masks[pairs.fovs].mean() < 0.5
    s = ds[0]
    mixed = [s, SimpleNamespace(id="x", image=s.image, gold=None, fov=s.fov)]
    with pytest.raises(RetsamInputError, match="only 1 of 2"):
        prepare_pairs(mixed, 32)
    no_masks = [SimpleNamespace(id="x", image=s.image, gold=None, fov=s.fov)]
    assert prepare_pairs(no_masks, 32).masks is None
    with pytest.raises(RetsamInputError, match="no vessel masks"):
        prepare_pairs(no_masks, 32, require_masks=True)
    with pytest.raises(RetsamInputError, match="no images"):
        prepare_pairs([], 32)


def test_dihedral_gives_the_eight_symmetries() -> None:
    a = np.arange(9).reshape(3, 3)
    variants = {dihedral(a, k).tobytes() for k in range(8)}
    assert len(variants) == 8
    assert np.array_equal(dihedral(a, 1), np.rot90(a))
    assert np.array_equal(dihedral(a, 4), a[:, ::-1])
    rgb = np.random.default_rng(0).integers(0, 255, (4, 4, 3))
    assert np.array_equal(dihedral(rgb, 5)[..., 1], dihedral(rgb[..., 1], 5))


def test_fov_template_is_the_majority_symmetrised_fov() -> None:
    f1 = np.zeros((4, 4), bool)
    f1[:, :2] = True  # left half
    f2 = np.ones((4, 4), bool)
    t = fov_template(np.stack([f1, f2]))
    # every pixel lies in the left half in 4 of the 8 symmetries → mean over (half, all) = (0.5 + 1)/2
    assert t.all()
    t0 = fov_template(np.stack([f1, np.zeros((4, 4), bool)]))
    assert not t0.any()  # 0.25 < 0.5
