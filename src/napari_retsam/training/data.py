"""Training data for fine-tuning: items, mixing, augmentation views and box prompts.

Pure numpy (no torch at module level). The pipeline is

1. **items** (:class:`TrainItem`: RGB image, vessel mask, FOV) from a dataset
   reader (:func:`items_from_dataset`), a generic/synthetic folder
   (:func:`items_from_folder`, e.g. the GAN export) or arrays/viewer layers
   (:func:`items_from_arrays`, single images or stacks), checked on the way in
   (:func:`check_item`: the mask must have the image's H×W; a mask with no
   vessels is kept, the BSD loss's dynamic selection handles it);
2. :func:`mix_synthetic` mixes synthetic items into the real ones at a ratio and
   :func:`split_train_val` holds out a validation part;
3. **views** (:class:`ViewSpec`): view 0 is the item itself, views 1.. are
   deterministic random augmentations (horizontal flip, 90° rotations, colour
   jitter of brightness/contrast/saturation) drawn from ``(seed, item, view)``.
   A view is applied to the image *before* embedding, so each view has its own
   cached embedding; the mask and FOV get the same geometric transform;
4. **box prompts** (:func:`napari_retsam.data.fov.mask_bounding_box`, :func:`jitter_box`): the bounding box of
   the FOV (or of the vessels) in a tile, each side moved by a uniform random
   offset of up to ``box_jitter`` × the box side at every step.

Everything random is drawn from :func:`rng_for` ``(seed, *keys)``, a generator
keyed by the sample's identity rather than by a running stream, so a resumed or
distributed run draws exactly the same numbers as a straight single-process run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = [
    "TrainItem",
    "ViewSpec",
    "check_item",
    "items_from_dataset",
    "items_from_folder",
    "items_from_arrays",
    "mix_synthetic",
    "split_train_val",
    "view_spec",
    "apply_view",
    "rng_for",
    "jitter_box",
    "data_signature",
]


@dataclass
class TrainItem:
    """One training image: ``image`` H×W×3 uint8 RGB, ``mask`` and ``fov`` H×W bool."""

    id: str
    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray
    source: str = "real"


def _as_rgb_uint8(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise RetsamInputError(f"{what}: expected an H×W×3 RGB image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise RetsamInputError(f"{what}: image contains NaN or infinite values")
    hi = float(image.max()) if image.size else 0.0
    if hi <= 1.0:
        image = image * 255.0
    elif hi > 255.0:
        image = image * (255.0 / hi)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def check_item(item: TrainItem) -> TrainItem:
    """Validate shapes and types; returns the item with normalised arrays.

    Raises :class:`RetsamInputError` naming the item when the mask or FOV does not
    have the image's height and width. Masks with no vessels are kept.
    """
    image = _as_rgb_uint8(item.image, f"sample {item.id!r}")
    mask = np.asarray(item.mask)
    if mask.ndim == 3 and mask.shape[2] in (3, 4):
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise RetsamInputError(
            f"sample {item.id!r}: mask shape {mask.shape} does not match image {image.shape[:2]}"
        )
    fov = np.ones(image.shape[:2], bool) if item.fov is None else np.asarray(item.fov)
    if fov.shape != image.shape[:2]:
        raise RetsamInputError(f"sample {item.id!r}: FOV shape {fov.shape} does not match image {image.shape[:2]}")
    return TrainItem(item.id, image, mask > 0, fov > 0, item.source)


def items_from_dataset(
    name: str,
    root: str | Path,
    split: str = "train",
    limit: int = 0,
    annotator: int = 1,
    source: str = "real",
) -> list[TrainItem]:
    """Load a dataset split through :func:`napari_retsam.data.open_dataset`.

    ``limit > 0`` keeps the first ``limit`` images. Every sample must ship a gold
    standard of its image's shape (else :class:`RetsamInputError` naming it).
    """
    from napari_retsam.data import open_dataset

    if limit < 0:
        raise RetsamInputError(f"limit must be >= 0, got {limit}")
    dataset = open_dataset(name, root, split=split, annotator=annotator)
    n = len(dataset) if limit == 0 else min(limit, len(dataset))
    if n == 0:
        raise RetsamInputError(f"no images found in {name} dataset at {root} (split {split!r})")
    items = []
    for index in range(n):
        sample = dataset[index]
        if sample.gold is None:
            raise RetsamInputError(f"sample {sample.id!r} of {name} has no vessel annotation to train on")
        items.append(check_item(TrainItem(sample.id, sample.image, sample.gold, sample.fov, source)))
    return items


def items_from_folder(root: str | Path, limit: int = 0, source: str = "synthetic") -> list[TrainItem]:
    """All images of a generic folder (``images/``, ``masks/``, optional ``fov/``), e.g. a GAN export."""
    return items_from_dataset("folder", root, split="all", limit=limit, source=source)


def items_from_arrays(
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    fovs: np.ndarray | Sequence[np.ndarray] | None = None,
    ids: Sequence[str] | None = None,
    prefix: str = "layer",
) -> list[TrainItem]:
    """Items from arrays or viewer layer data: one image (H×W×3 / H×W) or a stack.

    ``masks`` (e.g. a Labels layer) may be label images: every label > 0 counts
    as vessel. A stack is recognised when ``masks`` has one more dimension than
    a single H×W mask (N×H×W); then images must be N×H×W×3 or N×H×W.
    """
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        images_list, masks_list = [np.asarray(images)], [masks]
        fovs_list = [None if fovs is None else np.asarray(fovs)]
    else:
        images_list, masks_list = list(images), list(masks)
        fovs_list = [None] * len(masks_list) if fovs is None else list(fovs)
    if len(images_list) != len(masks_list):
        raise RetsamInputError(f"{len(images_list)} images but {len(masks_list)} masks: they must pair up")
    if len(fovs_list) != len(masks_list):
        raise RetsamInputError(f"{len(fovs_list)} FOV masks for {len(masks_list)} images")
    if not masks_list:
        raise RetsamInputError("no image/mask pairs given")
    if ids is None:
        ids = [f"{prefix}_{k}" if len(masks_list) > 1 else prefix for k in range(len(masks_list))]
    items = []
    for item_id, image, mask, fov in zip(ids, images_list, masks_list, fovs_list):
        image = np.asarray(image)
        if fov is None:
            fov = np.ones(image.shape[:2], bool)
        items.append(check_item(TrainItem(str(item_id), image, mask, fov, "layer")))
    return items


def mix_synthetic(
    real: Sequence[TrainItem], synthetic: Sequence[TrainItem], ratio: float, seed: int = 0
) -> list[TrainItem]:
    """Real items plus synthetic ones making up a fraction ``ratio`` of the result's pixels.

    The share is counted in image pixels, not in items: fine-tuning trains on
    tiles, so a 256-px GAN patch weighs one tile and a whole 565 × 584 fundus
    about nine. ``n_syn = round(ratio / (1 − ratio) · real_pixels / mean
    synthetic pixels)`` synthetic items are drawn without replacement (seeded)
    and capped at the number available; with equal sizes this is
    ``round(ratio / (1 − ratio) · n_real)``. With no real items all synthetic
    items are used (``ratio`` ignored). ``ratio`` in [0, 1); 0 = none.
    """
    if not 0 <= ratio < 1:
        raise RetsamInputError(f"synthetic ratio must be in [0, 1), got {ratio}")
    real, synthetic = list(real), list(synthetic)
    if not real:
        return synthetic
    if ratio == 0 or not synthetic:
        return real
    real_pixels = sum(it.mask.size for it in real)
    mean_syn_pixels = sum(it.mask.size for it in synthetic) / len(synthetic)
    n_syn = min(len(synthetic), int(round(ratio / (1.0 - ratio) * real_pixels / mean_syn_pixels)))
    picks = rng_for(seed, "mix").permutation(len(synthetic))[:n_syn]
    return real + [synthetic[int(k)] for k in sorted(picks)]


def split_train_val(
    items: Sequence[TrainItem], val_fraction: float, seed: int = 0, val_items: Sequence[TrainItem] | None = None
) -> tuple[list[TrainItem], list[TrainItem]]:
    """Hold out validation items.

    ``val_items`` given (e.g. another split of the dataset): train on all
    ``items``, validate on those. Otherwise ``round(val_fraction · n)`` real
    items (at least one when ``val_fraction > 0`` and there are ≥ 2 items) are
    held out, chosen with a seeded permutation; synthetic items always train.
    """
    items = list(items)
    if val_items is not None:
        return items, list(val_items)
    if val_fraction <= 0:
        return items, []
    candidates = [k for k, it in enumerate(items) if it.source != "synthetic"] or list(range(len(items)))
    if len(items) < 2 or len(candidates) < 1:
        return items, []
    n_val = max(1, int(round(val_fraction * len(candidates))))
    n_val = min(n_val, len(items) - 1, len(candidates))
    order = rng_for(seed, "val").permutation(len(candidates))
    held = {candidates[int(k)] for k in order[:n_val]}
    return [it for k, it in enumerate(items) if k not in held], [items[k] for k in sorted(held)]


# ---------------------------------------------------------------------------- randomness


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A numpy generator determined by ``seed`` and the keys (strings/ints), nothing else."""
    text = "|".join([str(int(seed))] + [str(k) for k in keys]).encode()
    digest = hashlib.sha256(text).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32).astype(np.uint64))


