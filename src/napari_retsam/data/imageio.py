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

Size policy
-----------
Images are read up to :data:`MAX_IMAGE_PIXELS` = 12,000 × 12,000 = 144 million
pixels (width × height, any aspect ratio). That is nine times the largest fundus
photographs (about 4000 × 4000 = 16 MP) and holds wide-field montages; an RGB
image that size takes 432 MB in memory, and the Frangi filter and SAM tiling need
tens of bytes per pixel on top. Larger images are refused with one line naming
the file, its size and the limit, from the file's header *before* any pixel is
decoded, so a crafted "decompression bomb" (a small file declaring a huge image)
costs nothing. The limit sits below Pillow's own hard limit (about 179 MP), and
Pillow's ``DecompressionBombWarning`` (images above 89 MP) is silenced here: an
image within the policy is read without warnings. ``.npy`` arrays and TIFFs read
through ``tifffile`` follow the same limit (checked on their headers). Library
warnings raised while decoding never reach the terminal; when the file cannot
be read, the first of them is folded into the one-line error.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOSSY_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "check_array_shape",
    "check_image_size",
    "decode_image_bytes",
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
#: The size policy (see the module docstring): the most pixels (width × height) an image may have.
MAX_IMAGE_PIXELS: int = 12_000 * 12_000

_BYTESIO_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def check_image_size(height: int, width: int, path: str | os.PathLike[str]) -> None:
    """Refuse (one line) an image of more than :data:`MAX_IMAGE_PIXELS` pixels."""
    pixels = int(height) * int(width)
    if pixels > MAX_IMAGE_PIXELS:
        raise RetsamInputError(
            f"image {path} is too large: {int(width)} × {int(height)} = {pixels:,} pixels, "
            f"more than the limit of {MAX_IMAGE_PIXELS:,} (12,000 × 12,000); crop or downscale it"
        )


def check_array_shape(shape: tuple[int, ...], path: str | os.PathLike[str]) -> None:
    """The size policy for arrays (``.npy``, tifffile): H×W of ``H×W``, ``H×W×C`` (C ≤ 4) or
    ``…×H×W``, and at most ``4 × MAX_IMAGE_PIXELS`` values in all."""
    shape = tuple(int(d) for d in shape)
    if len(shape) >= 2:
        if len(shape) == 3 and shape[2] <= 4:
            check_image_size(shape[0], shape[1], path)
        else:
            check_image_size(shape[-2], shape[-1], path)
    total = 1
    for d in shape:
        total *= max(d, 0)
    if total > 4 * MAX_IMAGE_PIXELS:
        raise RetsamInputError(
            f"array {path} is too large: shape {shape} ({total:,} values), more than "
            f"{4 * MAX_IMAGE_PIXELS:,} (4 channels of 12,000 × 12,000)"
        )


def _clean_message(exc: BaseException | str, path: Path) -> str:
    """An exception's text on one line, with Pillow's in-memory file repr replaced by the path."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _BYTESIO_REPR.sub(str(path), text)
    if text.startswith("cannot identify image file"):
        text = "not an image file Pillow can decode"
    return text


class _LibraryMessages(logging.Handler):
    """Collects the warnings and log records of the imaging libraries during one read."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken log record must not break reading
            pass


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[_LibraryMessages]:
    """Silence Pillow/tifffile warnings and log records while decoding; yields what they said."""
    collected = _LibraryMessages()
    loggers = [logging.getLogger(name) for name in ("tifffile", "PIL")]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(collected)
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield collected
    finally:
        for lg, propagate in saved:
            lg.removeHandler(collected)
            lg.propagate = propagate
        collected.messages[:0] = [str(w.message) for w in caught]


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
        limit = 8 * MAX_IMAGE_PIXELS + (1 << 20)  # 16-bit RGBA at the size limit, plus headers
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
                raw = fh.read(limit + 1)
        except (OSError, EOFError, ValueError) as exc:
            raise RetsamInputError(f"cannot read {path}: not a valid gzip file ({exc})") from exc
        if len(raw) > limit:
            raise RetsamInputError(
                f"cannot read {path}: it unpacks to more than {limit:,} bytes, beyond the image size limit "
                f"of {MAX_IMAGE_PIXELS:,} pixels"
            )
    return raw


