"""Training units: (item, augmented view, tile) with a cached frozen-encoder embedding.

A *unit* is what one batch row trains on: one tile of one augmented view of one
item, with

* its embedding key in the :class:`~napari_retsam.training.embedding_store.EmbeddingStore`
  (frozen encoder: computed once and cached),
* its target: the tile's vessel mask in the decoder's low-resolution frame
  (``4h × 4w``: S/4 × S/4 for vit_*, S × S for lite_medsam): the mask is resized
  like the image (long side to S, area averaging), zero-padded to S×S and
  averaged over blocks of S/(4h) pixels (4×4 for vit_*, none for lite_medsam), so each target
  pixel is the vessel fraction of the encoder-input pixels it covers (in [0, 1];
  thin vessels survive as fractions instead of vanishing under a threshold),
* the view's prompt box: the bounding box of the FOV (or of the vessels) of the
  whole view, in pixel-index coordinates. At each step the loop jitters that box
  and intersects it with the tile exactly as tiled inference does
  (:class:`~napari_retsam.sam.segmenter.Segmenter`: the part of the box inside
  the window, in window coordinates).

Tiles come from the SAM engine's grid (:func:`napari_retsam.sam.tiling.tile_grid`),
the one inference uses, so training and inference see the same geometry. Tiles
that the un-jittered box does not touch are left out (inference never prompts
them either).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_retsam.data.fov import mask_bounding_box
from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.boxes import box_in_tile
from napari_retsam.training.config import FinetuneConfig
from napari_retsam.training.data import TrainItem, apply_view, view_spec

__all__ = ["Unit", "UnitSet", "build_units", "lowres_target", "view_box"]

Window = tuple[int, int, int, int]


@dataclass
class Unit:
    """One tile of one view of one item (see the module docstring)."""

    item: int
    view: int
    tile: int
    window: Window  # y0, x0, y1, x1 in the view's pixels
    view_size: tuple[int, int]  # (H, W) of the view
    input_size: tuple[int, int]  # (h', w') of the tile inside the S×S encoder input
    target: torch.Tensor  # 1×(S/4)×(S/4) float32 in [0, 1]
    view_box: np.ndarray  # (x0, y0, x1, y1) prompt box of the whole view, pixel-index coords
    local_box: np.ndarray  # the un-jittered box inside this tile, tile coords
    key: str  # embedding key

    @property
    def tile_size(self) -> tuple[int, int]:
        y0, x0, y1, x1 = self.window
        return y1 - y0, x1 - x0


@dataclass
class UnitSet:
    """All units of a set of items: ``by_view[(item, view)]`` lists its tiles in order."""

    items: list[TrainItem]
    n_views: int
    by_view: dict[tuple[int, int], list[Unit]]

    def flat_index(self) -> list[tuple[int, int]]:
        """(item, tile) pairs of view 0: the epoch's sample index space."""
        return [(i, t) for i in range(len(self.items)) for t in range(len(self.by_view[(i, 0)]))]

    def unit(self, item: int, view: int, tile: int) -> Unit:
        """Tile ``tile`` of a view (modulo that view's tile count, which a flip or rotation
        can change by a window at the border)."""
        units = self.by_view[(item, view)]
        return units[tile % len(units)]


def view_box(item: TrainItem, box_from: str) -> np.ndarray:
    """The prompt box of an item: bounding box of its FOV (``"fov"``) or vessels; the whole
    image when that region is empty (e.g. a mask with no vessels)."""
    region = item.fov if box_from == "fov" else item.mask
    box = mask_bounding_box(region)
    if box is None:
        height, width = item.mask.shape
        box = np.array([0.0, 0.0, width - 1.0, height - 1.0])
    return box


def lowres_target(mask: np.ndarray, size: int, lowres: int | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Vessel fraction of an H×W bool mask in the ``lowres``×``lowres`` decoder frame (default S/4).

    Returns (1×lowres×lowres float32 target, (h', w') the resized size inside S×S).
    """
    from napari_retsam.sam.preprocess import resized_shape

    height, width = mask.shape
    new_h, new_w = resized_shape(height, width, size)
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if (new_h, new_w) != (height, width):
        m = F.interpolate(m, (new_h, new_w), mode="area")
    m = F.pad(m, (0, size - new_w, 0, size - new_h))
    factor = size // int(lowres or size // 4)
    if factor > 1:
        m = F.avg_pool2d(m, kernel_size=factor, stride=factor)
    return m[0].clamp_(0.0, 1.0), (new_h, new_w)


def build_units(
    items: Sequence[TrainItem],
    config: FinetuneConfig,
    n_views: int,
    img_size: int,
    register: Callable[[np.ndarray, str, Window], str],
    lowres: int | None = None,
) -> UnitSet:
    """Enumerate the units of ``items`` (``n_views`` views each).

    ``lowres``: side of the decoder's low-res logits (4h; default S/4).
    ``register(view_rgb, view_sha256, window) -> key`` makes each tile's embedding
    available (see :class:`~napari_retsam.training.embedding_store.EmbeddingStore`).
    """
    from napari_retsam.sam.embeddings import image_sha256
    from napari_retsam.sam.tiling import tile_grid

    by_view: dict[tuple[int, int], list[Unit]] = {}
    for i, item in enumerate(items):
        for v in range(n_views):
            spec = view_spec(
                config.seed, item.id, v, flips=config.flips, rotations=config.rotations,
                brightness=config.brightness, contrast=config.contrast, saturation=config.saturation,
            )
            seen = apply_view(item, spec)
            height, width = seen.mask.shape
            box = view_box(seen, config.box_from)
            image_hash = image_sha256(seen.image)
            units = []
            for window in tile_grid(height, width, config.tile or None, config.overlap):
                local = box_in_tile(box, window)
                if local is None:
                    continue
                y0, x0, y1, x1 = window
                key = register(seen.image, image_hash, window)
                target, input_size = lowres_target(seen.mask[y0:y1, x0:x1], img_size, lowres)
                units.append(Unit(i, v, len(units), window, (height, width), input_size, target, box, local, key))
            if not units:
                raise RetsamInputError(f"sample {item.id!r}: its prompt box touches no tile")
            by_view[(i, v)] = units
    return UnitSet(list(items), n_views, by_view)