# ---------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class ViewSpec:
    """One augmented view: ``flip`` (left-right) then ``rot90`` quarter turns (counter-clockwise),
    then colour jitter: ``brightness`` b, ``contrast`` c, ``saturation`` s as multiplicative factors.

    Colour jitter on RGB ``x`` in [0, 1], grey ``g = 0.299R + 0.587G + 0.114B``:
    ``x ← x·b``; ``x ← (x − mean(g))·c + mean(g)``; ``x ← (x − g)·s + g``; clipped to [0, 1].
    """

    index: int = 0
    flip: bool = False
    rot90: int = 0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    @property
    def is_identity(self) -> bool:
        return (not self.flip and self.rot90 == 0 and self.brightness == 1.0
                and self.contrast == 1.0 and self.saturation == 1.0)

    def key(self) -> str:
        return (f"v{self.index}:f{int(self.flip)}r{self.rot90}"
                f"b{self.brightness:.6f}c{self.contrast:.6f}s{self.saturation:.6f}")


def view_spec(
    seed: int,
    item_id: str,
    view: int,
    *,
    flips: bool = True,
    rotations: bool = True,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
) -> ViewSpec:
    """The augmentation of ``view`` of an item: view 0 is the identity, others are drawn
    from ``rng_for(seed, "view", item_id, view)``: flip with p = 1/2, rotation k ∈ {0..3},
    each colour factor uniform in ``[1 − a, 1 + a]``."""
    if view == 0:
        return ViewSpec(index=0)
    rng = rng_for(seed, "view", item_id, view)
    flip = bool(rng.integers(2)) if flips else False
    rot = int(rng.integers(4)) if rotations else 0
    b = float(rng.uniform(1 - brightness, 1 + brightness))
    c = float(rng.uniform(1 - contrast, 1 + contrast))
    s = float(rng.uniform(1 - saturation, 1 + saturation))
    return ViewSpec(index=view, flip=flip, rot90=rot, brightness=b, contrast=c, saturation=s)


