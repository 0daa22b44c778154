"""Shapes layer -> box prompts in an image layer's pixel coordinates (per slice).

Rules (the segmentation widget's documented behaviour):

* every shape's vertices go data -> world (through the Shapes layer's
  scale/translate/affine) -> the image layer's data coordinates, so layers with
  different scale or translate line up as they do on screen;
* a rectangle gives its box; any other shape (polygon, ellipse, path, line)
  gives its bounding box, and the widget says so;
* a box partly outside the image is clipped (the widget says so); a box wholly
  outside, on a slice outside the stack, or of zero width/height is left out
  (the clip/refuse rule is the engine's, :func:`napari_retsam.sam.boxes.clip_box`)
  with a note naming it (``skip_invalid=True``, what the widget does: one
  stray box never blocks the others), or refused (``skip_invalid=False``);
  when no usable box remains, the first such problem is the error;
* for an ``N×H×W`` stack, a box drawn on a 3-D Shapes layer belongs to the
  slice of its vertices; a box of a 2-D Shapes layer (no slice coordinate)
  applies to every slice. Slices without boxes are not segmented;
* for a 2-D image, a 3-D Shapes layer contributes only the boxes on the slice
  the viewer shows (the ones drawn over the image); boxes on other slices are
  left out with a note, and an error says so when the shown slice has none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.boxes import OUTSIDE, ZERO_AREA, clip_box

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


def _slice_of(coords: np.ndarray) -> tuple[int, ...]:
    """The (rounded) leading, non-spatial coordinates of a shape's vertices."""
    return tuple(int(round(float(v))) for v in np.median(coords[:, :-2], axis=0))


def _shown_slice(shapes: Any, world_point: tuple[float, ...]) -> tuple[int, ...]:
    """The leading data coordinates of ``shapes`` at the viewer's current position."""
    lead = shapes.ndim - 2
    point = np.zeros(shapes.ndim)
    if len(world_point) >= shapes.ndim:
        point = np.asarray(shapes.world_to_data(np.asarray(world_point[-shapes.ndim:], dtype=np.float64)),
                           dtype=np.float64)
    return tuple(int(round(float(v))) for v in point[:lead])


def boxes_from_shapes(shapes: Any, image: Any, world_point: tuple[float, ...] = (), *,
                      skip_invalid: bool = False) -> BoxPlan:
    """Box prompts of a Shapes layer for an Image layer (rules in the module docstring)."""
    height, width, n_slices = image_geometry(image)
    if shapes is None:
        raise RetsamInputError("choose a Shapes layer with rectangles (or press 'New box layer' and draw one)")
    if len(shapes.data) == 0:
        raise RetsamInputError(f"the Shapes layer '{shapes.name}' is empty: draw at least one rectangle")
    plan = BoxPlan()
    converted: Counter[str] = Counter()
    clipped = 0
    problems: list[str] = []
    other_slices = 0
    has_slice_coord = shapes.ndim >= 3 and n_slices is not None
    shown = _shown_slice(shapes, world_point) if shapes.ndim >= 3 and n_slices is None else None
    for i, (vertices, kind) in enumerate(zip(shapes.data, shapes.shape_type, strict=True)):
        vertices = np.asarray(vertices, dtype=np.float64)
        if shown is not None and _slice_of(vertices) != shown:
            other_slices += 1
            continue
        coords = _to_image_data(vertices, shapes, image, world_point)
        ys, xs = coords[:, -2], coords[:, -1]
        x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
        name = f"shape {i + 1} ({kind})"
        problem = None
        key: int | None = None
        box, refused = clip_box(x0, y0, x1, y1, height, width)  # the engine's rule (sam/boxes.py)
        if refused == OUTSIDE:
            problem = f"{name} lies wholly outside the image '{image.name}' ({width}×{height} px); move or delete it"
        elif refused == ZERO_AREA:
            problem = f"{name} has zero area inside the image '{image.name}'; draw a larger rectangle"
        elif has_slice_coord:
            key = int(round(float(np.median(coords[:, -3]))))
            if not 0 <= key < n_slices:
                problem = f"{name} is on slice {key}, outside the {n_slices}-slice stack '{image.name}'"
        if problem is not None:
            if not skip_invalid:
                raise RetsamInputError(problem)
            problems.append(problem)
            continue
        if kind != "rectangle":
            converted[kind] += 1
        if box != (x0, y0, x1, y1):
            clipped += 1
        plan.boxes.setdefault(key, []).append(list(box))
    if not plan.boxes:
        if problems:
            raise RetsamInputError(problems[0] if len(problems) == 1
                                   else f"{problems[0]} (and {len(problems) - 1} more unusable shape(s))")
        where = ", ".join(str(v) for v in shown or ())
        raise RetsamInputError(
            f"the 3-D Shapes layer '{shapes.name}' has no box on the shown slice ({where}) and the image "
            f"'{image.name}' is 2-D: draw a box on this slice or use a 2-D Shapes layer"
        )
    if converted:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(converted.items()))
        plan.notes.append(f"non-rectangle shapes ({kinds}) were used through their bounding boxes")
    if clipped:
        plan.notes.append(f"{clipped} box(es) partly outside the image were clipped to it")
    for problem in problems:
        plan.notes.append(problem.split(";")[0] + ": left out")
    if other_slices:
        plan.notes.append(
            f"{other_slices} box(es) on other slices of the 3-D Shapes layer '{shapes.name}' were left out "
            f"(the image '{image.name}' is 2-D: only the boxes on the shown slice are used)"
        )
    return plan
