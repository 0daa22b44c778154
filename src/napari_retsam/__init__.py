"""napari-retsam: retinal vessel segmentation with SAM in napari.

The package root imports nothing heavy: the pure core (``data``, ``metrics``)
needs only numpy and scikit-image, ``sam``, ``training`` and ``gan`` import torch
inside themselves, and the widgets (Qt, napari) load only when napari asks.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