def _geometric(arr: np.ndarray, spec: ViewSpec) -> np.ndarray:
    if spec.flip:
        arr = arr[:, ::-1]
    if spec.rot90:
        arr = np.rot90(arr, k=spec.rot90, axes=(0, 1))
    return np.ascontiguousarray(arr)


def apply_view(item: TrainItem, spec: ViewSpec) -> TrainItem:
    """The item as seen in view ``spec`` (geometry on image, mask and FOV; colour on the image)."""
    if spec.is_identity:
        return item
    image = _geometric(item.image, spec)
    if (spec.brightness, spec.contrast, spec.saturation) != (1.0, 1.0, 1.0):
        x = image.astype(np.float32) / 255.0
        x = x * spec.brightness
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        mean = float(grey.mean())
        x = (x - mean) * spec.contrast + mean
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - grey[..., None]) * spec.saturation + grey[..., None]
        image = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return TrainItem(f"{item.id}#{spec.index}", image, _geometric(item.mask, spec),
                     _geometric(item.fov, spec), item.source)


# ---------------------------------------------------------------------------- prompts


def jitter_box(box: np.ndarray, jitter: float, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Move each side of ``box`` by ``U(−jitter, +jitter)`` × the box's width (x sides) or
    height (y sides), clip to the image (``[0, width−1] × [0, height−1]``, pixel-index
    coordinates) and keep at least one pixel of extent."""
    box = np.asarray(box, np.float64).copy()
    if jitter > 0:
        bw, bh = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
        box += rng.uniform(-jitter, jitter, size=4) * np.array([bw, bh, bw, bh])
    box[[0, 2]] = np.clip(box[[0, 2]], 0, width - 1)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, height - 1)
    if box[2] - box[0] < 1:
        box[2] = min(width - 1.0, box[0] + 1)
        box[0] = box[2] - 1
    if box[3] - box[1] < 1:
        box[3] = min(height - 1.0, box[1] + 1)
        box[1] = box[3] - 1
    return box


def data_signature(items: Iterable[TrainItem]) -> str:
    """SHA-256 over the ids, shapes and bytes of the items' images and masks (order matters)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.id.encode())
        digest.update(str(item.image.shape).encode())
        digest.update(np.ascontiguousarray(item.image).tobytes())
        digest.update(np.packbits(item.mask).tobytes())
        digest.update(np.packbits(item.fov).tobytes())
    return digest.hexdigest()