def _check_npy_header(raw: bytes, path: Path) -> None:
    """Size policy and completeness of a ``.npy`` file from its header, before numpy allocates."""
    buffer = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            return  # other versions: np.load checks them
    except (ValueError, OSError, EOFError):
        return  # not a .npy file (or an .npz): np.load gives the error
    check_array_shape(shape, path)
    if not dtype.hasobject:
        count = 1
        for d in shape:
            count *= d
        if len(raw) - buffer.tell() < count * dtype.itemsize:
            raise RetsamInputError(
                f"cannot read {path}: truncated .npy file (its header declares shape {tuple(shape)} "
                f"of {dtype}, the file holds fewer bytes)"
            )


def read_npy(path: str | os.PathLike[str], *, kind: str = "an image file", gunzip: bool = True) -> np.ndarray:
    """One array from a ``.npy`` file, loaded with ``allow_pickle=False``.

    Bytes come from :func:`read_bytes` (same ``kind``/``gunzip``); a file that is
    not a valid ``.npy`` array, or holds an ``.npz`` archive instead of one
    array, raises :class:`RetsamInputError`.
    """
    path = Path(path)
    raw = read_bytes(path, kind=kind, gunzip=gunzip)
    _check_npy_header(raw, path)
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RetsamInputError(f"cannot read {path}: not a valid .npy array ({_clean_message(exc, path)})") from exc
    if not isinstance(arr, np.ndarray):
        raise RetsamInputError(f"cannot read {path}: expected a single array")
    return arr


def decode_image_bytes(path: str | os.PathLike[str], data: bytes | None = None):  # -> PIL image | ndarray
    """Decode an image file's bytes under the size policy; the shared decoder of this package.

    Returns a fully loaded ``PIL.Image.Image`` or, for TIFF files Pillow cannot
    decode (e.g. float or multi-sample TIFFs), a numpy array from ``tifffile``.
    ``data``: the bytes when already read (else :func:`read_bytes`). Raises
    :class:`RetsamInputError` naming the file when it is not a decodable image
    or exceeds :data:`MAX_IMAGE_PIXELS`; no library warning reaches the terminal.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if data is None:
        data = read_bytes(path)
    with _quiet_libraries() as said:
        try:
            img = Image.open(io.BytesIO(data))
            check_image_size(img.size[1], img.size[0], path)
            img.load()
            return img
        except RetsamInputError:
            raise
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f" ({int(found.group(1)):,} pixels)" if found else ""
            raise RetsamInputError(
                f"image {path} is too large{pixels}: more than the limit of {MAX_IMAGE_PIXELS:,} pixels "
                "(12,000 × 12,000); crop or downscale it"
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            first_error: BaseException = exc
    if _base_ext(path) in (".tif", ".tiff"):
        return _open_tifffile(path, data, first_error)
    raise RetsamInputError(f"cannot read image {path}: {_fold(first_error, said.messages, path)}") from first_error


def _fold(exc: BaseException, messages: list[str], path: Path) -> str:
    """The error text, with the first different library warning appended."""
    text = _clean_message(exc, path)
    for message in messages:
        extra = _clean_message(message, path)
        if extra and extra not in text:
            return f"{text} ({extra})"
    return text


def _open_pil(path: Path):  # -> PIL.Image.Image | np.ndarray (Pillow is imported lazily)
    """Decode with Pillow (fully loaded, so a truncated file fails here)."""
    return decode_image_bytes(path)


def _open_tifffile(path: Path, data: bytes, first_error: BaseException) -> np.ndarray:
    with _quiet_libraries() as said:
        try:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                if tif.series:
                    check_array_shape(tuple(tif.series[0].shape), path)
                arr = np.asarray(tif.asarray())
        except RetsamInputError:
            raise
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise RetsamInputError(
                f"cannot read image {path}: {_fold(first_error, said.messages, path)}"
            ) from exc
    if arr.size == 0 or arr.ndim < 2:
        raise RetsamInputError(f"cannot read image {path}: {_clean_message(first_error, path)}")
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
