"""Output files of the CLI commands that write masks and probability maps.

Shared by ``retsam baseline`` and ``retsam segment``:

* :func:`check_output` validates an output path (extension, existing writable
  folder, not a folder itself) *before* any computation runs;
* :func:`check_mask_outputs` does that for the ``--out`` / ``--prob-out`` pair;
* :func:`encode_array` turns an array into PNG/TIFF/.npy bytes;
* :func:`write_mask` / :func:`write_probability` write them atomically
  (:func:`napari_retsam.io_utils.atomic_write_bytes`).

Encodings: masks are 8-bit images (0 background, 255 vessel; or class labels);
probability maps are ``.npy`` float32 in ``[0, 1]`` or 8-bit ``round(255 · p)``
images, the encoding ``retsam evaluate`` decodes.

Only the standard library is imported at module level (numpy and Pillow inside
the functions; never torch, napari or Qt).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

__all__ = [
    "MASK_FORMATS",
    "PROB_FORMATS",
    "check_output",
    "check_mask_outputs",
    "encode_array",
    "write_mask",
    "write_probability",
]

MASK_FORMATS: dict[str, str] = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
"""Mask file extension -> Pillow format name."""

PROB_FORMATS: dict[str, str] = {".npy": "NPY", **MASK_FORMATS}
"""Probability-map file extension -> format (``NPY``: float32 .npy; else 8-bit image)."""


def check_output(path_text: str | os.PathLike[str], formats: dict[str, str], what: str) -> Path:
    """Validate an output path's extension and folder before any computation.

    ``formats`` maps allowed lower-case extensions to formats; ``what`` names the
    file in the one-line :class:`~napari_retsam.errors.RetsamInputError` message
    (wrong extension, missing or read-only folder, path is a folder).
    """
    from napari_retsam.errors import RetsamInputError

    path = Path(path_text)
    if path.suffix.lower() not in formats:
        raise RetsamInputError(f"{what} {path} must end in one of {', '.join(sorted(formats))}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RetsamInputError(f"cannot write {what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise RetsamInputError(f"cannot write {what} {path}: folder {folder} is not writable")
    if path.is_dir():
        raise RetsamInputError(f"cannot write {what} {path}: it is a folder")
    return path


def check_mask_outputs(out: str, prob_out: str | None) -> tuple[Path, Path | None]:
    """Check ``--out`` (mask) and the optional ``--prob-out`` (probability map).

    Returns ``(out, prob_out or None)``; the two must be different files.
    """
    from napari_retsam.errors import RetsamInputError

    out_path = check_output(out, MASK_FORMATS, "mask output")
    prob_path = check_output(prob_out, PROB_FORMATS, "probability output") if prob_out else None
    if prob_path is not None and prob_path.resolve() == out_path.resolve():
        raise RetsamInputError("--out and --prob-out must be different files")
    return out_path, prob_path


def encode_array(array: Any, fmt: str) -> bytes:
    """Encode an array as file bytes: ``"NPY"`` -> ``np.save`` (no pickle) of any
    array; ``"PNG"``/``"TIFF"`` -> a Pillow image of a uint8 H×W (or H×W×3) array."""
    import numpy as np

    buffer = io.BytesIO()
    if fmt == "NPY":
        np.save(buffer, array, allow_pickle=False)
    else:
        from PIL import Image

        Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_mask(path: Path, mask_image: Any) -> Path:
    """Atomically write a uint8 mask image (0/255 or labels) in the format of ``path``'s extension."""
    from napari_retsam.io_utils import atomic_write_bytes

    return atomic_write_bytes(path, encode_array(mask_image, MASK_FORMATS[path.suffix.lower()]))


def write_probability(path: Path, prob: Any) -> Path:
    """Atomically write a probability map ``p`` in ``[0, 1]``: ``.npy`` as float32,
    ``.png``/``.tif`` as uint8 ``round(255 · p)``."""
    import numpy as np

    from napari_retsam.io_utils import atomic_write_bytes

    fmt = PROB_FORMATS[path.suffix.lower()]
    data = prob.astype(np.float32) if fmt == "NPY" else np.rint(prob * 255.0).astype(np.uint8)
    return atomic_write_bytes(path, encode_array(data, fmt))
