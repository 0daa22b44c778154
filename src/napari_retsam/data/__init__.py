"""The pure data core: dataset readers, image/mask I/O, FOV masks, synthetic fundus.

Importing this package pulls in numpy only (Pillow, SciPy and scikit-image are
imported by the functions that need them); never torch, napari or Qt.

* :func:`open_dataset` - DRIVE, STARE, CHASE_DB1 or a generic folder as a lazy
  sequence of :class:`Sample` (``id``, ``image``, ``gold``, ``fov``,
  ``fov_computed``); splits in :mod:`napari_retsam.data.splits`.
* :func:`read_image`, :func:`read_binary_mask` - the file formats the datasets use.
* :func:`compute_fov` - field of view from the image where none ships.
* :func:`synthetic_fundus`, :func:`write_synthetic_folder` - procedural test data.
"""

from __future__ import annotations

from typing import Any

from napari_retsam.data.datasets import DATASETS, SPLITS, Dataset, Sample, load_sample, open_dataset
from napari_retsam.data.fov import compute_fov, mask_bounding_box
from napari_retsam.data.imageio import read_binary_mask, read_image
from napari_retsam.data.layouts import detect_dataset

__all__ = [
    "DATASETS",
    "SPLITS",
    "Dataset",
    "Sample",
    "SyntheticFundus",
    "compute_fov",
    "detect_dataset",
    "load_sample",
    "mask_bounding_box",
    "open_dataset",
    "read_binary_mask",
    "read_image",
    "synthetic_fundus",
    "write_synthetic_folder",
]

_SYNTHETIC_NAMES = ("SyntheticFundus", "synthetic_fundus", "write_synthetic_folder")


def __getattr__(name: str) -> Any:
    """Load the synthetic generator on first use (PEP 562)."""
    if name in _SYNTHETIC_NAMES:
        from napari_retsam.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
