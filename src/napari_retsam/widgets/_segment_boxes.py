"""Shapes layer -> box prompts in an image layer's pixel coordinates (per slice).

Rules (the segmentation widget's documented behaviour):

* every shape's vertices go data -> world (through the Shapes layer's
  scale/translate/affine) -> the image layer's data coordinates, so layers with
  different scale or translate line up as they do on screen;
* a rectangle gives its box; any other shape (polygon, ellipse, path, line)
  gives its bounding box, and the widget says so;
* a box partly outside the image is clipped (the widget says so); a box wholly
  outside, on a slice outside the stack, or of zero width/height is refused;
* for an ``N×H×W`` stack, a box drawn on a 3-D Shapes layer belongs to the
  slice of its vertices; a box of a 2-D Shapes layer (no slice coordinate)
  applies to every slice. Slices without boxes are not segmented.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = ["BoxPlan", "boxes_from_shapes", "image_geometry"]


@dataclass
class BoxPlan:
    """Boxes ``(x0, y0, x1, y1)`` in image pixels, keyed by slice (None: 2-D image)."""

    boxes: dict[int | None, list[list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_boxes(self) -> int:
        return sum(len(v) for v in self.boxes.values())


def image_geometry(layer: Any) -> tuple[int, int, int | None]:
    """(H, W, N or None) of an Image layer: 2-D image or N×H×W stack (RGB or gray)."""
    shape = tuple(np.shape(layer.data))
    spatial = shape[:-1] if getattr(layer, "rgb", False) else shape
    if len(spatial) == 2:
        return int(spatial[0]), int(spatial[1]), None
    if len(spatial) == 3:
        return int(spatial[1]), int(spatial[2]), int(spatial[0])
    raise RetsamInputError(
        f"layer '{layer.name}' has shape {shape}; expected a 2-D image (H×W, H×W×3) or a stack (N×H×W, N×H×W×3)"
    )


def _to_image_data(vertices: np.ndarray, shapes: Any, image: Any, world_point: tuple[float, ...]) -> np.ndarray:
    """Map V×ds Shapes data coordinates to V×di image data coordinates."""
    di = image.ndim
    out = np.empty((len(vertices), di), dtype=np.float64)
    for v, vertex in enumerate(vertices):
        world = np.asarray(shapes.data_to_world(np.asarray(vertex, dtype=np.float64)), dtype=np.float64)
        if world.shape[0] < di:  # leading (slice) dims from the viewer's current position
            lead = np.asarray(world_point[-di:][: di - world.shape[0]], dtype=np.float64) if world_point else None
            if lead is None or lead.shape[0] != di - world.shape[0]:
                lead = np.zeros(di - world.shape[0])
            world = np.concatenate([lead, world])
        elif world.shape[0] > di:
            world = world[-di:]
        out[v] = np.asarray(image.world_to_data(world), dtype=np.float64)[-di:]
    return out


def boxes_from_shapes(shapes: Any, image: Any, world_point: tuple[float, ...] = ()) -> BoxPlan:
    """Box prompts of a Shapes layer for an Image layer (rules in the module docstring)."""
    height, width, n_slices = image_geometry(image)
    if shapes is None:
        raise RetsamInputError("choose a Shapes layer with rectangles (or press 'New box layer' and draw one)")
    if len(shapes.data) == 0:
        raise RetsamInputError(f"the Shapes layer '{shapes.name}' is empty: draw at least one rectangle")
    plan = BoxPlan()
    converted: Counter[str] = Counter()
    clipped = 0
    has_slice_coord = shapes.ndim >= 3 and n_slices is not None
    for i, (vertices, kind) in enumerate(zip(shapes.data, shapes.shape_type, strict=True)):
        if kind != "rectangle":
            converted[kind] += 1
        coords = _to_image_data(np.asarray(vertices), shapes, image, world_point)
        ys, xs = coords[:, -2], coords[:, -1]
        x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
        name = f"shape {i + 1} ({kind})"
        if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
            raise RetsamInputError(
                f"{name} lies wholly outside the image '{image.name}' ({width}×{height} px); move or delete it"
            )
        cx0, cx1 = max(x0, 0.0), min(x1, width - 1.0)
        cy0, cy1 = max(y0, 0.0), min(y1, height - 1.0)
        if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
            raise RetsamInputError(f"{name} has zero area inside the image '{image.name}'; draw a larger rectangle")
        if (cx0, cx1, cy0, cy1) != (x0, x1, y0, y1):
            clipped += 1
        key: int | None = None
        if has_slice_coord:
            key = int(round(float(np.median(coords[:, -3]))))
            if not 0 <= key < n_slices:
                raise RetsamInputError(f"{name} is on slice {key}, outside the {n_slices}-slice stack '{image.name}'")
        plan.boxes.setdefault(key, []).append([cx0, cy0, cx1, cy1])
    if converted:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(converted.items()))
        plan.notes.append(f"non-rectangle shapes ({kinds}) were used through their bounding boxes")
    if clipped:
        plan.notes.append(f"{clipped} box(es) partly outside the image were clipped to it")
    return plan
