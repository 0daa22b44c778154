"""napari reader and sample-data contributions (declared in ``napari.yaml``).

Reader (``get_reader``)
-----------------------
* **A dataset folder** - a DRIVE root (opens its test split), ``DRIVE/training``
  or ``DRIVE/test`` (that split), a STARE or CHASE_DB1 folder or a generic folder
  (every sample) - opens as three layers: the images (``Image``, RGB), the gold
  standard of annotator 1 (``Labels``, 1 = vessel) and the field of view
  (``Labels``, 1 = inside). Several samples are stacked along a first axis
  (``N×H×W[×3]``, one slider step per sample, in id order). Images of different
  sizes are padded at the bottom and right to the largest height and width with
  zeros (black image, background labels, outside the FOV), so every sample keeps
  its own pixel coordinates from the top-left corner. At most
  :data:`MAX_STACK` samples (the first in id order) are opened; a warning says
  when more exist. A generic folder without ``masks/`` gives no gold layer.
* **A single image file of a dataset** (e.g. ``DRIVE/test/images/01_test.tif``,
  ``STARE/images/im0001.ppm``, ``CHASE_DB1/Image_01L.jpg``,
  ``folder/images/<id>.png``) opens that sample alone as the same three 2-D layers.
* Anything else (a folder or file that is no recognised dataset, an annotation or
  mask file, several paths) returns ``None`` so napari's own readers handle it.

Every layer's ``metadata["retsam"]`` records the dataset, root, split,
annotator, sample ids and, per sample, whether the FOV was computed, so the
metrics panel can tell which slice is which image.

Sample data (``synthetic_fundus_sample``)
-----------------------------------------
The procedural fundus of :func:`napari_retsam.data.synthetic_fundus` (seed 0):
image, vessel gold standard and FOV.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_STACK", "get_reader", "read_dataset_path", "synthetic_fundus_sample"]

#: The reader opens at most this many samples of a folder (64 CHASE_DB1-sized images and their labels: about 300 MB).
MAX_STACK = 64

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike[str]

_DISPLAY = {"drive": "DRIVE", "stare": "STARE", "chase": "CHASE_DB1", "folder": "folder"}


def _sample_of_file(path: Path) -> tuple[str, Path, str, str] | None:
    """``(dataset, root, split, sample id)`` when ``path`` is the image file of a dataset sample.

    Recognised: ``<DRIVE>/{training,test}/images/NN_*.tif``, ``<STARE>/images/imNNNN.ppm``,
    ``<CHASE_DB1>/Image_NN[LR].jpg`` and ``<folder>[/train|/test]/images/<id>.<ext>``;
    annotation and mask files are not samples.
    """
    import re

    from napari_retsam.data.imageio import is_image_file, split_image_name
    from napari_retsam.data.layouts import detect_dataset

    if not path.is_file() or not is_image_file(path):
        return None
    stem = split_image_name(path)[0]
    parent = path.parent
    if parent.name.lower() == "images":
        split_dir, base = parent.parent, parent.parent.parent
        found = detect_dataset(split_dir)
        if found is not None and found[0] == "drive" and re.match(r"^\d+_(training|test)$", stem, re.I):
            return "drive", split_dir, found[1], stem
        if found is not None and found[0] == "stare" and re.match(r"^im\d+$", stem, re.I):
            return "stare", split_dir, "all", stem
        up = detect_dataset(base) if split_dir.name.lower() in ("train", "test") else None
        if up is not None and up[0] == "folder" and not (base / "images").is_dir():
            return "folder", base, "all", stem
        if found is not None and found[0] == "folder":
            return "folder", split_dir, "all", stem
        return None
    found = detect_dataset(parent)
    if found is not None and found[0] == "chase" and re.match(r"^Image_\d+[LR]$", stem, re.I):
        return "chase", parent, "all", stem
    return None


def _load(name: str, root: Path, split: str, only_id: str | None) -> tuple[list[Any], int, Any]:
    from napari_retsam.data import open_dataset

    ds = open_dataset(name, root, split=split, annotator=1)
    if only_id is not None:
        if only_id not in ds.ids:
            return [], 0, ds
        return [ds.get(only_id)], 1, ds
    n_total = len(ds)
    if n_total > MAX_STACK:
        warnings.warn(
            f"{_DISPLAY[name]} at {root} has {n_total} samples; opening the first {MAX_STACK}",
            stacklevel=2,
        )
    return ds[:MAX_STACK], n_total, ds


def _stack(arrays: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Stack 2-D or H×W×C arrays, zero-padding each at the bottom/right to ``height×width``."""
    first = arrays[0]
    out = np.zeros((len(arrays), height, width, *first.shape[2:]), dtype=first.dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


def _layers(samples: list[Any], name: str, root: Path, split: str, n_total: int) -> list[LayerData]:
    ids = [s.id for s in samples]
    meta = {
        "retsam": {
            "dataset": name,
            "root": str(root),
            "split": split,
            "annotator": 1,
            "ids": ids,
            "fov_computed": [bool(s.fov_computed) for s in samples],
            "shapes": [list(s.shape) for s in samples],
            "n_available": n_total,
        }
    }
    label = _DISPLAY[name] if len(samples) > 1 else ids[0]
    if len(samples) > 1:
        label = f"{label} {split}"
        h = max(s.shape[0] for s in samples)
        w = max(s.shape[1] for s in samples)
        image = _stack([s.image for s in samples], h, w)
        fov = _stack([s.fov.astype(np.uint8) for s in samples], h, w)
        has_gold = all(s.gold is not None for s in samples)
        gold = _stack([s.gold.astype(np.uint8) for s in samples], h, w) if has_gold else None
    else:
        s = samples[0]
        image, fov = s.image, s.fov.astype(np.uint8)
        gold = s.gold.astype(np.uint8) if s.gold is not None else None
    layers: list[LayerData] = [(image, {"name": f"{label} image", "rgb": True, "metadata": meta}, "image")]
    if gold is not None:
        layers.append((gold, {"name": f"{label} gold (annotator 1)", "opacity": 0.6, "metadata": meta}, "labels"))
    layers.append((fov, {"name": f"{label} FOV", "opacity": 0.25, "visible": False, "metadata": meta}, "labels"))
    return layers


def read_dataset_path(path: PathLike) -> list[LayerData]:
    """Open a dataset folder or one sample's image file as napari layer data tuples.

    Raises :class:`~napari_retsam.errors.RetsamInputError` for a path that is
    neither (and for broken datasets: missing, unmatched or unreadable files).
    """
    from napari_retsam.data.layouts import detect_dataset
    from napari_retsam.errors import RetsamInputError

    p = Path(path)
    found = detect_dataset(p)
    if found is not None:
        name, split = found
        samples, n_total, _ = _load(name, p, split, None)
        return _layers(samples, name, p, split, n_total)
    one = _sample_of_file(p)
    if one is not None:
        name, root, split, sample_id = one
        samples, n_total, _ = _load(name, root, split, sample_id)
        if samples:
            return _layers(samples, name, root, split, n_total)
    raise RetsamInputError(f"{p} is neither a DRIVE/STARE/CHASE_DB1/generic dataset folder nor one of its images")


def _reader(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """The reader function napari calls; user errors become a napari notification."""
    from napari_retsam.errors import RetsamInputError

    p = path[0] if isinstance(path, (list, tuple)) else path
    try:
        return read_dataset_path(p)
    except RetsamInputError as exc:
        try:
            from napari.utils.notifications import show_error

            show_error(str(exc))
        except ImportError:  # pragma: no cover - napari is a dependency
            pass
        return []


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """napari reader hook: a reader for a dataset folder or a dataset sample's image, else None.

    Only file and folder names are inspected here (cheap); decoding happens in
    the returned function.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        p = Path(path)
    except TypeError:
        return None
    from napari_retsam.data.layouts import detect_dataset

    if detect_dataset(p) is not None:
        return _reader
    if _sample_of_file(p) is not None:
        return _reader
    return None


def synthetic_fundus_sample() -> list[LayerData]:
    """napari sample data: the synthetic fundus (seed 0) with its vessel gold standard and FOV."""
    from napari_retsam.data import synthetic_fundus

    s = synthetic_fundus(seed=0)
    meta = {"retsam": {"dataset": "synthetic", "seed": 0, "ids": ["synthetic_0"], "fov_computed": [False]}}
    return [
        (s.image, {"name": "synthetic fundus", "rgb": True, "metadata": meta}, "image"),
        (s.vessels.astype(np.uint8), {"name": "synthetic vessels (gold)", "opacity": 0.6, "metadata": meta}, "labels"),
        (s.fov.astype(np.uint8), {"name": "synthetic FOV", "opacity": 0.25, "visible": False, "metadata": meta}, "labels"),
    ]
