"""Tile grid and smooth-blend stitching with synthetic logits (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.tiling import Stitcher, blend_weights, tile_grid


def stitch(shape, tiles, values, overlap, fill=np.nan):
    """Blend one array per tile through :class:`Stitcher` (the segmenter's use of it)."""
    stitcher = Stitcher(shape, overlap)
    for tile, value in zip(tiles, values, strict=True):
        stitcher.add(tile, value)
    return stitcher.result(fill)


def _crop(full: np.ndarray, tile):
    y0, x0, y1, x1 = tile
    return full[..., y0:y1, x0:x1]


def test_grid_covers_image_with_overlap():
    tiles = tile_grid(584, 565, 256, 64)
    covered = np.zeros((584, 565), int)
    for y0, x0, y1, x1 in tiles:
        assert (y1 - y0, x1 - x0) == (256, 256)
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    ys = sorted({t[0] for t in tiles})
    assert ys == [0, 192, 328] and sorted({t[1] for t in tiles}) == [0, 192, 309]
    assert tile_grid(100, 80, 512, 64) == [(0, 0, 100, 80)]
    assert tile_grid(100, 80, None) == [(0, 0, 100, 80)] == tile_grid(100, 80, 0)
    for bad in ((100, 100, 64, 64), (100, 100, 8, 0), (100, 100, 64, -1)):
        with pytest.raises(RetsamInputError):
            tile_grid(*bad)


def test_blend_weights_raised_cosine():
    w = blend_weights(10, 12, 4)
    assert w.min() > 0 and w.max() == 1.0
    prof = w[:, 5]
    expected = 0.5 - 0.5 * np.cos(np.pi * (np.arange(4) + 0.5) / 4)
    np.testing.assert_allclose(prof[:4], expected)
    np.testing.assert_allclose(prof[::-1][:4], expected)
    assert np.array_equal(blend_weights(5, 7, 0), np.ones((5, 7)))


@pytest.mark.parametrize("value", [-7.25, 0.0, 3.1e-3, 12.5])
def test_constant_input_is_exact(value):
    tiles = tile_grid(300, 257, 96, 40)
    values = [np.full((t[2] - t[0], t[3] - t[1]), value, np.float32) for t in tiles]
    out = stitch((300, 257), tiles, values, 40)
    assert out.dtype == np.float32
    assert np.array_equal(out, np.full((300, 257), np.float32(value)))


def test_identical_overlapping_views_reproduce_a_smooth_field_without_seams():
    yy, xx = np.mgrid[0:200, 0:230].astype(np.float64)
    field = np.sin(xx / 17.0) + 0.01 * yy
    tiles = tile_grid(200, 230, 64, 24)
    out = stitch((200, 230), tiles, [_crop(field, t) for t in tiles], 24)
    np.testing.assert_allclose(out, field, atol=1e-6)


def test_disagreeing_tiles_blend_continuously():
    tiles = tile_grid(64, 200, 120, 40)
    assert len(tiles) == 2
    values = [np.full((64, 120), 0.0), np.full((64, 120), 10.0)]
    out = stitch((64, 200), tiles, values, 40)
    row = out[10]
    assert row[0] == 0.0 and row[-1] == 10.0
    assert np.all(np.diff(row) >= -1e-6)  # monotone ramp across the overlap
    overlap_start = tiles[1][1]
    steps = np.abs(np.diff(row))
    assert steps.max() < 10.0 / 40 * 2  # no jump: the change is spread over the overlap
    assert np.all(row[:overlap_start] == 0.0)


def test_stitcher_fill_and_channels():
    stitcher = Stitcher((2, 10, 10), 0)
    stitcher.add((0, 0, 5, 5), np.stack([np.ones((5, 5)), 2 * np.ones((5, 5))]))
    out = stitcher.result(fill=-np.inf)
    assert out.shape == (2, 10, 10)
    assert np.all(out[:, :5, :5] == [[[1.0]], [[2.0]]])
    assert np.all(np.isneginf(out[:, 5:, :])) and stitcher.covered.sum() == 25
    with pytest.raises(ValueError):
        stitcher.add((0, 0, 5, 5), np.ones((4, 5)))
