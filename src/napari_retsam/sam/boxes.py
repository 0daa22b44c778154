"""Box prompts: the one clip/refuse rule, used by the engine, the CLI and the widgets.

Boxes are ``(x0, y0, x1, y1)`` in pixel-index coordinates of the original image
(``x1``/``y1`` the last column/row, inclusive). The rule:

* corners are sorted, then the box is clipped to ``[0, W−1] × [0, H−1]``;
* a box wholly outside the image is refused (``"outside"``);
* a box without positive width and height after clipping is refused (``"zero_area"``).

Each caller words its own message (the widget names the shape and the layer, the
engine the box number). A window of a tile grid sees its part of a box
(:func:`box_in_tile`, the segmenter's and the training prompts' rule).

numpy only: importing this module imports neither torch nor Qt.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = ["OUTSIDE", "ZERO_AREA", "box_in_tile", "clip_box", "validate_boxes"]

OUTSIDE = "outside"
ZERO_AREA = "zero_area"


def clip_box(x0: float, y0: float, x1: float, y1: float, height: int, width: int
             ) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """``(clipped box, None)`` or ``(None, OUTSIDE | ZERO_AREA)`` for one box with sorted corners."""
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        return None, OUTSIDE
    cx0, cx1 = max(float(x0), 0.0), min(float(x1), width - 1.0)
    cy0, cy1 = max(float(y0), 0.0), min(float(y1), height - 1.0)
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        return None, ZERO_AREA
    return (cx0, cy0, cx1, cy1), None


def validate_boxes(boxes: Any, height: int, width: int) -> np.ndarray:
    """K×4 float boxes, corners sorted and clipped to the image (:func:`clip_box`); bad boxes raise.

    ``None`` means one box over the whole image.
    """
    if boxes is None:
        return np.array([[0.0, 0.0, width - 1.0, height - 1.0]])
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RetsamInputError(f"boxes must be numbers x0,y0,x1,y1, got {boxes!r}") from exc
    if arr.size == 0:
        raise RetsamInputError("no boxes given: draw at least one rectangle (or pass --box x0,y0,x1,y1)")
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise RetsamInputError(f"boxes must be K×4 (x0, y0, x1, y1), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RetsamInputError("box coordinates must be finite numbers")
    out = np.empty_like(arr)
    out[:, 0] = np.minimum(arr[:, 0], arr[:, 2])
    out[:, 2] = np.maximum(arr[:, 0], arr[:, 2])
    out[:, 1] = np.minimum(arr[:, 1], arr[:, 3])
    out[:, 3] = np.maximum(arr[:, 1], arr[:, 3])
    clipped = [clip_box(*box, height, width) for box in out]
    for k, (box, problem) in enumerate(clipped):  # every wholly-outside box first, as before
        if problem == OUTSIDE:
            x0, y0, x1, y1 = out[k]
            raise RetsamInputError(
                f"box {k + 1} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies wholly outside the {width}×{height} image"
            )
    for k, (box, problem) in enumerate(clipped):
        if problem == ZERO_AREA:
            x0, x1 = np.clip(out[k, [0, 2]], 0, width - 1)
            y0, y1 = np.clip(out[k, [1, 3]], 0, height - 1)
            raise RetsamInputError(
                f"box {k + 1} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has zero area inside the image"
            )
        out[k] = box
    return out


def box_in_tile(box: Any, tile: tuple[int, int, int, int]) -> np.ndarray | None:
    """The part of a pixel-index box inside the window ``tile`` = (y0, x0, y1, x1), in window
    coordinates (None when it has no positive width and height there).

    ``x0' = max(x0, wx0) − wx0``, ``x1' = min(x1, wx1 − 1) − wx0`` (likewise y).
    """
    y0, x0, y1, x1 = tile
    bx0, by0 = max(box[0], x0), max(box[1], y0)
    bx1, by1 = min(box[2], x1 - 1), min(box[3], y1 - 1)
    if bx1 - bx0 <= 0 or by1 - by0 <= 0:
        return None
    return np.array([bx0 - x0, by0 - y0, bx1 - x0, by1 - y0], dtype=np.float64)
