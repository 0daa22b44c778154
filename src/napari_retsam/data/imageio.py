"""Reading fundus images and binary masks from the files the datasets ship.

Formats: TIFF, GIF (including palette GIFs), PPM/PGM/PBM (optionally gzipped,
``.ppm.gz`` as in the official STARE release), PNG (including 1-bit PNG), JPEG,
BMP and NumPy ``.npy``. Decoding uses Pillow (``tifffile`` as a fallback for
TIFF files Pillow cannot decode); no torch, napari or Qt.

Conventions
-----------
* :func:`read_image` returns an ``H×W×3`` ``uint8`` RGB array: RGBA drops the
  alpha channel, grey becomes three equal channels, 16-bit data are scaled by
  ``v * 255 / 65535`` (rounded), float data in ``[0, 1]`` by ``v * 255``
  (rounded) and float data in ``[0, 255]`` are rounded.
* :func:`read_binary_mask` returns an ``H×W`` ``bool`` array:

  - palette images (mode ``P``, e.g. DRIVE's ``2nd_manual/*.gif``): the *palette
    index* decides. At most two indices may occur; the one whose palette colour
    is brighter (luminance ``0.299 R + 0.587 G + 0.114 B``) is foreground, the
    other background (equal colours: the larger index is foreground). A single
    index means an all-foreground mask if its colour has luminance >= 128, else
    an empty one. DRIVE stores indices {0, 1} (palette near-black / near-white);
    reading those raw indices as 8-bit grey values and thresholding at 128 would
    find no vessel at all, and a palette whose foreground colour is a dark grey
    still gives the right mask here;
  - 1-bit images and boolean arrays: as stored;
  - grey (or RGB with three equal channels) in a lossless format: the file must
    hold at most two values ``{0, v}`` with ``v > 0`` (0/255, 0/1, ...); pixels
    equal to ``v`` are foreground. Anything else (a label image with several
    classes, an anti-aliased drawing) is refused with :class:`RetsamInputError`
    rather than guessed;
  - JPEG (lossy, so never exactly two values): foreground where the grey value
    is ``>= 128``.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOSSY_EXTENSIONS",
    "is_image_file",
    "read_binary_mask",
    "read_bytes",
    "read_image",
    "read_npy",
    "split_image_name",
]

#: File name endings this module reads (lower case; ``.gz`` may follow any of them).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".tif",
    ".tiff",
    ".gif",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".npy",
)
#: Lossy formats: masks stored in them are thresholded at 128 instead of checked for two values.
LOSSY_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg")


def split_image_name(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Split a file name into ``(stem, extension)``, extension lower-cased.

    A trailing ``.gz`` belongs to the extension: ``im0001.ah.ppm.gz`` ->
    ``("im0001.ah", ".ppm.gz")``; ``01_test.tif`` -> ``("01_test", ".tif")``.
    """
    name = Path(path).name
    lower = name.lower()
    gz = ""
    if lower.endswith(".gz"):
        gz = ".gz"
        name, lower = name[:-3], lower[:-3]
    dot = lower.rfind(".")
    if dot <= 0:
        return name, gz
    return name[:dot], lower[dot:] + gz


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a file whose extension (optionally followed by ``.gz``) this module reads."""
    _, ext = split_image_name(path)
    if ext.endswith(".gz"):
        ext = ext[:-3]
    return ext in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")


def _base_ext(path: Path) -> str:
    ext = split_image_name(path)[1]
    return ext[:-3] if ext.endswith(".gz") else ext


def read_bytes(path: str | os.PathLike[str], *, kind: str = "an image file", gunzip: bool = True) -> bytes:
    """The file's bytes, gunzipped when ``gunzip`` and the name ends in ``.gz``.

    Missing file, folder, unreadable file or broken gzip data ->
    :class:`RetsamInputError` with a one-line message (``kind`` names what was
    expected in the folder case: "expected {kind}, got a folder").
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise RetsamInputError(f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise RetsamInputError(f"expected {kind}, got a folder: {path}") from exc
    except OSError as exc:
        raise RetsamInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if gunzip and path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RetsamInputError(f"cannot read {path}: not a valid gzip file ({exc})") from exc
    return raw


def read_npy(path: str | os.PathLike[str], *, kind: str = "an image file", gunzip: bool = True) -> np.ndarray:
    """One array from a ``.npy`` file, loaded with ``allow_pickle=False``.

    Bytes come from :func:`read_bytes` (same ``kind``/``gunzip``); a file that is
    not a valid ``.npy`` array, or holds an ``.npz`` archive instead of one
    array, raises :class:`RetsamInputError`.
    """
    path = Path(path)
    try:
        arr = np.load(io.BytesIO(read_bytes(path, kind=kind, gunzip=gunzip)), allow_pickle=False)
    except RetsamInputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise RetsamInputError(f"cannot read {path}: not a valid .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise RetsamInputError(f"cannot read {path}: expected a single array")
    return arr


def _open_pil(path: Path):  # -> PIL.Image.Image (Pillow is imported lazily)
    """Decode with Pillow (fully loaded, so a truncated file fails here)."""
    from PIL import Image, UnidentifiedImageError

    data = read_bytes(path)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if _base_ext(path) in (".tif", ".tiff"):
            return _open_tifffile(path, data, exc)
        raise RetsamInputError(f"cannot read image {path}: {exc}") from exc
    return img


def _open_tifffile(path: Path, data: bytes, first_error: BaseException) -> np.ndarray:
    try:
        import tifffile

        arr = np.asarray(tifffile.imread(io.BytesIO(data)))
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise RetsamInputError(f"cannot read image {path}: {first_error}") from exc
    if arr.size == 0 or arr.ndim < 2:
        raise RetsamInputError(f"cannot read image {path}: {first_error}")
    return arr


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """Scale an array of any numeric dtype to ``uint8`` (rules in the module docstring)."""
    if arr.size == 0:
        raise RetsamInputError(f"image {path} is empty (no pixels)")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise RetsamInputError(f"image {path} contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0:
            raise RetsamInputError(f"image {path} has negative values (min {lo:g})")
        if hi <= 1.0:
            return np.round(arr * 255.0).astype(np.uint8)
        if hi <= 255.0:
            return np.round(arr).astype(np.uint8)
        raise RetsamInputError(f"image {path} has float values above 255 (max {hi:g})")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise RetsamInputError(f"image {path} has negative values (min {lo})")
        if hi <= 255:
            return arr.astype(np.uint8)
        if hi <= 65535:
            return np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        raise RetsamInputError(f"image {path} has integer values above 65535 (max {hi})")
    raise RetsamInputError(f"image {path} has an unsupported data type {arr.dtype}")


def _as_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4`` -> ``H×W×3`` (alpha dropped)."""
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        else:
            arr = arr[..., :3]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise RetsamInputError(
            f"image {path} has shape {arr.shape}; expected H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA)"
        )
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise RetsamInputError(f"image {path} is too small ({arr.shape[0]}×{arr.shape[1]} pixels)")
    return np.ascontiguousarray(arr)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an ``H×W×3`` ``uint8`` RGB array.

    Raises :class:`RetsamInputError` when the file is missing, unreadable,
    truncated, of an unsupported kind, or not 2-D (grey/RGB/RGBA).
    """
    path = Path(path)
    if _base_ext(path) == ".npy":
        arr = read_npy(path)
    else:
        img = _open_pil(path)
        if isinstance(img, np.ndarray):  # decoded by tifffile
            arr = img
        else:
            if img.mode in ("P", "PA", "1", "LA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                img = img.convert("RGB")
            arr = np.asarray(img)
    arr = _as_rgb(_to_uint8(np.asarray(arr), path), path)
    return arr


def _binarise_values(grey: np.ndarray, path: Path, lossy: bool) -> np.ndarray:
    """Two-valued grey array -> bool (see the module docstring for the rules)."""
    if grey.dtype == bool:
        return grey.copy()
    if np.issubdtype(grey.dtype, np.floating) and not np.all(np.isfinite(grey)):
        raise RetsamInputError(f"mask {path} contains NaN or infinite values")
    if lossy:  # JPEG decodes to 8-bit grey
        return grey >= 128
    values = np.unique(grey)
    if values.size > 2 or (values.size == 2 and values[0] != 0) or np.any(values < 0):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise RetsamInputError(
            f"mask {path} is not binary: {values.size} distinct values ({shown}); "
            "expected two values 0 and v > 0 (e.g. 0/255 or 0/1)"
        )
    return grey > 0


def _binarise_palette(index: np.ndarray, palette: list[int], path: Path) -> np.ndarray:
    """Palette indices -> bool: of the (at most two) indices used, the brighter colour is foreground."""
    used = np.unique(index)
    if used.size > 2:
        raise RetsamInputError(
            f"mask {path} is not binary: a palette image using {used.size} colours "
            f"(indices {', '.join(map(str, used[:6]))}{', ...' if used.size > 6 else ''})"
        )

    def luminance(i: int) -> float:
        rgb = palette[3 * i : 3 * i + 3]
        if len(rgb) < 3:  # index beyond the stored palette: treat the index itself as grey
            return float(i)
        return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]

    if used.size == 1:
        return np.full(index.shape, luminance(int(used[0])) >= 128, dtype=bool)
    lo, hi = int(used[0]), int(used[1])
    foreground = lo if luminance(lo) > luminance(hi) else hi
    return index == foreground


def read_binary_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a vessel or FOV mask file as an ``H×W`` ``bool`` array.

    Palette images are binarised on the palette index (of the two indices used,
    the brighter palette colour is foreground),
    1-bit images as stored, lossless grey images must be two-valued ``{0, v}``
    and JPEG masks are thresholded at 128. RGB(A) masks must have three equal
    colour channels (alpha is ignored). Raises :class:`RetsamInputError` for
    missing, unreadable or non-binary masks.
    """
    path = Path(path)
    ext = _base_ext(path)
    if ext == ".npy":
        arr = read_npy(path)
    else:
        img = _open_pil(path)
        if isinstance(img, np.ndarray):
            arr = img
        elif img.mode in ("P", "PA"):
            index = np.asarray(img.getchannel(0) if img.mode == "PA" else img)
            return _binarise_palette(index, img.getpalette() or [], path)
        elif img.mode == "1":
            return np.asarray(img, dtype=bool).copy()
        elif img.mode in ("LA", "RGBA", "RGBX"):
            arr = np.asarray(img)[..., :-1]
        elif img.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F", "RGB"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("L"))
    arr = np.asarray(arr)
    if arr.size == 0:
        raise RetsamInputError(f"mask {path} is empty (no pixels)")
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] in (2, 3, 4):
            colour = arr[..., : (1 if arr.shape[2] == 2 else 3)]
            if not np.all(colour == colour[..., :1]):
                if ext in LOSSY_EXTENSIONS:
                    colour = colour.max(axis=2, keepdims=True)
                else:
                    raise RetsamInputError(
                        f"mask {path} is a colour image; expected a grey, 1-bit or palette mask"
                    )
            arr = colour[..., 0]
    if arr.ndim != 2:
        raise RetsamInputError(f"mask {path} has shape {arr.shape}; expected an H×W mask")
    return _binarise_values(arr, path, lossy=ext in LOSSY_EXTENSIONS)
