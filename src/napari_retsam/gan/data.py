"""FOV-aware GAN training pairs from any dataset the readers open (numpy only).

Each sample (an object with ``.id``, ``.image`` H×W×3 uint8, ``.gold`` H×W bool
or ``None`` and ``.fov`` H×W bool, as :func:`napari_retsam.data.open_dataset`
returns) becomes one square pair at the GAN resolution S:

1. crop to the bounding box of the field of view (FOV);
2. pad with black to a centred square (the FOV disc stays round);
3. resize to S×S: the image with linear interpolation and anti-aliasing,
   the vessel mask and FOV as area fractions thresholded at 0.5;
4. black out the image and clear the mask outside the FOV.

Patch training (the default, ``GanConfig.unit == "patch"``) keeps the images
at their native resolution (:func:`prepare_native`) and draws S×S crops
(:func:`random_crop`) whose centre is a random FOV pixel, so a patch has the
pixel scale of a segmentation tile; images smaller than S are padded with black
(outside the FOV).

Augmentation (at training time, :func:`dihedral`): one of the 8 symmetries of
the square (horizontal flip × rotation by 0/90/180/270°), applied to image,
mask and FOV alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = ["PreparedPairs", "NativePairs", "crop_to_fov", "prepare_sample", "prepare_pairs", "prepare_native",
           "random_crop", "crop_pairs", "training_pairs", "dihedral", "fov_template"]


@dataclass
class PreparedPairs:
    """Training pairs at the GAN resolution.

    images: N×S×S×3 uint8; masks: N×S×S bool or ``None`` (image-only dataset);
    fovs: N×S×S bool; ids: the sample ids.
    """

    images: np.ndarray
    masks: np.ndarray | None
    fovs: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def crop_to_fov(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop to the FOV bounding box and pad with zeros to a centred square."""
    fov = np.asarray(fov, dtype=bool)
    rows = np.flatnonzero(fov.any(axis=1))
    cols = np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        raise RetsamInputError("the field of view is empty; cannot crop the image to it")
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(r1 - r0, c1 - c0)
    pad_r, pad_c = side - (r1 - r0), side - (c1 - c0)
    pads = ((pad_r // 2, pad_r - pad_r // 2), (pad_c // 2, pad_c - pad_c // 2))

    def crop(a: np.ndarray) -> np.ndarray:
        a = a[r0:r1, c0:c1]
        return np.pad(a, pads + ((0, 0),) * (a.ndim - 2))

    return crop(image), (None if mask is None else crop(mask)), crop(fov)


def _resize(a: np.ndarray, size: int, binary: bool) -> np.ndarray:
    from skimage.transform import resize

    if binary:
        frac = resize(a.astype(np.float32), (size, size), order=1, anti_aliasing=True, preserve_range=True)
        return frac >= 0.5
    out = resize(a.astype(np.float32), (size, size, a.shape[2]), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def prepare_sample(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray, size: int
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One (image, mask, fov) → S×S×3 uint8, S×S bool (or None), S×S bool (steps 1–4)."""
    image = np.asarray(image)
    _check_sample_arrays(image, mask, fov)
    img, msk, fv = crop_to_fov(image, None if mask is None else np.asarray(mask, dtype=bool), fov)
    img = _resize(img, size, binary=False)
    fv = _resize(fv, size, binary=True)
    img[~fv] = 0
    if msk is not None:
        msk = _resize(msk, size, binary=True) & fv
    return img, msk, fv


def prepare_pairs(samples: Sequence[Any], size: int, *, require_masks: bool = False) -> PreparedPairs:
    """Prepare every sample of a dataset (see the module docstring).

    The dataset counts as image-only (``masks is None``) when no sample has a
    vessel mask; a dataset where only some samples have one is refused.
    """
    n = len(samples)
    if n == 0:
        raise RetsamInputError("the dataset has no images to train on")
    images, masks, fovs, ids = [], [], [], []
    with_mask = 0
    for s in samples:
        gold = getattr(s, "gold", None)
        img, msk, fv = prepare_sample(s.image, gold, s.fov, size)
        images.append(img)
        fovs.append(fv)
        ids.append(str(s.id))
        if msk is not None:
            with_mask += 1
            masks.append(msk)
    if 0 < with_mask < n:
        raise RetsamInputError(f"only {with_mask} of {n} images have a vessel mask; "
                               "use a dataset where all or none have one")
    if require_masks and with_mask == 0:
        raise RetsamInputError("this dataset has no vessel masks; the conditional GAN needs them")
    return PreparedPairs(np.stack(images), np.stack(masks) if with_mask else None, np.stack(fovs), ids)


@dataclass
class NativePairs:
    """Images at their native resolution, for patch training and patch sampling.

    images: H×W×3 uint8 each; masks: H×W bool each or ``None`` (image-only
    dataset); fovs: H×W bool each; ids: the sample ids. Every image is at least
    ``min_size`` px on each side (padded with black, outside the FOV).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    fovs: list[np.ndarray]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def fov_pixels(self, index: int) -> np.ndarray:
        """Flat indices of the FOV pixels of image ``index`` (computed once)."""
        cache = self.__dict__.setdefault("_fov_flat", {})
        if index not in cache:
            cache[index] = np.flatnonzero(self.fovs[index])
        return cache[index]


def _check_sample_arrays(image: np.ndarray, mask: np.ndarray | None, fov: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise RetsamInputError(f"expected an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if np.asarray(fov).shape != image.shape[:2] or (mask is not None and np.asarray(mask).shape != image.shape[:2]):
        raise RetsamInputError("image, vessel mask and field of view differ in size")


def prepare_native(samples: Sequence[Any], min_size: int, *, require_masks: bool = False) -> NativePairs:
    """Every sample at its native resolution (image black and mask empty outside
    the FOV), padded to at least ``min_size`` px per side; the same all-or-none
    rule for vessel masks as :func:`prepare_pairs`."""
    if len(samples) == 0:
        raise RetsamInputError("the dataset has no images to train on")
    images, masks, fovs, ids = [], [], [], []
    for s in samples:
        image = np.asarray(s.image)
        gold = getattr(s, "gold", None)
        _check_sample_arrays(image, gold, s.fov)
        fov = np.asarray(s.fov, dtype=bool)
        if not fov.any():
            raise RetsamInputError(f"the field of view of {s.id} is empty")
        pad = ((0, max(0, min_size - fov.shape[0])), (0, max(0, min_size - fov.shape[1])))
        img = np.pad(np.where(fov[..., None], image, 0).astype(np.uint8), pad + ((0, 0),))
        images.append(img)
        fovs.append(np.pad(fov, pad))
        ids.append(str(s.id))
        if gold is not None:
            masks.append(np.pad(np.asarray(gold, dtype=bool) & fov, pad))
    if 0 < len(masks) < len(images):
        raise RetsamInputError(f"only {len(masks)} of {len(images)} images have a vessel mask; "
                               "use a dataset where all or none have one")
    if require_masks and not masks:
        raise RetsamInputError("this dataset has no vessel masks; the conditional GAN needs them")
    return NativePairs(images, masks or None, fovs, ids)


def random_crop(pairs: NativePairs, index: int, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """An S×S crop of image ``index`` centred (where the border allows) on a random FOV pixel."""
    fov = pairs.fovs[index]
    h, w = fov.shape
    flat = pairs.fov_pixels(index)
    cy, cx = divmod(int(flat[int(rng.integers(0, flat.size))]), w)
    y0 = min(max(cy - size // 2, 0), h - size)
    x0 = min(max(cx - size // 2, 0), w - size)
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    mask = None if pairs.masks is None else pairs.masks[index][window]
    return pairs.images[index][window], mask, fov[window]


def crop_pairs(pairs: NativePairs, n: int, size: int, seed: int) -> PreparedPairs:
    """``n`` crops (:func:`random_crop`), crop i from image ``i mod N`` with
    ``numpy.random.default_rng([seed, i])``; the id of crop i is ``"<image id>#i"``."""
    images, masks, fovs, ids = [], [], [], []
    for i in range(int(n)):
        j = i % len(pairs)
        img, msk, fv = random_crop(pairs, j, size, np.random.default_rng([int(seed), i]))
        images.append(img)
        fovs.append(fv)
        ids.append(f"{pairs.ids[j]}#{i}")
        if msk is not None:
            masks.append(msk)
    return PreparedPairs(np.stack(images), np.stack(masks) if masks else None, np.stack(fovs), ids)


def training_pairs(samples: Sequence[Any], config: Any, *, require_masks: bool | None = None
                   ) -> PreparedPairs | NativePairs:
    """The training data a :class:`~napari_retsam.gan.config.GanConfig` asks for:
    native-resolution images for patch training, else whole images at ``config.size``.
    A conditional GAN requires vessel masks."""
    if require_masks is None:
        require_masks = config.mode == "conditional"
    if config.unit == "patch":
        return prepare_native(samples, config.size, require_masks=require_masks)
    return prepare_pairs(samples, config.size, require_masks=require_masks)


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """Symmetry ``k`` ∈ 0..7 of the square on the two leading spatial axes:
    rotate by 90°·(k mod 4), then flip left–right when k ≥ 4."""
    out = np.rot90(a, k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def fov_template(fovs: np.ndarray) -> np.ndarray:
    """The FOV every generated sample gets: pixels inside the FOV in at least
    half of the 8·N dihedral copies of the training FOVs (S×S bool)."""
    mean = np.zeros(fovs.shape[1:], dtype=np.float64)
    for k in range(8):
        mean += dihedral(np.moveaxis(fovs, 0, -1), k).mean(axis=-1)
    return (mean / 8.0) >= 0.5
