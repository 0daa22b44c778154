"""Reading prediction files for evaluation (used by ``retsam evaluate``).

A prediction folder holds one file per sample, named by the sample id:

* ``<id>.npy``: a float array of probabilities in ``[0, 1]`` (or logits, with
  ``--sigmoid``), or a bool / ``{0,1}`` / ``{0,255}`` integer binary mask;
* ``<id>.png`` / ``<id>.tif`` / ``<id>.tiff``: an 8-bit grey image, either a
  binary mask stored as 0/255 or a probability map stored as
  ``round(255 * probability)``; a 32-bit float TIFF is a probability map.

Binary or probability? For 8-bit data the decision is made **once for the whole
set**: if every 8-bit prediction holds only the values {0, 255} (or only
{0, 1}), all are binary masks; otherwise all are probability maps
``value / 255`` (a probability map that happens to contain only 0 and 255 is
then still read as one). This keeps the pooled AUC from silently disappearing
because one image of a probability set is saturated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_retsam.data.imageio import decode_image_bytes, read_bytes, read_npy
from napari_retsam.errors import RetsamInputError

__all__ = [
    "PREDICTION_EXTENSIONS",
    "read_prediction_file",
    "read_label_file",
    "find_prediction_files",
    "decode_prediction_set",
]

#: File endings a prediction may have, in order of preference when listing.
PREDICTION_EXTENSIONS: tuple[str, ...] = (".npy", ".png", ".tif", ".tiff")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (never gunzipped: prediction names end in .npy/.png/.tif)."""
    return read_bytes(path, kind="a file", gunzip=False)


def _load_npy(path: Path) -> np.ndarray:
    return read_npy(path, kind="a file", gunzip=False)


def _decode_image(path: Path, *, palette_index: bool) -> np.ndarray:
    """Decode an image file to a 2-D array of its stored values (no rescaling)."""
    img = decode_image_bytes(path, _read_bytes(path))  # the size policy and the TIFF fallback
    if isinstance(img, np.ndarray):
        return _to_2d(img, path)
    if img.mode in ("P", "PA"):
        if palette_index:
            return np.asarray(img.getchannel(0) if img.mode == "PA" else img)
        img = img.convert("L")
    elif img.mode == "1":
        return np.asarray(img, dtype=bool).copy()
    elif img.mode in ("LA", "RGBA", "RGBX"):
        return _to_2d(np.asarray(img)[..., :-1], path)
    elif img.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F", "RGB"):
        img = img.convert("L")
    return _to_2d(np.asarray(img), path)


def _to_2d(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        colour = arr[..., : (1 if arr.shape[2] <= 2 else 3)]
        if not np.all(colour == colour[..., :1]):
            raise RetsamInputError(f"{path} is a colour image; expected a single-channel map")
        arr = colour[..., 0]
    if arr.ndim != 2:
        raise RetsamInputError(f"{path} has shape {arr.shape}; expected an H×W map")
    return arr


def read_prediction_file(path: str | os.PathLike[str]) -> np.ndarray:
    """The stored values of a prediction file (``.npy``, ``.png``, ``.tif``), undecoded.

    8-bit images come back as ``uint8`` (decide binary vs probability with
    :func:`decode_prediction_set`); float TIFFs and ``.npy`` arrays as stored.
    Raises :class:`RetsamInputError` for missing or unreadable files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _load_npy(path)
    if suffix not in PREDICTION_EXTENSIONS:
        raise RetsamInputError(
            f"unsupported prediction file {path}: use .npy, .png, .tif or .tiff"
        )
    return _decode_image(path, palette_index=False)


def read_label_file(path: str | os.PathLike[str]) -> np.ndarray:
    """The stored label values of a gold-standard file (palette images: the index).

    Used when a class is picked from a multi-class label image (``--gold-class``).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    return _decode_image(path, palette_index=True)


def find_prediction_files(folder: str | os.PathLike[str], ids: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """Match ``<id>.<ext>`` files in ``folder`` to the sample ``ids``.

    Returns ``(matched, unmatched)``: the file of every id, and the names of
    prediction-like files that match no id. Raises :class:`RetsamInputError`
    naming the ids without a file, or an id with several candidate files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RetsamInputError(f"prediction folder not found: {folder}")
    by_stem: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in PREDICTION_EXTENSIONS and not entry.name.startswith("."):
            by_stem.setdefault(entry.stem, []).append(entry)
    missing = [i for i in ids if i not in by_stem]
    if missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        wanted = set(ids)
        others = [files[0].name for stem, files in by_stem.items() if stem not in wanted]
        hint = (
            f"; the folder holds {len(others)} file(s) for other ids, e.g. {', '.join(others[:3])}"
            if others else ""
        )
        raise RetsamInputError(
            f"no prediction file in {folder} for {len(missing)} of {len(ids)} samples: {shown} "
            f"(expected <id>.npy, .png, .tif or .tiff){hint}"
        )
    matched: dict[str, Path] = {}
    for i in ids:
        candidates = by_stem[i]
        if len(candidates) > 1:
            names = ", ".join(c.name for c in candidates)
            raise RetsamInputError(f"several prediction files for sample {i} in {folder}: {names}; keep one")
        matched[i] = candidates[0]
    wanted = set(ids)
    unmatched = [p.name for stem, files in by_stem.items() if stem not in wanted for p in files]
    return matched, unmatched


def _is_8bit_binary(arr: np.ndarray) -> bool:
    present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    values = set(present.tolist())
    return values <= {0, 255} or values <= {0, 1}


def decode_prediction_set(raw: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Turn raw prediction arrays into what :func:`~napari_retsam.metrics.evaluate` takes.

    8-bit arrays are binary masks if **all** 8-bit arrays of the set hold only
    {0, 255} (or only {0, 1}), otherwise probability maps ``value / 255``.
    Other arrays pass through unchanged (validated later). Returns the arrays
    and a short note saying how 8-bit data were read ("" when there were none).
    """
    is_8bit = [a.dtype == np.uint8 for a in raw]
    if not any(is_8bit):
        return list(raw), ""
    all_binary = all(_is_8bit_binary(a) for a, b in zip(raw, is_8bit) if b)
    out: list[np.ndarray] = []
    for a, b in zip(raw, is_8bit):
        if not b:
            out.append(a)
        elif all_binary:
            out.append(a != 0)
        else:
            out.append(a.astype(np.float64) / 255.0)
    note = "8-bit predictions read as binary masks" if all_binary else "8-bit predictions read as probability x 255"
    return out, note
