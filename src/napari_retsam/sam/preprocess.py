"""Image normalisation, SAM's resize/pad geometry, and mapping boxes and logits.

Pixel rule (:func:`to_uint8_rgb`), applied to every image before SAM sees it:

* shape: H×W (gray) and H×W×1 are repeated to three channels; H×W×3 is used as
  RGB; H×W×4 (RGBA) drops the alpha channel. Anything else is refused.
* ``uint8``: used as is. ``bool``: False -> 0, True -> 255.
* other integer types (``uint16``, ``int32``, ...) and floats outside [0, 1]:
  linear min–max stretch over all channels together,
  ``v' = round(255 · (v − min) / (max − min))`` (a constant image gives zeros).
* floats with all values in [0, 1]: ``v' = round(255 · v)``.
* NaN or infinite values are refused.

Geometry (same as segment-anything's ``ResizeLongestSide`` + ``Sam.preprocess``,
and as LiteMedSAM's inference recipe): an H×W image is resized so its long side
is the encoder size S (1024 for vit_*, 256 for lite_medsam):
``scale = S / max(H, W)``, ``h' = int(H·scale + 0.5)``, ``w' = int(W·scale + 0.5)``
(bilinear with antialiasing), normalised, and zero-padded at the bottom and right
to S×S. Normalisation depends on the model family (``SamConfig.normalize``):

* ``"imagenet"`` (SAM vit_*): per channel ``(v − mean) / std`` with SAM's ImageNet
  statistics (mean 123.675, 116.28, 103.53; std 58.395, 57.12, 57.375 on the
  0–255 scale);
* ``"minmax"`` (LiteMedSAM): ``(v − min) / max(max − min, 1e-8)`` over all
  channels of the resized image, so values lie in [0, 1]; no mean/std.

A box ``(x0, y0, x1, y1)`` in original pixel coordinates maps to encoder-input
pixels as ``(x0·w'/W, y0·h'/H, x1·w'/W, y1·h'/H)``. Decoder logits (4h×4w, with
h = S/16) map back by bilinear upsampling to S×S, cropping to h'×w' and bilinear
resizing to H×W (segment-anything's ``postprocess_masks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_retsam.errors import RetsamInputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "NORMALIZATIONS",
    "PREPROCESS_VERSION",
    "PreparedImage",
    "boxes_to_input",
    "postprocess_logits",
    "prepare_image",
    "preprocess_version",
    "resized_shape",
    "to_uint8_rgb",
]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
#: Changes whenever the rule above changes (part of the embedding-cache signature).
PREPROCESS_VERSION = "retsam-preprocess-v1:uint8-rule,resize-longest-bilinear-aa,imagenet-norm,pad-br"
#: The normalisations of the model families.
NORMALIZATIONS = ("imagenet", "minmax")


def preprocess_version(normalize: str = "imagenet") -> str:
    """The cache-signature string of the preprocessing rule with ``normalize``."""
    if normalize == "imagenet":
        return PREPROCESS_VERSION
    return PREPROCESS_VERSION.replace("imagenet-norm", f"{normalize}-norm")


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Any 2-D gray/RGB/RGBA image of any numeric dtype -> H×W×3 uint8 (rule above)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        elif arr.shape[2] == 1:
            arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise RetsamInputError(
            f"expected a 2-D gray, RGB or RGBA image (H×W, H×W×3 or H×W×4), got shape {np.shape(image)}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise RetsamInputError(f"the image is empty (shape {np.shape(image)})")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return np.where(arr, np.uint8(255), np.uint8(0))
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise RetsamInputError(f"unsupported image dtype {arr.dtype}; use integer or float pixels")
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise RetsamInputError("the image contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h', w') after resizing the long side to ``size`` (SAM's rounding rule)."""
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the encoder plus the geometry to map back.

    ``tensor``: 3×S×S float32, normalised and padded; ``original_size`` (H, W);
    ``input_size`` (h', w') of the resized image inside the padded square.
    """

    tensor: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def prepare_image(image_uint8: np.ndarray, size: int, normalize: str = "imagenet") -> PreparedImage:
    """Resize (long side ``size``), normalise (``"imagenet"`` or ``"minmax"``) and pad an image."""
    import torch
    import torch.nn.functional as F

    rgb = to_uint8_rgb(image_uint8)
    height, width = rgb.shape[:2]
    new_h, new_w = resized_shape(height, width, size)
    x = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, (new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp(0.0, 255.0)
    if normalize == "minmax":
        lo, hi = x.amin(), x.amax()
        x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    elif normalize == "imagenet":
        mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x - mean) / std
    else:
        raise ValueError(f"unknown normalisation {normalize!r}; expected one of {NORMALIZATIONS}")
    x = F.pad(x, (0, size - new_w, 0, size - new_h))
    return PreparedImage(tensor=x[0].contiguous(), original_size=(height, width), input_size=(new_h, new_w))


def boxes_to_input(boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Map K×4 boxes from original pixels to encoder-input pixels (x by w'/W, y by h'/H)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    sx = input_size[1] / original_size[1]
    sy = input_size[0] / original_size[0]
    boxes[:, [0, 2]] *= sx
    boxes[:, [1, 3]] *= sy
    return boxes


def postprocess_logits(
    logits: torch.Tensor, size: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Low-res logits (...×4h×4w) -> logits at the original H×W (bilinear, padding cropped)."""
    import torch.nn.functional as F

    lead = logits.shape[:-2]
    x = logits.reshape(-1, 1, *logits.shape[-2:])
    x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    x = F.interpolate(x, original_size, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *original_size)
