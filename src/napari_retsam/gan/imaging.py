"""Small numpy helpers for GAN outputs: value conversion, sample grids, PNG bytes."""

from __future__ import annotations

import io
import os

import numpy as np

from napari_retsam.io_utils import atomic_write_bytes

__all__ = ["to_uint8_image", "sample_grid", "png_bytes", "write_png", "write_public_bytes"]

_UMASK: int | None = None


def write_public_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomic write, then the usual permissions (0666 & ~umask): the atomic writer's
    temporary file is private (0600), which would hide exported datasets from other users."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    atomic_write_bytes(path, data)
    try:
        os.chmod(path, 0o666 & ~_UMASK)
    except OSError:
        pass


def to_uint8_image(x: np.ndarray) -> np.ndarray:
    """[-1, 1] float, channels first (N×3×H×W) → N×H×W×3 uint8: round((x + 1)·127.5)."""
    x = np.clip((np.asarray(x, dtype=np.float32) + 1.0) * 127.5, 0, 255)
    return np.rint(np.moveaxis(x, 1, -1)).astype(np.uint8)


def sample_grid(images: np.ndarray, masks: np.ndarray | None, columns: int = 8, gap: int = 2) -> np.ndarray:
    """Tile N pairs into one RGB picture: each image above its mask (white vessels).

    images N×H×W×3 uint8, masks N×H×W bool (or None: images only); returns
    uint8 R×C×3 with ``gap`` px of grey between tiles.
    """
    n, h, w, _ = images.shape
    columns = max(1, min(columns, n))
    rows_of_pairs = -(-n // columns)
    tile_rows = 2 if masks is not None else 1
    out_h = rows_of_pairs * tile_rows * (h + gap) + gap
    out_w = columns * (w + gap) + gap
    grid = np.full((out_h, out_w, 3), 64, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        y = gap + r * tile_rows * (h + gap)
        x = gap + c * (w + gap)
        grid[y:y + h, x:x + w] = images[i]
        if masks is not None:
            y2 = y + h + gap
            grid[y2:y2 + h, x:x + w] = (masks[i].astype(np.uint8) * 255)[..., None]
    return grid


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 H×W or H×W×3 array as PNG (no timestamps: same array, same bytes)."""
    import imageio.v3 as iio

    buffer = io.BytesIO()
    iio.imwrite(buffer, np.ascontiguousarray(array), extension=".png")
    return buffer.getvalue()


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Atomically write ``array`` as a PNG file (usual permissions)."""
    write_public_bytes(path, png_bytes(array))
