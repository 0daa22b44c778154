"""Tile grids and smooth-blend stitching (numpy only).

A tile is ``(y0, x0, y1, x1)``: rows ``y0..y1-1`` and columns ``x0..x1-1``.

Grid (:func:`tile_grid`): along each axis of length n, windows of length
``t = min(tile, n)`` start at ``0, s, 2s, …`` with stride ``s = tile − overlap``,
and the last window is moved to end exactly at n, so the grid covers the image
and neighbouring windows overlap by at least ``overlap`` pixels. The grid depends
only on the image size, tile and overlap, so embeddings are reused between boxes
and between calls.

Blending (:func:`blend_weights`): the weight of a window is the outer product of
two 1-D profiles; along an axis of length m the profile is the raised cosine

    r(i) = ½ − ½·cos(π·(i + ½) / overlap)   for i < overlap,

mirrored at the far end, and 1 in between (all ones when ``overlap == 0``).
Every weight is > 0. The stitched value at a pixel is ``Σ_k w_k·v_k / Σ_k w_k``
over the windows covering it, accumulated in float64, so identical inputs give
exactly that value back after the cast to float32, and values change smoothly
across overlaps (no seams).
"""

from __future__ import annotations

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.options import check_tile

__all__ = ["Stitcher", "Tile", "blend_weights", "tile_grid"]

Tile = tuple[int, int, int, int]


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step))
    if not starts or starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def tile_grid(height: int, width: int, tile: int | None, overlap: int = 0) -> list[Tile]:
    """The fixed grid of windows for an image (one whole-image window when ``tile`` is None/0)."""
    if height < 1 or width < 1:
        raise RetsamInputError(f"cannot tile an empty {height}×{width} image")
    if not tile:
        return [(0, 0, int(height), int(width))]
    tile, overlap = check_tile(tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return [
        (y, x, y + th, x + tw)
        for y in _starts(height, tile, overlap)
        for x in _starts(width, tile, overlap)
    ]


def _profile(length: int, overlap: int) -> np.ndarray:
    prof = np.ones(length, dtype=np.float64)
    if overlap <= 0:
        return prof
    i = np.arange(length, dtype=np.float64)
    ramp = lambda k: np.where(k < overlap, 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / overlap), 1.0)  # noqa: E731
    return np.minimum(ramp(i), ramp(length - 1 - i)) * prof


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """float64 height×width raised-cosine window weights (all > 0)."""
    return np.outer(_profile(height, overlap), _profile(width, overlap))


class Stitcher:
    """Accumulate per-window values (…×h×w) into a full …×H×W map with blending."""

    def __init__(self, shape: tuple[int, ...], overlap: int) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.overlap = int(overlap)
        self._acc = np.zeros(self.shape, dtype=np.float64)
        self._wsum = np.zeros(self.shape[-2:], dtype=np.float64)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Add the values of one window (shape ``(…, y1−y0, x1−x0)``)."""
        y0, x0, y1, x1 = tile
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-2:] != (y1 - y0, x1 - x0):
            raise ValueError(f"values of shape {values.shape} do not fit tile {tile}")
        weights = blend_weights(y1 - y0, x1 - x0, self.overlap)
        self._acc[..., y0:y1, x0:x1] += weights * values
        self._wsum[y0:y1, x0:x1] += weights

    @property
    def covered(self) -> np.ndarray:
        """Bool H×W: pixels that at least one window covered."""
        return self._wsum > 0

    def result(self, fill: float = np.nan) -> np.ndarray:
        """float32 blended map; pixels no window covered get ``fill``."""
        out = np.full(self.shape, fill, dtype=np.float64)
        covered = self.covered
        np.divide(self._acc, self._wsum, out=out, where=np.broadcast_to(covered, self.shape))
        return out.astype(np.float32)
